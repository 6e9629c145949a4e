"""Staged models: one file name per model fingerprint in a zoo's local staging folder.

A staged model is the cache of one training run (or one imported, sampled or pulled
network), waiting to be published. Staging is the ONE cache of a build: a model whose
fingerprint is staged is never trained again. ``staging`` below is the folder itself
(``ZooHandle.staging``, or a scratch folder for regeneration)::

    <staging>/<fingerprint>.wzs    the model's weights (float32 [n_snapshots, n_params]), its
                                   Receipt, StagedRecord, snapshot rows, WeightLayout and dense
                                   traces (format: :mod:`weightzoo.io.staged_file`)

:func:`stage_models` writes the models a task staged together (a training group) as ONE
file, under a temporary name, and then gives it one name per model (hard links), so every
``<fingerprint>.wzs`` appears complete and at once; the temporary name is removed and the
file's space is freed when the last of its names is deleted. One file per group costs about
a seventh of one file per model here (file creation, not bytes, dominated staging), and far
less than an npz archive per model. Reading a model reads the file's directory and that
model's section only. Where hard links are not supported, each model gets its own file.

Durability: ``durable=True`` fsyncs the file and the folder before returning. A trainer
staging a whole group passes ``durable=False`` and calls :func:`sync_staging` once when the
group is staged (one filesystem sync per group, not per file). After a power cut a model
staged but not yet synced can be cut short; its recorded size and the weights' sha256 then
fail, so it counts as not staged and is trained again. Deleting the staging folder only
costs retraining; published versions never read from it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace
from weightzoo.errors import StagingError
from weightzoo.io import staged_file
from weightzoo.io.atomic import fsync_dir
from weightzoo.io.records import Receipt, StagedRecord, dumps
from weightzoo.io.trace_store import trace_arrays, trace_from_arrays

SUFFIX = ".wzs"
TRACE_PREFIX = "trace."
_INCOMPLETE = ".incomplete"


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


@dataclass(frozen=True)
class StageItem:
    """One model to stage: what :func:`stage_model` takes, as a value."""

    record: StagedRecord
    weights: np.ndarray
    snapshots: list[dict]
    layout: WeightLayout
    traces: Trace | None = None


def staged_fingerprints(staging: Path) -> set[str]:
    """The fingerprints with a staged file, from one listing of the folder (a plan's count of
    what an earlier run staged; :func:`find_staged` checks a file's content)."""
    if not Path(staging).is_dir():
        return set()
    return {entry.name[:-len(SUFFIX)] for entry in os.scandir(staging) if entry.name.endswith(SUFFIX)}


def stage_model(staging: Path, record: StagedRecord, *, weights: np.ndarray, snapshots: list[dict],
                layout: WeightLayout, traces: Trace | None = None, durable: bool = True) -> Receipt:
    """Stage one model as ``<staging>/<fingerprint>.wzs`` atomically; return its receipt.

    ``durable=False`` leaves syncing to a later :func:`sync_staging` of the whole batch.
    Staging the same fingerprint again replaces the earlier file.
    """
    return stage_models(staging, [StageItem(record, weights, snapshots, layout, traces)], durable=durable)[0]


def stage_models(staging: Path, items: list[StageItem], *, durable: bool = True) -> list[Receipt]:
    """Stage several models in one file with one name per model (see the module docstring);
    their receipts, in order. Each ``<fingerprint>.wzs`` appears complete or not at all."""
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    receipts, sections = [], []
    for item in items:
        receipt, section = _section(staging, item)
        receipts.append(receipt)
        sections.append(section)
    if len({r.fingerprint for r in receipts}) < len(receipts):
        raise StagingError(f"a fingerprint is staged twice in one group: {[r.fingerprint for r in receipts]}")
    tmp = staging / f".group-{secrets.token_hex(6)}{_INCOMPLETE}"
    try:
        _write(tmp, sections, durable)
        for receipt in receipts:
            _link(tmp, Path(receipt.path), sections, durable)
        if durable:
            fsync_dir(staging)
    finally:
        tmp.unlink(missing_ok=True)
    return receipts


def find_staged(staging: Path, fingerprint: str) -> Receipt | None:
    """The receipt of a completely staged model, or None (also for a damaged or foreign file)."""
    path = staged_path(staging, fingerprint)
    try:
        return Receipt.from_dict(staged_file.read(path, fingerprint, meta=False, arrays=False).head["receipt"],
                                 str(path))
    except (OSError, ValueError, KeyError, TypeError):  # missing, cut short, another format
        return None


def load_staged(staging: Path, fingerprint: str, *, weights: bool = True) -> StagedModel:
    """Read a staged model; StagingError names the file when it is missing or its weights fail
    their sha256. ``weights=False`` reads only the metadata (``StagedModel.weights`` is None)."""
    return _staged_model(staging, fingerprint, weights=weights)


def iter_staged(staging: Path, receipts: list[Receipt]) -> Iterator[StagedModel]:
    """The staged model (with weights) of each receipt, in order, each read once; the weights
    are checked against the receipt's sha256. StagingError names a missing or damaged file."""
    for receipt in receipts:
        yield _staged_model(staging, receipt.fingerprint, weights=True, receipt=receipt)


def load_staged_traces(staging: Path, fingerprint: str) -> Trace:
    """The staged traces of a model; StagingError if it has none or they fail their sha256."""
    path = staged_path(staging, fingerprint)
    receipt = find_staged(staging, fingerprint)
    if receipt is None or not receipt.n_trace_steps:
        raise StagingError(f"no staged traces for fingerprint {fingerprint!r} in {staging}")
    entry = _read(staging, fingerprint, meta=False, arrays=True)
    try:
        arrays = {name: entry.array(name) for name in entry.head["arrays"] if name.startswith(TRACE_PREFIX)}
        trace = trace_from_arrays(arrays, TRACE_PREFIX)
    except (ValueError, KeyError, TypeError) as error:
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


def _section(staging: Path, item: StageItem) -> tuple[Receipt, staged_file.Section]:
    record, layout, traces = item.record, item.layout, item.traces
    weights = np.ascontiguousarray(item.weights, dtype="<f4")
    _check_inputs(record, weights, item.snapshots, layout)
    _check_traces(record.fingerprint, traces, layout)
    arrays = {"weights": weights}
    trace_fields = {}
    if traces is not None:
        arrays.update(trace_arrays(traces, TRACE_PREFIX))
        trace_fields = {"n_trace_steps": traces.n_points, "trace_tensors": tuple(traces.tensors),
                        "steps_per_epoch": traces.steps_per_epoch, "traces_sha256": _traces_digest(arrays)}
    path = os.path.abspath(staged_path(staging, record.fingerprint))
    receipt = Receipt(fingerprint=record.fingerprint, model_id=str(record.model_id), path=path,
                      sha256=hashlib.sha256(weights.data).hexdigest(), layout_id=layout.layout_id,
                      n_snapshots=int(weights.shape[0]), status=record.status, **trace_fields)
    meta = (f'{{"layout":{_layout_json(layout)},"record":{dumps(record.to_dict())},'
            f'"snapshots":{dumps(item.snapshots)}}}').encode()
    return receipt, staged_file.Section.of(record.fingerprint, receipt.to_dict(), meta, arrays)


def _write(path: Path, sections: list, durable: bool) -> None:
    with open(path, "wb") as handle:
        staged_file.write(handle, sections)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())


