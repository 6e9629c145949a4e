"""Staged models: one file per model fingerprint in a zoo's local staging folder.

A staged model is the cache of one training run (or one imported, sampled or pulled
network), waiting to be published. Staging is the ONE cache of a build: a model whose
fingerprint is staged is never trained again. ``staging`` below is the folder itself
(``ZooHandle.staging``, or a scratch folder for regeneration)::

    <staging>/<fingerprint>.npz      an uncompressed npz (numpy.savez) holding
        weights                      float32 [n_snapshots, n_params]
        meta                         UTF-8 JSON: the Receipt (with the sha256 of the weights'
                                     bytes), the StagedRecord, one dict per snapshot k (NaN as
                                     null) and the WeightLayout records
        trace.*                      dense training traces, when the model recorded any

One file per model keeps staging close to the cost of ``numpy.save`` of the same weights
(a folder of six small files per model cost seven fsyncs and as many file creations). The
file is written under a temporary name and renamed, so a ``<fingerprint>.npz`` is complete.

Durability: ``stage_model(..., durable=True)`` fsyncs the file before the rename. A trainer
staging a whole group passes ``durable=False`` and calls :func:`sync_staging` once when the
group is staged (one filesystem sync per group, not per file). After a power cut a model
staged but not yet synced can be truncated; its sha256 no longer matches, so it counts as
not staged and is trained again. Deleting the staging folder only costs retraining;
published versions never read from it.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace
from weightzoo.errors import StagingError
from weightzoo.io.atomic import fsync_dir
from weightzoo.io.records import Receipt, StagedRecord, dumps
from weightzoo.io.trace_store import trace_arrays, trace_from_arrays

SUFFIX = ".npz"
TRACE_PREFIX = "trace."


@dataclass(frozen=True)
class StagedModel:
    """A staged model read back from disk, its weights checked against the receipt."""

    receipt: Receipt
    weights: np.ndarray | None
    snapshots: list[dict]
    record: StagedRecord
    layout: WeightLayout


def staged_path(staging: Path, fingerprint: str) -> Path:
    """The file of a staged model."""
    return Path(staging) / f"{fingerprint}{SUFFIX}"


def staged_fingerprints(staging: Path) -> set[str]:
    """The fingerprints with a staged file, from one listing of the folder (a plan's count of
    what an earlier run staged; :func:`find_staged` checks a file's content)."""
    if not Path(staging).is_dir():
        return set()
    return {entry.name[:-len(SUFFIX)] for entry in os.scandir(staging) if entry.name.endswith(SUFFIX)}


def stage_model(staging: Path, record: StagedRecord, *, weights: np.ndarray, snapshots: list[dict],
                layout: WeightLayout, traces: Trace | None = None, durable: bool = True) -> Receipt:
    """Write one model's outputs to ``<staging>/<fingerprint>.npz`` atomically; return its receipt.

    ``durable=False`` leaves syncing to a later :func:`sync_staging` of the whole batch.
    Staging the same fingerprint again replaces the earlier file.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    _check_inputs(record, weights, snapshots, layout)
    _check_traces(record.fingerprint, traces, layout)
    final = staged_path(staging, record.fingerprint)
    final.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"weights": weights}
    trace_fields = {}
    if traces is not None:
        arrays.update(trace_arrays(traces, TRACE_PREFIX))
        trace_fields = {"n_trace_steps": traces.n_points, "trace_tensors": tuple(traces.tensors),
                        "steps_per_epoch": traces.steps_per_epoch, "traces_sha256": _traces_digest(arrays)}
    receipt = Receipt(fingerprint=record.fingerprint, model_id=str(record.model_id), path=str(final.resolve()),
                      sha256=hashlib.sha256(weights.tobytes()).hexdigest(), layout_id=layout.layout_id,
                      n_snapshots=int(weights.shape[0]), status=record.status, **trace_fields)
    meta = {"receipt": receipt.to_dict(), "record": record.to_dict(), "snapshots": snapshots,
            "layout": layout.to_records()}
    arrays["meta"] = np.frombuffer(dumps(meta).encode(), dtype=np.uint8)
    _write_atomically(final, arrays, durable)
    return receipt


def find_staged(staging: Path, fingerprint: str) -> Receipt | None:
    """The receipt of a completely staged model, or None (also for a damaged or foreign file)."""
    path = staged_path(staging, fingerprint)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return Receipt.from_dict(_meta(data)["receipt"], str(path))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # truncated, not an npz, another format
        return None


def load_staged(staging: Path, fingerprint: str, *, weights: bool = True) -> StagedModel:
    """Read a staged model; StagingError names the file when it is missing or its weights fail
    their sha256. ``weights=False`` reads only the metadata (``StagedModel.weights`` is None)."""
    path = staged_path(staging, fingerprint)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = _meta(data)
            receipt = Receipt.from_dict(meta["receipt"], str(path))
            values = _checked_weights(path, data["weights"], receipt) if weights else None
            record = StagedRecord.from_dict(meta["record"], str(path))
    except FileNotFoundError:
        raise StagingError(f"no complete staged model for fingerprint {fingerprint!r} in {staging}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # RecordError is a ValueError
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None
    return StagedModel(receipt=receipt, weights=values, snapshots=meta["snapshots"], record=record,
                       layout=WeightLayout.from_records(meta["layout"]))


def load_staged_traces(staging: Path, fingerprint: str) -> Trace:
    """The staged traces of a model; StagingError if it has none or they fail their sha256."""
    path = staged_path(staging, fingerprint)
    receipt = find_staged(staging, fingerprint)
    if receipt is None or not receipt.n_trace_steps:
        raise StagingError(f"no staged traces for fingerprint {fingerprint!r} in {staging}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key.startswith(TRACE_PREFIX)}
            trace = trace_from_arrays(data, TRACE_PREFIX)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None
    digest = _traces_digest(arrays)
    if digest != receipt.traces_sha256:
        raise StagingError(f"{path} is corrupt: its traces' sha256 {digest} does not match the receipt's "
                           f"{receipt.traces_sha256}")
    return trace


def sync_staging(staging: Path) -> None:
    """Make everything staged so far durable: one sync of the staging folder's filesystem."""
    fd = os.open(staging, os.O_RDONLY)
    try:
        if _LIBC is not None and _LIBC.syncfs(fd) == 0:
            return
        os.sync()  # no syncfs here: sync every filesystem
    finally:
        os.close(fd)


def _meta(data) -> dict:
    return json.loads(data["meta"].tobytes())


def _checked_weights(path: Path, weights: np.ndarray, receipt: Receipt) -> np.ndarray:
    digest = hashlib.sha256(np.ascontiguousarray(weights).tobytes()).hexdigest()
    if digest != receipt.sha256:
        raise StagingError(f"{path} is corrupt: the sha256 {digest} of its weights does not match the receipt's "
                           f"{receipt.sha256}; delete it and run again to stage the model anew")
    return weights


def _traces_digest(arrays: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(k for k in arrays if k.startswith(TRACE_PREFIX)):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def _write_atomically(final: Path, arrays: dict, durable: bool) -> None:
    tmp = final.with_name(f"{final.name}.incomplete-{secrets.token_hex(4)}")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, final)  # atomic: readers see the old file, the new one, or none
        if durable:
            fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
