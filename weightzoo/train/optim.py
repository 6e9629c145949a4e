"""Optimizers over a fleet's parameters (one ``[n_models, n_values]`` matrix) with per-model settings.

The update rules follow ``torch.optim`` (SGD, SGD with momentum 0.9, Adam, RMSprop with
their default constants and L2 weight decay added to the gradient), so a fleet matches
models trained one by one with ``torch.optim``. Each model of a fleet may use a
different optimizer, learning rate and weight decay.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
RMSPROP_ALPHA = 0.99
EPS = 1e-8


def make_torch_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer that :class:`StackedOptimizer` reproduces."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=EPS, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=RMSPROP_ALPHA, eps=EPS, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown {name!r}; expected one of {OPTIMIZERS}")


class StackedOptimizer:
    """Per-model optimizers applied to one flat parameter matrix ``[n_models, n_values]``.

    The fleet keeps every trainable tensor as a view into this matrix, so a step is a few
    vector operations over all parameters of all models at once instead of a few per
    tensor (for a 2,000-parameter CNN the per-tensor loop cost more than its arithmetic).
    The arithmetic is element for element the one of the per-tensor update it replaces.
    """

    def __init__(self, flat: torch.Tensor, kinds: list[str], lrs, weight_decays):
        unknown = sorted(set(kinds) - set(OPTIMIZERS))
        if unknown:
            raise ValueError(f"optimizer: unknown {unknown}; expected one of {OPTIMIZERS}")
        if flat.dim() != 2 or flat.shape[0] != len(kinds):
            raise ValueError(f"expected a [{len(kinds)}, n_values] parameter matrix, got {tuple(flat.shape)}")
        self.flat = flat
        self.n_models = len(kinds)
        device, column = flat.device, (len(kinds), 1)  # settings live where the parameters do (cpu or cuda)
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=device).view(column)
        # the values as given (float64, on the CPU): what traces record as each step's lr
        self.learning_rates = torch.tensor(lrs, dtype=torch.float64)
        self.weight_decay = torch.tensor(weight_decays, dtype=torch.float32, device=device).view(column)
        self.decays = bool((self.weight_decay != 0).any())
        # the models (rows) each update rule applies to
        self.rows = {k: torch.tensor([i for i, kind in enumerate(kinds) if kind == k], device=device)
                     for k in OPTIMIZERS if k in kinds}
        used = set(kinds)
        # momentum buffer / Adam m, and Adam v / RMSprop square average, only where used
        self.first = torch.zeros_like(flat) if used & {"momentum", "adam"} else None
        self.second = torch.zeros_like(flat) if used & {"adam", "rmsprop"} else None
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """One update from the gradient matrix ``grad`` (shaped like the parameters);
        models where ``active`` is False are left untouched."""
        self.steps += 1
        if self.decays:
            grad = grad + self.weight_decay * self.flat
        delta = self.lr * self._update(grad)
        if active is not None:
            delta = torch.where(active.view(-1, 1), delta, torch.zeros_like(delta))
        self.flat.sub_(delta)

    def _update(self, grad: torch.Tensor) -> torch.Tensor:
        if len(self.rows) == 1:  # one rule for every model: whole matrices, no row selection
            return getattr(self, f"_{next(iter(self.rows))}")(grad, None)
        # each rule reads and writes only its own models' rows (computing every rule on every
        # row and selecting, as before, made the step memory-bound: 4x the traffic)
        update = torch.empty_like(grad)
        for kind, rows in self.rows.items():
            update[rows] = getattr(self, f"_{kind}")(grad[rows], rows)
        return update

    def _sgd(self, grad, rows):
        return grad

    def _momentum(self, grad, rows):
        new = MOMENTUM * _rows_of(self.first, rows) + grad
        _store(self.first, rows, new)
        return new

    def _adam(self, grad, rows):
        beta1, beta2 = ADAM_BETAS
        new_m = torch.lerp(_rows_of(self.first, rows), grad, 1 - beta1)
        new_v = _rows_of(self.second, rows) * beta2 + (1 - beta2) * grad * grad
        _store(self.first, rows, new_m)
        _store(self.second, rows, new_v)
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
        return (new_m / bias1) / (new_v.sqrt() / bias2_sqrt + EPS)

    def _rmsprop(self, grad, rows):
        new_v = _rows_of(self.second, rows) * RMSPROP_ALPHA + (1 - RMSPROP_ALPHA) * grad * grad
        _store(self.second, rows, new_v)
        return grad / (new_v.sqrt() + EPS)


def _rows_of(state: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return state if rows is None else state[rows]


def _store(state: torch.Tensor, rows: torch.Tensor | None, value: torch.Tensor) -> None:
    if rows is None:
        state.copy_(value)
    else:
        state[rows] = value
