"""Pulling a selection of a zoo (local or in object storage) into a new zoo of its own.

``pull_zoo(source, dest, where=..., snapshots="1:3")`` with ``source`` an opened version, ``dest``
a zoo handle and ``snapshots`` any form of :class:`weightzoo.core.snapshots.SnapshotChoice`:

1. the source version is read lazily: only the chunks of the selected models and snapshots are fetched;
2. write the pull's plan to ``<dest work folder>/.pull.json``; an unfinished pull into the same
   destination must be the same plan (re-run it to resume, or delete the staging folder);
3. stage each selected model under its fingerprint in the destination's local staging folder
   (:mod:`weightzoo.io.staging`: atomic per model), after checking that the staged weights'
   sha256 equals the sha256 of what was read; Icechunk's crc32c is checked on every chunk read.
   Models staged by an interrupted earlier run are not fetched again;
4. publish them as the destination's first version (the one publish), keeping model ids,
   fingerprints and splits, with the manifest's ``source`` naming the source location,
   version, snapshot id and selection;
5. read every published row back and compare its sha256 with the one read from the source;
   then delete the staged copies (they only serve resuming).

A snapshot's k is its identity: the chosen snapshots keep their k (``1:3`` keeps snapshots
k = 1 and 2, with their epoch, step and metrics; ``source.snapshots`` records the choice's
text, e.g. ``"1:3"``). Readers find snapshot k at its rank among the model's stored k
(:meth:`weightzoo.io.reader.Zoo.snapshot_ks`); studies that need the initialisation (k = 0,
epoch 0) refuse a slice without it. Dense traces are copied whole.
The destination may also be ``s3://...``: pulling a local zoo there publishes it to object storage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from weightzoo.core.traces import TRACE_COLUMNS, Trace
from weightzoo.errors import InputError, StagingError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.reader import Zoo, list_versions
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import find_staged, load_staged, stage_model, staged_path
from weightzoo.io.tables import RESERVED

PLAN_FILE = ".pull.json"


class PullError(InputError):
    """A pull that cannot go ahead as asked (destination not new, another unfinished pull)."""


def pull_zoo(zoo: Zoo, target: ZooHandle, *, where: str | None = None, snapshots=None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Copy the selected models of the opened version ``zoo`` into the new zoo ``target``; a report.

    Report: source, version, dest, dest_version, where, snapshots, n_models, n_copied,
    n_resumed, bytes_copied (float32 weights staged by this run), source_repo_bytes,
    dest_repo_bytes, checksums {model_id: sha256 of its float32 weights}.
    """
    target.check_destination("destination")
    selection = zoo.select(where, snapshots=snapshots, status=None)
    if not len(selection.models):
        raise PullError(f"--where {where!r} selects no model of {zoo.handle}@{zoo.version}")
    plan = _plan(zoo, where, selection.snapshots.text, list(selection.models["model_id"]))
    finished = _finished_pull(zoo, target, plan)
    if finished is not None:
        (target.work / PLAN_FILE).unlink(missing_ok=True)
        return finished
    _claim(target, plan)
    records = _source_records(zoo)
    trained = _training_records(zoo.manifest)
    checksums, counts = {}, {"copied": 0, "resumed": 0, "bytes_copied": 0}
    for model in selection.models.itertuples():
        row = dict(records[model.model_id], trained=trained.get(model.model_id, {}),
                   producer=zoo.manifest.code_version)
        ks = [int(k) for k in selection.snapshot_indices[model.model_id]]
        checksums[model.model_id] = _stage_one(zoo, target.staging, row, ks, counts)
        if progress:
            progress(f"{counts['copied'] + counts['resumed']}/{len(selection.models)} models staged")
    published = _publish(zoo, target, plan, list(selection.models["fingerprint"]))
    _verify(target, published, checksums)
    _clean_staging(target, list(selection.models["fingerprint"]))
    return _report(zoo, target, published, plan, checksums, counts)


def _plan(zoo: Zoo, where, snapshots: str, model_ids: list[str]) -> dict:
    local = zoo.location.local_path()
    where_from = str(local.resolve()) if local is not None else zoo.location.url
    return {"location": where_from, "version": zoo.version,
            "icechunk_snapshot_id": zoo.manifest.icechunk_snapshot_id, "where": where,
            "snapshots": snapshots,
            "model_ids": model_ids}


def _finished_pull(zoo: Zoo, target: ZooHandle, plan: dict) -> dict | None:
    """The report of an identical pull already published into ``target`` (re-running it is a no-op)."""
    if not target.exists():
        return None
    versions = list_versions(target)
    if not versions:
        return None
    done = target.open(versions[0]["version"])
    if len(versions) == 1 and done.manifest.source == plan:
        checksums = {mid: _sha256(done.weights(mid)) for mid in done.models["model_id"]}
        return _report(zoo, target, versions[0]["version"], plan, checksums,
                       {"copied": 0, "resumed": len(checksums), "bytes_copied": 0})
    raise PullError(f"{target} already holds version(s) {[v['version'] for v in versions]}; "
                    f"pull into a new location")


def _claim(target: ZooHandle, plan: dict) -> None:
    path = target.work / PLAN_FILE
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != plan:
            raise PullError(f"{target} has an unfinished pull of {earlier['location']}@{earlier['version']} "
                            f"(where={earlier['where']!r}, snapshots={earlier['snapshots']!r}); re-run that pull "
                            f"to finish it, or delete {path} and {target.staging}")
        return
    target.work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, sort_keys=True))


