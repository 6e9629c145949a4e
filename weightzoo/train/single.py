"""The reference trainer: one model, a plain ``torch.optim`` loop.

The fleet trainer is tested against this one; it is also the per-model baseline of
``benchmarks/train_throughput.py``.
"""

from __future__ import annotations

import math
import time
from typing import Mapping

import numpy as np
import torch

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model
from weightzoo.data import augment_batch
from weightzoo.train.evaluate import evaluate_model, per_sample_loss
from weightzoo.train.optim import make_torch_optimizer
from weightzoo.train.result import STATUS_DIVERGED, TrainResult, fill_missing_snapshots, snapshot_row
from weightzoo.train.tasks import (AUGMENT_STREAM, DROPOUT_STREAM, ORDER_STREAM, generator, model_task,
                                   snapshot_plan)
from weightzoo.train.traces import TraceRecorder, steps_per_epoch


def train_model(params: Mapping, training, dataset_options: Mapping | None = None) -> TrainResult:
    """Train one model per ``params`` and ``training``; snapshot 0 is the initialisation."""
    started = time.perf_counter()
    device = torch.device(training.device)
    task = model_task(params, training, dataset_options)
    model = build_model(params, task.input_shape, task.output_size).to(device)
    layout = WeightLayout.from_module(model)
    data = [t.to(device) for t in (task.x_train, task.y_train, task.x_test, task.y_test)]
    # frozen parameters (a frozen identity input) are not handed to the optimizer, so weight
    # decay cannot move them either
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_torch_optimizer(params.get("optimizer", "sgd"), trainable,
                                     float(params.get("lr", 0.01)), float(params.get("weight_decay") or 0.0))
    seed = int(params.get("seed", 0))
    order, augment = generator(seed, ORDER_STREAM), generator(seed, AUGMENT_STREAM)
    plan = snapshot_plan(training)
    weights = np.full((len(plan) + 1, layout.n_params), np.nan, dtype=np.float32)
    result = TrainResult(layout, weights)
    recorder = _recorder(training, layout, model, params, len(task.x_train))
    _record(result, model, 0, 0, 0, data, task.task)
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 7919 + DROPOUT_STREAM)
        for epoch in range(1, training.epochs + 1):
            step, failure = _epoch(model, optimizer, data, task.task, params, (order, augment), step,
                                   (recorder, epoch))
            if failure:
                result.status, result.message = STATUS_DIVERGED, f"{failure} at epoch {epoch}, step {step}"
                break
            if epoch in plan:
                _record(result, model, plan[epoch], epoch, step, data, task.task)
    fill_missing_snapshots(result, plan, task.task)
    result.traces = recorder.traces()[0] if recorder else None
    result.seconds = time.perf_counter() - started
    return result


def finetune_model(model: torch.nn.Module, params: Mapping, task, epochs: int, *, seed: int = 0) -> str | None:
    """Train an existing module ``epochs`` more epochs on ``task`` (a TaskData) with the
    optimiser, learning rate, weight decay, batch size and augmentation of ``params``, as
    :func:`train_model` would, with fresh optimiser state and streams seeded from ``seed``.
    Returns None, or why training stopped (a non-finite loss); the module is left in eval mode."""
    device = next(model.parameters()).device
    data = [t.to(device) for t in (task.x_train, task.y_train)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_torch_optimizer(params.get("optimizer", "sgd"), trainable,
                                     float(params.get("lr", 0.01)), float(params.get("weight_decay") or 0.0))
    order, augment = generator(seed, ORDER_STREAM), generator(seed, AUGMENT_STREAM)
    step, failure = 0, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 7919 + DROPOUT_STREAM)
        for epoch in range(1, epochs + 1):
            step, failure = _epoch(model, optimizer, data, task.task, params, (order, augment), step, (None, epoch))
            if failure:
                failure = f"{failure} at fine-tuning epoch {epoch}"
                break
    model.eval()
    return failure


def _recorder(training, layout, model, params, n_train: int) -> TraceRecorder | None:
    """A recorder holding the initial point, or None when the settings ask for no traces."""
    if training.traces is None:
        return None
    source = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    recorder = TraceRecorder(training.traces, layout, source, 1,
                             steps_per_epoch(n_train, int(params.get("batch_size", 32))),
                             params.get("architecture", ""))
    recorder.record(0, 0, float("nan"), float("nan"))
    return recorder


def _epoch(model, optimizer, data, task, params, generators, step, tracing):
    x_train, y_train = data[0], data[1]
    (order, augment), (recorder, epoch) = generators, tracing
    batch_size = int(params.get("batch_size", 32))
    kind = params.get("augmentation") or "none"
    model.train()
    permutation = torch.randperm(len(x_train), generator=order).to(x_train.device)
    for start in range(0, len(x_train), batch_size):
        index = permutation[start:start + batch_size]
        x = augment_batch(x_train[index], kind, augment)
        loss = per_sample_loss(model(x), y_train[index], task).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            return step, f"loss became {value}"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if recorder is not None and recorder.due(step):
            recorder.record(step, epoch, optimizer.param_groups[0]["lr"], value)
    return step, None


def _record(result: TrainResult, model, k: int, epoch: int, step: int, data, task: str) -> None:
    x_train, y_train, x_test, y_test = data
    result.weights[k] = result.layout.flatten(model.state_dict())
    train = evaluate_model(model, x_train, y_train, task)
    test = evaluate_model(model, x_test, y_test, task)
    result.snapshots.append(snapshot_row(k, epoch, step, train, test, task))

