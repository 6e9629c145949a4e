"""The build pipeline's steps as plain functions (no Prefect): plan, train-and-stage, publish.

``flows/build_zoo.py`` wraps each step in a task; tests call them directly. This is the
one module that joins ``train`` and ``io`` (both depend only on ``core`` and ``data``).
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
import json
from dataclasses import dataclass, field
from typing import Callable

from weightzoo import __version__
from weightzoo.core.fingerprint import CODE_VERSION, fingerprint
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model, model_signature
from weightzoo.core.sampling import ModelConfig, sample_configs
from weightzoo.core.spec import ZooSpec, load_spec
from weightzoo.core.traces import check_trace_tensors
from weightzoo.io.environment import training_environment
from weightzoo.io.errors import NotAZooError
from weightzoo.io.location import staging_root
from weightzoo.io.publish import publish_version
from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.io.staging import find_staged, stage_model
from weightzoo.train.fleet import train_fleet
from weightzoo.train.single import train_model
from weightzoo.train.tasks import deterministic_mode, set_threads

DEFAULT_GROUP_SIZE = 32


class BuildError(RuntimeError):
    """A build that cannot go ahead as asked (e.g. adding models without ``--extend``)."""


@dataclass(frozen=True)
class TrainGroup:
    """Compatible models trained together by one task; ``key`` is its cache key."""

    key: str
    spec_name: str
    configs: tuple[ModelConfig, ...] = field(repr=False)

    @property
    def fingerprints(self) -> list[str]:
        """The member models' fingerprints (their staging keys)."""
        return [c.fingerprint(CODE_VERSION) for c in self.configs]


def plan_build(spec: ZooSpec | str | dict, n_models: int | None = None, *, max_group: int = DEFAULT_GROUP_SIZE,
               min_groups: int = 1) -> list[TrainGroup]:
    """Sample configs and group the compatible ones; every config is built once here,
    so a config that cannot become a model fails before anything trains."""
    spec = load_spec(spec)
    configs = sample_configs(spec, n_models)
    buckets: dict[str, list[ModelConfig]] = {}
    for config in configs:
        buckets.setdefault(_compatibility_key(config), []).append(config)
    chunks = [chunk for bucket in buckets.values() for chunk in _split(bucket, max_group)]
    chunks = _spread(chunks, min_groups)
    return [TrainGroup(fingerprint([c.fingerprint(CODE_VERSION) for c in chunk]), spec.name, tuple(chunk))
            for chunk in chunks]


def _compatibility_key(config: ModelConfig) -> str:
    params = config.params
    shape, out = model_signature(params)
    model = build_model(params, shape, out)
    layout = WeightLayout.from_module(model)
    check_trace_tensors(config.training.traces, layout, params.get("architecture", ""))
    structure = ",".join(type(m).__name__ for m in model.modules())
    # activation is part of the key although a fleet can mix activations: a mixed fleet
    # evaluates every activation for every model, which costs more than it saves
    return json.dumps([layout.layout_id, structure, params.get("batch_size", 32),
                       params.get("activation", "relu"),
                       params["dataset"], params.get("classes"), params.get("pixel_shuffle"),
                       params.get("frequency"), config.training.to_dict(), config.dataset_kwargs],
                      sort_keys=True, default=str)


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


def zoo_identity(zoo_root) -> str:
    """A random id created with the zoo directory (``.zoo-id``; for a zoo in object storage, in
    its local staging root); stable for its lifetime."""
    root = staging_root(zoo_root)
    path = root / ".zoo-id"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".zoo-id.{uuid.uuid4().hex}"
        tmp.write_text(uuid.uuid4().hex)
        try:
            os.link(tmp, path)  # atomic and exclusive: of two racing builds, one id wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def staged_receipts(zoo_root, group: TrainGroup) -> list[dict] | None:
    """The receipts of a group if every member is staged already, else None."""
    receipts = [find_staged(staging_root(zoo_root), fp) for fp in group.fingerprints]
    return receipts if all(receipts) else None


