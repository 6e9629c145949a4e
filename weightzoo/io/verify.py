"""Checking a published version end to end: every table against its manifest checksum and
every stored chunk by decoding it.

A chunk is one model row ``[snapshot, param]`` of ``weights/<layout_id>`` (or one row of a
trace array), stored as bytes → zstd → crc32c; decoding it checks the crc32c, so a flipped
byte anywhere in the chunk is found. Rows are read in blocks (one request each, chunks
fetched concurrently); a block that fails is re-read row by row to name the models whose
chunks are bad. Nothing is written: verifying a zoo never changes it. The zoo may be local
or in object storage (tables are read through :mod:`weightzoo.io.location`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from typing import Callable

import pandas as pd

from weightzoo.errors import VersionNotFound
from weightzoo.io import store, trace_store
from weightzoo.io.handle import ZooHandle
from weightzoo.io.location import ZooLocation
from weightzoo.io.records import Manifest

BLOCK_ROWS = 64
TABLES = ("models.parquet", "snapshots.parquet", "layouts.parquet")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a version: where it is and what is wrong."""

    version: str
    kind: str                 # "table", "manifest", "chunk" or "trace"
    file: str                 # a path under the zoo, or "weights/<layout_id>" chunk key
    message: str
    model_id: str | None = None
    snapshots: str | None = None  # the snapshots the bad chunk holds, e.g. "k=0..4"

    def __str__(self) -> str:
        where = f" model {self.model_id!r} ({self.snapshots})" if self.model_id else ""
        return f"{self.version}: {self.kind} {self.file}{where}: {self.message}"


@dataclass
class VersionReport:
    """What was checked in one version and the problems found."""

    version: str
    tables_checked: int = 0
    chunks_checked: int = 0
    bytes_read: int = 0
    problems: list[Problem] | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict (problems as dicts)."""
        result = asdict(self)
        result["ok"] = not self.problems
        return result


def versions_to_verify(zoo: ZooHandle, version: str | None, every: bool) -> list[str]:
    """The versions a verify run covers: the named one, every one, or the latest."""
    tags = zoo.version_tags()
    if version is not None:
        if version not in tags:
            raise VersionNotFound(f"version {version!r} is not published in {zoo}; "
                                  f"available: {', '.join(tags) or 'none'}")
        return [version]
    if not tags:
        raise VersionNotFound(f"{zoo} has no published versions yet")
    return tags if every else tags[-1:]


def verify_version(zoo: ZooHandle, version: str,
                   progress: Callable[[int, int], None] | None = None) -> VersionReport:
    """Check one version's manifest, table checksums and every chunk its models use.

    ``progress(done, total)`` is called after each block of chunks.
    """
    root, repo = zoo.location, zoo.repository()
    report = VersionReport(version, problems=[])
    manifest = _check_manifest(root, repo, version, report)
    if manifest is None:
        return report
    contents = _check_tables(root, version, manifest, report)
    models = _read_models(root, version, contents, report)
    if models is not None:
        _check_chunks(repo.readonly_session(tag=version).store, version, models, report, progress)
    return report


def _check_manifest(root: ZooLocation, repo, version: str, report: VersionReport) -> Manifest | None:
    relative = f"versions/{version}/manifest.json"
    try:
        manifest = Manifest.from_json(root.read_bytes(relative), relative)
    except (OSError, ValueError) as error:  # RecordError is a ValueError
        report.problems.append(Problem(version, "manifest", relative, f"unreadable: {error}"))
        return None
    tagged = repo.lookup_tag(version)
    if manifest.icechunk_snapshot_id != tagged:
        report.problems.append(Problem(version, "manifest", relative, f"names snapshot "
                                       f"{manifest.icechunk_snapshot_id} but tag {version} is {tagged}"))
    return manifest


def _check_tables(root: ZooLocation, version: str, manifest: Manifest, report: VersionReport) -> dict[str, bytes]:
    """Check each table's sha256; return the contents of those that could be read."""
    expected, contents = manifest.tables, {}
    for name in TABLES:
        relative = f"versions/{version}/{name}"
        report.tables_checked += 1
        if name not in expected:
            report.problems.append(Problem(version, "table", relative, "the manifest has no sha256 for it"))
        elif not root.exists(relative):
            report.problems.append(Problem(version, "table", relative, "missing"))
        elif (actual := hashlib.sha256(contents.setdefault(name, root.read_bytes(relative))).hexdigest()) \
                != expected[name]:
            report.problems.append(Problem(version, "table", relative, f"sha256 {actual[:16]}… does not match "
                                           f"the manifest's {expected[name][:16]}…"))
    return contents


