"""Import a weightzoo bundle (``weightzoo export --format bundle``) into another zoo.

SOURCE is the ``.npz`` file; each model of its models table is one network. Weights,
snapshot rows, layout and config come back as they were exported (the config is kept even
when it names an imported architecture, so ``load_model`` behaves as in the source zoo);
the source's model_id becomes the ``source_model_id`` column, its training settings
``training_json.source_training``, and its split is kept. A model whose weights are missing from the bundle or
whose snapshot rows do not fit them is rejected.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import ConfigError, build_model
from weightzoo.interop.common import ContentDigest, ImportedNetwork, SourceError, snapshot_row
from weightzoo.interop.export import read_bundle
from weightzoo.io import tables

KIND = "bundle"
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "gap")


def list_networks(source: Path) -> list[str]:
    """The model_ids of the bundle's models table."""
    return [row["model_id"] for row in _bundle(source)["models"]]


def network_paths(source: Path, handle: str) -> list[Path]:
    """The bundle file itself."""
    return [source]


def read_network(source: Path, handle: str) -> ImportedNetwork:
    """One model of the bundle."""
    bundle = _bundle(source)
    row = bundle["by_id"][handle]
    where = f"{source} model {handle}"
    layout = _layout(bundle, row["layout_id"], where)
    array = bundle["weights"].get(row["layout_id"])
    if array is None or row["row"] >= array.shape[0] or row["n_snapshots"] > array.shape[1]:
        raise SourceError(where, f"no weights for row {row['row']} of layout {row['layout_id']}")
    weights = np.ascontiguousarray(array[row["row"], :row["n_snapshots"]])
    snapshots = sorted(bundle["snapshots_by_id"].get(handle, []), key=lambda s: s["k"])
    ks = [int(s["k"]) for s in snapshots]
    if len(ks) != row["n_snapshots"] or any(k < 0 for k in ks) or len(set(ks)) != len(ks):
        raise SourceError(where, f"snapshot rows k={[s['k'] for s in snapshots]} do not match n_snapshots "
                                 f"{row['n_snapshots']}")
    config = json.loads(row["config_json"])
    hyperparameters = {k: v for k, v in row.items() if k not in tables.RESERVED and v is not None}
    digest = ContentDigest()
    digest.add("weights", weights.tobytes())
    digest.add("model", tables.canonical_json({**hyperparameters, "config": config, "layout": layout.layout_id,
                                               "snapshots": [_finite(s) for s in snapshots]}).encode())
    return ImportedNetwork(kind=KIND, name=handle, weights=weights,
                           snapshots=[snapshot_row(s["k"], epoch=s["epoch"], step=s["step"],
                                                   **{name: s[name] for name in METRICS}) for s in snapshots],
                           hyperparameters={**hyperparameters, "source_model_id": handle}, config=config,
                           layout=layout, digest=digest.hexdigest(), mapped=_builds(config, layout),
                           training={"source_training": json.loads(row["training_json"] or "{}")},
                           split=row.get("split"))


@lru_cache(maxsize=2)
def _load(path: str, size: int, mtime_ns: int) -> dict:
    bundle = read_bundle(path, rows=True)
    # indexed once: every model of the bundle is read as a network of its own
    bundle["by_id"] = {row["model_id"]: row for row in bundle["models"]}
    bundle["snapshots_by_id"] = {}
    for row in bundle["snapshots"]:
        bundle["snapshots_by_id"].setdefault(row["model_id"], []).append(row)
    return bundle


def _bundle(source: Path) -> dict:
    if not source.is_file():
        raise SourceError(source, "expected a .npz bundle file")
    stat = source.stat()
    try:
        return _load(str(source), stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError, KeyError) as error:
        raise SourceError(source, f"not a weightzoo bundle ({error})") from None


def _layout(bundle: dict, layout_id: str, where: str) -> WeightLayout:
    rows = [r for r in bundle["layouts"] if r["layout_id"] == layout_id]
    layout = WeightLayout.from_records(rows) if rows else None
    if layout is None or layout.layout_id != layout_id:
        raise SourceError(where, f"layouts.parquet does not hold layout {layout_id}")
    return layout


def _builds(config: dict, layout: WeightLayout) -> bool:
    try:
        layout.named_as(build_model(config))  # a layout stored under older tensor names matches by position
        return True
    except (ConfigError, KeyError, TypeError, ValueError):
        return False


def _finite(row: dict) -> dict:
    return {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
