"""The fleet trainer: a group of compatible models trained together, vectorised.

Parameters of all models are stacked ([n_models, ...]): every trainable tensor is a view
into one ``[n_models, n_values]`` matrix, which the optimizer updates in a few vector
operations per step. The forward pass is hand-vectorised (:mod:`weightzoo.train.stacked`)
where all models share an activation, else one ``torch.func.vmap`` over ``functional_call``;
a single backward pass gives every model its own gradient (the fleet loss is the sum of
per-model losses, and no parameter is shared). Models of a group share the architecture's
structure, the batch size and the task data; they may differ in seed (init and data
order), activation, optimizer, learning rate, weight decay, dropout rate, augmentation
and label noise.

With dropout 0 and no augmentation a fleet reproduces :func:`~weightzoo.train.single.train_model`
for the same seeds up to float rounding; with stochastic regularisers both draw from
different random streams (the fleet draws masks for all models at once).
"""

from __future__ import annotations

import copy
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import Activation, build_model
from weightzoo.errors import InputError
from weightzoo.data import augment_batch
from weightzoo.train.evaluate import EVAL_CHUNK, correct, per_sample_loss
from weightzoo.train.optim import StackedOptimizer
from weightzoo.train.stacked import stacked_forward, supports
from weightzoo.train.result import STATUS_DIVERGED, TrainResult, fill_missing_snapshots, snapshot_row
from weightzoo.train.tasks import (AUGMENT_STREAM, DROPOUT_STREAM, ORDER_STREAM, generator, model_task,
                                   release_freed_memory, retain_freed_memory, snapshot_plan)
from weightzoo.train.traces import TraceRecorder, steps_per_epoch


# the largest activation of an evaluation chunk, over all models (see _eval_chunk)
EVAL_BYTES = 8 << 20


class FleetError(InputError):
    """Models that cannot be trained together; names what differs."""


