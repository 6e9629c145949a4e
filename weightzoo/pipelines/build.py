"""The build pipeline: plan (sample and group configs, check against the zoo) → train and
stage each group → publish.

Staging is the one cache: a member whose fingerprint is staged is never trained again, and
a member the latest version already holds is not trained at all. The plan is made once
(:func:`plan_build`, by the CLI or a flow's entry) and run by :func:`run_build` on any
:class:`~weightzoo.pipelines.runner.Runner`: in this process or as Prefect tasks on Dask.
"""

from __future__ import annotations

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
from weightzoo.io.staging import StageItem, find_staged, stage_models, sync_staging
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
        """A small description (what Prefect records of the plan, what ``--dry-run`` prints)."""
        return {"zoo": self.zoo.url, "spec": self.spec.name, "models": self.n_models, "groups": len(self.groups),
                "groups_to_run": len(self.work), "parent": self.parent, "already_published": self.n_published,
                "staged_earlier": self.n_staged, "to_train": self.n_new - self.n_staged, "new": self.n_new,
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
    seconds: dict  # stage → wall seconds (training, publishing)

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
            work.append(group if len(todo) == len(group.configs) else TrainGroup(group.key, group.spec_name, todo))
    n_new = sum(len(g.configs) for g in work)
    if parent and n_new and not extend:
        raise BuildError(f"{zoo} already holds version {parent}; this build would add {n_new} models: "
                         f"pass --extend to publish them as a new version")
    n_staged = sum(find_staged(zoo.staging, fp) is not None for g in work for fp in g.fingerprints)
    return BuildPlan(zoo, spec, tuple(groups), tuple(work), parent, len(configs), len(configs) - n_new,
                     n_staged, extend)


def group_configs(configs: list[ModelConfig], spec_name: str, *, max_group: int = DEFAULT_GROUP_SIZE,
                  min_groups: int = 1) -> list[TrainGroup]:
    """Group compatible configs into fleets of at most ``max_group`` (at least ``min_groups`` groups)."""
    buckets: dict[str, list[ModelConfig]] = {}
    for config in configs:
        buckets.setdefault(_compatibility_key(config), []).append(config)
    chunks = [chunk for bucket in buckets.values() for chunk in _split(bucket, max_group)]
    chunks = _spread(chunks, min_groups)
    return [TrainGroup(fingerprint([c.fingerprint(CODE_VERSION) for c in chunk]), spec_name, tuple(chunk))
            for chunk in chunks]


def train_group(staging, group: TrainGroup, threads: int | None = None, *, fleet: bool = True,
                progress: Callable[[str], None] | None = None) -> list[Receipt]:
    """Train the group's unstaged members (as one fleet) and stage them; return every member's receipt.

    Members staged by an earlier, interrupted run are not trained again. ``progress``
    receives one line per epoch.
    """
    set_threads(threads)
    pending = [c for c in group.configs if find_staged(staging, c.fingerprint(CODE_VERSION)) is None]
    if pending:
        # the spec's deterministic flag is in force while training and recorded with each model
        with deterministic_mode(pending[0].training.deterministic):
            results = _train(pending, fleet, progress)
            # which models trained together, in order: with dropout or augmentation it shapes the weights
            together = {"trainer": "fleet" if fleet and len(pending) > 1 else "single",
                        "models": [c.model_id for c in pending]}
            # captured here, in the process that trained (see weightzoo.io.environment)
            environment = training_environment(pending[0].training.device)
            # one staged file for the group (one name per model) and one sync, not one per file
            stage_models(staging, [StageItem(trained_record(config, result, together, environment), result.weights,
                                             result.snapshots, result.layout, result.traces)
                                   for config, result in zip(pending, results)], durable=False)
            sync_staging(staging)
    return [find_staged(staging, fp) for fp in group.fingerprints]


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
    """The build recipe: train every group with work on ``runner``, then publish once."""
    started, done = time.monotonic(), 0
    calls = [(plan.zoo.staging, group, runner.threads) for group in plan.work]
    for receipts in runner.map(train_group, calls, device=plan.spec.training.device):
        done += len(receipts)
        if progress:
            progress(f"staged {done}/{plan.n_new} models ({_eta(started, done, plan.n_new)})")
    training = time.monotonic() - started
    result = runner.call(publish_build, plan) if plan.work else None
    published = result is not None and result.published
    return BuildReport(zoo=plan.zoo.url, version=result.version if result else plan.parent, published=published,
                       n_models=plan.n_models, n_trained=plan.n_new - plan.n_staged, n_reused=plan.n_staged,
                       n_new=result.n_new if result else 0,
                       seconds={"training": round(training, 2),
                                "publishing": round(time.monotonic() - started - training, 2)})


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


def _compatibility_key(config: ModelConfig) -> str:
    params = config.params
    layout, modules = _structure(structure_key(params))
    check_trace_tensors(config.training.traces, layout, params.get("architecture", ""))
    # activation is part of the key although a fleet can mix activations: a mixed fleet
    # evaluates every activation for every model, which costs more than it saves
    return json.dumps([layout.layout_id, modules, params.get("batch_size", 32), params.get("activation", "relu"),
                       params["dataset"], params.get("classes"), params.get("pixel_shuffle"),
                       params.get("frequency"), config.training.to_dict(), config.dataset_kwargs],
                      sort_keys=True, default=str)


@functools.lru_cache(maxsize=4096)
def _structure(structural: str) -> tuple[WeightLayout, str]:
    """(layout, module classes) of an architecture, built once per distinct structure."""
    params = json.loads(structural)
    if isinstance(params.get("dropout"), bool):  # a flag in the key: any rate builds the same module
        params["dropout"] = 0.5 if params["dropout"] else 0.0
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
