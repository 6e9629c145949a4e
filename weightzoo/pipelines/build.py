"""The build pipeline: plan (sample and group configs, check against the zoo) → train and
stage each group → publish.

Staging is the one cache: a member whose fingerprint is staged is never trained again, and
a member the latest version already holds is not trained at all. The plan is made once
(:func:`plan_build`, by the CLI or a flow's entry) and run by :func:`run_build` on any
:class:`~weightzoo.pipelines.runner.Runner`: in this process or as Prefect tasks on Dask.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from weightzoo.core.fingerprint import CODE_VERSION, fingerprint
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model, model_signature, structure_key
from weightzoo.core.sampling import ModelConfig, sample_configs
from weightzoo.core.spec import ZooSpec, check_model_count, load_spec
from weightzoo.core.traces import check_trace_tensors
from weightzoo.errors import InputError
from weightzoo.io.environment import training_environment
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, PublishResult, publish_version
from weightzoo.io.records import Receipt, SplitSettings, StagedRecord
from weightzoo.io.staging import StageItem, find_staged, stage_models, staged_fingerprints, sync_staging
from weightzoo.pipelines.runner import Runner
from weightzoo.train.fleet import train_fleet
from weightzoo.train.single import train_model
from weightzoo.train.tasks import deterministic_mode, set_threads

DEFAULT_GROUP_SIZE = 32


class BuildError(InputError):
    """A build that cannot go ahead as asked (e.g. adding models without ``--extend``)."""


@dataclass(frozen=True)
class TrainGroup:
    """Compatible models trained together as one fleet by one step; ``key`` identifies it."""

    key: str
    spec_name: str
    configs: tuple[ModelConfig, ...] = field(repr=False)
    layout_id: str = ""  # the members' layout (every member of a group has the same one)
    n_params: int = 0

    @property
    def fingerprints(self) -> list[str]:
        """The member models' fingerprints (their staging keys)."""
        return [c.fingerprint(CODE_VERSION) for c in self.configs]


@dataclass(frozen=True)
class BuildPlan:
    """What one build will do to one zoo; made once by :func:`plan_build`."""

    zoo: ZooHandle
    spec: ZooSpec
    groups: tuple[TrainGroup, ...] = field(repr=False)  # every group of the plan
    work: tuple[TrainGroup, ...] = field(repr=False)  # groups restricted to members not yet published
    parent: str | None  # the latest version when planned
    n_models: int
    n_published: int  # members the parent holds already
    n_staged: int  # new members staged by an earlier run (reused, not trained)
    extend: bool

    @property
    def n_new(self) -> int:
        """Members the next version adds."""
        return self.n_models - self.n_published

    @property
    def new_fingerprints(self) -> list[str]:
        """The fingerprints to publish."""
        return [fp for group in self.work for fp in group.fingerprints]

    def summary(self) -> dict:
        """A small description (what Prefect records of the plan, what ``--dry-run`` prints):
        counts, the layouts of the new models and the weight bytes they will store."""
        n_snapshots = len(self.spec.training.snapshot_epochs) + 1
        layouts: dict[str, dict] = {}
        for group in self.work:
            entry = layouts.setdefault(group.layout_id, {"models": 0, "n_params": group.n_params})
            entry["models"] += len(group.configs)
        return {"zoo": self.zoo.url, "spec": self.spec.name, "models": self.n_models, "groups": len(self.groups),
                "groups_to_run": len(self.work), "parent": self.parent, "already_published": self.n_published,
                "staged_earlier": self.n_staged, "to_train": self.n_new - self.n_staged, "new": self.n_new,
                "snapshots_per_model": n_snapshots, "layouts": layouts,
                "weight_bytes": sum(4 * n_snapshots * e["models"] * e["n_params"] for e in layouts.values()),
                "digest": group_digest(self.groups)}


@dataclass(frozen=True)
class BuildReport:
    """What a build did: the version, how many models were trained, reused and published."""

    zoo: str
    version: str | None
    published: bool
    n_models: int
    n_trained: int
    n_reused: int
    n_new: int
    seconds: dict  # stage → seconds (see run_build)
    started_at: float = 0.0

    def to_dict(self) -> dict:
        """The report as plain values."""
        return dict(self.__dict__)


