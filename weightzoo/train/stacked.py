"""A hand-vectorised forward pass of a fleet of ``nn.Sequential`` models.

``torch.func.vmap`` turns a fleet's convolutions into grouped convolutions in the
default (NCHW) memory format, whose backward pass on CPU was measured *slower* than
looping over the models (benchmarks/README.md). Written out by hand, the fleet keeps its
feature maps as one ``[batch, models × channels, H, W]`` tensor in channels-last format:
convolutions are grouped convolutions (groups = models), per-model batch norm is plain
batch norm over ``models × channels`` channels, pooling needs no change, and linear
layers are batched matrix products over ``[models, batch, features]``. A ReLU right
before a max-pool runs after it (bit-identical, see :func:`_pool_before_relu`).

The fleet trainer uses this path where every layer is supported and all models share an
activation, and falls back to ``vmap`` otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightzoo.core.models import Activation, Dropout, _apply_activation

SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
             nn.Flatten, Activation, Dropout)


def supports(model: nn.Module, activations: set[str]) -> bool:
    """True if :func:`stacked_forward` can run fleets of ``model``'s architecture."""
    if not isinstance(model, nn.Sequential) or len(activations) != 1:
        return False
    for layer in model:
        if not isinstance(layer, SUPPORTED):
            return False
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
            return False
    return True


def stacked_forward(model: nn.Sequential, tensors: dict[str, torch.Tensor], x: torch.Tensor, n_models: int,
                    *, training: bool, shared_input: bool = False) -> torch.Tensor:
    """Run all models at once. ``tensors`` maps state-dict names (and dropout ``p``) to
    stacked values ``[n_models, ...]``. ``x`` is ``[n_models, batch, ...]`` or, with
    ``shared_input``, ``[batch, ...]`` for every model. Returns ``[n_models, batch, out]``."""
    by_layer: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        layer_name, _, leaf = name.partition(".")
        by_layer.setdefault(layer_name, {})[leaf] = value
    state = _State(x, n_models, shared_input)
    for index, layer in _pool_before_relu(model, by_layer, training):
        state.apply(layer, by_layer.get(str(index), {}), training)
    return state.as_flat()


def _pool_before_relu(model: nn.Sequential, tensors: dict | None = None,
                      training: bool = True) -> list[tuple[int, nn.Module]]:
    """The layers with their indices, each ReLU followed by a max-pool moved after the pool.

    relu(maxpool(x)) equals maxpool(relu(x)) bit for bit, and so do the gradients (a pooling
    window's maximum is the same element either way, and where it is not positive both
    gradients are 0), but the ReLU and its backward then touch a quarter of the values.
    Only ReLU: tanh, sigmoid or ELU saturate to ties in float32, where the two orders can
    route a window's gradient to different elements. A dropout between them that is an
    identity here (every model's rate 0, or evaluation; ``tensors`` holds the rates by layer
    index) does not stop the move; an active one does (masks do not commute with the pool).
    """
    tensors = tensors or {}

    def idle(index: int, layer) -> bool:
        rate = tensors.get(str(index), {}).get("p")
        return isinstance(layer, Dropout) and (not training or rate is None or not bool((rate > 0).any()))

    layers = list(enumerate(model))
    for i in range(len(layers) - 1):
        if not (isinstance(layers[i][1], Activation) and layers[i][1].name == "relu"):
            continue
        j = i + 1
        while j < len(layers) and idle(*layers[j]):
            j += 1
        if j < len(layers) and isinstance(layers[j][1], nn.MaxPool2d):
            layers.insert(i, layers.pop(j))
    return layers


