"""Publishing staged models as a new immutable version of a zoo.

Protocol (crash-safe; a version exists iff its Icechunk tag exists):

1. take the exclusive ``<zoo>/.publish.lock``;
2. the parent is the latest tagged version (when extending); new models are staged models
   whose model_id the latest version does not hold;
3. one Icechunk commit on ``main`` appends their weight rows (and the trace rows of models
   that recorded traces, see :mod:`weightzoo.io.trace_store`), with metadata
   ``{"weightzoo_version": "vNNNN", "models_digest": sha256 of the sorted new model_ids}``.
   A head commit with the same version and digest and no tag is a crashed earlier attempt:
   it is reused instead of appending the rows again. Any other untagged head commit is an
   abandoned attempt: ``main`` is reset to the latest tag first, so arrays hold no orphans;
4. tables and manifest go to ``versions/vNNNN.incomplete/`` and are renamed to ``vNNNN/``
   (in object storage, which has no rename, they are written straight to ``versions/vNNNN/``,
   overwriting a crashed attempt's leftovers: no tag names that version yet);
5. last, the tag ``vNNNN`` is created.

The zoo may be a local path or ``s3://bucket/prefix`` (:mod:`weightzoo.io.location`); staged
models are always read from a local folder (``staging_root``, default: the location's).
In object storage there is no publish lock: one publisher per zoo at a time.

Re-publishing with nothing new while extending returns the parent version's name and
publishes nothing. ``extend=False`` publishes only the given models (a retraction or a
fresh selection); models already stored keep their array rows.

``WEIGHTZOO_CRASH_AT`` (test-only) = ``after_commit`` | ``before_rename`` | ``before_tag``
raises SimulatedCrash at that point.

manifest.json::

    {"version": "v0002", "parent": "v0001" | null, "icechunk_snapshot_id": str,
     "created_at": UTC ISO-8601, "code_version": str, "message": str, "specs": [...],
     "split": {"seed": int, "fractions": [train, val, test]},
     "models_digest": str, "n_new_models": int,
     "counts": {"models": int, "snapshots": int, "by_status": {...}, "by_layout": {...}},
     "packages": {"python": str, "torch": str, "numpy": str, ...},
     "code": {...}, "environment": {"publish": {...}, "training": [...],
     "models_without_environment": int}, "fleets": [...],   (see weightzoo.io.environment)
     "source": {...}   (pulled zoos: where from, see weightzoo.io.pull)
     "tables": {"models.parquet": sha256, "snapshots.parquet": sha256, "layouts.parquet": sha256}}

The dataset card (``CARD.md`` and ``card/*.png``, :mod:`weightzoo.io.card`) is written into
the version's folder before the tag, so it is part of the atomic version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import icechunk
import pyarrow.parquet as pq

from weightzoo.io import store, tables, trace_store
from weightzoo.io.card import render_card, write_card
from weightzoo.io.errors import SimulatedCrash, StagingError
from weightzoo.io.location import ZooLocation, parse_location
from weightzoo.io.staging import find_staged, fsync_dir, load_staged, load_staged_traces, to_jsonable

CRASH_POINTS = ("after_commit", "before_rename", "before_tag")
WRITE_BLOCK_MODELS = 64


def publish_version(zoo_root, fingerprints: list[str], *, specs: list[dict], code_version: str,
                    extend: bool = True, split_seed: int = 0, split_fractions=(0.7, 0.15, 0.15),
                    message: str = "", staging_root=None, provenance: dict | None = None) -> str:
    """Publish staged models as a new version; return its name (or the parent's if nothing is new).

    ``staging_root``: the local folder whose ``staging/`` holds the models (default: the
    zoo's, see :meth:`ZooLocation.staging_root`). ``provenance``, when given, is recorded
    as the manifest's ``source`` (e.g. where a pulled zoo came from).
    """
    fractions = tables.check_fractions(split_fractions)
    location = parse_location(zoo_root)
    root = Path(staging_root) if staging_root is not None else location.staging_root()
    with store.publish_lock(location):
        repo = store.open_repository(location, create=True)
        tags = store.version_tags(repo)
        latest = tags[-1] if tags else None
        known = _read_version(location, latest)
        if extend and latest:
            _check_split_settings(known["manifest"], split_seed, fractions)
        receipts = _collect_receipts(root, fingerprints)
        known_ids = {row["model_id"] for row in known["models"]}
        new = sorted((r for r in receipts if r["model_id"] not in known_ids), key=lambda r: r["model_id"])
        if extend and latest and not new:
            return latest
        version = store.next_version_name(tags)
        base = repo.lookup_tag(latest) if latest else store.root_snapshot_id(repo)
        snapshot_id, rows = _commit_weights(root, repo, version, new, base)
        _crash_point("after_commit")
        keep = known_ids if extend else {r["model_id"] for r in receipts} & known_ids
        version_tables, records = _version_tables(root, known, keep, new, rows, version, split_seed, fractions)
        manifest = _manifest(version, latest if extend else None, snapshot_id, version_tables,
                             specs=specs, code_version=code_version, message=message,
                             split_seed=split_seed, fractions=fractions, new=new, records=records)
        if provenance is not None:
            manifest["source"] = to_jsonable(provenance)
        _write_version_dir(location, version, version_tables, manifest)
        _crash_point("before_tag")
        repo.create_tag(version, snapshot_id)
    return version


def models_digest(model_ids) -> str:
    """sha256 of the sorted model ids: identifies what one publish appends."""
    return hashlib.sha256("\n".join(sorted(model_ids)).encode()).hexdigest()


def _crash_point(name: str) -> None:
    # Test-only fault injection; see the module docstring.
    if os.environ.get("WEIGHTZOO_CRASH_AT") == name:
        raise SimulatedCrash(f"simulated crash at {name}")


def _read_version(location: ZooLocation, version: str | None) -> dict:
    if version is None:
        return {"manifest": None, "models": [], "snapshots": [], "layouts": []}
    folder = f"versions/{version}"
    return {"manifest": json.loads(location.read_bytes(f"{folder}/manifest.json")),
            "models": location.read_table(f"{folder}/models.parquet").to_pylist(),
            "snapshots": location.read_table(f"{folder}/snapshots.parquet").to_pylist(),
            "layouts": location.read_table(f"{folder}/layouts.parquet").to_pylist()}


def _check_split_settings(manifest: dict, split_seed: int, fractions) -> None:
    # Splits are canonical: extending with other settings would split new models differently.
    parent = manifest["split"]
    if parent["seed"] != split_seed or tuple(parent["fractions"]) != tuple(fractions):
        raise ValueError(f"version {manifest['version']} was split with seed {parent['seed']} and "
                         f"fractions {parent['fractions']}; extending it needs the same, got "
                         f"seed {split_seed} and fractions {list(fractions)}")


def _collect_receipts(root: Path, fingerprints) -> list[dict]:
    receipts, missing = {}, []
    for fingerprint in dict.fromkeys(fingerprints):
        receipt = find_staged(root, fingerprint)
        if receipt is None:
            missing.append(fingerprint)
        else:
            receipts.setdefault(receipt["model_id"], receipt)
    if missing:
        raise StagingError(f"{len(missing)} fingerprints are not staged under {root / 'staging'}: {missing[:10]}")
    return list(receipts.values())


def _commit_weights(root: Path, repo: icechunk.Repository, version: str, new: list[dict],
                    base: str) -> tuple[str, dict[str, int]]:
    """Append the new models' rows in one commit; return (snapshot id, model_id → row)."""
    digest = models_digest(r["model_id"] for r in new)
    head = repo.lookup_branch(store.BRANCH)
    head_meta = repo.lookup_snapshot(head).metadata or {}
    if head != base and head_meta.get("weightzoo_version") == version and head_meta.get("models_digest") == digest:
        return head, _recover_rows(repo, head, new)
    if head != base:
        repo.reset_branch(store.BRANCH, base)
    session = repo.writable_session(store.BRANCH)
    rows = {}
    for layout_id, group in _by_layout(new).items():
        rows.update(_write_layout_rows(root, repo, session, base, layout_id, group))
    if not session.has_uncommitted_changes:
        return base, rows
    snapshot_id = session.commit(f"weightzoo {version}: {len(new)} new models",
                                 metadata={"weightzoo_version": version, "models_digest": digest})
    return snapshot_id, rows


def _by_layout(new: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for receipt in new:
        groups.setdefault(receipt["layout_id"], []).append(receipt)
    return groups


def _write_layout_rows(root, repo, session, base, layout_id, group) -> dict[str, int]:
    first = load_staged(root, group[0]["fingerprint"], weights=False)
    n_snapshots = max(r["n_snapshots"] for r in group)
    array = store.prepare_weights_array(repo, session, base, layout_id, n_snapshots, first.layout.n_params)
    start, rows = array.shape[0], {}
    for offset in range(0, len(group), WRITE_BLOCK_MODELS):
        block = group[offset:offset + WRITE_BLOCK_MODELS]
        weights = [load_staged(root, r["fingerprint"]).weights for r in block]
        store.append_rows(array, start + offset, weights)
        rows.update({r["model_id"]: start + offset + i for i, r in enumerate(block)})
    traced = [r for r in group if r.get("n_trace_steps")]
    if traced:
        _write_layout_traces(root, session, first.layout, [(rows[r["model_id"]], r) for r in traced])
    return rows


def _write_layout_traces(root, session, layout, traced: list[tuple[int, dict]]) -> None:
    """Write traced models' traces as the rows their weights got; one model in memory at a time."""
    names = dict.fromkeys(name for _, receipt in traced for name in receipt["trace_tensors"])
    arrays = trace_store.prepare_trace_arrays(
        session.store, layout.layout_id, {name: layout.tensor(name).length for name in names},
        n_rows=1 + max(row for row, _ in traced), n_steps=max(r["n_trace_steps"] for _, r in traced))
    for row, receipt in traced:
        trace_store.write_trace_row(arrays, row, load_staged_traces(root, receipt["fingerprint"]))


def _recover_rows(repo, head: str, new: list[dict]) -> dict[str, int]:
    # The crashed attempt appended each layout's new models, in this same order, at the end.
    session = repo.readonly_session(snapshot_id=head)
    rows = {}
    for layout_id, group in _by_layout(new).items():
        end = store.open_weights_array(session.store, layout_id).shape[0]
        rows.update({r["model_id"]: end - len(group) + i for i, r in enumerate(group)})
    return rows


def _version_tables(root, known, keep, new, rows, version, split_seed, fractions) -> tuple[dict, list[dict]]:
    """The version's three tables, and the new models' staged records (read once, for the manifest too)."""
    models = [dict(row, split=_source_split(row) or tables.assign_split(row["model_id"], split_seed, fractions))
              for row in known["models"] if row["model_id"] in keep]
    snapshots = [row for row in known["snapshots"] if row["model_id"] in keep]
    layouts, records = {}, []
    for receipt in new:
        staged = load_staged(root, receipt["fingerprint"], weights=False)
        records.append(staged.record)
        model_id = receipt["model_id"]
        models.append(tables.model_row(staged.record, row=rows[model_id], n_snapshots=receipt["n_snapshots"],
                                       split=staged.record.get("split")
                                       or tables.assign_split(model_id, split_seed, fractions),
                                       version_added=version, n_trace_steps=receipt.get("n_trace_steps", 0),
                                       steps_per_epoch=receipt.get("steps_per_epoch")))
        snapshots.extend(tables.snapshot_rows(model_id, staged.snapshots))
        layouts.setdefault(staged.layout.layout_id, tables.layout_rows(staged.layout))
    used = {row["layout_id"] for row in models}
    layout_rows = [row for row in known["layouts"] if row["layout_id"] in used and row["layout_id"] not in layouts]
    layout_rows += [row for layout_id, rows_ in layouts.items() for row in rows_]
    layout_rows.sort(key=lambda r: (r["layout_id"], r["index"]))
    return {"models.parquet": tables.models_table(models),
            "snapshots.parquet": tables.snapshots_table(snapshots),
            "layouts.parquet": tables.layouts_table(layout_rows)}, records


def _source_split(row: dict) -> str | None:
    # An imported network keeps the split its source gave it (staged record["split"], kept
    # in training_json as "source_split" for later versions); the others are drawn by hash.
    return json.loads(row.get("training_json") or "{}").get("source_split")


def _manifest(version, parent, snapshot_id, version_tables, *, specs, code_version, message,
              split_seed, fractions, new, records) -> dict:
    from weightzoo.io import environment  # imports torch: only when a version is written

    models = version_tables["models.parquet"]
    # the training settings come from the staged records: they were captured where training ran
    reproduction = environment.training_summary(records, len(new))
    return {
        "version": version,
        "parent": parent,
        "icechunk_snapshot_id": snapshot_id,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "code_version": code_version,
        "message": message,
        "specs": to_jsonable(list(specs)),
        "split": {"seed": int(split_seed), "fractions": list(fractions)},
        "models_digest": models_digest(r["model_id"] for r in new),
        "n_new_models": len(new),
        "counts": {
            "models": models.num_rows,
            "snapshots": version_tables["snapshots.parquet"].num_rows,
            "by_status": dict(sorted(Counter(models.column("status").to_pylist()).items())),
            "by_layout": dict(sorted(Counter(models.column("layout_id").to_pylist()).items())),
        },
        "packages": environment.package_versions(),
        "code": environment.source_revision(),
        **reproduction,
        "tables": {},
    }



def _write_version_dir(location: ZooLocation, version: str, version_tables: dict, manifest: dict) -> None:
    if location.remote:
        return _write_version_objects(location, version, version_tables, manifest)
    versions = Path(location.path) / "versions"
    incomplete = versions / f"{version}.incomplete"
    final = versions / version
    shutil.rmtree(incomplete, ignore_errors=True)  # left by an earlier crash
    incomplete.mkdir(parents=True)
    for name, table in version_tables.items():
        pq.write_table(table, incomplete / name)
        manifest["tables"][name] = _fsync_and_hash(incomplete / name)
    (incomplete / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False))
    _fsync_and_hash(incomplete / "manifest.json")
    parent = manifest.get("parent")
    write_card(incomplete, version_tables, manifest, versions / parent if parent else None)
    _crash_point("before_rename")
    if final.exists():
        # No tag names it (the version name is new), so it is a crashed attempt's leftover.
        shutil.rmtree(final)
    os.rename(incomplete, final)
    fsync_dir(versions)


def _write_version_objects(location: ZooLocation, version: str, version_tables: dict, manifest: dict) -> None:
    # No rename in object storage: write in place; without its tag the version does not exist.
    folder = f"versions/{version}"
    location.delete_dir(folder)  # a crashed attempt's leftovers (the version name is new)
    for name, table in version_tables.items():
        manifest["tables"][name] = location.write_table(f"{folder}/{name}", table)
    parent = manifest.get("parent")
    parent_tables = ({name: location.read_table(f"versions/{parent}/{name}.parquet")
                      for name in ("models", "snapshots")} if parent else None)
    for name, data in render_card(version_tables, manifest, parent_tables).items():
        location.write_bytes(f"{folder}/{name}", data)
    _crash_point("before_rename")
    location.write_bytes(f"{folder}/manifest.json",
                         json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False).encode())


def _fsync_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        os.fsync(handle.fileno())
    return digest.hexdigest()