def train_fleet(jobs: Sequence[Mapping], training, dataset_options: Mapping | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[TrainResult]:
    """Train every hyperparameter dict of ``jobs`` together; results in the same order."""
    started = time.perf_counter()
    retain_freed_memory()
    try:
        fleet = _Fleet(jobs, training, dataset_options)
        plan = snapshot_plan(training)
        with torch.random.fork_rng(devices=[]):
            # dropout masks come from torch's global generator: seed it so a fleet is reproducible
            torch.manual_seed(int(fleet.jobs[0].get("seed", 0)) * 7919 + DROPOUT_STREAM)
            fleet.record(0, 0, 0)
            for epoch in range(1, training.epochs + 1):
                fleet.train_epoch(epoch)
                if epoch in plan:
                    fleet.record(plan[epoch], epoch, fleet.step)
                if progress:
                    progress(epoch, training.epochs)
        fleet.finish(plan)
    finally:
        release_freed_memory()
    seconds = (time.perf_counter() - started) / len(jobs)
    for result in fleet.results:
        result.seconds = seconds
    return fleet.results


class _Fleet:
    def __init__(self, jobs, training, dataset_options):
        if not jobs:
            raise FleetError("a fleet needs at least one model")
        self.jobs, self.training = [dict(j) for j in jobs], training
        self.device = torch.device(training.device)
        self.tasks = [model_task(j, training, dataset_options) for j in self.jobs]
        self.task = self.tasks[0]
        self.batch_size = _common(self.jobs, "batch_size", 32)
        models = [build_model(j, self.task.input_shape, self.task.output_size) for j in self.jobs]
        _check_compatible(models, self.tasks, self.jobs)
        self.layout = WeightLayout.from_module(models[0])
        self.base = copy.deepcopy(models[0]).to("meta")
        _set_active_activations(self.base, models)
        params, buffers = stack_module_state(models)
        self.flat, self.params = _flat_parameters(params, self.device)
        # frozen parameters (a frozen identity input) get no gradient and no optimizer update
        self.trainable = {n: p for n, p in self.params.items() if p.requires_grad}
        self.stacked_buffers = {n: b.to(self.device) for n, b in buffers.items()}
        self.buffers, self.shared = _split_buffers(self.stacked_buffers)
        activations = {m.name for model in models for m in model.modules() if isinstance(m, Activation)}
        self.hand_vectorised = supports(models[0], activations or {"relu"})
        self.x_train = self.task.x_train.to(self.device)
        self.y_train = torch.stack([t.y_train for t in self.tasks]).to(self.device)
        self.x_test, self.y_test = self.task.x_test.to(self.device), self.task.y_test.to(self.device)
        self.optimizer = StackedOptimizer(
            self.flat, [j.get("optimizer", "sgd") for j in self.jobs],
            [float(j.get("lr", 0.01)) for j in self.jobs], [float(j.get("weight_decay") or 0.0) for j in self.jobs])
        self.orders = [generator(int(j.get("seed", 0)), ORDER_STREAM) for j in self.jobs]
        self.augment = generator(int(self.jobs[0].get("seed", 0)), AUGMENT_STREAM)
        kinds = [j.get("augmentation") or "none" for j in self.jobs]
        self.augment_masks = {kind: torch.tensor([k == kind for k in kinds], device=self.device)
                              for kind in sorted(set(kinds) - {"none"})}
        self.alive = torch.ones(len(self.jobs), dtype=torch.bool, device=self.device)
        self.all_alive = True  # lets a step skip masking until a model diverges
        self.eval_chunk = _eval_chunk(models[0], self.task.x_test[:1], len(self.jobs))
        self.step = 0
        n = len(self.jobs)
        self.results = [TrainResult(self.layout, np.full((len(training.snapshot_epochs) + 1, self.layout.n_params),
                                                         np.nan, dtype=np.float32)) for _ in range(n)]
        self._train_forward = vmap(self._forward, in_dims=(0, 0, None, 0), randomness="different")
        self._eval_forward = vmap(self._forward, in_dims=(0, 0, None, None), randomness="different")
        self.recorder = self._recorder()

    def _recorder(self) -> TraceRecorder | None:
        """A recorder over the stacked tensors holding the initial point (None without traces)."""
        if self.training.traces is None:
            return None
        recorder = TraceRecorder(self.training.traces, self.layout, {**self.params, **self.stacked_buffers},
                                 len(self.jobs), steps_per_epoch(len(self.x_train), self.batch_size),
                                 self.jobs[0].get("architecture", ""))
        recorder.record(0, 0, float("nan"), float("nan"))
        return recorder

    def _forward(self, params, buffers, shared, x):
        return functional_call(self.base, (params, buffers, shared), (x,))

    def run(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        """Outputs [n_models, batch, out] for per-model batches (or one shared batch)."""
        if self.hand_vectorised:
            return stacked_forward(self.base, {**self.params, **self.stacked_buffers}, x, len(self.jobs),
                                   training=self.base.training, shared_input=shared_input)
        forward = self._eval_forward if shared_input else self._train_forward
        return forward(self.params, self.buffers, self.shared, x)

    def train_epoch(self, epoch: int) -> None:
        self.base.train()
        n = len(self.x_train)
        order = torch.stack([torch.randperm(n, generator=g) for g in self.orders]).to(self.device)
        for start in range(0, n, self.batch_size):
            index = order[:, start:start + self.batch_size]
            x = self._augment(self.x_train[index])
            y = torch.gather(self.y_train, 1, index)
            losses = per_sample_loss(self.run(x), y, self.task.task).mean(dim=1)
            self._mark_diverged(losses, epoch)
            total = losses.sum() if self.all_alive else torch.where(self.alive, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total, list(self.trainable.values()))
            grad = torch.cat([g.reshape(len(self.jobs), -1) for g in grads], dim=1)
            self.optimizer.step(grad, None if self.all_alive else self.alive)
            self.step += 1
            if self.recorder is not None and self.recorder.due(self.step):
                self.recorder.record(self.step, epoch, self.optimizer.learning_rates, losses, self.alive)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        for kind, mask in self.augment_masks.items():  # x is a gathered copy: safe to write
            x[mask] = augment_batch(x[mask], kind, self.augment)
        return x

    def _mark_diverged(self, losses: torch.Tensor, epoch: int) -> None:
        finite = torch.isfinite(losses.detach())
        if self.all_alive and bool(finite.all()):  # the common case: one check, no per-model work
            return
        bad = self.alive & ~finite
        for m in torch.nonzero(bad).flatten().tolist():
            self.results[m].status = STATUS_DIVERGED
            self.results[m].message = f"loss became {float(losses[m].detach())} at epoch {epoch}, step {self.step}"
        self.alive &= ~bad
        self.all_alive = bool(self.alive.all())

    @torch.no_grad()
    def record(self, k: int, epoch: int, step: int) -> None:
        flat = self._flat_weights()
        train = self._evaluate(self.x_train, self.y_train)
        test = self._evaluate(self.x_test, self.y_test)
        for m, result in enumerate(self.results):
            if not bool(self.alive[m]):
                continue
            result.weights[k] = flat[m]
            result.snapshots.append(snapshot_row(k, epoch, step, train[m], test[m], self.task.task))

    def _flat_weights(self) -> np.ndarray:
        stacked = {**self.params, **self.stacked_buffers}
        n = len(self.jobs)
        flat = np.empty((n, self.layout.n_params), dtype=np.float32)
        for t in self.layout.tensors:
            flat[:, t.offset:t.offset + t.length] = stacked[t.name].detach().reshape(n, -1).cpu().numpy()
        return flat

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[float, float]]:
        self.base.eval()
        losses, hits = [], []
        for start in range(0, len(x), self.eval_chunk):
            out = self.run(x[start:start + self.eval_chunk], shared_input=True)
            target = y[..., start:start + self.eval_chunk].expand(out.shape[:2])
            losses.append(per_sample_loss(out, target, self.task.task))
            hits.append(correct(out, target, self.task.task))
        self.base.train()
        loss, acc = torch.cat(losses, 1).mean(1), torch.cat(hits, 1).mean(1)
        return [(float(a), float(b)) for a, b in zip(loss, acc)]

    def finish(self, plan: dict[int, int]) -> None:
        traces = self.recorder.traces() if self.recorder is not None else [None] * len(self.results)
        for result, trace in zip(self.results, traces):
            fill_missing_snapshots(result, plan, self.task.task)
            result.traces = trace


def _flat_parameters(params: dict, device) -> tuple[torch.Tensor, dict]:
    """One ``[n_models, n_values]`` matrix holding every trainable tensor, and the tensors as
    leaf views into it (frozen ones stay separate), so the optimizer updates all at once."""
    trainable = [p.detach().reshape(len(p), -1) for p in params.values() if p.requires_grad]
    first = next(iter(params.values()))
    flat = torch.cat(trainable, dim=1).to(device) if trainable else first.new_zeros(len(first), 0, device=device)
    views, offset = {}, 0
    for name, p in params.items():
        if not p.requires_grad:
            views[name] = p.detach().to(device)
            continue
        size = p[0].numel()
        views[name] = flat[:, offset:offset + size].view(p.shape).requires_grad_(True)
        offset += size
    return flat, views


def _eval_chunk(model: torch.nn.Module, sample: torch.Tensor, n_models: int) -> int:
    """Samples per evaluation chunk: at most EVAL_CHUNK, and few enough that the fleet's
    largest activation stays near EVAL_BYTES. Larger chunks leave the CPU caches and, past
    glibc's mmap threshold, page-fault on every fresh allocation."""
    largest = [sample.numel()]
    hooks = [m.register_forward_hook(lambda _m, _i, out: largest.append(out.numel()))
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    return int(max(16, min(EVAL_CHUNK, EVAL_BYTES // (4 * n_models * max(largest)))))


def _common(jobs, key, default):
    values = {j.get(key, default) for j in jobs}
    if len(values) != 1:
        raise FleetError(f"{key}: a fleet needs one value, got {sorted(values)}")
    return int(values.pop())


def _check_compatible(models, tasks, jobs) -> None:
    structure = [_structure(m) for m in models]
    layouts = {WeightLayout.from_module(m).layout_id for m in models}
    if len(set(structure)) != 1 or len(layouts) != 1:
        raise FleetError(f"models of a fleet need one architecture structure; got layouts {sorted(layouts)}")
    first = tasks[0]
    for job, task in zip(jobs, tasks):
        if task.x_train is not first.x_train and not torch.equal(task.x_train, first.x_train):
            raise FleetError(f"dataset: model with seed {job.get('seed')} trains on different inputs than the fleet")


def _structure(model: torch.nn.Module) -> str:
    return ",".join(type(m).__name__ for m in model.modules())


def _set_active_activations(base: torch.nn.Module, models) -> None:
    """Tell each Activation of the meta module which functions the group needs."""
    per_model = [[m for m in model.modules() if isinstance(m, Activation)] for model in models]
    for i, module in enumerate(m for m in base.modules() if isinstance(m, Activation)):
        module.active = tuple(sorted({acts[i].name for acts in per_model}))


def _split_buffers(buffers: dict) -> tuple[dict, dict]:
    """For vmap: buffers equal across models are passed once (unbatched) so layers keep their
    fast path; the batched ones are the very tensors of ``buffers`` (running statistics are
    updated in place and read back for snapshots)."""
    batched, shared = {}, {}
    for name, value in buffers.items():
        if value.dtype.is_floating_point and bool((value == value[0]).all()) and not _is_running_stat(name):
            shared[name] = value[0]
        else:
            batched[name] = value
    return batched, shared


def _is_running_stat(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))
