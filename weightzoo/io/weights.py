"""Reading model rows of a ``weights/<layout_id>`` array, in whichever layout it was published.

- Sharded arrays (:mod:`weightzoo.io.shards`, every version published since that layout):
  :class:`WeightsReader` fetches only the inner chunks asked for — a whole shard in one
  request when a read needs every chunk of it; else what it needs of the shard's index (the
  whole index, its crc32c checked, when that adds at most :data:`INDEX_SHARE` to the read,
  else only the asked rows' entries; kept in a bounded cache) and then the chunks' byte
  ranges, adjacent chunks merged into one request. Every chunk's crc32c is checked; a chunk
  that fails is named by (model row, snapshot). ``weightzoo verify`` reads whole shards, so it
  also checks every index's crc32c.
- Arrays of one plain chunk per model row (bytes → zstd → crc32c, versions published before):
  whole rows through Zarr, the snapshots sliced in memory.

Requests run concurrently on Zarr's event loop; nothing else of Zarr's codec pipeline is used
for sharded arrays.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict

import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from weightzoo.io.shards import ABSENT, ShardGeometry, decode_chunks, decode_index

INDEX_CACHE_BYTES = 16 * 2**20  # shard indexes kept per reader
INDEX_SHARE = 0.25  # a shard's whole index is read when it adds at most this share to a read


class ChunkErrors(Exception):
    """Stored chunks that could not be read: ``bad`` lists (model row, snapshot k or None for
    the whole row, reason)."""

    def __init__(self, bad: list[tuple[int, int | None, str]]) -> None:
        self.bad = bad
        first = bad[0]
        where = f"row {first[0]}" + ("" if first[1] is None else f" snapshot {first[1]}")
        super().__init__(f"{len(bad)} damaged chunk(s), first {where}: {first[2]}")


class WeightsReader:
    """Reads rows of one opened weights array (see the module docstring); holds a bounded
    cache of shard indexes, so keep one per array and process."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape: tuple[int, int, int] = array.shape  # a read-only session's array does not change
        self.geometry = ShardGeometry.of_array(array)
        self.bytes_fetched = 0  # bytes fetched by sharded reads, for reports
        self._indexes: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # Dask threads and prefetch threads share a reader

    def read(self, rows, ks=None) -> list[np.ndarray]:
        """Per row of ``rows``: float32 ``[len(ks[i]), params]`` (``ks`` None: every snapshot of the
        array). Snapshots that were never stored are NaN. ChunkErrors names every bad chunk."""
        rows = [int(r) for r in rows]
        every = list(range(self.shape[1]))
        ks = [every] * len(rows) if ks is None else [[int(k) for k in k_list] for k_list in ks]
        if self.geometry is None:
            return self._read_rows(rows, ks)
        out = [np.full((len(k_list), self.shape[2]), np.nan, np.float32) for k_list in ks]
        bad = self._read_sharded([(p, slot, row, k) for p, (row, k_list) in enumerate(zip(rows, ks))
                                  for slot, k in enumerate(k_list)], out)
        if bad:
            raise ChunkErrors(bad)
        return out

    def check(self, rows, n_snapshots) -> tuple[list[tuple[int, int | None, str]], int]:
        """Read every stored snapshot of ``rows`` to check it; (bad chunks, float32 bytes decoded). A
        sharded row missing one of its first ``n_snapshots[i]`` snapshots is bad too."""
        rows = [int(r) for r in rows]
        if self.geometry is None:
            try:
                values = self._read_rows(rows, [list(range(self.shape[1]))] * len(rows))
                return [], sum(v.nbytes for v in values)
            except ChunkErrors as error:
                return error.bad, 0
        wanted = [(p, k, row, k) for p, row in enumerate(rows) for k in range(self.shape[1])]
        out = [np.full((self.shape[1], self.shape[2]), np.nan, np.float32) for _ in rows]
        present = [np.zeros(self.shape[1], bool) for _ in rows]
        bad = self._read_sharded(wanted, out, present)
        failed = {(row, k) for row, k, _ in bad}
        bad += [(row, k, "no chunk stored for this snapshot") for p, (row, n) in enumerate(zip(rows, n_snapshots))
                for k in range(int(n)) if not present[p][k] and (row, k) not in failed]
        decoded = 4 * self.shape[2] * int(sum(mask.sum() for mask in present))
        return sorted(bad, key=lambda b: (b[0], -1 if b[1] is None else b[1])), decoded

    def _read_rows(self, rows: list[int], ks: list[list[int]]) -> list[np.ndarray]:
        """The plain layout: whole rows through Zarr (one chunk per row), snapshots sliced here."""
        try:
            if rows == list(range(rows[0], rows[0] + len(rows))):
                data = self.array[rows[0]:rows[0] + len(rows)]  # one request, chunks fetched concurrently
            else:
                data = self.array.get_orthogonal_selection((rows, slice(None), slice(None)))
        except Exception:  # noqa: BLE001 - codec/checksum errors come as several types: find the rows
            raise ChunkErrors(self._bad_rows(rows)) from None
        return [data[i][k_list] for i, k_list in enumerate(ks)]

    def _bad_rows(self, rows: list[int]) -> list[tuple[int, None, str]]:
        bad = []
        for row in rows:
            try:
                self.array[row]
            except Exception as error:  # noqa: BLE001
                text = str(error).strip().splitlines()
                bad.append((row, None, f"{type(error).__name__}: {text[0] if text else ''}"))
        return bad or [(rows[0], None, "the read failed, but every row reads alone")]

    def _read_sharded(self, wanted, out, present=None) -> list[tuple[int, int, str]]:
        """Fill ``out[p][slot]`` for each (p, slot, row, k) of ``wanted``; the bad chunks."""
        by_shard: dict[tuple[int, int], list] = {}
        for p, slot, row, k in wanted:
            if 0 <= row < self.shape[0] and 0 <= k < self.shape[1]:
                shard, position = self.geometry.position(row, k)
                by_shard.setdefault(shard, []).append((position, p, slot, row, k))
        whole = [shard for shard, items in by_shard.items() if self._covers(shard, items)]
        partial = {shard: items for shard, items in by_shard.items() if shard not in whole}
        indexes = {shard: self._known(shard) for shard in partial}
        lookups = [(shard, a, b) for shard, items in partial.items() for a, b in self._index_needed(indexes[shard], items)]
        fetched = self._fetch([(self._key(s), None) for s in whole]
                              + [(self._key(s), RangeByteRequest(a, b)) for s, a, b in lookups])
        bad = []
        for shard, data in zip(whole, fetched):
            bad += self._decode_whole(shard, data, by_shard[shard], out, present)
        for (shard, start, end), data in zip(lookups, fetched[len(whole):]):
            try:
                self._learn(indexes[shard], start, end, data)
            except Exception as error:  # noqa: BLE001 - a failed fetch (IcechunkError, OSError) or a bad index
                if shard in partial:
                    bad += _all_bad(partial.pop(shard), error)
        return bad + self._read_ranges({s: (indexes[s], items) for s, items in partial.items()}, out, present)

    def _covers(self, shard: tuple[int, int], items: list) -> bool:
        """Whether ``items`` ask for every chunk of the shard inside the array's shape."""
        i, j = shard
        rows = min(self.geometry.rows, self.shape[0] - i * self.geometry.rows)
        snapshots = min(self.geometry.snapshots, self.shape[1] - j * self.geometry.snapshots)
        return len({item[0] for item in items}) == rows * snapshots

    def _known(self, shard) -> "_Index":
        """What this reader knows of a shard's index (a fresh, empty one when nothing)."""
        with self._lock:
            known = self._indexes.pop(shard, None) or _Index(self.geometry)
            self._indexes[shard] = known  # the most recently used last
            while len(self._indexes) > max(1, INDEX_CACHE_BYTES // self.geometry.index_bytes):
                self._indexes.popitem(last=False)
        return known

    def _index_needed(self, known: "_Index", items) -> list[tuple[int, int]]:
        """Byte ranges of a shard's index still to fetch for ``items``: the whole index (its
        crc32c checked) when it is small next to the chunks asked for, else the asked rows' entries."""
        rows = sorted({position // self.geometry.snapshots for position, *_ in items})
        if known.stored is False or known.rows[rows].all():
            return []
        if self.geometry.index_bytes <= INDEX_SHARE * len(items) * self.geometry.chunk_bytes:
            return [(0, self.geometry.index_bytes)]
        return [self.geometry.entries_range(first, end) for first, end in _runs(rows)]

    def _learn(self, known: "_Index", start: int, end: int, data) -> None:
        """Keep fetched index bytes (the whole index, crc32c checked, or some rows' entries)."""
        if isinstance(data, Exception):
            raise data
        if data is None:
            known.stored = False
        elif (start, end) == (0, self.geometry.index_bytes):
            known.entries[:] = decode_index(self.geometry, data)
            known.rows[:] = True
        else:
            first = start // (16 * self.geometry.snapshots)
            entries = np.frombuffer(data, "<u8").reshape(-1, 2)
            known.entries[first * self.geometry.snapshots:][:len(entries)] = entries
            known.rows[first:first + len(entries) // self.geometry.snapshots] = True

    def _decode_whole(self, shard, data, items, out, present) -> list:
        if isinstance(data, Exception):
            return _all_bad(items, data)
        if data is None:
            return []  # no shard stored: every chunk is absent (NaN)
        known = self._known(shard)
        try:
            self._learn(known, 0, self.geometry.index_bytes, data[:self.geometry.index_bytes])
        except ValueError as error:
            return _all_bad(items, error)
        return self._place(known.entries, [(0, data)], items, out, present)

    def _read_ranges(self, shards: dict, out, present) -> list:
        """Fetch the byte ranges of the chunks asked for (adjacent chunks merged), then place them."""
        requests, owners = [], []
        for shard, (known, items) in shards.items():
            if known.stored is False:
                continue  # the shard was never stored: every chunk is absent
            spans = sorted({(int(known.entries[pos, 0]), int(known.entries[pos, 1])) for pos, *_ in items
                            if known.entries[pos, 0] != ABSENT})
            for start, end in _merged(spans):
                requests.append((self._key(shard), RangeByteRequest(start, end)))
                owners.append((shard, start))
        pieces: dict[tuple[int, int], list] = {}
        for (shard, start), data in zip(owners, self._fetch(requests)):
            pieces.setdefault(shard, []).append((start, data))
        bad = []
        for shard, (known, items) in shards.items():
            mine = pieces.get(shard, [])
            failed = [data for _, data in mine if isinstance(data, Exception) or data is None]
            if failed:
                bad += _all_bad(items, failed[0] if failed[0] is not None else ValueError("the shard is missing"))
            elif known.stored is not False:
                bad += self._place(known.entries, mine, items, out, present)
        return bad

    def _place(self, index, pieces: list[tuple[int, np.ndarray]], items, out, present) -> list:
        """Decode the asked-for chunks from the fetched ``pieces`` (start offset, bytes) into ``out``."""
        table = np.array([(position, p, slot, row, k) for position, p, slot, row, k in items], np.int64).reshape(-1, 5)
        offsets, lengths = index[table[:, 0], 0], index[table[:, 0], 1]
        table, offsets, lengths = table[offsets != ABSENT], offsets[offsets != ABSENT], lengths[offsets != ABSENT]
        starts = np.array([start for start, _ in pieces], np.int64)
        which = np.searchsorted(starts, offsets.astype(np.int64), side="right") - 1
        bad = []
        for piece, (start, data) in enumerate(pieces):
            mine = np.flatnonzero(which == piece)
            values, reasons = decode_chunks(self.geometry, data, start, offsets[mine], lengths[mine])
            bad += [(int(table[mine[i], 3]), int(table[mine[i], 4]), reason) for i, reason in reasons.items()]
            good = np.setdiff1d(np.arange(mine.size), list(reasons), assume_unique=True)
            rows = table[mine[good]]
            for p in np.unique(rows[:, 1]):  # one copy per output row
                chosen = rows[:, 1] == p
                out[p][rows[chosen, 2]] = values[good[chosen]]
                if present is not None:
                    present[p][rows[chosen, 2]] = True
        missing = np.flatnonzero(which < 0)
        bad += [(int(table[i, 3]), int(table[i, 4]), "the shard index points before the stored bytes") for i in missing]
        return bad

    def _fetch(self, requests: list) -> list:
        """Fetch (key, byte range or None) concurrently; each result is a uint8 array, None
        (no such object) or the exception raised."""
        if not requests:
            return []
        store, prototype = self.array.store_path.store, default_buffer_prototype()

        async def one(key, byte_range):
            buffer = await store.get(key, prototype, byte_range)
            return None if buffer is None else buffer.as_numpy_array()

        async def every():
            return await asyncio.gather(*(one(k, r) for k, r in requests), return_exceptions=True)

        results = sync(every())
        self.bytes_fetched += sum(len(r) for r in results if isinstance(r, np.ndarray))
        return results

    def _key(self, shard: tuple[int, int]) -> str:
        return f"{self.array.store_path.path}/{self.array.metadata.encode_chunk_key((shard[0], shard[1], 0))}"


class _Index:
    """What a reader knows of one shard's index: entries of some rows (or all), or that no shard
    is stored."""

    def __init__(self, geometry: ShardGeometry) -> None:
        self.entries = np.full((geometry.rows * geometry.snapshots, 2), ABSENT, np.uint64)
        self.rows = np.zeros(geometry.rows, bool)
        self.stored: bool | None = None  # False: no object for this shard


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, end) runs of consecutive values."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([value, value + 1])
    return [(first, end) for first, end in runs]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) spans sorted by offset as (start, end) ranges, adjacent ones joined."""
    ranges: list[list[int]] = []
    for offset, length in spans:
        if ranges and offset <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], offset + length)
        else:
            ranges.append([offset, offset + length])
    return [(start, end) for start, end in ranges]


def _all_bad(items, error) -> list:
    text = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {text[0] if text else ''}"
    return [(row, k, reason) for _, _, _, row, k in items]
