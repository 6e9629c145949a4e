"""Publishing staged models as a new immutable version of a zoo: the ONE publish.

Build, import, SANE sampling and pull all call :func:`publish_version` with a
:class:`PublishRequest`. Protocol (crash-safe; a version exists iff its Icechunk tag exists):

1. take the zoo's publish lock (:meth:`ZooHandle.publish_lock`);
2. the parent is the latest tagged version; new models are staged models whose model_id the
   parent does not hold. With ``keep_parent`` and nothing new, nothing is published;
3. one Icechunk commit on ``main`` appends their weight rows (and the trace rows of models
   that recorded traces, see :mod:`weightzoo.io.trace_store`), with metadata
   ``{"weightzoo_version": "vNNNN", "models_digest": sha256 of the sorted new model_ids}``.
   A head commit with the same version and digest and no tag is a crashed earlier attempt:
   it is reused instead of appending the rows again. Any other untagged head commit is an
   abandoned attempt: ``main`` is reset to the latest tag first, so arrays hold no orphans;
4. tables, dataset card and manifest are written to ``versions/vNNNN/`` through
   :func:`weightzoo.io.atomic.atomic_directory` (locally a rename; in object storage the
   manifest goes last — without its tag the version does not exist either way);
5. last, the tag ``vNNNN`` is created.

A model's split is the one its staged record fixes (imports that carry a source's split,
pulls), else a pure function of (model_id, the version's split settings).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import icechunk

from weightzoo import __version__
from weightzoo.errors import InputError, StagingError
from weightzoo.io import store, trace_store
from weightzoo.io.atomic import atomic_directory, sha256_file
from weightzoo.io.card import write_card
from weightzoo.io.handle import ZooHandle
from weightzoo.io import environment
from weightzoo.io.records import Manifest, Receipt, SplitSettings, to_jsonable
from weightzoo.io.staging import find_staged, iter_staged, load_staged, load_staged_traces
from weightzoo.io.version_tables import TABLE_NAMES, ParentRows, VersionTablesWriter

@dataclass(frozen=True)
class PublishRequest:
    """What to publish and why; see :func:`publish_version`."""

    fingerprints: tuple[str, ...]
    specs: tuple[dict, ...] = ()
    message: str = ""
    split: SplitSettings | None = None  # None: the parent's (the default for a first version)
    keep_parent: bool = True  # False: the version holds only these models (a retraction or selection)
    source: dict | None = None  # where the models came from (pulls)
    staging: Path | None = None  # where they are staged (default: the zoo's staging folder)


@dataclass(frozen=True)
class PublishResult:
    """The outcome: ``published`` is False when nothing was new (``version`` is then the parent)."""

    version: str
    parent: str | None
    n_models: int
    n_new: int
    published: bool
    seconds: dict = field(default_factory=dict, compare=False)  # weights (with the rows' metadata), commit, tables, card, tag


def publish_version(zoo: ZooHandle, request: PublishRequest) -> PublishResult:
    """Publish the requested staged models as the zoo's next version (see the module docstring)."""
    staging = Path(request.staging) if request.staging is not None else zoo.staging
    with zoo.publish_lock():
        repo = zoo.repository(create=True)
        tags = store.version_tags(repo)
        parent = _Parent.read(zoo, tags[-1] if tags else None)
        split = _split_settings(parent, request)
        receipts = _collect_receipts(staging, request.fingerprints)
        new = sorted((r for r in receipts if r.model_id not in parent.model_ids), key=lambda r: r.model_id)
        if request.keep_parent and parent.version and not new:
            return PublishResult(parent.version, parent.manifest.parent, parent.manifest.n_models, 0, False)
        version = store.next_version_name(tags)
        keep = None if request.keep_parent else {r.model_id for r in receipts} & parent.model_ids
        resplit = request.split if not request.keep_parent else None
        with atomic_directory(zoo.location, f"versions/{version}", replace=True, last="manifest.json",
                              clean_leftovers=True) as folder:
            # no tag names this version yet: whatever was there is a crashed attempt's leftover
            clock = _Clock()
            writer = VersionTablesWriter(folder, ParentRows(parent.files, keep, resplit), version, split)
            summary = environment.TrainingSummary()
            base = repo.lookup_tag(parent.version) if parent.version else store.root_snapshot_id(repo)
            snapshot_id = _commit_weights(staging, repo, version, new, base, writer, summary, clock)
            clock.lap("commit")
            counts = writer.finish()
            manifest = _manifest(version, parent.version if request.keep_parent else None, snapshot_id, counts,
                                 request, split, new, summary, _array_layouts(repo, snapshot_id, counts))
            manifest = manifest.with_tables({name: sha256_file(folder / name) for name in TABLE_NAMES})
            clock.lap("tables")
            _write_version_files(folder, manifest, parent)
            clock.lap("card")
        _tag(repo, version, snapshot_id)
        clock.lap("tag")
    return PublishResult(version, manifest.parent, manifest.n_models, len(new), True, clock.seconds)