class _State:
    """The fleet's activations, either as feature maps ``[B, M·C, H, W]`` ("maps") or as
    feature vectors ``[M, B, F]`` ("vectors")."""

    def __init__(self, x: torch.Tensor, n_models: int, shared: bool):
        self.m = n_models
        if shared:
            x = x.unsqueeze(0).expand((n_models,) + tuple(x.shape))
        self.value, self.kind = x, "input"

    def as_maps(self) -> torch.Tensor:
        if self.kind == "input":  # [M, B, C, H, W] → [B, M·C, H, W]
            m, b, c, h, w = self.value.shape
            self.value = self.value.transpose(0, 1).reshape(b, m * c, h, w)
            self.value = self.value.contiguous(memory_format=torch.channels_last)
            self.kind = "maps"
        if self.kind != "maps":
            raise ValueError("a convolution after the network was flattened is not supported")
        return self.value

    def as_flat(self) -> torch.Tensor:
        if self.kind == "maps":  # [B, M·C, H, W] → [M, B, C·H·W] in nn.Flatten's (C, H, W) order
            b, mc, h, w = self.value.shape
            self.value = self.value.reshape(b, self.m, mc // self.m * h * w).transpose(0, 1)
        elif self.kind == "input":
            self.value = self.value.reshape(self.m, self.value.shape[1], -1)
        self.kind = "vectors"
        return self.value

    def apply(self, layer: nn.Module, tensors: dict, training: bool) -> None:
        if isinstance(layer, nn.Conv2d):
            self.value = _conv(layer, self.as_maps(), tensors, self.m)
        elif isinstance(layer, nn.Linear):
            x = self.as_flat()
            self.value = torch.baddbmm(tensors["bias"].unsqueeze(1), x, tensors["weight"].transpose(1, 2))
        elif isinstance(layer, nn.BatchNorm2d):
            self.value = _batch_norm(layer, self.as_maps(), tensors, training)
        elif isinstance(layer, nn.BatchNorm1d):
            x = self.as_flat()
            m, b, f = x.shape
            y = _batch_norm(layer, x.transpose(0, 1).reshape(b, m * f), tensors, training)
            self.value = y.reshape(b, m, f).transpose(0, 1)
        elif isinstance(layer, nn.MaxPool2d):
            self.value = F.max_pool2d(self.as_maps(), layer.kernel_size, layer.stride, layer.padding,
                                      layer.dilation, layer.ceil_mode)
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            self.value = F.adaptive_avg_pool2d(self.as_maps(), layer.output_size)
        elif isinstance(layer, nn.Flatten):
            self.as_flat()
        elif isinstance(layer, Activation):
            self.value = _apply_activation(layer.name, self.value)
        elif isinstance(layer, Dropout):
            self.value = self._dropout(tensors["p"], training)
        else:
            raise TypeError(f"stacked_forward does not support {type(layer).__name__}")

    def _dropout(self, p: torch.Tensor, training: bool) -> torch.Tensor:
        x = self.value
        if not training or not bool((p > 0).any()):
            return x  # a fleet without dropout draws nothing (every block has a Dropout module)
        if self.kind == "maps":
            rate = p.repeat_interleave(x.shape[1] // self.m).view(1, -1, 1, 1)
        else:
            rate = p.view((self.m,) + (1,) * (x.dim() - 1))
        keep = (torch.rand_like(x) >= rate).to(x.dtype)
        return x * keep / (1.0 - rate)


def _conv(layer: nn.Conv2d, x: torch.Tensor, tensors: dict, m: int) -> torch.Tensor:
    weight = tensors["weight"]
    weight = weight.reshape((m * weight.shape[1],) + tuple(weight.shape[2:]))
    bias = tensors["bias"].reshape(-1) if "bias" in tensors else None
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, groups=m)


def _batch_norm(layer, x: torch.Tensor, tensors: dict, training: bool) -> torch.Tensor:
    # per-model batch norm over C channels = batch norm over M·C channels; the views of the
    # stacked running statistics are updated in place, as nn.BatchNorm does
    return F.batch_norm(x, tensors["running_mean"].view(-1), tensors["running_var"].view(-1),
                        tensors["weight"].reshape(-1), tensors["bias"].reshape(-1), training,
                        layer.momentum, layer.eps)
