"""Per-layer normalisation of tokenised weights, with statistics from the train split.

SANE (Schürholt et al., ICML 2024) standardises every layer on its own before tokens enter
the transformer: layers differ in scale by orders of magnitude, and one global scale would
let the largest layer dominate the reconstruction loss. Statistics come from training
models only (a model's normalisation must not peek at val/test networks) and are computed
with Dask reductions over the selection's column blocks, so a zoo larger than memory works.

A statistics table has one row per layout layer (``layout_id, layer, kind, n_values, mean,
std``); its ``attrs`` record the zoo version, split and snapshots it came from, and
:func:`save_layer_statistics` / :func:`load_layer_statistics` keep both in one Parquet file
so a trained model's normalisation travels with it. Tokens of layout layer ``l`` are
normalised as ``(x - mean_l) / std_l`` value by value (a token mixing a conv row with its
batch-norm values uses each value's own layer); padding stays 0.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from weightzoo.core.layout import WeightLayout
from weightzoo.core.tokens import Tokenizer

COLUMNS = ("layout_id", "layer", "kind", "n_values", "mean", "std")
_METADATA_KEY = b"weightzoo.token_stats"


def layer_statistics(zoo, layout_id: str | None = None, *, split: str | list[str] = "train", snapshots=None,
                     where: str | None = None, chunk_samples: int = 100, **equals) -> pd.DataFrame:
    """Mean and std (ddof=0, float64) of every layout layer over the ``split`` samples of ``zoo``.

    ``layout_id`` may be left out when the selection holds one layout; the other arguments
    filter like :meth:`weightzoo.io.reader.Zoo.select`. Reads through ``Selection.to_dask``
    and computes all layers in one Dask pass, so each storage chunk is read once.
    """
    import dask.array as da

    partial = sorted({"part", "layers", "tensors"} & set(equals))
    if partial:
        raise ValueError(f"layer statistics cover whole layouts; drop {partial}")
    if layout_id is not None:
        equals["layout_id"] = layout_id
    selection = zoo.select(where, snapshots=snapshots, split=split, **equals)
    layouts = sorted(selection.layouts)
    if len(layouts) != 1:
        raise ValueError(f"layer statistics need one layout; the selection has {layouts or 'none'} "
                         f"(pass layout_id=...)")
    layout = selection.layouts[layouts[0]]
    weights = selection.to_dask(chunk_samples)
    columns = [_columns(layout, layer) for layer in _layers(layout)]
    # float64 accumulation: a layer's sum over many models loses digits in float32
    means = [da.mean(weights[:, c], dtype=np.float64) for c in columns]
    stds = [da.std(weights[:, c], dtype=np.float64) for c in columns]
    values = da.compute(*means, *stds)
    table = _table(layout, selection, values[:len(columns)], values[len(columns):])
    table.attrs = {"version": zoo.version, "split": split, "snapshots": repr(snapshots),
                   "n_samples": int(len(selection))}
    return table


def _layers(layout: WeightLayout) -> list[int]:
    return sorted({t.layer for t in layout.tensors})


def _columns(layout: WeightLayout, layer: int):
    """The layer's flat positions, as a slice when contiguous (the usual case: cheap in Dask)."""
    index = layout.indices(layers=[layer])
    if index[-1] - index[0] + 1 == index.size:
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _table(layout: WeightLayout, selection, means, stds) -> pd.DataFrame:
    rows = []
    for layer, mean, std in zip(_layers(layout), means, stds):
        size = int(layout.indices(layers=[layer]).size)
        kind = next(t.kind for t in layout.tensors if t.layer == layer)
        rows.append((layout.layout_id, layer, kind, size * len(selection), float(mean), float(std)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def save_layer_statistics(table: pd.DataFrame, path) -> None:
    """Write a statistics table and its ``attrs`` (version, split, ...) to one Parquet file."""
    arrow = pa.Table.from_pandas(table[list(COLUMNS)], preserve_index=False)
    metadata = {**(arrow.schema.metadata or {}), _METADATA_KEY: json.dumps(table.attrs).encode()}
    pq.write_table(arrow.replace_schema_metadata(metadata), path)


def load_layer_statistics(path) -> pd.DataFrame:
    """Read a table written by :func:`save_layer_statistics` (with its ``attrs``)."""
    arrow = pq.read_table(path)
    table = arrow.to_pandas()
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a layer statistics table: missing columns {missing}")
    table.attrs = json.loads((arrow.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
    return table


def token_moments(stats: pd.DataFrame, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 [n_tokens, token_size]: each token value's layer statistics.

    Padding gets mean 0 and std 1; a layer with std 0 (all values equal) gets std 1, so that
    normalising never divides by zero and the round trip stays exact up to rounding.
    """
    layout_id = tokenizer.layout.layout_id
    rows = stats[stats["layout_id"] == layout_id].set_index("layer")
    layers = tokenizer.value_layers
    needed = np.unique(layers[layers >= 0]).tolist()
    missing = [layer for layer in needed if layer not in rows.index]
    if missing:
        raise ValueError(f"statistics have no rows for layers {missing} of layout {layout_id}; "
                         f"they cover layouts {sorted(stats['layout_id'].unique())}")
    mean_of = np.zeros(max(needed) + 2)  # last entry (index -1) is the padding's
    std_of = np.ones(max(needed) + 2)
    mean_of[needed] = rows.loc[needed, "mean"].to_numpy()
    std = rows.loc[needed, "std"].to_numpy()
    std_of[needed] = np.where(std > 0, std, 1.0)
    return mean_of[layers].astype(np.float32), std_of[layers].astype(np.float32)


def normalize_tokens(tokens, stats: pd.DataFrame, tokenizer: Tokenizer):
    """Per-layer standardised tokens [..., n_tokens, token_size]; padding stays 0."""
    mean, std = _moments_like(stats, tokenizer, tokens)
    return _masked(tokenizer, (tokens - mean) / std, tokens)


def denormalize_tokens(tokens, stats: pd.DataFrame, tokenizer: Tokenizer):
    """The inverse of :func:`normalize_tokens`; padding stays 0."""
    mean, std = _moments_like(stats, tokenizer, tokens)
    return _masked(tokenizer, tokens * std + mean, tokens)


def _moments_like(stats, tokenizer, tokens):
    mean, std = token_moments(stats, tokenizer)
    if isinstance(tokens, torch.Tensor):
        return (torch.from_numpy(a).to(tokens.device, tokens.dtype) for a in (mean, std))
    return mean, std


def _masked(tokenizer: Tokenizer, values, like):
    """``values`` on real token slots and exactly 0 on padding."""
    if isinstance(like, torch.Tensor):
        mask = torch.from_numpy(np.array(tokenizer.mask)).to(like.device)
        return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=like.device))
    return np.where(tokenizer.mask, values, np.zeros((), dtype=values.dtype))
