"""The sharded layout of ``weights/<layout_id>``: shards of model rows, one inner chunk per snapshot.

An array ``float32 [model_row, snapshot, param]`` is a Zarr v3 array whose chunk grid is a
grid of *shards* of ``(rows, snapshots, n_params)`` — ``rows`` model rows and ``snapshots``
snapshots each — stored with Zarr's ``sharding_indexed`` codec. Inside a shard every
``(model row, snapshot)`` is its own inner chunk ``(1, 1, n_params)``, encoded ``bytes``
(little-endian) → ``crc32c``, and the shard starts with its index: one ``(offset, nbytes)``
uint64 pair per inner chunk in C order of ``(row, snapshot)`` (``2**64 - 1`` twice for an
absent chunk), encoded ``bytes`` → ``crc32c``. This is exactly the format Zarr's own sharding
codec reads, so plain ``zarr``/``icechunk`` readers read these arrays; weightzoo writes the
shard bytes itself (:func:`encode_shard`) because Zarr's per-inner-chunk codec pipeline is
several times slower.

Inside a shard the inner chunks are placed **snapshot-major**: snapshot 0 of every row of the
shard, then snapshot 1, ... So one snapshot of consecutive models is one contiguous byte range
(a selection of snapshots fetches bytes in proportion to the snapshots it asks for), a whole
shard is one object (whole-zoo reads fetch one object per shard), and one model's snapshots
are one range each. A snapshot a model does not have is an absent chunk (read as NaN). The
index comes first so that the entries of given rows sit at known offsets: a reader that needs
a few rows of a large shard reads only their entries (16 bytes per snapshot).

``rows`` is chosen when the array is created so that a shard holds about
:data:`SHARD_BYTES` (and its index at most :data:`MAX_INDEX_BYTES`); ``snapshots`` is the first publish's snapshot count (later models with
more snapshots add shard columns along the snapshot axis; nothing is rewritten). Each
publish starts its rows at a shard boundary, so no shard is ever written twice (one writer
per shard, no read-modify-write); the rows it skips stay empty and no model points at them.
"""

from __future__ import annotations

from dataclasses import dataclass

import google_crc32c
import numpy as np

LAYOUT = "row-shards/snapshot-chunks/v1"  # the manifest's name of this layout
SHARD_BYTES = 16 * 2**20  # target size of one shard object
MAX_INDEX_BYTES = 64 * 2**10  # bounds a shard's index (16 bytes per inner chunk) for tiny networks
ABSENT = np.uint64(2**64 - 1)
CRC_BYTES = 4


