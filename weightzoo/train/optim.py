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
        self.masks = {k: torch.tensor([kind == k for kind in kinds], device=device).view(column)
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
        if len(self.masks) == 1:  # one rule for every model: no selection needed
            kind, mask = next(iter(self.masks.items()))
            return getattr(self, f"_{kind}")(grad, mask)
        update = torch.zeros_like(grad)
        for kind, mask in self.masks.items():
            update = torch.where(mask, getattr(self, f"_{kind}")(grad, mask), update)
        return update

    def _sgd(self, grad, mask):
        return grad

    def _momentum(self, grad, mask):
        buf = self.first
        new = MOMENTUM * buf + grad
        buf.copy_(torch.where(mask, new, buf))
        return new

    def _adam(self, grad, mask):
        beta1, beta2 = ADAM_BETAS
        m, v = self.first, self.second
        new_m = torch.lerp(m, grad, 1 - beta1)
        new_v = v * beta2 + (1 - beta2) * grad * grad
        m.copy_(torch.where(mask, new_m, m))
        v.copy_(torch.where(mask, new_v, v))
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
        return (new_m / bias1) / (new_v.sqrt() / bias2_sqrt + EPS)

    def _rmsprop(self, grad, mask):
        v = self.second
        new_v = v * RMSPROP_ALPHA + (1 - RMSPROP_ALPHA) * grad * grad
        v.copy_(torch.where(mask, new_v, v))
        return grad / (new_v.sqrt() + EPS)