def models_digest(model_ids) -> str:
    """sha256 of the sorted model ids: identifies what one publish appends."""
    return hashlib.sha256("\n".join(sorted(model_ids)).encode()).hexdigest()


@dataclass(frozen=True)
class _Parent:
    """The latest version: its manifest, model ids and table files (nothing for a first version)."""

    version: str | None
    manifest: Manifest | None
    model_ids: set
    files: dict  # table name -> pq.ParquetFile (read row group by row group)

    @classmethod
    def read(cls, zoo: ZooHandle, version: str | None) -> "_Parent":
        if version is None:
            return cls(None, None, set(), {})
        folder = f"versions/{version}"
        manifest = Manifest.from_json(zoo.location.read_bytes(f"{folder}/manifest.json"),
                                      zoo.location.join(f"{folder}/manifest.json"))
        files = {name: zoo.location.parquet_file(f"{folder}/{name}") for name in TABLE_NAMES}
        ids = set(files["models.parquet"].read(columns=["model_id"]).column("model_id").to_pylist())
        return cls(version, manifest, ids, files)


def _split_settings(parent: _Parent, request: PublishRequest) -> SplitSettings:
    # Splits are canonical: extending with other settings would split new models differently.
    if parent.manifest is None or not request.keep_parent:
        return request.split or SplitSettings()
    if request.split is not None and request.split != parent.manifest.split:
        raise InputError(f"version {parent.version} was split with seed {parent.manifest.split.seed} and "
                         f"fractions {list(parent.manifest.split.fractions)}; extending it needs the same, "
                         f"got seed {request.split.seed} and fractions {list(request.split.fractions)}")
    return parent.manifest.split


def _collect_receipts(staging: Path, fingerprints) -> list[Receipt]:
    receipts, missing = {}, []
    for fingerprint in dict.fromkeys(fingerprints):
        receipt = find_staged(staging, fingerprint)
        if receipt is None:
            missing.append(fingerprint)
        else:
            receipts.setdefault(receipt.model_id, receipt)
    if missing:
        raise StagingError(f"{len(missing)} fingerprints are not staged under {staging}: {missing[:10]}")
    return list(receipts.values())


def _commit_weights(staging: Path, repo: icechunk.Repository, version: str, new: list[Receipt], base: str,
                    writer: VersionTablesWriter, summary, clock: "_Clock") -> str:
    """Append the new models' rows in one commit, reading each staged file once (its weights go
    to the array, its metadata to ``writer`` and ``summary``); return the snapshot id."""
    digest = models_digest(r.model_id for r in new)
    head = repo.lookup_branch(store.BRANCH)
    head_meta = repo.lookup_snapshot(head).metadata or {}
    if head != base and head_meta.get("weightzoo_version") == version and head_meta.get("models_digest") == digest:
        # a crashed earlier attempt committed these rows already: only the tables are left to write
        for layout_id, group, start in _recovered_layouts(repo, head, new):
            for offset, receipt in enumerate(group):
                _add(writer, summary, receipt, load_staged(staging, receipt.fingerprint, weights=False), start + offset)
        return head
    if head != base:
        repo.reset_branch(store.BRANCH, base)
    session = repo.writable_session(store.BRANCH)
    for layout_id, group in _by_layout(new).items():
        _write_layout_rows(staging, repo, session, base, layout_id, group, writer, summary)
    clock.lap("weights")
    if not session.has_uncommitted_changes:
        return base
    return session.commit(f"weightzoo {version}: {len(new)} new models",
                          metadata={"weightzoo_version": version, "models_digest": digest})