@dataclass(frozen=True)
class ShardGeometry:
    """How a sharded weights array is cut: ``rows`` × ``snapshots`` inner chunks of ``params`` values."""

    rows: int
    snapshots: int
    params: int

    @classmethod
    def choose(cls, n_snapshots: int, n_params: int) -> "ShardGeometry":
        """The geometry of a new array: about :data:`SHARD_BYTES` per shard and an index of at most
        :data:`MAX_INDEX_BYTES`, at least one row."""
        n_snapshots = max(1, n_snapshots)
        rows = min(SHARD_BYTES // (n_snapshots * (4 * n_params + CRC_BYTES)), MAX_INDEX_BYTES // (16 * n_snapshots))
        return cls(max(1, int(rows)), n_snapshots, n_params)

    @classmethod
    def of_array(cls, array) -> "ShardGeometry | None":
        """The geometry of ``array`` if it is stored in this layout, else None (e.g. one plain
        chunk per model row, the layout of versions published before it)."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

        codecs = array.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        sharding = codecs[0]
        inner = [type(c) for c in sharding.codecs]
        index = [type(c) for c in sharding.index_codecs]
        rows, snapshots, params = array.metadata.chunk_grid.chunk_shape
        little = all(c.endian is None or c.endian.value == "little"
                     for c in (*sharding.codecs, *sharding.index_codecs) if isinstance(c, BytesCodec))
        if (inner != [BytesCodec, Crc32cCodec] or index != [BytesCodec, Crc32cCodec] or not little
                or tuple(sharding.chunk_shape) != (1, 1, params) or sharding.index_location.value != "start"
                or array.dtype != np.float32):
            return None
        return cls(int(rows), int(snapshots), int(params))

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one stored inner chunk (one snapshot of one model and its crc32c)."""
        return 4 * self.params + CRC_BYTES

    @property
    def index_bytes(self) -> int:
        """Bytes of a shard's index (with its crc32c)."""
        return 16 * self.rows * self.snapshots + CRC_BYTES

    def position(self, row: int, k: int) -> tuple[tuple[int, int], int]:
        """(shard coordinates (i, j), position in that shard's index) of snapshot ``k`` of ``row``."""
        return (row // self.rows, k // self.snapshots), (row % self.rows) * self.snapshots + k % self.snapshots

    def entries_range(self, first_row: int, end_row: int) -> tuple[int, int]:
        """The byte range of the index entries of a shard's rows ``first_row`` to ``end_row`` (exclusive)."""
        return 16 * self.snapshots * first_row, 16 * self.snapshots * end_row

    def to_dict(self) -> dict:
        """What the manifest records about an array in this layout."""
        return {"layout": LAYOUT, "shard_rows": self.rows, "shard_snapshots": self.snapshots,
                "inner_chunk": [1, 1, self.params], "order": "snapshot-major", "codecs": ["bytes", "crc32c"],
                "index": "start", "dtype": "float32"}


def encode_shard(geometry: ShardGeometry, rows: list[np.ndarray], column: int) -> np.ndarray:
    """The bytes (uint8) of one shard: ``rows`` (each a model's float32 ``[n_snapshots, params]``,
    at most ``geometry.rows``) at the shard's first rows, snapshots ``column * snapshots`` on."""
    first, n = column * geometry.snapshots, len(rows)
    counts = np.array([min(geometry.snapshots, max(0, w.shape[0] - first)) for w in rows], np.int64)
    present = np.zeros((geometry.rows, geometry.snapshots), bool)
    present[:n] = np.arange(geometry.snapshots) < counts[:, None]
    ordinal = np.cumsum(present.T.reshape(-1)).reshape(geometry.snapshots, geometry.rows).T - 1  # snapshot-major
    out = np.empty(geometry.index_bytes + int(present.sum()) * geometry.chunk_bytes, np.uint8)
    body = out[geometry.index_bytes:].reshape(-1, geometry.chunk_bytes)
    values = body[:, :4 * geometry.params].view("<f4")
    if (counts == geometry.snapshots).all():  # every row has every snapshot: one strided copy
        stacked = np.stack([w[first:first + geometry.snapshots] for w in rows])
        values.reshape(geometry.snapshots, n, geometry.params)[:] = stacked.transpose(1, 0, 2)
    else:
        for r, kk in zip(*np.nonzero(present)):
            values[ordinal[r, kk]] = rows[r][first + kk]
    crcs = body[:, 4 * geometry.params:].view("<u4")
    for chunk in range(body.shape[0]):
        crcs[chunk, 0] = google_crc32c.value(values[chunk])
    index = out[:geometry.index_bytes - CRC_BYTES].view("<u8").reshape(-1, 2)
    index[:] = ABSENT
    flat = present.reshape(-1)
    index[flat, 0] = geometry.index_bytes + ordinal.reshape(-1)[flat].astype(np.uint64) * geometry.chunk_bytes
    index[flat, 1] = geometry.chunk_bytes
    out[geometry.index_bytes - CRC_BYTES:geometry.index_bytes] = np.frombuffer(
        _crc(out[:geometry.index_bytes - CRC_BYTES]), np.uint8)
    return out


def decode_index(geometry: ShardGeometry, data) -> np.ndarray:
    """A shard's index from its first :attr:`ShardGeometry.index_bytes` bytes: uint64
    ``[rows * snapshots, 2]`` (offset, nbytes); ValueError when its crc32c fails."""
    data = _bytes(data)
    if data.size != geometry.index_bytes:
        raise ValueError(f"shard index of {data.size} bytes; expected {geometry.index_bytes}")
    if _crc(data[:-CRC_BYTES]) != data[-CRC_BYTES:].tobytes():
        raise ValueError("shard index fails its crc32c checksum")
    return data[:-CRC_BYTES].view("<u8").reshape(-1, 2)


def decode_chunk(geometry: ShardGeometry, data) -> np.ndarray:
    """One inner chunk's float32 values; ValueError when its length or crc32c is wrong."""
    data = _bytes(data)
    if data.size != geometry.chunk_bytes:
        raise ValueError(f"inner chunk of {data.size} bytes; expected {geometry.chunk_bytes}")
    if _crc(data[:-CRC_BYTES]) != data[-CRC_BYTES:].tobytes():
        raise ValueError("inner chunk fails its crc32c checksum")
    return data[:-CRC_BYTES].view("<f4")


def decode_chunks(geometry: ShardGeometry, data: np.ndarray, start: int, offsets: np.ndarray,
                  lengths: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Many inner chunks at once: ``data`` holds a shard's bytes from byte ``start`` on; the
    chunks are at ``offsets`` (of the shard) with ``lengths``. Returns float32 ``[n, params]``
    (NaN where a chunk is bad) and {position in ``offsets``: why that chunk is bad}."""
    size, n = geometry.chunk_bytes, len(offsets)
    relative = offsets.astype(np.int64) - start
    fits = (lengths == size) & (relative >= 0) & (relative + size <= data.size)
    bad = {int(i): f"the shard index gives {int(lengths[i])} bytes at {int(offsets[i])}, not {size} bytes "
                   f"inside the shard" for i in np.flatnonzero(~fits)}
    relative = relative[fits]
    if relative.size and (relative % size == relative[0] % size).all():  # chunks on one grid: one gather
        first = int(relative[0] % size)
        stored = data[first:first + (data.size - first) // size * size].reshape(-1, size)[(relative - first) // size]
    else:
        stored = np.stack([data[r:r + size] for r in relative]) if relative.size else np.zeros((0, size), np.uint8)
    computed = np.fromiter((google_crc32c.value(chunk[:-CRC_BYTES]) for chunk in stored), np.uint32, len(stored))
    good = computed == stored[:, -CRC_BYTES:].copy().view("<u4").reshape(-1)
    values = np.full((n, geometry.params), np.nan, np.float32)
    where = np.flatnonzero(fits)
    values[where[good]] = stored[good, :-CRC_BYTES].view("<f4")
    bad.update({int(i): "inner chunk fails its crc32c checksum" for i in where[~good]})
    return values, bad


def _bytes(data) -> np.ndarray:
    # google_crc32c takes numpy arrays and bytes, not memoryviews
    return data if isinstance(data, np.ndarray) and data.dtype == np.uint8 else np.frombuffer(data, np.uint8)


def _crc(data) -> bytes:
    return int(google_crc32c.value(data)).to_bytes(CRC_BYTES, "little")
