"""The weight arrays in a zoo's Icechunk repository (opened by :class:`weightzoo.io.handle.ZooHandle`).

Arrays ``weights/<layout_id>`` are float32 ``[model_row, snapshot, param]`` in the sharded
layout of :mod:`weightzoo.io.shards`: shards of many model rows, one inner chunk (with its
crc32c) per (model, snapshot), so a snapshot selection fetches bytes in proportion to what it
asks for while a whole shard is one object. :class:`RowAppender` writes each publish's rows
from the next shard boundary, a whole shard at a time (one writer per shard, nothing read
back). Snapshots a model does not have are absent chunks and read as NaN.

Versions published before this layout hold one chunk per model row (bytes → zstd → crc32c);
they stay readable as they are (:mod:`weightzoo.io.weights`). The first publish that appends
to such an array rewrites it in the sharded layout (row numbers unchanged); the versions
already tagged keep their own arrays.

Every shard is stored as its own object under ``repo/chunks/`` (inline threshold 0, set when
the handle creates the repository): small shards would otherwise be inlined into Icechunk
manifests, which are rewritten on every commit.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor

import icechunk
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from weightzoo.io.shards import LAYOUT, ShardGeometry, encode_shard
from weightzoo.io.weights import WeightsReader

BRANCH = "main"
VERSION_PATTERN = re.compile(r"^v\d{4}$")
PLAIN_LAYOUT = "row-chunks/v0"  # the manifest's name of the layout before shards
WRITES_IN_FLIGHT = 2  # encoded shards waiting to be stored while the next is prepared


def weights_path(layout_id: str) -> str:
    """The array path of a layout's weights inside the repository."""
    return f"weights/{layout_id}"


def version_tags(repo: icechunk.Repository) -> list[str]:
    """Tags that name published versions (``vNNNN``), oldest first."""
    return sorted(tag for tag in repo.list_tags() if VERSION_PATTERN.match(tag))


def next_version_name(tags: list[str]) -> str:
    """The version name after the highest existing one."""
    last = max((int(tag[1:]) for tag in tags), default=0)
    return f"v{last + 1:04d}"


def root_snapshot_id(repo: icechunk.Repository) -> str:
    """The repository's initial (empty) snapshot."""
    *_, root = repo.ancestry(branch=BRANCH)
    return root.id


def open_weights_array(store, layout_id: str, mode: str = "r") -> zarr.Array | None:
    """A layout's weights array in a session's store, or None if the layout has none yet."""
    try:
        return zarr.open_array(store, path=weights_path(layout_id), mode=mode)
    except FileNotFoundError:
        return None


def array_layout(array: zarr.Array) -> dict:
    """What a manifest records about a weights array: its layout, shape and chunking."""
    geometry = ShardGeometry.of_array(array)
    if geometry is not None:
        return {**geometry.to_dict(), "shape": list(array.shape)}
    return {"layout": PLAIN_LAYOUT, "shape": list(array.shape), "chunks": list(array.chunks),
            "codecs": [codec.to_dict()["name"] for codec in array.metadata.codecs]}


def prepare_weights_array(repo: icechunk.Repository, session: icechunk.Session, base_snapshot: str,
                          layout_id: str, n_snapshots: int, n_params: int) -> zarr.Array:
    """The writable sharded array for a layout, holding at least ``n_snapshots`` per row.

    A new layout gets a new array; a sharded one grows its snapshot axis in place (new shard
    columns, nothing rewritten); an array of the plain layout (versions before shards) is
    rewritten in the sharded layout, its rows copied from ``base_snapshot`` at the same row
    numbers. Tagged versions keep their own arrays either way.
    """
    existing = open_weights_array(session.store, layout_id, mode="r+")
    if existing is None:
        return _create_array(session.store, layout_id, max(1, n_snapshots), n_params)
    if existing.shape[2] != n_params:
        raise ValueError(f"weights/{layout_id} has {existing.shape[2]} params per snapshot; "
                         f"a staged model of that layout has {n_params}")
    n_rows, n_snapshots = existing.shape[0], max(n_snapshots, existing.shape[1])
    if ShardGeometry.of_array(existing) is not None:
        if existing.shape[1] < n_snapshots:
            existing.resize((n_rows, n_snapshots, n_params))  # metadata only: no chunk is touched
        return existing
    del zarr.open_group(session.store, mode="r+")[weights_path(layout_id)]
    array = _create_array(session.store, layout_id, n_snapshots, n_params)
    _copy_rows(WeightsReader(open_weights_array(repo.readonly_session(snapshot_id=base_snapshot).store, layout_id)),
               array, n_rows)
    return array


