"""Recording dense traces during training, for one model or a stacked fleet alike.

Both trainers hand the recorder *stacked* views (``[n_models, ...]``; the single-model
trainer passes n_models = 1), so one code path decides what a trace holds: point 0 is the
initial value, then the value after every ``every``-th optimisation step (see
:mod:`weightzoo.core.traces`). A model of a fleet that diverges stops being recorded at the
step whose loss was not finite, exactly where the single-model trainer stops training it.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from weightzoo.core.traces import Trace, TraceSettings, check_trace_tensors


class TraceRecorder:
    """Collects traced tensors, learning rates and losses of ``n_models`` models."""

    def __init__(self, settings: TraceSettings, layout, source: Mapping[str, torch.Tensor], n_models: int,
                 steps_per_epoch: int, architecture: str = ""):
        """``source`` maps state-dict names to the live (stacked) tensors that training
        updates in place; they are read at every recorded step."""
        check_trace_tensors(settings, layout, architecture)
        self.settings, self.source = settings, source
        self.n_models, self.steps_per_epoch = n_models, steps_per_epoch
        self.points: dict[str, list[np.ndarray]] = {name: [] for name in settings.tensors}
        self.columns: dict[str, list] = {"step": [], "epoch": [], "lr": [], "loss": [], "alive": []}

    def due(self, step: int) -> bool:
        """Whether optimisation step ``step`` (1-based) is recorded."""
        return step % self.settings.every == 0

    @torch.no_grad()
    def record(self, step: int, epoch: int, lr, loss, alive=None) -> None:
        """One point after ``step``: ``lr``, ``loss`` and ``alive`` are scalars or per-model
        values (``lr`` and ``loss`` NaN for the initial point)."""
        for name in self.settings.tensors:
            value = self.source[name].detach().reshape(self.n_models, -1)
            self.points[name].append(value.to("cpu", torch.float32).numpy().copy())
        self.columns["step"].append(step)
        self.columns["epoch"].append(epoch)
        self.columns["lr"].append(_per_model(lr, self.n_models))
        self.columns["loss"].append(_per_model(loss, self.n_models))
        alive = np.ones(self.n_models, bool) if alive is None else _per_model(alive, self.n_models).astype(bool)
        self.columns["alive"].append(alive)

    def traces(self) -> list[Trace]:
        """One :class:`Trace` per model, each cut where its model stopped training."""
        alive = np.asarray(self.columns["alive"]).reshape(-1, self.n_models)
        lr = np.asarray(self.columns["lr"], dtype=np.float64).reshape(-1, self.n_models)
        loss = np.asarray(self.columns["loss"], dtype=np.float64).reshape(-1, self.n_models)
        stacked = {name: np.stack(values) for name, values in self.points.items()}  # [points, models, size]
        step = np.asarray(self.columns["step"], dtype=np.int64)
        epoch = np.asarray(self.columns["epoch"], dtype=np.int64)
        result = []
        for m in range(self.n_models):
            n = int(alive[:, m].sum())  # alive is a prefix: a diverged model never comes back
            result.append(Trace(tensors={name: values[:n, m] for name, values in stacked.items()},
                                step=step[:n], epoch=epoch[:n], lr=lr[:n, m], loss=loss[:n, m],
                                steps_per_epoch=self.steps_per_epoch, every=self.settings.every))
        return result


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimisation steps in one epoch (the last batch may be short)."""
    return math.ceil(n_train / batch_size)


def _per_model(value, n_models: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (n_models,)).copy()
