"""The weight arrays in a zoo's Icechunk repository (opened by :class:`weightzoo.io.handle.ZooHandle`).

Arrays ``weights/<layout_id>`` are float32 ``[model_row, snapshot, param]`` with chunks
``(1, n_snapshot, n_param)``: one chunk per model row, so a row is written by exactly one
writer and read with one request. Codecs: bytes → zstd → crc32c; crc32c is applied last,
so any flipped byte in a stored chunk is detected before decompression. Missing snapshots
(a model with fewer snapshots than its array) are NaN.

Every chunk is stored as its own object under ``repo/chunks/`` (inline threshold 0, set when
the handle creates the repository): tiny networks would otherwise be inlined into Icechunk
manifests, which are rewritten on every commit.
"""

from __future__ import annotations

import re

import icechunk
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec


BRANCH = "main"
VERSION_PATTERN = re.compile(r"^v\d{4}$")
COPY_BLOCK_ROWS = 64


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


def prepare_weights_array(repo: icechunk.Repository, session: icechunk.Session, base_snapshot: str,
                          layout_id: str, n_snapshots: int, n_params: int) -> zarr.Array:
    """The writable array for a layout, created or regrown to hold ``n_snapshots`` per row.

    Chunk shapes cannot change in place, so growing the snapshot axis rewrites the array
    with wider chunks (copying rows from ``base_snapshot``); tagged versions keep their own
    chunks and are unaffected.
    """
    existing = open_weights_array(session.store, layout_id, mode="r+")
    if existing is not None and existing.shape[1] >= n_snapshots:
        _check_params(existing, layout_id, n_params)
        return existing
    n_rows = 0 if existing is None else existing.shape[0]
    if existing is not None:
        _check_params(existing, layout_id, n_params)
        del zarr.open_group(session.store, mode="r+")[weights_path(layout_id)]
    array = _create_array(session.store, layout_id, n_rows, max(1, n_snapshots), n_params)
    if n_rows:
        _copy_rows(repo, base_snapshot, layout_id, array)
    return array


def append_rows(array: zarr.Array, start_row: int, rows: list[np.ndarray]) -> None:
    """Write models' ``[n_snapshots, n_params]`` weights as rows ``start_row, start_row + 1, ...``.

    Short snapshot axes are NaN-padded. The region is whole chunks (full rows), so no chunk
    is read back or shared with another writer.
    """
    end = start_row + len(rows)
    if array.shape[0] < end:
        array.resize((end, array.shape[1], array.shape[2]))
    padded = np.full((len(rows),) + array.shape[1:], np.nan, dtype=np.float32)
    for index, weights in enumerate(rows):
        padded[index, :weights.shape[0]] = weights
    array[start_row:end] = padded


def _create_array(store, layout_id: str, n_rows: int, n_snapshots: int, n_params: int) -> zarr.Array:
    group = zarr.open_group(store, mode="a")
    return group.create_array(
        weights_path(layout_id),
        shape=(n_rows, n_snapshots, n_params),
        chunks=(1, n_snapshots, n_params),
        dtype="float32",
        fill_value=np.nan,
        compressors=[ZstdCodec(level=3), Crc32cCodec()],
        dimension_names=("model_row", "snapshot", "param"),
        attributes={"layout_id": layout_id},
    )


def _copy_rows(repo: icechunk.Repository, base_snapshot: str, layout_id: str, target: zarr.Array) -> None:
    source = open_weights_array(repo.readonly_session(snapshot_id=base_snapshot).store, layout_id)
    for start in range(0, source.shape[0], COPY_BLOCK_ROWS):
        block = source[start:start + COPY_BLOCK_ROWS]
        padded = np.full((block.shape[0],) + target.shape[1:], np.nan, dtype=np.float32)
        padded[:, :block.shape[1]] = block
        target[start:start + block.shape[0]] = padded


def _check_params(array: zarr.Array, layout_id: str, n_params: int) -> None:
    if array.shape[2] != n_params:
        raise ValueError(f"weights/{layout_id} has {array.shape[2]} params per snapshot; "
                         f"a staged model of that layout has {n_params}")