class RowAppender:
    """Appends models' weights to a sharded array as consecutive rows, a whole shard at a time.

    The first row is the array's next shard boundary (:attr:`start`), so no shard already
    written is touched; the array is resized to hold ``n_rows`` more rows from there. A full
    shard is written in the background while the caller reads the next models; at most one
    shard's rows and :data:`WRITES_IN_FLIGHT` encoded shards are held in memory.
    :meth:`close` waits for every write and raises the first error.
    """

    def __init__(self, array: zarr.Array, n_rows: int) -> None:
        self.array = array
        self.geometry = ShardGeometry.of_array(array)
        if self.geometry is None:
            raise ValueError(f"{array.path} is not in the sharded layout {LAYOUT}")
        self.start = -(-array.shape[0] // self.geometry.rows) * self.geometry.rows
        array.resize((self.start + n_rows,) + array.shape[1:])
        self._rows: list[np.ndarray] = []
        self._next = self.start
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weightzoo-shards")
        self._writes: list[Future] = []

    def add(self, weights: np.ndarray) -> int:
        """Append one model's float32 ``[n_snapshots, n_params]``; return its row."""
        if weights.shape[0] > self.array.shape[1] or weights.shape[1] != self.array.shape[2]:
            raise ValueError(f"weights of shape {weights.shape} do not fit rows of {self.array.path} "
                             f"{self.array.shape[1:]}")
        if self._next >= self.array.shape[0]:
            raise ValueError(f"{self.array.path}: more rows than the {self.array.shape[0] - self.start} announced")
        self._rows.append(weights)
        self._next += 1
        if self._next % self.geometry.rows == 0:
            self._flush()
        return self._next - 1

    def close(self) -> None:
        """Write the last, partly filled shard; wait for every write (the first error is raised)."""
        try:
            self._flush()
            for write in self._writes:
                write.result()
        finally:
            self._writer.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "RowAppender":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:  # the caller failed: stop writing (the uncommitted session is thrown away)
            self._writer.shutdown(wait=True, cancel_futures=True)

    def _flush(self) -> None:
        if not self._rows:
            return
        shard = (self._next - 1) // self.geometry.rows
        n_columns = -(-max(w.shape[0] for w in self._rows) // self.geometry.snapshots)
        for column in range(n_columns):
            key = f"{self.array.store_path.path}/{self.array.metadata.encode_chunk_key((shard, column, 0))}"
            data = default_buffer_prototype().buffer.from_array_like(encode_shard(self.geometry, self._rows, column))
            while len(self._writes) >= WRITES_IN_FLIGHT:
                self._writes.pop(0).result()
            self._writes.append(self._writer.submit(sync, self.array.store_path.store.set(key, data)))
        self._rows = []


def _create_array(store, layout_id: str, n_snapshots: int, n_params: int) -> zarr.Array:
    geometry = ShardGeometry.choose(n_snapshots, n_params)
    codecs = [BytesCodec(endian="little"), Crc32cCodec()]
    return zarr.open_group(store, mode="a").create_array(
        weights_path(layout_id),
        shape=(0, n_snapshots, n_params),
        chunks=(geometry.rows, geometry.snapshots, n_params),  # the shard grid
        serializer=ShardingCodec(chunk_shape=(1, 1, n_params), codecs=codecs, index_codecs=codecs,
                                 index_location="start"),
        compressors=None,
        dtype="float32",
        fill_value=np.nan,
        dimension_names=("model_row", "snapshot", "param"),
        attributes={"layout_id": layout_id},
    )


def _copy_rows(source: WeightsReader, target: zarr.Array, n_rows: int) -> None:
    with RowAppender(target, n_rows) as appender:
        for start in range(0, n_rows, appender.geometry.rows):
            for weights in source.read(range(start, min(n_rows, start + appender.geometry.rows))):
                appender.add(weights)
