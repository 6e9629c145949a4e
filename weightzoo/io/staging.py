"""Staged training outputs: one directory per model fingerprint under ``<zoo>/staging/``.

A staged model is the cache of one training run, waiting to be published::

    staging/<fingerprint>/
        weights.npy      float32 [n_snapshots, n_params]
        snapshots.json   one dict per snapshot k (NaN stored as null)
        record.json      model_id, status, hyperparameters, config, training, ...
        layout.json      the WeightLayout records
        traces.npz       dense training traces, when the model recorded any (see io.trace_store)
        receipt.json     fingerprint, model_id, sha256 of weights.npy (and traces.npz), ...

The directory appears atomically (written as ``<fingerprint>.tmp-<random>/`` then renamed),
so a directory without the ``.tmp-`` suffix is complete. Deleting ``staging/`` only costs
retraining; published versions never read from it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace
from weightzoo.io.errors import StagingError
from weightzoo.io.trace_store import read_trace_npz, sha256_file, write_trace_npz

REQUIRED_RECORD_KEYS = (
    "model_id", "fingerprint", "status", "message", "hyperparameters", "config",
    "training", "spec_name", "layout_id", "n_params",
)
STATUSES = ("ok", "diverged", "failed")


@dataclass(frozen=True)
class StagedModel:
    """A staged model read back from disk, its weights checked against the receipt."""

    receipt: dict
    weights: np.ndarray | None
    snapshots: list[dict]
    record: dict
    layout: WeightLayout


def staging_dir(zoo_root) -> Path:
    """The ``staging/`` folder of a zoo."""
    return Path(zoo_root) / "staging"


def stage_model(zoo_root, *, fingerprint: str, weights: np.ndarray, snapshots: list[dict],
                record: dict, layout: WeightLayout, traces: Trace | None = None) -> dict:
    """Write one model's training outputs to ``staging/<fingerprint>/`` atomically.

    Returns the receipt: {fingerprint, model_id, path, sha256, layout_id, n_snapshots, status,
    n_trace_steps} and, with ``traces``, {trace_tensors, steps_per_epoch, traces_sha256}.
    Staging the same fingerprint again replaces the earlier directory.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    _check_inputs(fingerprint, weights, snapshots, record, layout)
    _check_traces(fingerprint, traces, layout)
    final = staging_dir(zoo_root) / fingerprint
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{fingerprint}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        receipt = _write_files(tmp, final, fingerprint, weights, snapshots, record, layout, traces)
        fsync_dir(tmp)
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return receipt


def find_staged(zoo_root, fingerprint: str) -> dict | None:
    """The receipt of a completely staged model, or None (in-progress tmp dirs do not count)."""
    path = staging_dir(zoo_root) / fingerprint / "receipt.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def load_staged(zoo_root, fingerprint: str, *, weights: bool = True) -> StagedModel:
    """Read a staged model; raise StagingError naming the file if weights.npy fails its sha256.

    ``weights=False`` reads only the small files (``StagedModel.weights`` is then None);
    the publisher uses it to plan a version before streaming weights block by block.
    """
    folder = staging_dir(zoo_root) / fingerprint
    receipt = find_staged(zoo_root, fingerprint)
    if receipt is None:
        raise StagingError(f"no complete staged model for fingerprint {fingerprint!r} in {folder.parent}")
    array = _read_weights(folder / "weights.npy", receipt) if weights else None
    layout = WeightLayout.from_records(json.loads((folder / "layout.json").read_text()))
    return StagedModel(
        receipt=receipt,
        weights=array,
        snapshots=json.loads((folder / "snapshots.json").read_text()),
        record=json.loads((folder / "record.json").read_text()),
        layout=layout,
    )


def load_staged_traces(zoo_root, fingerprint: str) -> Trace:
    """The staged traces of a model; StagingError if it has none or traces.npz fails its sha256."""
    receipt = find_staged(zoo_root, fingerprint)
    path = staging_dir(zoo_root) / fingerprint / "traces.npz"
    if receipt is None or not receipt.get("n_trace_steps"):
        raise StagingError(f"no staged traces for fingerprint {fingerprint!r} in {path.parent.parent}")
    digest = sha256_file(path)
    if digest != receipt["traces_sha256"]:
        raise StagingError(f"{path} is corrupt: sha256 {digest} does not match the receipt's "
                           f"{receipt['traces_sha256']}")
    return read_trace_npz(path)


def to_jsonable(value):
    """Convert numpy scalars/arrays and non-finite floats to strict-JSON values (NaN → None)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_weights(path: Path, receipt: dict) -> np.ndarray:
    digest = sha256_file(path)
    if digest != receipt["sha256"]:
        raise StagingError(f"{path} is corrupt: sha256 {digest} does not match the receipt's {receipt['sha256']}")
    return np.load(path, allow_pickle=False)


def _check_inputs(fingerprint, weights, snapshots, record, layout) -> None:
    missing = [key for key in REQUIRED_RECORD_KEYS if key not in record]
    if missing:
        raise StagingError(f"record for {fingerprint!r} lacks keys {missing}")
    if record["fingerprint"] != fingerprint:
        raise StagingError(f"record fingerprint {record['fingerprint']!r} != {fingerprint!r}")
    if record["status"] not in STATUSES:
        raise StagingError(f"status {record['status']!r} of {fingerprint!r} is not one of {STATUSES}")
    if record["layout_id"] != layout.layout_id:
        raise StagingError(f"record layout_id {record['layout_id']!r} != layout's {layout.layout_id!r}")
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


def _write_files(tmp: Path, final: Path, fingerprint, weights, snapshots, record, layout, traces) -> dict:
    with open(tmp / "weights.npy", "wb") as handle:
        np.save(handle, weights, allow_pickle=False)
        _flush(handle)
    trace_receipt = {"n_trace_steps": 0}
    if traces is not None:
        with open(tmp / "traces.npz", "wb") as handle:
            write_trace_npz(handle, traces)
            _flush(handle)
        trace_receipt = {"n_trace_steps": traces.n_points, "trace_tensors": list(traces.tensors),
                         "steps_per_epoch": traces.steps_per_epoch, "traces_sha256": sha256_file(tmp / "traces.npz")}
    _write_json(tmp / "snapshots.json", snapshots)
    _write_json(tmp / "record.json", record)
    _write_json(tmp / "layout.json", layout.to_records())
    receipt = {
        "fingerprint": fingerprint,
        "model_id": str(record["model_id"]),
        "path": str(final.resolve()),
        "sha256": sha256_file(tmp / "weights.npy"),
        "layout_id": layout.layout_id,
        "n_snapshots": int(weights.shape[0]),
        "status": record["status"],
        **trace_receipt,
    }
    # The receipt goes last: find_staged treats its presence as "complete".
    _write_json(tmp / "receipt.json", receipt)
    return receipt


def _write_json(path: Path, value) -> None:
    with open(path, "w") as handle:
        json.dump(to_jsonable(value), handle, sort_keys=True, allow_nan=False)
        _flush(handle)


def _flush(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, final: Path) -> None:
    # rename() cannot replace a non-empty directory; move the old one aside first so the
    # complete path never points at a half-written model.
    old = None
    if final.exists():
        old = final.parent / f"{final.name}.old-{secrets.token_hex(6)}"
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
