"""Dense training traces in the store: staged inside the model's staged file, published as Zarr arrays.

Published layout, inside the Icechunk repository next to ``weights/<layout_id>`` and
written in the same commit::

    traces/<layout_id>/<tensor name>   float32 [model_row, step, size]
    traces/<layout_id>/_steps          float64 [model_row, step, 4]: step, epoch, lr, loss

``model_row`` is the model's row in ``weights/<layout_id>`` (``row`` in models.parquet).
Step index i is the model's i-th recorded point: 0 is the initialisation (step 0, epoch 0,
lr and loss NaN), then the values after every ``every``-th optimisation step (see
:mod:`weightzoo.core.traces`); ``n_trace_steps`` in models.parquet says how many points a
model has, and ``steps_per_epoch`` maps steps to epochs (the ``epoch`` column holds the
mapping per point). The step, epoch, lr and loss columns are folded into one ``_steps``
array (attribute ``columns``) so that a model's metadata is one chunk read.

Models of one layout may record different numbers of points (batch size, epochs): shorter
rows are NaN-padded. The step axis has fixed-length chunks, so a longer trace arriving later
grows the arrays in place (``resize``) and older rows keep their chunks, reading NaN past
their end; a tagged version keeps its own (shorter) array metadata. Each model's row is
written whole by the one publish that appends it (one writer per chunk). A model that did
not trace a tensor has no chunks in that tensor's array (reads as NaN).
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from weightzoo.core.traces import TRACE_COLUMNS, Trace

STEPS_ARRAY = "_steps"
CHUNK_BYTES = 1 << 20
MAX_CHUNK_STEPS = 16384
MIN_CHUNK_STEPS = 256
_TENSOR_PREFIX = "tensor:"


def traces_path(layout_id: str, name: str | None = None) -> str:
    """The group of a layout's traces, or the array of one traced tensor in it."""
    return f"traces/{layout_id}" if name is None else f"traces/{layout_id}/{name}"


def trace_arrays(trace: Trace, prefix: str = "") -> dict[str, np.ndarray]:
    """A trace as named arrays (keys start with ``prefix``), e.g. members of a staged model's file."""
    trace.check()
    arrays = {f"{_TENSOR_PREFIX}{name}": np.asarray(values, np.float32) for name, values in trace.tensors.items()}
    arrays.update(step=trace.step.astype(np.int64), epoch=trace.epoch.astype(np.int64),
                  lr=trace.lr.astype(np.float64), loss=trace.loss.astype(np.float64),
                  meta=np.array([trace.steps_per_epoch, trace.every], dtype=np.int64))
    return {f"{prefix}{key}": value for key, value in arrays.items()}


def trace_from_arrays(data, prefix: str = "") -> Trace:
    """The trace of :func:`trace_arrays` back from a mapping of names to arrays."""
    head = f"{prefix}{_TENSOR_PREFIX}"
    tensors = {key[len(head):]: data[key] for key in data if key.startswith(head)}
    steps_per_epoch, every = (int(v) for v in data[f"{prefix}meta"])
    return Trace(tensors=tensors, step=data[f"{prefix}step"], epoch=data[f"{prefix}epoch"], lr=data[f"{prefix}lr"],
                 loss=data[f"{prefix}loss"], steps_per_epoch=steps_per_epoch, every=every)


def prepare_trace_arrays(store, layout_id: str, sizes: dict[str, int], n_rows: int,
                         n_steps: int) -> dict[str, zarr.Array]:
    """The writable arrays of ``sizes`` (tensor name → values per point) plus ``_steps``,
    created or grown in place to at least ``n_rows`` rows and ``n_steps`` points."""
    arrays = {}
    for name, size in {**sizes, STEPS_ARRAY: len(TRACE_COLUMNS)}.items():
        array = open_trace_array(store, layout_id, name, "r+")
        if array is None:
            array = _create(store, layout_id, name, n_rows, n_steps, size)
        elif array.shape[2] != size:
            raise ValueError(f"{traces_path(layout_id, name)} holds {array.shape[2]} values per step; "
                             f"a staged trace of that tensor has {size}")
        wanted = (max(array.shape[0], n_rows), max(array.shape[1], n_steps), size)
        if wanted != array.shape:
            array.resize(wanted)
        arrays[name] = array
    return arrays


