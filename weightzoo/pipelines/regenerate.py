"""Regeneration checks: retrain a random sample of a version's members from their recorded
configs and compare the new snapshots with the stored ones, bit for bit.

A member is retrained *with its whole recorded fleet*, in the recorded order, under the
recorded thread count and deterministic flags (the manifest's ``fleets`` and
``environment.training``, see :mod:`weightzoo.io.environment`): with dropout or augmentation
a fleet draws one random stream for all its models, so a member trained alone or in another
fleet gets other weights. Members of zoos published before fleets were recorded are trained
alone (reported as ``fleet_recorded: false``).

:func:`run_regeneration` is the recipe: it runs :func:`retrain` for every fleet on a runner
(in this process, or as Prefect tasks on Dask), then :func:`compare`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from weightzoo.core.fingerprint import CODE_VERSION, fingerprint
from weightzoo.core.sampling import ModelConfig, make_config
from weightzoo.core.spec import SpecError, load_spec
from weightzoo.errors import InputError, VersionNotFound
from weightzoo.io.environment import training_settings
from weightzoo.io.handle import ZooHandle
from weightzoo.io.records import Manifest
from weightzoo.io.staging import load_staged
from weightzoo.pipelines.build import TrainGroup, train_group
from weightzoo.pipelines.runner import Runner

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "gap")


class RegenerationError(InputError):
    """A regeneration that cannot be planned as asked (e.g. a sample larger than the version)."""


@dataclass(frozen=True)
class FleetJob:
    """One recorded fleet to retrain; ``members`` are the sampled models it regenerates."""

    group: TrainGroup
    model_ids: tuple[str, ...]  # stored ids, aligned with group.configs
    stored_fingerprints: tuple[str, ...]
    members: tuple[str, ...]
    trainer: str = "fleet"
    environment: dict | None = field(default=None, hash=False)
    recorded: bool = True


@dataclass(frozen=True)
class RegenerationPlan:
    """What to retrain for a sample of one version."""

    zoo: ZooHandle
    version: str
    members: tuple[str, ...]
    jobs: tuple[FleetJob, ...]

    def summary(self) -> dict:
        """A small description (what Prefect records of the plan)."""
        return {"zoo": self.zoo.url, "version": self.version, "members": list(self.members),
                "fleets": len(self.jobs), "models_to_train": self.n_models_trained}

    @property
    def n_models_trained(self) -> int:
        """Models retrained in total (whole fleets, not only the sampled members)."""
        return sum(len(job.model_ids) for job in self.jobs)


def choose_members(model_ids, sample: int, seed: int = 0) -> list[str]:
    """``sample`` distinct model ids drawn with ``numpy.random.default_rng(seed)``, sorted."""
    ids = sorted(set(model_ids))
    if sample < 1 or sample > len(ids):
        raise RegenerationError(f"--sample {sample}: choose between 1 and the version's {len(ids)} models")
    chosen = np.random.default_rng(seed).choice(len(ids), size=sample, replace=False)
    return sorted(ids[i] for i in chosen)


def plan_regeneration(handle: ZooHandle, version: str | None, sample: int, seed: int = 0) -> RegenerationPlan:
    """Choose the members and find each one's recorded fleet, environment and configs."""
    zoo = handle.open(version)
    members = choose_members(zoo.models["model_id"], sample, seed)
    catalog = _Catalog(handle, zoo)
    jobs: dict[tuple, dict] = {}
    for member in members:
        fleet, environment = catalog.fleet_of(member)
        ids = tuple(fleet["models"]) if fleet else (member,)
        job = jobs.setdefault(ids, {"fleet": fleet, "environment": environment, "members": []})
        job["members"].append(member)
    return RegenerationPlan(handle, zoo.version, tuple(members),
                            tuple(catalog.job(ids, **job) for ids, job in jobs.items()))


