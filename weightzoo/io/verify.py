"""Checking a published version end to end: every table against its manifest checksum and
every stored chunk by decoding it.

Weights are stored in shards of model rows with one inner chunk per (model, snapshot), each
with its crc32c, and each shard's index with its own (:mod:`weightzoo.io.shards`); arrays of
versions published before shards hold one chunk per model row (bytes → zstd → crc32c).
Checking reads every chunk the version's models use, whole shards at a time, and checks every
checksum, so a flipped byte anywhere is found and named by model and snapshot. A model
missing a chunk for one of its snapshots is a problem too, and so is an array whose layout
differs from the one the manifest records. Trace arrays (one chunk per model row) are decoded
row by row. Nothing is written: verifying a zoo never changes it. The zoo may be local or in
object storage (tables are read through :mod:`weightzoo.io.location`).
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
from weightzoo.io.version_weights import snapshots_text
from weightzoo.io.weights import WeightsReader

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
    models_checked: int = 0
    chunks_checked: int = 0  # stored chunks decoded: one per (model, snapshot), per plain row, per trace row
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
        _check_chunks(repo.readonly_session(tag=version).store, version, manifest, models, report, progress)
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


def _check_chunks(zarr_store, version: str, manifest: Manifest, models: pd.DataFrame, report: VersionReport,
                  progress) -> None:
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
        _check_array_layout(version, manifest, layout_id, array, report)
        reader = WeightsReader(array)
        block_rows = reader.geometry.rows if reader.geometry else BLOCK_ROWS
        for start in range(0, len(group), block_rows):
            block = group.iloc[start:start + block_rows]
            _check_block(reader, f"weights/{layout_id}", version, block, report)
            done += len(block)
            if progress:
                progress(done, total)
    for row in traced.itertuples():
        _check_trace_row(zarr_store, version, row, report)
        done += 1
        if progress and (done % BLOCK_ROWS == 0 or done == total):
            progress(done, total)


def _check_array_layout(version: str, manifest: Manifest, layout_id: str, array, report: VersionReport) -> None:
    recorded = manifest.arrays.get(store.weights_path(layout_id))
    if recorded is not None and recorded != store.array_layout(array):
        report.problems.append(Problem(version, "manifest", f"versions/{version}/manifest.json",
                                       f"records {store.weights_path(layout_id)} as {recorded}, but the array "
                                       f"is {store.array_layout(array)}"))


def _check_block(reader: WeightsReader, path: str, version: str, block: pd.DataFrame, report: VersionReport) -> None:
    beyond = block[block["row"] >= reader.shape[0]]
    for model in beyond.itertuples():
        report.problems.append(_chunk_problem(version, path, reader, model, [(model.row, None, "")],
                                              f"row {model.row} is beyond the array's {reader.shape[0]} rows"))
    block = block[block["row"] < reader.shape[0]]
    if block.empty:
        return
    bad, nbytes = reader.check(block["row"], block["n_snapshots"])
    report.models_checked += len(block)
    report.chunks_checked += len(block) if reader.geometry is None else int(block["n_snapshots"].sum())
    report.bytes_read += nbytes
    for model in block[block["row"].isin({row for row, _, _ in bad})].itertuples():
        mine = [b for b in bad if b[0] == model.row]
        report.problems.append(_chunk_problem(version, path, reader, model, mine, mine[0][2]))


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


def _chunk_problem(version: str, path: str, reader: WeightsReader, model, bad: list, message: str) -> Problem:
    row = int(model.row)
    if reader.geometry is None:  # the plain layout: one chunk per model row
        where = f"{path} chunk c/{row}/0/0"
    else:
        k = next((k for _, k, _ in bad if k is not None), 0)
        where = f"{path} shard c/{'/'.join(str(c) for c in reader.geometry.position(row, k)[0])}/0"
    return Problem(version, "chunk", where, message, model_id=model.model_id,
                   snapshots=snapshots_text(bad, row, int(model.n_snapshots)))


def _traced(models: pd.DataFrame) -> pd.DataFrame:
    if "n_trace_steps" not in models.columns:
        return models.iloc[:0]
    return models[models["n_trace_steps"].fillna(0) > 0]


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