def write_trace_row(arrays: dict[str, zarr.Array], row: int, trace: Trace) -> None:
    """Write one model's trace as whole row ``row`` of its tensors' arrays and ``_steps``."""
    trace.check()
    for name, values in trace.tensors.items():
        arrays[name][row] = _padded(np.asarray(values, np.float32), arrays[name].shape[1:])
    columns = np.stack([np.asarray(getattr(trace, c), np.float64) for c in TRACE_COLUMNS], axis=1)
    arrays[STEPS_ARRAY][row] = _padded(columns, arrays[STEPS_ARRAY].shape[1:])


def read_trace_row(store, layout_id: str, row: int, n_points: int, tensors: list[str] | None) -> dict:
    """One model's trace: tensor name → float32 [n_points, size], plus ``step`` and
    ``epoch`` (int64) and ``lr`` and ``loss`` (float64) of length n_points.

    ``tensors`` None reads every traced tensor of the layout.
    """
    names = trace_tensor_names(store, layout_id) if tensors is None else list(tensors)
    result = {}
    for name in names:
        array = open_trace_array(store, layout_id, name, "r")
        if array is None:
            raise KeyError(f"no trace array {traces_path(layout_id, name)} in this version")
        result[name] = array[row, :n_points]
    steps = open_trace_array(store, layout_id, STEPS_ARRAY, "r")[row, :n_points]
    for index, column in enumerate(TRACE_COLUMNS):
        values = steps[:, index]
        result[column] = values.astype(np.int64) if column in ("step", "epoch") else values
    return result


def trace_tensor_names(store, layout_id: str) -> list[str]:
    """The traced tensors stored for a layout (empty when none)."""
    try:
        group = zarr.open_group(store, path=traces_path(layout_id), mode="r")
    except FileNotFoundError:
        return []
    return sorted(name for name in group.array_keys() if name != STEPS_ARRAY)


def _padded(values: np.ndarray, shape: tuple) -> np.ndarray:
    padded = np.full(shape, np.nan, dtype=values.dtype)
    padded[:values.shape[0]] = values
    return padded


def _chunk_steps(size: int, itemsize: int) -> int:
    return int(np.clip(CHUNK_BYTES // (itemsize * max(size, 1)), MIN_CHUNK_STEPS, MAX_CHUNK_STEPS))


def open_trace_array(store, layout_id: str, name: str, mode: str = "r") -> zarr.Array | None:
    """A layout's trace array of ``name`` (or ``_steps``), or None if there is none."""
    try:
        return zarr.open_array(store, path=traces_path(layout_id, name), mode=mode)
    except FileNotFoundError:
        return None


def _create(store, layout_id: str, name: str, n_rows: int, n_steps: int, size: int) -> zarr.Array:
    dtype = np.float64 if name == STEPS_ARRAY else np.float32
    attributes = {"layout_id": layout_id, "tensor": name}
    if name == STEPS_ARRAY:
        attributes = {"layout_id": layout_id, "columns": list(TRACE_COLUMNS)}
    return zarr.open_group(store, mode="a").create_array(
        traces_path(layout_id, name),
        shape=(n_rows, n_steps, size),
        chunks=(1, _chunk_steps(size, np.dtype(dtype).itemsize), size),
        dtype=dtype,
        fill_value=np.nan,
        compressors=[ZstdCodec(level=3), Crc32cCodec()],
        dimension_names=("model_row", "step", "value"),
        attributes=attributes,
    )