def plan_build(zoo: ZooHandle, spec: ZooSpec | str | dict, n_models: int | None = None, *,
               max_group: int = DEFAULT_GROUP_SIZE, min_groups: int = 1, extend: bool = False) -> BuildPlan:
    """Sample configs, group the compatible ones and check them against the zoo.

    Every distinct architecture is built once here, so a config that cannot become a model
    fails before anything trains. Raises BuildError when the zoo holds a version and the
    plan would add models without ``extend``.
    """
    zoo.check_destination()  # a plain file or unwritable folder: one line before anything starts
    spec = load_spec(spec)
    check_model_count(n_models, "--models")
    configs = sample_configs(spec, n_models)
    groups = group_configs(configs, spec.name, max_group=max_group, min_groups=min_groups)
    parent = zoo.latest_version()
    published = set(zoo.open(parent).models["fingerprint"]) if parent else set()
    work = []
    for group in groups:
        todo = tuple(c for c in group.configs if c.fingerprint(CODE_VERSION) not in published)
        if todo:
            work.append(group if len(todo) == len(group.configs) else dataclasses.replace(group, configs=todo))
    n_new = sum(len(g.configs) for g in work)
    if parent and n_new and not extend:
        raise BuildError(f"{zoo} already holds version {parent}; this build would add {n_new} models: "
                         f"pass --extend to publish them as a new version")
    staged = staged_fingerprints(zoo.staging)
    n_staged = sum(fp in staged for g in work for fp in g.fingerprints)
    return BuildPlan(zoo, spec, tuple(groups), tuple(work), parent, len(configs), len(configs) - n_new,
                     n_staged, extend)


def group_configs(configs: list[ModelConfig], spec_name: str, *, max_group: int = DEFAULT_GROUP_SIZE,
                  min_groups: int = 1) -> list[TrainGroup]:
    """Group compatible configs into fleets of at most ``max_group`` (at least ``min_groups`` groups)."""
    buckets: dict[tuple, list[ModelConfig]] = {}
    for config in configs:
        buckets.setdefault(_compatibility_key(config), []).append(config)
    chunks = [chunk for bucket in buckets.values() for chunk in _split(bucket, max_group)]
    chunks = _spread(chunks, min_groups)
    groups = []
    for chunk in chunks:
        layout = _structure(structure_key(chunk[0].params))[0]
        groups.append(TrainGroup(fingerprint([c.fingerprint(CODE_VERSION) for c in chunk]), spec_name, tuple(chunk),
                                 layout.layout_id, layout.n_params))
    return groups


@dataclass(frozen=True)
class StagedGroup:
    """What training one group left: every member's receipt, how many were trained (the others
    were staged already), and the task's seconds spent training and staging."""

    receipts: tuple[Receipt, ...]
    n_trained: int
    seconds: dict = field(compare=False)


def train_group(staging, group: TrainGroup, threads: int | None = None, *, fleet: bool = True,
                progress: Callable[[str], None] | None = None) -> StagedGroup:
    """Train the group's unstaged members (as one fleet) and stage them; every member's receipt.

    Members staged by an earlier, interrupted run are not trained again. ``progress``
    receives one line per epoch.
    """
    set_threads(threads)
    pending = [c for c in group.configs if find_staged(staging, c.fingerprint(CODE_VERSION)) is None]
    seconds = {"training": 0.0, "staging": 0.0}
    if pending:
        # the spec's deterministic flag is in force while training and recorded with each model
        with deterministic_mode(pending[0].training.deterministic):
            started = time.perf_counter()
            results = _train(pending, fleet, progress)
            seconds["training"] = time.perf_counter() - started
            # which models trained together, in order: with dropout or augmentation it shapes the weights
            together = {"trainer": "fleet" if fleet and len(pending) > 1 else "single",
                        "models": [c.model_id for c in pending]}
            # captured here, in the process that trained (see weightzoo.io.environment)
            environment = training_environment(pending[0].training.device)
            started = time.perf_counter()
            # one staged file for the group (one name per model) and one sync, not one per file
            stage_models(staging, [StageItem(trained_record(config, result, together, environment), result.weights,
                                             result.snapshots, result.layout, result.traces)
                                   for config, result in zip(pending, results)], durable=False)
            sync_staging(staging)
            seconds["staging"] = time.perf_counter() - started
    return StagedGroup(tuple(find_staged(staging, fp) for fp in group.fingerprints), len(pending), seconds)


def trained_record(config: ModelConfig, result, fleet: dict | None = None,
                   environment: dict | None = None) -> StagedRecord:
    """The staged record of a trained model."""
    return StagedRecord(
        model_id=config.model_id, fingerprint=config.fingerprint(CODE_VERSION), status=result.status,
        message=result.message, hyperparameters=config.params, config=config.params,
        training=config.training.to_dict(), dataset_options=config.dataset_kwargs, spec_name=config.spec_name,
        layout_id=result.layout.layout_id, n_params=result.layout.n_params, train_seconds=result.seconds,
        code_version=CODE_VERSION, environment=environment, fleet=fleet)


def publish_build(plan: BuildPlan, *, progress: Callable[[str], None] | None = None) -> PublishResult:
    """Publish the plan's new members as the zoo's next version (nothing if none is new)."""
    return publish_version(plan.zoo, PublishRequest(
        fingerprints=tuple(plan.new_fingerprints), specs=(plan.spec.to_dict(),),
        message="extend" if plan.parent else "build", split=SplitSettings(seed=plan.spec.training.split_seed)))