def _source_records(zoo: Zoo) -> dict[str, dict]:
    # Arrow rows keep ints as ints and nulls as None, so the pulled tables get the same types.
    rows = zoo.location.read_table(f"{zoo.folder}/models.parquet").to_pylist()
    snaps: dict[str, list[dict]] = {}
    for snap in zoo.location.read_table(f"{zoo.folder}/snapshots.parquet").to_pylist():
        snaps.setdefault(snap["model_id"], []).append(snap)
    return {row["model_id"]: dict(row, snapshot_rows=sorted(snaps.get(row["model_id"], []), key=lambda s: s["k"]))
            for row in rows}


def _training_records(manifest) -> dict[str, dict]:
    """model_id → the ``environment`` and ``fleet`` its training recorded, rebuilt from the
    source manifest, so the pulled version's manifest describes how its members were trained."""
    environments = [{k: v for k, v in env.items() if k != "n_models"}
                    for env in manifest.environment.get("training", [])]
    result: dict[str, dict] = {}
    for fleet in manifest.fleets:
        index = fleet.get("environment")
        for model_id in fleet["models"]:
            result[model_id] = {"fleet": {"trainer": fleet["trainer"], "models": list(fleet["models"])},
                                **({"environment": environments[index]} if index is not None else {})}
    return result


def _stage_one(zoo: Zoo, staging: Path, row: dict, ks: list[int], counts: dict) -> str:
    """Stage snapshots ``ks`` of one model, keeping their k (unless an earlier run did); return
    the sha256 of its staged weights."""
    fingerprint = row["fingerprint"]
    if find_staged(staging, fingerprint) is not None:
        counts["resumed"] += 1
        return _sha256(load_staged(staging, fingerprint).weights)  # checks the file's sha256 too
    weights = np.ascontiguousarray(zoo.weights(row["model_id"], ks))  # only these snapshots; crc32c checked
    digest = _sha256(weights)
    stage_model(staging, _record(row), weights=weights, snapshots=_snapshots(row, ks),
                layout=zoo.layout(row["layout_id"]), traces=_traces(zoo, row))
    staged = _sha256(load_staged(staging, fingerprint).weights)
    if staged != digest:
        raise StagingError(f"model {row['model_id']!r}: staged weights have sha256 {staged}, "
                           f"but {digest} was read from {zoo.location}@{zoo.version}")
    counts["copied"] += 1
    counts["bytes_copied"] += weights.nbytes
    return digest


def _record(row: dict) -> StagedRecord:
    hyper = {}
    for column, value in row.items():
        if column in RESERVED or column in ("snapshot_rows", "trained", "producer") or value is None:
            continue
        name = column[3:] if column.startswith("hp_") and column[3:] in RESERVED else column
        hyper[name] = value
    trained = row["trained"]
    return StagedRecord(model_id=row["model_id"], fingerprint=row["fingerprint"], status=row["status"],
                        message=row["message"] or "", hyperparameters=hyper, config=json.loads(row["config_json"]),
                        training=json.loads(row["training_json"] or "{}"), spec_name=row["spec_name"],
                        layout_id=row["layout_id"], n_params=row["n_params"], code_version=row["producer"],
                        environment=trained.get("environment"), fleet=trained.get("fleet"), split=row["split"])


def _snapshots(row: dict, ks: list[int]) -> list[dict]:
    by_k = {snap["k"]: snap for snap in row["snapshot_rows"]}
    return [dict(by_k.get(k, {}), k=k) for k in ks]


def _traces(zoo: Zoo, row: dict) -> Trace | None:
    if not row.get("n_trace_steps"):
        return None
    values = zoo.traces(row["model_id"])
    every = (json.loads(row["training_json"] or "{}").get("traces") or {}).get("every", 1)
    return Trace(tensors={name: array for name, array in values.items() if name not in TRACE_COLUMNS},
                 **{name: values[name] for name in TRACE_COLUMNS},
                 steps_per_epoch=int(row.get("steps_per_epoch") or 0), every=int(every))


def _publish(zoo: Zoo, target: ZooHandle, plan: dict, fingerprints: list[str]) -> str:
    return publish_version(target, PublishRequest(
        fingerprints=tuple(fingerprints), specs=tuple(zoo.manifest.specs), split=zoo.manifest.split,
        message=f"pull of {plan['location']}@{plan['version']}", source=plan)).version


def _verify(target: ZooHandle, version: str, checksums: dict[str, str]) -> None:
    pulled = target.open(version)
    for model_id, expected in checksums.items():
        found = _sha256(pulled.weights(model_id))
        if found != expected:
            raise StagingError(f"model {model_id!r} in {target}@{version} has weights sha256 {found}; "
                               f"{expected} was copied")


def _clean_staging(target: ZooHandle, fingerprints: list[str]) -> None:
    # Staged copies only serve resuming; once the version is verified they would double the disk used.
    for fingerprint in fingerprints:
        staged_path(target.staging, fingerprint).unlink(missing_ok=True)
    (target.work / PLAN_FILE).unlink(missing_ok=True)


def _report(zoo: Zoo | None, target: ZooHandle, version: str, plan: dict, checksums: dict, counts: dict) -> dict:
    source_bytes = zoo.location.total_bytes("repo") if zoo is not None else None
    return {"source": plan["location"], "version": plan["version"], "dest": target.url, "dest_version": version,
            "where": plan["where"], "snapshots": plan["snapshots"], "n_models": len(checksums),
            "n_copied": counts["copied"], "n_resumed": counts["resumed"], "bytes_copied": counts["bytes_copied"],
            "source_repo_bytes": source_bytes, "dest_repo_bytes": target.location.total_bytes("repo"),
            "checksums": checksums}


def _sha256(weights: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weights, dtype=np.float32).tobytes()).hexdigest()
