"""Optimizers over stacked parameters ([n_models, ...]) with per-model settings.

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
    """Per-model optimizers applied to stacked parameter tensors in a few vector ops."""

    def __init__(self, params: dict[str, torch.Tensor], kinds: list[str], lrs, weight_decays):
        unknown = sorted(set(kinds) - set(OPTIMIZERS))
        if unknown:
            raise ValueError(f"optimizer: unknown {unknown}; expected one of {OPTIMIZERS}")
        self.params = params
        self.n_models = len(kinds)
        device = next(iter(params.values())).device  # settings live where the parameters do (cpu or cuda)
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=device)
        # the values as given (float64, on the CPU): what traces record as each step's lr
        self.learning_rates = torch.tensor(lrs, dtype=torch.float64)
        self.weight_decay = torch.tensor(weight_decays, dtype=torch.float32, device=device)
        self.masks = {k: torch.tensor([kind == k for kind in kinds], device=device) for k in OPTIMIZERS if k in kinds}
        self.first = {n: torch.zeros_like(p) for n, p in params.items()}   # momentum buffer / Adam m
        self.second = {n: torch.zeros_like(p) for n, p in params.items()}  # Adam v / RMSprop square avg
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], active: torch.Tensor | None = None) -> None:
        """One update; models where ``active`` is False are left untouched."""
        self.steps += 1
        for name, param in self.params.items():
            shape = (self.n_models,) + (1,) * (param.dim() - 1)
            grad = grads[name]
            if bool((self.weight_decay != 0).any()):
                grad = grad + self.weight_decay.view(shape) * param
            update = self._update(name, grad, shape)
            delta = self.lr.view(shape) * update
            if active is not None:
                delta = torch.where(active.view(shape), delta, torch.zeros_like(delta))
            param.sub_(delta)

    def _update(self, name: str, grad: torch.Tensor, shape) -> torch.Tensor:
        update = torch.zeros_like(grad)
        for kind, mask in self.masks.items():
            part = getattr(self, f"_{kind}")(name, grad, mask.view(shape))
            update = torch.where(mask.view(shape), part, update)
        return update

    def _sgd(self, name, grad, mask):
        return grad

    def _momentum(self, name, grad, mask):
        buf = self.first[name]
        new = MOMENTUM * buf + grad
        buf.copy_(torch.where(mask, new, buf))
        return new

    def _adam(self, name, grad, mask):
        beta1, beta2 = ADAM_BETAS
        m, v = self.first[name], self.second[name]
        new_m = torch.lerp(m, grad, 1 - beta1)
        new_v = v * beta2 + (1 - beta2) * grad * grad
        m.copy_(torch.where(mask, new_m, m))
        v.copy_(torch.where(mask, new_v, v))
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
        return (new_m / bias1) / (new_v.sqrt() / bias2_sqrt + EPS)

    def _rmsprop(self, name, grad, mask):
        v = self.second[name]
        new_v = v * RMSPROP_ALPHA + (1 - RMSPROP_ALPHA) * grad * grad
        v.copy_(torch.where(mask, new_v, v))
        return grad / (new_v.sqrt() + EPS)