class _Catalog:
    """Rows, specs and fleets of a version and of the versions its models were added in."""

    def __init__(self, handle: ZooHandle, zoo) -> None:
        self.handle, self.zoo = handle, zoo
        self.rows = {row["model_id"]: row for row in zoo.models.to_dict("records")}
        self.manifests: dict[str, Manifest | None] = {zoo.version: zoo.manifest}

    def manifest(self, version: str) -> Manifest | None:
        """The manifest of ``version`` (None if this zoo never published it); loads its rows too."""
        if version not in self.manifests:
            try:
                added = self.handle.open(version)
            except VersionNotFound:  # e.g. a pulled zoo: its models were added in the source zoo
                self.manifests[version] = None
                return None
            self.manifests[version] = added.manifest
            for row in added.models.to_dict("records"):  # fleet members retracted later
                self.rows.setdefault(row["model_id"], row)
        return self.manifests[version]

    def fleet_of(self, model_id: str) -> tuple[dict | None, dict | None]:
        """The recorded fleet holding ``model_id`` and its training environment (None if unrecorded)."""
        manifest = self.manifest(self.rows[model_id]["version_added"])
        for fleet in manifest.fleets if manifest else []:
            if model_id in fleet["models"]:
                index = fleet.get("environment")
                envs = manifest.environment.get("training", [])
                return fleet, (envs[index] if index is not None and index < len(envs) else None)
        return None, None

    def job(self, ids: tuple[str, ...], *, fleet, environment, members) -> FleetJob:
        """The fleet ``ids`` as a job: its members' configs rebuilt from their rows."""
        missing = [i for i in ids if i not in self.rows]
        if missing:
            raise RegenerationError(f"fleet of {members[0]} lists models that no version's models.parquet "
                                    f"holds: {missing[:5]}")
        configs = tuple(self.config(self.rows[i]) for i in ids)
        key = fingerprint([c.fingerprint(CODE_VERSION) for c in configs])
        return FleetJob(TrainGroup(key, configs[0].spec_name, configs), ids,
                        tuple(self.rows[i]["fingerprint"] for i in ids), tuple(members),
                        trainer=fleet["trainer"] if fleet else "single", environment=environment,
                        recorded=fleet is not None)

    def config(self, row: dict) -> ModelConfig:
        """The model's config as recorded: config_json, training_json and its spec's dataset options."""
        added = self.manifest(row["version_added"])
        specs = {s["name"]: s for s in added.specs} if added else {}
        specs = specs or {s["name"]: s for s in self.zoo.manifest.specs}
        if row["spec_name"] not in specs:
            raise RegenerationError(f"model {row['model_id']}: spec {row['spec_name']!r} is not in the manifest "
                                    f"of {row['version_added']} (specs: {sorted(specs)})")
        try:
            spec = load_spec({**specs[row["spec_name"]], "training": json.loads(row["training_json"])})
        except (SpecError, ValueError) as error:
            raise RegenerationError(f"model {row['model_id']}: training_json: {error}") from None
        params = json.loads(row["config_json"])
        return make_config(spec, 0, params)  # the sampler's own constructor: same options, same id


def retrain(scratch, job: FleetJob, *, progress=None) -> list:
    """Retrain one fleet into its own folder of ``scratch`` under its recorded settings.

    ``progress`` receives one line per epoch. The folder is emptied first: after a retried
    task, members staged by the failed attempt would otherwise be skipped, and the rest would
    train as a smaller (different) fleet.
    """
    folder = job_folder(scratch, job)
    shutil.rmtree(folder, ignore_errors=True)
    with training_settings(job.environment):
        return train_group(folder, job.group, None, fleet=job.trainer == "fleet", progress=progress)


def job_folder(scratch, job: FleetJob) -> Path:
    """Where :func:`retrain` stages one fleet."""
    return Path(scratch) / f"fleet-{job.group.key[:16]}"


def compare_weights(stored: np.ndarray, regenerated: np.ndarray) -> dict:
    """Bit-for-bit equality and, where values differ, the largest absolute difference."""
    if stored.shape != regenerated.shape:
        return {"exact": False, "max_abs_diff": None, "n_values_differing": None,
                "shape": [list(stored.shape), list(regenerated.shape)]}
    a, b = np.ascontiguousarray(stored, np.float32), np.ascontiguousarray(regenerated, np.float32)
    differing = a.view(np.uint32) != b.view(np.uint32)  # bits, so NaN == NaN and -0.0 != 0.0
    finite = np.isfinite(a) & np.isfinite(b)
    diff = np.abs(a.astype(np.float64) - b)[finite]
    nan_mismatch = int((np.isnan(a) != np.isnan(b)).sum())
    return {"exact": not differing.any(), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "n_values_differing": int(differing.sum()), "nan_mismatch": nan_mismatch}


def compare_metrics(stored: pd.DataFrame, regenerated: list[dict]) -> dict:
    """Per metric, the largest absolute difference over the snapshots (None: nothing to compare)."""
    new = pd.DataFrame(regenerated).set_index("k")
    old = stored.set_index("k")
    result = {}
    for name in METRICS:
        if name not in old or name not in new:
            continue
        delta = (old[name].astype(float) - new[name].reindex(old.index).astype(float)).abs().dropna()
        result[name] = float(delta.max()) if len(delta) else None
    return result