def run_build(plan: BuildPlan, runner: Runner, *, progress: Callable[[str], None] | None = None) -> BuildReport:
    """The build recipe: train every group with work on ``runner``, then publish once.

    The report's ``seconds``: ``training_phase`` (wall, first task submitted to last staged),
    ``training`` and ``staging`` (summed over the tasks), ``publishing`` (wall) and, within it,
    ``card``; ``started_at`` (epoch seconds) lets a caller measure its start-up cost.
    """
    started_at, started = time.time(), time.monotonic()
    done = trained = 0
    seconds = {"training": 0.0, "staging": 0.0}
    calls = [(plan.zoo.staging, group, runner.threads) for group in plan.work]
    for staged in runner.map(train_group, calls, device=plan.spec.training.device):
        done, trained = done + len(staged.receipts), trained + staged.n_trained
        seconds = {name: seconds[name] + staged.seconds[name] for name in seconds}
        if progress:
            progress(f"staged {done}/{plan.n_new} models ({_eta(started, done, plan.n_new)})")
    phase = time.monotonic() - started
    result = runner.call(publish_build, plan) if plan.work else None
    publishing = time.monotonic() - started - phase
    seconds.update(training_phase=phase, publishing=publishing, card=result.seconds.get("card", 0.0) if result else 0.0)
    return BuildReport(zoo=plan.zoo.url, version=result.version if result else plan.parent,
                       published=result is not None and result.published, n_models=plan.n_models,
                       n_trained=trained, n_reused=plan.n_new - trained, n_new=result.n_new if result else 0,
                       seconds={name: round(value, 3) for name, value in seconds.items()}, started_at=started_at)


def build_in_process(zoo, spec, *, models: int | None = None, threads: int | None = 1, extend: bool = True,
                     max_group: int = DEFAULT_GROUP_SIZE) -> BuildReport:
    """Plan and run a build in this process, without Prefect or Dask (notebooks, tests): the
    same plan and recipe as ``weightzoo build``. ``threads`` limits torch while training; the
    previous setting is restored."""
    import torch

    from weightzoo.pipelines.runner import InProcessRunner

    previous = torch.get_num_threads()
    try:
        plan = plan_build(ZooHandle.at(zoo), spec, models, max_group=max_group, extend=extend)
        return run_build(plan, InProcessRunner(threads=threads))
    finally:
        torch.set_num_threads(previous)


def group_digest(groups) -> str:
    """A short digest of a build plan's groups, for logs."""
    return hashlib.sha256("".join(g.key for g in groups).encode()).hexdigest()[:12]


def _train(pending: list[ModelConfig], fleet: bool, progress) -> list:
    training, options = pending[0].training, pending[0].dataset_kwargs
    if fleet and len(pending) > 1:
        def report(epoch, epochs):
            if progress:
                progress(f"{len(pending)} models: epoch {epoch}/{epochs}")
        return train_fleet([c.params for c in pending], training, options, progress=report)
    results = []
    for i, config in enumerate(pending, start=1):
        results.append(train_model(config.params, training, options))
        if progress:
            progress(f"model {i}/{len(pending)} trained")
    return results


def _compatibility_key(config: ModelConfig) -> tuple:
    params = config.params
    layout, modules = _structure(structure_key(params))
    check_trace_tensors(config.training.traces, layout, params.get("architecture", ""))
    # activation is part of the key although a fleet can mix activations: a mixed fleet
    # evaluates every activation for every model, which costs more than it saves
    return (layout.layout_id, modules, params.get("batch_size", 32), params.get("activation", "relu"),
            params["dataset"], json.dumps(params.get("classes")), params.get("pixel_shuffle"), params.get("frequency"),
            config.training, config.dataset_options)


@functools.lru_cache(maxsize=4096)
def _structure(structural: str) -> tuple[WeightLayout, str]:
    """(layout, module classes) of an architecture, built once per distinct structure."""
    params = json.loads(structural)
    shape, out = model_signature(params)
    model = build_model(params, shape, out)
    return WeightLayout.from_module(model), ",".join(type(m).__name__ for m in model.modules())


def _split(bucket: list, max_group: int) -> list[list]:
    n_chunks = -(-len(bucket) // max_group)
    return [bucket[i::n_chunks] for i in range(n_chunks)]


def _spread(chunks: list[list], min_groups: int) -> list[list]:
    """Split the costliest groups until none holds more than a ``1/min_groups`` share of the
    work (cost ≈ models × input size), so that ``min_groups`` workers finish together."""
    chunks = sorted(chunks, key=_cost, reverse=True)
    total = sum(_cost(c) for c in chunks)
    while chunks and _cost(chunks[0]) > total / max(min_groups, 1) and len(chunks[0]) > 1:
        largest = chunks.pop(0)
        chunks += [largest[0::2], largest[1::2]]
        chunks.sort(key=_cost, reverse=True)
    return chunks


def _cost(chunk: list[ModelConfig]) -> int:
    shape, _ = model_signature(chunk[0].params)
    return len(chunk) * math.prod(shape)


def _eta(started: float, done: int, total: int) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else float("nan")
    return f"{elapsed:.0f}s elapsed, ~{left:.0f}s left"
