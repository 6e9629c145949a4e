"""Staged models: one file per model fingerprint in a zoo's local staging folder.

A staged model is the cache of one training run (or one imported, sampled or pulled
network), waiting to be published. Staging is the ONE cache of a build: a model whose
fingerprint is staged is never trained again. ``staging`` below is the folder itself
(``ZooHandle.staging``, or a scratch folder for regeneration)::

    <staging>/<fingerprint>.wzs
        bytes 0-7     magic ``WZSTAGE1``
        bytes 8-15    two uint32 (little-endian): length of the head JSON, of the meta JSON
        head JSON     {"receipt": the Receipt (with the sha256 of the weights' bytes),
                       "arrays": {name: [dtype, shape, offset]}, "size": the file's length}
        meta JSON     {"layout": WeightLayout records, "record": the StagedRecord,
                       "snapshots": one dict per snapshot k (NaN as null)}
        arrays        raw little-endian bytes, each at a 64-byte aligned offset:
                      ``weights`` float32 [n_snapshots, n_params] and, when the model
                      recorded dense training traces, ``trace.*``

One file per model, written in one ``write`` and read in one ``read``: close to the cost of
``numpy.save`` of the same weights (an npz archive cost twice that to write and five times
to read; a folder of six files cost seven fsyncs). Finding a staged model reads only its
head. The file is written under a temporary name and renamed, so a ``<fingerprint>.wzs`` is
complete; its recorded size and the weights' sha256 catch a file cut short by a power cut.

Durability: ``stage_model(..., durable=True)`` fsyncs the file before the rename. A trainer
staging a whole group passes ``durable=False`` and calls :func:`sync_staging` once when the
group is staged (one filesystem sync per group, not per file). After a power cut a model
staged but not yet synced can be truncated; it then counts as not staged and is trained
again. Deleting the staging folder only costs retraining; published versions never read
from it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace
from weightzoo.errors import StagingError
from weightzoo.io.atomic import fsync_dir
from weightzoo.io.records import Receipt, StagedRecord, dumps
from weightzoo.io.trace_store import trace_arrays, trace_from_arrays

SUFFIX = ".wzs"
MAGIC = b"WZSTAGE1"
TRACE_PREFIX = "trace."
_LENGTHS = struct.Struct("<II")
_PREFIX = len(MAGIC) + _LENGTHS.size
_ALIGN = 64
_HEAD_READ = 1 << 12  # one read finds the head of an ordinary staged file


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


def stage_model(staging: Path, record: StagedRecord, *, weights: np.ndarray, snapshots: list[dict],
                layout: WeightLayout, traces: Trace | None = None, durable: bool = True) -> Receipt:
    """Write one model's outputs to ``<staging>/<fingerprint>.wzs`` atomically; return its receipt.

    ``durable=False`` leaves syncing to a later :func:`sync_staging` of the whole batch.
    Staging the same fingerprint again replaces the earlier file.
    """
    weights = np.ascontiguousarray(weights, dtype="<f4")
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
    receipt = Receipt(fingerprint=record.fingerprint, model_id=str(record.model_id), path=os.path.abspath(final),
                      sha256=hashlib.sha256(weights.data).hexdigest(), layout_id=layout.layout_id,
                      n_snapshots=int(weights.shape[0]), status=record.status, **trace_fields)
    meta = (f'{{"layout":{_layout_json(layout)},"record":{dumps(record.to_dict())},'
            f'"snapshots":{dumps(snapshots)}}}').encode()
    _write_atomically(final, _encode(receipt, meta, arrays), durable)
    return receipt


def find_staged(staging: Path, fingerprint: str) -> Receipt | None:
    """The receipt of a completely staged model, or None (also for a damaged or foreign file)."""
    path = staged_path(staging, fingerprint)
    try:
        with open(path, "rb") as handle:
            head = _read_head(handle, path)
            if os.fstat(handle.fileno()).st_size != head["size"]:
                return None  # cut short (or grown): not what was staged
        return Receipt.from_dict(head["receipt"], str(path))
    except (OSError, ValueError, KeyError, TypeError):  # missing, truncated, another format
        return None


def load_staged(staging: Path, fingerprint: str, *, weights: bool = True) -> StagedModel:
    """Read a staged model; StagingError names the file when it is missing or its weights fail
    their sha256. ``weights=False`` reads only the metadata (``StagedModel.weights`` is None)."""
    path = staged_path(staging, fingerprint)
    try:
        return _staged_model(path, *_read(path, arrays=weights))
    except FileNotFoundError:
        raise StagingError(f"no complete staged model for fingerprint {fingerprint!r} in {staging}") from None


def iter_staged(staging: Path, receipts: list[Receipt]) -> Iterator[StagedModel]:
    """The staged model (with weights) of each receipt, in order, each file read once; the weights
    are checked against the receipt's sha256. StagingError names a missing or damaged file."""
    for receipt in receipts:
        path = staged_path(staging, receipt.fingerprint)
        try:
            parts = _read(path, arrays=True)
        except FileNotFoundError:
            raise StagingError(f"no complete staged model for fingerprint {receipt.fingerprint!r} "
                               f"in {staging}") from None
        yield _staged_model(path, *parts, receipt=receipt)