def train_and_stage(zoo_root, group: TrainGroup, *, threads: int | None = None, fleet: bool = True,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """Train the group's unstaged members (as one fleet) and stage them; return receipts.

    Members staged by an earlier, interrupted run are not trained again. ``progress``
    receives one line per epoch.
    """
    set_threads(threads)
    zoo_root = staging_root(zoo_root)  # training always stages locally, also for an s3:// zoo
    pending = [c for c in group.configs if find_staged(zoo_root, c.fingerprint(CODE_VERSION)) is None]
    if pending:
        # the spec's deterministic flag is in force while training and recorded with each model
        with deterministic_mode(pending[0].training.deterministic):
            results = _train_pending(pending, fleet, progress)
            # which models trained together, in order: with dropout or augmentation it shapes the weights
            together = {"trainer": "fleet" if fleet and len(pending) > 1 else "single",
                        "models": [c.model_id for c in pending]}
            # captured here, in the process that trained (see weightzoo.io.environment)
            environment = training_environment(pending[0].training.device)
            for config, result in zip(pending, results):
                _stage(zoo_root, config, result, together, environment)
    return [find_staged(zoo_root, fp) for fp in group.fingerprints]


def _train_pending(pending: list[ModelConfig], fleet: bool, progress) -> list:
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


def _stage(zoo_root, config: ModelConfig, result, fleet: dict | None = None, environment: dict | None = None) -> dict:
    fp = config.fingerprint(CODE_VERSION)
    record = {
        "model_id": config.model_id, "fingerprint": fp, "status": result.status, "message": result.message,
        "hyperparameters": config.params, "config": config.params, "training": config.training.to_dict(),
        "dataset_options": config.dataset_kwargs, "spec_name": config.spec_name,
        "layout_id": result.layout.layout_id, "n_params": result.layout.n_params,
        "train_seconds": result.seconds, "code_version": CODE_VERSION,
        "environment": environment, "fleet": fleet,
    }
    return stage_model(zoo_root, fingerprint=fp, weights=result.weights, snapshots=result.snapshots,
                       record=record, layout=result.layout, traces=result.traces)


def check_extend(zoo_root, groups: list[TrainGroup], extend: bool) -> None:
    """Refuse to add models to a published zoo unless ``extend`` is set."""
    try:
        versions = list_versions(zoo_root)
    except NotAZooError:
        versions = []
    if not versions or extend:
        return
    published = set(open_zoo(zoo_root).models["fingerprint"])
    new = [fp for g in groups for fp in g.fingerprints if fp not in published]
    if new:
        raise BuildError(f"{zoo_root} already holds version {versions[-1]['version']}; this build would add "
                         f"{len(new)} models: pass --extend to publish them as a new version")


def publish(zoo_root, fingerprints: list[str], spec: ZooSpec, *, extend: bool = True, message: str = "") -> str:
    """Publish the staged models as the zoo's next version (or return the current one if
    nothing is new)."""
    return publish_version(zoo_root, fingerprints, specs=[spec.to_dict()],
                           code_version=f"weightzoo {__version__} / {CODE_VERSION}",
                           extend=extend, split_seed=spec.training.split_seed, message=message)


def group_digest(groups: list[TrainGroup]) -> str:
    """A short digest of a build plan, for logs."""
    return hashlib.sha256("".join(g.key for g in groups).encode()).hexdigest()[:12]


def build_in_process(zoo_root, spec, *, models: int | None = None, threads: int | None = 1) -> str:
    """Plan, train and publish a spec (name, path, dict or ZooSpec) in this process, without
    Prefect or Dask: for notebooks and tests. Staged models are reused as in a flow run.

    ``threads`` limits torch's threads while training (1 is fastest for small fleets on a
    shared CPU); the previous setting is restored. Returns the published version.
    """
    import torch

    spec = spec if isinstance(spec, ZooSpec) else load_spec(spec)
    previous = torch.get_num_threads()
    try:
        receipts = [r for group in plan_build(spec, models) for r in train_and_stage(zoo_root, group, threads=threads)]
    finally:
        torch.set_num_threads(previous)
    return publish(zoo_root, [r["fingerprint"] for r in receipts], spec)