def _add(writer: VersionTablesWriter, summary, receipt: Receipt, staged, row: int) -> None:
    writer.add(receipt, staged, row)
    summary.add(staged.record)


def _by_layout(new: list[Receipt]) -> dict[str, list[Receipt]]:
    groups: dict[str, list[Receipt]] = {}
    for receipt in new:
        groups.setdefault(receipt.layout_id, []).append(receipt)
    return groups


def _write_layout_rows(staging, repo, session, base, layout_id, group: list[Receipt], writer, summary) -> None:
    """Append one layout's new models, reading each staged file once (its weights to the array,
    its metadata to the tables); at most one shard of rows is held in memory."""
    first = load_staged(staging, group[0].fingerprint, weights=False)
    n_snapshots = max(r.n_snapshots for r in group)
    array = store.prepare_weights_array(repo, session, base, layout_id, n_snapshots, first.layout.n_params)
    with store.RowAppender(array, len(group)) as appender:
        for receipt, model in zip(group, iter_staged(staging, group)):
            _add(writer, summary, receipt, model, appender.add(model.weights))
    traced = [(appender.start + i, r) for i, r in enumerate(group) if r.n_trace_steps]
    if traced:
        _write_layout_traces(staging, session, first.layout, traced)


def _write_layout_traces(staging, session, layout, traced: list[tuple[int, Receipt]]) -> None:
    """Write traced models' traces as the rows their weights got; one model in memory at a time."""
    names = dict.fromkeys(name for _, receipt in traced for name in receipt.trace_tensors)
    arrays = trace_store.prepare_trace_arrays(
        session.store, layout.layout_id, {name: layout.tensor(name).length for name in names},
        n_rows=1 + max(row for row, _ in traced), n_steps=max(r.n_trace_steps for _, r in traced))
    for row, receipt in traced:
        trace_store.write_trace_row(arrays, row, load_staged_traces(staging, receipt.fingerprint))


def _recovered_layouts(repo, head: str, new: list[Receipt]):
    # The crashed attempt appended each layout's new models, in this same order, at the end.
    session = repo.readonly_session(snapshot_id=head)
    for layout_id, group in _by_layout(new).items():
        end = store.open_weights_array(session.store, layout_id).shape[0]
        yield layout_id, group, end - len(group)


def _array_layouts(repo, snapshot_id: str, counts) -> dict:
    """The manifest's ``arrays``: the layout, shape and chunking of each weights array the version uses."""
    session = repo.readonly_session(snapshot_id=snapshot_id)
    return {store.weights_path(layout_id): store.array_layout(store.open_weights_array(session.store, layout_id))
            for layout_id in sorted(counts.by_layout)}


def _manifest(version, parent, snapshot_id, counts, request: PublishRequest, split: SplitSettings,
              new: list[Receipt], summary, arrays: dict) -> Manifest:
    return Manifest(
        version=version, parent=parent, icechunk_snapshot_id=snapshot_id,
        created_at=datetime.now(timezone.utc).isoformat(),
        code_version=" / ".join([f"weightzoo {__version__}", *sorted(summary.producers)]),
        message=request.message, specs=to_jsonable(list(request.specs)), split=split,
        models_digest=models_digest(r.model_id for r in new), n_new_models=len(new), counts=counts.to_dict(),
        packages=environment.package_versions(), code=environment.source_revision(),
        # the training settings come from the staged records: captured where training ran
        **summary.result(len(new)),
        source=to_jsonable(request.source) if request.source is not None else None,
        tables={}, arrays=arrays,
    )


class _Clock:
    """Seconds per step of a publish, for :attr:`PublishResult.seconds`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 4)
        self._last = now


def _write_version_files(folder: Path, manifest: Manifest, parent: _Parent) -> None:
    """The dataset card and, last, the manifest (with the tables' checksums)."""
    parent_tables = ({"models": parent.files["models.parquet"], "snapshots": parent.files["snapshots.parquet"]}
                     if parent.files and manifest.parent else None)
    write_card(folder, {name: folder / name for name in TABLE_NAMES}, manifest, parent_tables)
    (folder / "manifest.json").write_bytes(manifest.to_json())


def _tag(repo: icechunk.Repository, version: str, snapshot_id: str) -> None:
    # the commit point: a version exists iff its tag does
    repo.create_tag(version, snapshot_id)
