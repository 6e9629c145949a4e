"""Staged models: one folder per model fingerprint in a zoo's local staging folder.

A staged model is the cache of one training run (or one imported, sampled or pulled
network), waiting to be published. Staging is the ONE cache of a build: a model whose
fingerprint is staged is never trained again. ``staging`` below is the folder itself
(``ZooHandle.staging``, or a scratch folder for regeneration)::

    <staging>/<fingerprint>/
        weights.npy      float32 [n_snapshots, n_params]
        snapshots.json   one dict per snapshot k (NaN stored as null)
        record.json      the StagedRecord (weightzoo.io.records)
        layout.json      the WeightLayout records
        traces.npz       dense training traces, when the model recorded any (see io.trace_store)
        receipt.json     the Receipt: fingerprint, model_id, sha256 of weights.npy (and traces.npz), ...

The folder appears atomically (:func:`weightzoo.io.atomic.atomic_directory`), so a folder
without the ``.incomplete-`` suffix is complete. Deleting the staging folder only costs
retraining; published versions never read from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace
from weightzoo.errors import RecordError, StagingError
from weightzoo.io.atomic import atomic_directory, sha256_file
from weightzoo.io.location import ZooLocation
from weightzoo.io.records import Receipt, StagedRecord, dumps
from weightzoo.io.trace_store import read_trace_npz, write_trace_npz


@dataclass(frozen=True)
class StagedModel:
    """A staged model read back from disk, its weights checked against the receipt."""

    receipt: Receipt
    weights: np.ndarray | None
    snapshots: list[dict]
    record: StagedRecord
    layout: WeightLayout


def stage_model(staging: Path, record: StagedRecord, *, weights: np.ndarray, snapshots: list[dict],
                layout: WeightLayout, traces: Trace | None = None) -> Receipt:
    """Write one model's outputs to ``<staging>/<fingerprint>/`` atomically; return its receipt.

    Staging the same fingerprint again replaces the earlier folder.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    _check_inputs(record, weights, snapshots, layout)
    _check_traces(record.fingerprint, traces, layout)
    final = Path(staging) / record.fingerprint
    with atomic_directory(ZooLocation.local(staging), record.fingerprint, replace=True) as tmp:
        receipt = _write_files(tmp, final, record, weights, snapshots, layout, traces)
    return receipt


def find_staged(staging: Path, fingerprint: str) -> Receipt | None:
    """The receipt of a completely staged model, or None (folders still being written do not count)."""
    path = Path(staging) / fingerprint / "receipt.json"
    if not path.is_file():
        return None
    try:
        return Receipt.from_dict(json.loads(path.read_text()), str(path))
    except (json.JSONDecodeError, RecordError):
        return None


def load_staged(staging: Path, fingerprint: str, *, weights: bool = True) -> StagedModel:
    """Read a staged model; StagingError names the file if weights.npy fails its sha256.

    ``weights=False`` reads only the small files (``StagedModel.weights`` is then None).
    """
    folder = Path(staging) / fingerprint
    receipt = find_staged(staging, fingerprint)
    if receipt is None:
        raise StagingError(f"no complete staged model for fingerprint {fingerprint!r} in {staging}")
    try:
        record = StagedRecord.from_dict(json.loads((folder / "record.json").read_text()), str(folder / "record.json"))
    except RecordError as error:
        raise StagingError(str(error)) from None
    return StagedModel(
        receipt=receipt,
        weights=_read_weights(folder / "weights.npy", receipt) if weights else None,
        snapshots=json.loads((folder / "snapshots.json").read_text()),
        record=record,
        layout=WeightLayout.from_records(json.loads((folder / "layout.json").read_text())),
    )


def load_staged_traces(staging: Path, fingerprint: str) -> Trace:
    """The staged traces of a model; StagingError if it has none or traces.npz fails its sha256."""
    receipt = find_staged(staging, fingerprint)
    path = Path(staging) / fingerprint / "traces.npz"
    if receipt is None or not receipt.n_trace_steps:
        raise StagingError(f"no staged traces for fingerprint {fingerprint!r} in {staging}")
    digest = sha256_file(path)
    if digest != receipt.traces_sha256:
        raise StagingError(f"{path} is corrupt: sha256 {digest} does not match the receipt's "
                           f"{receipt.traces_sha256}")
    return read_trace_npz(path)


def _read_weights(path: Path, receipt: Receipt) -> np.ndarray:
    digest = sha256_file(path)
    if digest != receipt.sha256:
        raise StagingError(f"{path} is corrupt: sha256 {digest} does not match the receipt's {receipt.sha256}")
    return np.load(path, allow_pickle=False)


def _check_inputs(record: StagedRecord, weights, snapshots, layout) -> None:
    fingerprint = record.fingerprint
    if record.layout_id != layout.layout_id:
        raise StagingError(f"record layout_id {record.layout_id!r} != layout's {layout.layout_id!r}")
    if weights.ndim != 2 or weights.shape[1] != layout.n_params:
        raise StagingError(f"weights of {fingerprint!r} have shape {weights.shape}; "
                           f"expected [n_snapshots, {layout.n_params}]")
    if weights.shape[0] != len(snapshots):
        raise StagingError(f"{weights.shape[0]} weight snapshots but {len(snapshots)} snapshot rows")
    if [int(s["k"]) for s in snapshots] != list(range(len(snapshots))):
        raise StagingError(f"snapshot k of {fingerprint!r} must be 0..{len(snapshots) - 1} in order")


def _check_traces(fingerprint, traces: Trace | None, layout: WeightLayout) -> None:
    if traces is None:
        return
    try:
        traces.check()
        for name, values in traces.tensors.items():
            if values.shape[1] != layout.tensor(name).length:
                raise ValueError(f"traced tensor {name!r} has {values.shape[1]} values; the layout has "
                                 f"{layout.tensor(name).length}")
    except (KeyError, ValueError) as error:
        raise StagingError(f"traces of {fingerprint!r}: {error}") from None


def _write_files(tmp: Path, final: Path, record: StagedRecord, weights, snapshots, layout, traces) -> Receipt:
    with open(tmp / "weights.npy", "wb") as handle:
        np.save(handle, weights, allow_pickle=False)
    trace_fields = {}
    if traces is not None:
        with open(tmp / "traces.npz", "wb") as handle:
            write_trace_npz(handle, traces)
        trace_fields = {"n_trace_steps": traces.n_points, "trace_tensors": tuple(traces.tensors),
                        "steps_per_epoch": traces.steps_per_epoch, "traces_sha256": sha256_file(tmp / "traces.npz")}
    (tmp / "snapshots.json").write_text(dumps(snapshots))
    (tmp / "record.json").write_text(dumps(record.to_dict()))
    (tmp / "layout.json").write_text(dumps(layout.to_records()))
    receipt = Receipt(fingerprint=record.fingerprint, model_id=str(record.model_id), path=str(final.resolve()),
                      sha256=sha256_file(tmp / "weights.npy"), layout_id=layout.layout_id,
                      n_snapshots=int(weights.shape[0]), status=record.status, **trace_fields)
    # The receipt goes last: find_staged treats its presence as "complete".
    (tmp / "receipt.json").write_text(dumps(receipt.to_dict()))
    return receipt