def _staged_model(path: Path, head: dict, meta: dict, data, receipt: Receipt | None = None) -> StagedModel:
    """A staged model from its parsed parts (weights checked against ``receipt``, default the file's)."""
    try:
        receipt = receipt or Receipt.from_dict(head["receipt"], str(path))
        values = None if data is None else _checked_weights(path, _array(data, head, "weights"), receipt)
        record = StagedRecord.from_dict(meta["record"], str(path))
        layout = _layout(receipt.layout_id, meta["layout"])
    except (ValueError, KeyError, TypeError) as error:  # RecordError is a ValueError
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None
    return StagedModel(receipt=receipt, weights=values, snapshots=meta["snapshots"], record=record, layout=layout)


def load_staged_traces(staging: Path, fingerprint: str) -> Trace:
    """The staged traces of a model; StagingError if it has none or they fail their sha256."""
    path = staged_path(staging, fingerprint)
    receipt = find_staged(staging, fingerprint)
    if receipt is None or not receipt.n_trace_steps:
        raise StagingError(f"no staged traces for fingerprint {fingerprint!r} in {staging}")
    head, _, data = _read(path, arrays=True)
    try:
        arrays = {name: _array(data, head, name) for name in head["arrays"] if name.startswith(TRACE_PREFIX)}
        trace = trace_from_arrays(arrays, TRACE_PREFIX)
    except (OSError, ValueError, KeyError, TypeError) as error:
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


def _encode(receipt: Receipt, meta: bytes, arrays: dict) -> list:
    """The file's parts, in order: prefix, head, meta, padding, then each array's bytes."""
    directory, offset = {}, 0
    for name, values in arrays.items():
        directory[name] = [values.dtype.str, list(values.shape), offset]  # offset from the data's start
        offset += _aligned(values.nbytes)
    head = json.dumps({"receipt": receipt.to_dict(), "arrays": directory, "data_bytes": offset},
                      sort_keys=True, allow_nan=False).encode()
    parts = [MAGIC + _LENGTHS.pack(len(head), len(meta)), head, meta,
             bytes(_data_start(len(head), len(meta)) - _PREFIX - len(head) - len(meta))]
    for values in arrays.values():
        parts += [np.ascontiguousarray(values).view(np.uint8).reshape(-1), bytes(_aligned(values.nbytes) - values.nbytes)]
    return parts


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _data_start(head_length: int, meta_length: int) -> int:
    return _aligned(_PREFIX + head_length + meta_length)


def _read_head(handle, path: Path) -> dict:
    """The head of an open staged file, with ``size``: the file's length when complete."""
    first = handle.read(_HEAD_READ)
    if first[:len(MAGIC)] != MAGIC:
        raise ValueError(f"{path} is not a staged model (no {MAGIC!r})")
    head_length, meta_length = _LENGTHS.unpack_from(first, len(MAGIC))
    text = first[_PREFIX:_PREFIX + head_length]
    if len(text) < head_length:
        text += handle.read(head_length - len(text))
    head = json.loads(text)
    head["size"] = _data_start(head_length, meta_length) + head["data_bytes"]
    return head


def _read(path: Path, *, arrays: bool) -> tuple[dict, dict, memoryview | None]:
    """The head, the meta and (with ``arrays``) the arrays' bytes (writable, for numpy views);
    StagingError for a file that is not a complete staged model."""
    try:
        return _read_parts(path, arrays)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StagingError(f"{path} is damaged ({error}); delete it and run again to stage the model anew") from None


def _read_parts(path: Path, arrays: bool) -> tuple[dict, dict, memoryview | None]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = bytearray(size if arrays else min(size, _HEAD_READ))
        view = memoryview(data)
        if handle.readinto(view) != len(data):
            raise ValueError("the file changed while it was read")
        if bytes(view[:len(MAGIC)]) != MAGIC:
            raise ValueError(f"not a staged model (no {MAGIC!r})")
        head_length, meta_length = _LENGTHS.unpack_from(view, len(MAGIC))
        end = _PREFIX + head_length + meta_length
        if end > len(view):
            view = memoryview(bytes(view) + handle.read(end - len(view)))
    head = json.loads(bytes(view[_PREFIX:_PREFIX + head_length]))
    start = _data_start(head_length, meta_length)
    if start + head["data_bytes"] != size:
        raise ValueError(f"{size} bytes where {start + head['data_bytes']} were staged (cut short?)")
    return head, json.loads(bytes(view[_PREFIX + head_length:end])), view[start:] if arrays else None


def _array(data: memoryview, head: dict, name: str) -> np.ndarray:
    dtype, shape, offset = head["arrays"][name]
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)


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


def _write_atomically(final: Path, parts: list, durable: bool) -> None:
    tmp = final.with_name(f"{final.name}.incomplete-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(b"".join(parts))
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