def compare(plan: RegenerationPlan, scratch, *, progress=None) -> dict:
    """Compare every sampled member's regenerated snapshots with the stored ones; the report."""
    zoo = plan.zoo.open(plan.version)
    members = []
    for job in plan.jobs:
        for model_id in job.members:
            members.append(_compare_member(zoo, job, model_id, scratch))
    return report(plan, members)


def _compare_member(zoo, job: FleetJob, model_id: str, scratch) -> dict:
    index = job.model_ids.index(model_id)
    config = job.group.configs[index]
    staged = load_staged(job_folder(scratch, job), config.fingerprint(CODE_VERSION))
    stored_rows = zoo.snapshots[zoo.snapshots["model_id"] == model_id]
    regenerated, ks = staged.weights, zoo.snapshot_ks(model_id)
    if len(ks) != len(regenerated) and len(ks) and int(ks[-1]) < len(regenerated):
        regenerated = regenerated[ks]  # a pulled slice keeps its k: compare those snapshots of the rerun
    weights = compare_weights(zoo.weights(model_id), regenerated)
    return {"model_id": model_id, **weights, "metrics_max_abs_diff": compare_metrics(stored_rows, staged.snapshots),
            "status": staged.record.status, "stored_status": zoo.models.set_index("model_id").at[model_id, "status"],
            "config_matches_fingerprint": config.fingerprint(CODE_VERSION) == job.stored_fingerprints[index],
            "fleet_size": len(job.model_ids), "fleet_recorded": job.recorded, "trainer": job.trainer,
            "torch_threads": (job.environment or {}).get("torch_threads")}


def report(plan: RegenerationPlan, members: list[dict]) -> dict:
    """Totals over the members: how many match bit for bit, the largest differences."""
    diffs = [m["max_abs_diff"] for m in members if m["max_abs_diff"] is not None]
    metric_names = sorted({name for m in members for name in m["metrics_max_abs_diff"]})
    metrics = {name: max((m["metrics_max_abs_diff"].get(name) or 0.0 for m in members), default=0.0)
               for name in metric_names}
    n_exact = sum(m["exact"] for m in members)
    return {"zoo": plan.zoo.url, "version": plan.version, "n_members": len(members), "n_exact": n_exact,
            "all_exact": n_exact == len(members), "max_abs_diff": max(diffs, default=0.0),
            "metrics_max_abs_diff": metrics, "n_fleets": len(plan.jobs),
            "n_models_trained": plan.n_models_trained, "members": sorted(members, key=lambda m: m["model_id"])}


def run_regeneration(plan: RegenerationPlan, runner: Runner, scratch=None) -> dict:
    """The regeneration recipe: retrain every fleet of ``plan`` on ``runner`` into a fresh
    scratch folder (inside ``scratch``, kept; else a temporary one, removed), then compare.
    Nothing is cached: the point is to train again."""
    with scratch_directory(plan.zoo, scratch) as folder:
        for job in plan.jobs:
            for _ in runner.map(retrain, [(str(folder), job)], device=job.group.configs[0].training.device):
                pass
        return runner.call(compare, plan, str(folder))


def check_scratch(zoo: ZooHandle, scratch) -> None:
    """Refuse a scratch directory inside the zoo: a regeneration must not touch what it checks."""
    if scratch is not None:
        from weightzoo.io.location import check_local_destination

        check_local_destination(scratch, "--scratch")
    inside = [folder for folder in (zoo.location.local_path(), zoo.work) if folder is not None]
    if scratch is not None and any(Path(scratch).resolve().is_relative_to(f.resolve()) for f in inside):
        raise RegenerationError(f"--scratch {scratch}: choose a directory outside the zoo {zoo}")


@contextmanager
def scratch_directory(zoo: ZooHandle, parent=None) -> Iterator[Path]:
    """A fresh folder for retrained models: inside ``parent`` (kept afterwards) or a temporary
    one (removed); never inside the zoo."""
    check_scratch(zoo, parent)
    if parent is None:
        path = Path(tempfile.mkdtemp(prefix="weightzoo-regenerate-"))
    else:
        Path(parent).mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="regenerate-", dir=parent))
    try:
        yield path
    finally:
        if parent is None:
            shutil.rmtree(path, ignore_errors=True)


def regenerate_in_process(zoo, version: str | None = None, *, sample: int = 1, seed: int = 0,
                          scratch=None) -> dict:
    """Plan, retrain and compare in this process, without Prefect or Dask (notebooks, tests): the
    same plan and recipe as ``weightzoo regenerate``; the report."""
    from weightzoo.pipelines.runner import InProcessRunner

    plan = plan_regeneration(ZooHandle.at(zoo), version, sample, seed)
    return run_regeneration(plan, InProcessRunner(), scratch)