def _link(group: Path, final: Path, sections: list, durable: bool) -> None:
    """Give the group file the name ``final``, replacing an earlier file of that name."""
    if _linked(group, final):
        return
    tmp = final.with_name(f"{final.name}{_INCOMPLETE}-{secrets.token_hex(4)}")
    try:
        if not _linked(group, tmp):  # no hard links here: this model gets a file of its own
            _write(tmp, [s for s in sections if f"{s.fingerprint}{SUFFIX}" == final.name], durable)
        os.replace(tmp, final)  # atomic: readers see the old file, the new one, or none
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _linked(source: Path, name: Path) -> bool:
    """Hard-link ``name`` to ``source``; False when ``name`` exists or hard links fail here."""
    try:
        os.link(source, name)
        return True
    except OSError:  # FileExistsError, or a filesystem without (more) hard links
        return False


def _read(staging: Path, fingerprint: str, *, meta: bool, arrays: bool) -> staged_file.Entry:
    path = staged_path(staging, fingerprint)
    try:
        return staged_file.read(path, fingerprint, meta=meta, arrays=arrays)
    except FileNotFoundError:
        raise StagingError(f"no complete staged model for fingerprint {fingerprint!r} in {staging}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None


def _staged_model(staging: Path, fingerprint: str, *, weights: bool, receipt: Receipt | None = None) -> StagedModel:
    """A staged model (weights checked against ``receipt``, by default the file's)."""
    path = staged_path(staging, fingerprint)
    entry = _read(staging, fingerprint, meta=True, arrays=weights)
    try:
        receipt = receipt or Receipt.from_dict(entry.head["receipt"], str(path))
        values = _checked_weights(path, entry.array("weights"), receipt) if weights else None
        record = StagedRecord.from_dict(entry.meta["record"], str(path))
        layout = _layout(receipt.layout_id, entry.meta["layout"])
    except (ValueError, KeyError, TypeError) as error:  # RecordError is a ValueError
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None
    return StagedModel(receipt=receipt, weights=values, snapshots=entry.meta["snapshots"], record=record,
                       layout=layout)


@functools.lru_cache(maxsize=64)
def _layout_json(layout: WeightLayout) -> str:
    # every model of a group shares its layout: encode it once
    return dumps(layout.to_records())


_LAYOUTS: dict[str, WeightLayout] = {}


def _layout(layout_id: str, records: list) -> WeightLayout:
    """The layout of a staged file's records, built once per layout id (its content hash)."""
    layout = _LAYOUTS.get(layout_id)
    if layout is None:
        layout = WeightLayout.from_records(records)
        if layout.layout_id != layout_id:
            raise ValueError(f"its layout records hash to {layout.layout_id}, not the receipt's {layout_id}")
        if len(_LAYOUTS) >= 64:
            _LAYOUTS.clear()
        _LAYOUTS[layout_id] = layout
    return layout


def _checked_weights(path: Path, weights: np.ndarray, receipt: Receipt) -> np.ndarray:
    digest = hashlib.sha256(weights.data).hexdigest()
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


def _check_inputs(record: StagedRecord, weights, snapshots, layout) -> None:
    fingerprint = record.fingerprint
    if record.layout_id != layout.layout_id:
        raise StagingError(f"record layout_id {record.layout_id!r} != layout's {layout.layout_id!r}")
    if weights.ndim != 2 or weights.shape[1] != layout.n_params:
        raise StagingError(f"weights of {fingerprint!r} have shape {weights.shape}; "
                           f"expected [n_snapshots, {layout.n_params}]")
    if weights.shape[0] != len(snapshots):
        raise StagingError(f"{weights.shape[0]} weight snapshots but {len(snapshots)} snapshot rows")
    ks = [int(s["k"]) for s in snapshots]
    if any(k < 0 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:])):
        raise StagingError(f"snapshot k of {fingerprint!r} must be distinct, >= 0 and ascending; got {ks}")


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