def _read_models(root: ZooLocation, version: str, contents: dict[str, bytes], report: VersionReport):
    """models.parquet (from the bytes already read for its checksum, when they were), or None."""
    relative = f"versions/{version}/models.parquet"
    try:
        data = contents.get("models.parquet") or root.read_bytes(relative)
        return pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        report.problems.append(Problem(version, "table", relative,
                                       f"cannot be read, so no chunk was checked: {error}"))
        return None


def _check_chunks(zarr_store, version: str, models: pd.DataFrame, report: VersionReport, progress) -> None:
    traced = _traced(models)
    total, done = len(models) + len(traced), 0
    for layout_id, group in models.sort_values("row").groupby("layout_id", sort=True):
        array = store.open_weights_array(zarr_store, layout_id)
        if array is None:
            report.problems.append(Problem(version, "chunk", store.weights_path(layout_id),
                                           f"array not found at this version's snapshot (missing, or "
                                           f"its files under repo/ damaged); {len(group)} models use it"))
            done += len(group)
            continue
        for start in range(0, len(group), BLOCK_ROWS):
            block = group.iloc[start:start + BLOCK_ROWS]
            _check_block(array, f"weights/{layout_id}", version, block, report)
            done += len(block)
            if progress:
                progress(done, total)
    for row in traced.itertuples():
        _check_trace_row(zarr_store, version, row, report)
        done += 1
        if progress and (done % BLOCK_ROWS == 0 or done == total):
            progress(done, total)


def _check_block(array, path: str, version: str, block: pd.DataFrame, report: VersionReport) -> None:
    rows = [int(r) for r in block["row"]]
    if rows[-1] >= array.shape[0]:
        for model in block[block["row"] >= array.shape[0]].itertuples():
            report.problems.append(_chunk_problem(version, path, model, f"row {model.row} is beyond the "
                                                  f"array's {array.shape[0]} rows"))
        block = block[block["row"] < array.shape[0]]
        rows = [int(r) for r in block["row"]]
    if not rows:
        return
    try:
        values = array.get_orthogonal_selection((rows, slice(None), slice(None)))
        report.chunks_checked += len(rows)
        report.bytes_read += values.nbytes
        return
    except Exception:  # noqa: BLE001 - a bad chunk in the block: find which, row by row
        pass
    for model in block.itertuples():
        try:
            report.bytes_read += array[int(model.row)].nbytes
        except Exception as error:  # noqa: BLE001 - codec/checksum errors come as several types
            report.problems.append(_chunk_problem(version, path, model, _first_line(error)))
        report.chunks_checked += 1


def _check_trace_row(zarr_store, version: str, model, report: VersionReport) -> None:
    try:
        values = trace_store.read_trace_row(zarr_store, model.layout_id, int(model.row),
                                            int(model.n_trace_steps), None)
        report.bytes_read += sum(v.nbytes for v in values.values())
    except Exception as error:  # noqa: BLE001
        report.problems.append(Problem(version, "trace", trace_store.traces_path(model.layout_id),
                                       f"row {model.row}: {_first_line(error)}", model_id=model.model_id,
                                       snapshots=f"trace points 0..{int(model.n_trace_steps) - 1}"))
    report.chunks_checked += 1


def _chunk_problem(version: str, path: str, model, message: str) -> Problem:
    # One chunk is one model row holding all of its snapshots.
    snapshots = f"snapshots k=0..{int(model.n_snapshots) - 1}"
    return Problem(version, "chunk", f"{path} chunk c/{int(model.row)}/0/0", message,
                   model_id=model.model_id, snapshots=snapshots)


def _traced(models: pd.DataFrame) -> pd.DataFrame:
    if "n_trace_steps" not in models.columns:
        return models.iloc[:0]
    return models[models["n_trace_steps"].fillna(0) > 0]


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
