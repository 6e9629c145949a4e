"""Export a published version: to the Model Zoos folder layout, or to one flat bundle file.

Model Zoos (readable by their research code and by our ``modelzoos`` importer)::

    <out>/<model_id>/params.json          hyperparameters with their Model Zoos names
                                          (activation → "model::nlin", ...), plus
                                          "weightzoo::config" and "weightzoo::model_id";
                                          small-cnn models also get model::type "CNN",
                                          model::channels_in and model::o_dim
    <out>/<model_id>/result.json          one JSON line per snapshot: epoch, step, metrics, ggap
    <out>/<model_id>/checkpoint_<NNNNNN>/checkpoints   the snapshot's state dict (torch.save)

Checkpoints are numbered by epoch when every snapshot of the model has a distinct whole
epoch, else by k. Bundle: one ``.npz`` (``numpy.load(path)``) holding ``weights_<layout_id>``
float32 [models, snapshots, params] (NaN-padded), the version's ``models.parquet`` (its
``row`` column renumbered to the bundle's rows), ``snapshots.parquet``, ``layouts.parquet``
and ``manifest.json`` as byte arrays, and ``bundle.json`` describing them.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from weightzoo.analysis.records import json_safe, json_value
from weightzoo.core.models import model_signature
from weightzoo.interop.modelzoos import CONFIG_KEY, RENAMED
from weightzoo.io import tables
from weightzoo.io.atomic import atomic_directory
from weightzoo.io.location import ZooLocation

BUNDLE_FORMAT = "weightzoo-bundle-1"
TABLES = ("models.parquet", "snapshots.parquet", "layouts.parquet", "manifest.json")
MODELZOOS_NAMES = {name: key for key, name in RENAMED.items() if not key.startswith("weightzoo::")}


def export_modelzoos(zoo, out) -> dict:
    """Write every model of ``zoo`` (an opened version) as a Model Zoos folder under ``out``."""
    out = Path(out)
    _refuse_existing(out)
    by_model = dict(tuple(zoo.snapshots.sort_values(["model_id", "k"]).groupby("model_id", sort=False)))
    empty = zoo.snapshots.iloc[:0]
    with atomic_directory(ZooLocation.local(out.parent), out.name, durable=False) as tmp:
        for row in zoo.location.read_table(f"{zoo.folder}/models.parquet").to_pylist():
            _export_model(zoo, row, by_model.get(row["model_id"], empty), tmp / row["model_id"])
    return {"format": "modelzoos", "out": str(out), "version": zoo.version, "n_models": len(zoo.models)}


def _export_model(zoo, row: dict, snapshots: pd.DataFrame, folder: Path) -> None:
    folder.mkdir()
    config = json.loads(row["config_json"])
    (folder / "params.json").write_text(json.dumps(_params(row, config), indent=2, sort_keys=True))
    layout, weights = zoo.layout(row["layout_id"]), zoo.weights(row["model_id"])
    numbers = _checkpoint_numbers(snapshots)
    lines = []
    for (_, snap), number in zip(snapshots.iterrows(), numbers):
        target = folder / f"checkpoint_{number:06d}"
        target.mkdir()
        torch.save(layout.unflatten(weights[int(snap["k"])]), target / "checkpoints")
        lines.append(json.dumps(json_safe({
            "epoch": number, "training_iteration": number, "k": snap["k"], "step": snap["step"],
            "train_loss": snap["train_loss"], "train_acc": snap["train_acc"], "test_loss": snap["test_loss"],
            "test_acc": snap["test_acc"], "ggap": snap["gap"]}), allow_nan=False))
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def _params(row: dict, config: dict) -> dict:
    hyper = {name: value for name, value in row.items() if name not in tables.RESERVED and value is not None}
    params = {MODELZOOS_NAMES.get(name, name): json_value(value) for name, value in hyper.items()}
    if config.get("architecture") == "small-cnn":
        shape, outputs = model_signature(config)
        params.update({"model::type": "CNN", "model::channels_in": shape[0], "model::o_dim": outputs})
    params.update({CONFIG_KEY: config, "weightzoo::model_id": row["model_id"]})
    return params


def _checkpoint_numbers(snapshots: pd.DataFrame) -> list[int]:
    epochs = snapshots["epoch"].tolist()
    whole = all(e is not None and not math.isnan(e) and float(e).is_integer() and e >= 0 for e in epochs)
    if whole and len(set(epochs)) == len(epochs):
        return [int(e) for e in epochs]
    return [int(k) for k in snapshots["k"]]


def export_bundle(zoo, out) -> dict:
    """Write ``zoo`` (an opened version) as one ``.npz`` bundle at ``out``."""
    out = Path(out)
    _refuse_existing(out)
    models = zoo.location.read_table(f"{zoo.folder}/models.parquet")
    arrays, rows, shapes = {}, [0] * models.num_rows, {}
    for layout_id in sorted(set(models.column("layout_id").to_pylist())):
        members = [i for i, value in enumerate(models.column("layout_id").to_pylist()) if value == layout_id]
        ids = [models.column("model_id")[i].as_py() for i in members]
        stacked = _stack(zoo, ids, zoo.layout(layout_id).n_params)
        arrays[f"weights_{layout_id}"] = stacked
        shapes[layout_id] = list(stacked.shape)
        for position, i in enumerate(members):
            rows[i] = position
    models = models.set_column(models.schema.get_field_index("row"), "row", pa.array(rows, pa.int64()))
    arrays["models.parquet"] = _parquet_bytes(models)
    for name in TABLES[1:]:
        arrays[name] = np.frombuffer(zoo.location.read_bytes(f"{zoo.folder}/{name}"), dtype=np.uint8)
    arrays["bundle.json"] = _text_bytes(json.dumps({"format": BUNDLE_FORMAT, "version": zoo.version,
                                                    "source": zoo.handle.url, "weights": shapes}))
    tmp = out.with_name(f"{out.name}.incomplete")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.rename(tmp, out)
    return {"format": "bundle", "out": str(out), "version": zoo.version, "n_models": models.num_rows,
            "bytes": out.stat().st_size}


def _stack(zoo, model_ids: list[str], n_params: int) -> np.ndarray:
    blocks = [zoo.weights(model_id) for model_id in model_ids]
    stacked = np.full((len(blocks), max(len(b) for b in blocks), n_params), np.nan, dtype=np.float32)
    for i, block in enumerate(blocks):
        stacked[i, :len(block)] = block
    return stacked


def read_bundle(path, *, rows: bool = False) -> dict:
    """A bundle's contents: ``models``/``snapshots``/``layouts`` DataFrames (with ``rows``:
    lists of dicts with Python values, ints kept where a column has nulls), ``manifest`` and
    ``bundle`` dicts, and ``weights`` {layout_id: float32 [models, snapshots, params]}."""
    with np.load(path, allow_pickle=False) as data:
        info = json.loads(data["bundle.json"].tobytes())
        if info.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: not a {BUNDLE_FORMAT} file (format {info.get('format')!r})")
        result = {name.removesuffix(".parquet"): _read_table(data[name], rows)
                  for name in TABLES if name.endswith(".parquet")}
        result.update(manifest=json.loads(data["manifest.json"].tobytes()), bundle=info,
                      weights={layout_id: data[f"weights_{layout_id}"] for layout_id in info["weights"]})
    return result


def _read_table(data: np.ndarray, rows: bool):
    table = pq.read_table(io.BytesIO(data.tobytes()))
    return table.to_pylist() if rows else table.to_pandas()


def _parquet_bytes(table: pa.Table) -> np.ndarray:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def _text_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _refuse_existing(out: Path) -> None:
    # An export never overwrites: nothing already stored is lost.
    if out.exists():
        raise FileExistsError(f"{out} exists already; choose a new --out path")
