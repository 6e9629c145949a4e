"""A version's weights by ``(zoo handle, version, layout id)``: the per-process reader of each
array, model rows read by snapshot, and damaged chunks named by model and snapshot.

Used by :mod:`weightzoo.io.selection` (the studies' read path), ``Zoo.weights`` and
``verify``; a reader opens the version's read-only Icechunk session itself, so work shipped
to Dask tasks or DataLoader workers carries only the handle and names, never arrays.
"""

from __future__ import annotations

import os

import numpy as np

from weightzoo.errors import CorruptChunkError
from weightzoo.io import store
from weightzoo.io.weights import ChunkErrors, WeightsReader

_READERS: dict = {}


def read_rows(handle, version: str, layout_id: str, rows, ks=None) -> list[np.ndarray]:
    """Snapshots ``ks[i]`` (default: every snapshot of the array) of model rows ``rows`` of
    ``weights/<layout_id>`` at ``version``: float32 ``[len(ks[i]), n_params]`` each. Only those
    chunks are fetched; CorruptChunkError names the models and snapshots of damaged chunks."""
    rows = [int(r) for r in rows]
    try:
        return weights_reader(handle, version, layout_id).read(rows, ks)
    except ChunkErrors as error:
        raise CorruptChunkError(f"cannot read rows {rows} of weights/{layout_id} in {handle} version {version}: "
                                f"{bad_chunks_text(handle, version, layout_id, error.bad)}; {error}") from error


def bad_chunks_text(handle, version: str, layout_id: str, bad: list) -> str:
    """The models (and snapshots) of damaged chunks, named from the version's models table."""
    models = handle.location.read_table(f"versions/{version}/models.parquet",
                                        columns=["model_id", "layout_id", "row", "n_snapshots"]).to_pandas()
    by_row = {int(m.row): m for m in models[models["layout_id"] == layout_id].itertuples()}
    names = []
    for row in dict.fromkeys(row for row, _, _ in bad):
        model = by_row.get(row)
        if model is None:
            continue
        names.append(f"model {model.model_id!r} (row {row}, {snapshots_text(bad, row, model.n_snapshots)})")
    return f"damaged chunk of {', '.join(names)}" if names else "damaged chunk"


def snapshots_text(bad: list, row: int, n_snapshots: int) -> str:
    """The snapshots of ``row`` that ``bad`` chunks hold: ``snapshot k=3``, ``snapshots k=1,4``, or
    every snapshot (``snapshots k=0..n-1``) for a whole-row chunk of the plain layout."""
    ks = [k for r, k, _ in bad if r == row]
    if None in ks:
        return f"snapshots k=0..{int(n_snapshots) - 1}"
    ks = sorted(set(ks))
    return f"snapshot{'s' * (len(ks) > 1)} k={','.join(str(k) for k in ks)}"


def weights_reader(handle, version: str, layout_id: str) -> WeightsReader:
    """The version's reader of a layout's weights, opened once per process (after fork, a
    worker reopens its own); KeyError when the version has no such array."""
    key = (os.getpid(), handle.url, version, layout_id)
    if key not in _READERS:
        session = handle.repository().readonly_session(tag=version)
        array = store.open_weights_array(session.store, layout_id)
        if array is None:
            raise KeyError(f"no weights array for layout {layout_id!r} in {version}")
        _READERS[key] = WeightsReader(array)
    return _READERS[key]


def clear_readers() -> None:
    """Forget this process's readers (their cached shard indexes); the next read reopens them."""
    _READERS.clear()
