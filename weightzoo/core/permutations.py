"""Function-preserving augmentations of weights: permutations of hidden units.

Hidden units of a feed-forward network can be reordered without changing what it computes
(Schürholt et al., NeurIPS 2021 and SANE, ICML 2024 use this as their main augmentation):
permute the output units of a hidden layer — rows of its weight and bias and the per-unit
values of the batch norms after it — and the matching input slice of the next layer's
weight. The plan comes from the :class:`~weightzoo.core.layout.WeightLayout` only (via
:func:`weightzoo.core.tokens.unit_groups`); a layout whose chain of shapes does not allow a
safe permutation raises :class:`PermutationError`. The layout cannot see the modules between
layers, so pass ``model`` (e.g. ``build_model(config)``) to also check that they act per
channel and to keep frozen layers (a frozen identity input) in place.

SANE's noise view of tokens is :func:`weightzoo.analysis.sane.batches.noise_augmentation`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import Activation, Dropout
from weightzoo.core.tokens import UnitGroup, unit_groups
from weightzoo.errors import InputError

# Modules without parameters that act on each channel (or feature) on its own, so they commute
# with a permutation of channels. Flatten is checked separately (it must keep the batch axis).
CHANNELWISE = (Activation, Dropout, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU,
               nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
WITH_PARAMETERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


class PermutationError(InputError):
    """A layout (or model) whose hidden units cannot be permuted without changing its function."""


def permutation_plan(layout: WeightLayout, model: nn.Module | None = None) -> list[tuple[UnitGroup, UnitGroup, int]]:
    """``(group, next_group, block)`` per permutable hidden layer, in layout order.

    ``block`` is how many consecutive input features of the next weight belong to one unit:
    1 for conv→conv and linear→linear, H×W for conv→Flatten→linear (next in_features divided
    by the conv's out_channels). The last group (the network's outputs) is never permuted.
    """
    groups = unit_groups(layout)
    odd = [t.name for g in groups if g.weight is None or len(g.weight.shape) < 2 for t in g.tensors]
    if odd:
        raise PermutationError(f"layout {layout.layout_id} has tensors outside a conv/linear layer "
                               f"(or without an input axis) that cannot be permuted safely: {odd}")
    frozen = _frozen_weights(layout, model) if model is not None else set()
    plan = []
    for group, following in zip(groups, groups[1:]):
        block = _block_size(group, following)
        if group.weight.name not in frozen:
            plan.append((group, following, block))
    return plan


def hidden_unit_permutation(layout: WeightLayout, rng=None, *, model: nn.Module | None = None,
                            plan=None) -> np.ndarray:
    """A random index ``p`` [n_params] such that ``flat[..., p]`` is a permuted equivalent network.

    ``plan`` (from :func:`permutation_plan`) saves re-deriving and re-checking it per draw.
    """
    rng = np.random.default_rng(rng)
    plan = permutation_plan(layout, model) if plan is None else plan
    index = np.arange(layout.n_params, dtype=np.int64)
    for group, following, block in plan:
        order = rng.permutation(group.n_units)
        for spec in group.tensors:  # output units: the first axis of every tensor of the group
            part = index[spec.offset:spec.offset + spec.length].reshape(group.n_units, -1)
            index[spec.offset:spec.offset + spec.length] = part[order].reshape(-1)
        weight = following.weight  # inputs of the next layer: units in blocks of `block` features
        part = index[weight.offset:weight.offset + weight.length].reshape(weight.shape[0], group.n_units, -1)
        index[weight.offset:weight.offset + weight.length] = part[:, order].reshape(-1)
    return index


def permute_hidden_units(flat, layout: WeightLayout, rng=None, *, model: nn.Module | None = None):
    """Randomly permute the hidden units of ``flat`` [n_params] or [B, n_params] (one permutation
    per row), keeping the network's function. NumPy in, NumPy out; torch in, torch out.

    ``rng``: a seed, a ``numpy.random.Generator`` or None. ``model``: the module of the layout
    (optional), checked to be a plain chain of per-channel modules; its frozen layers stay put.
    """
    if tuple(flat.shape[-1:]) != (layout.n_params,) or len(flat.shape) > 2:
        raise ValueError(f"expected [n_params] or [B, n_params] with n_params={layout.n_params} "
                         f"(layout {layout.layout_id}); got shape {tuple(flat.shape)}")
    rng = np.random.default_rng(rng)
    plan = permutation_plan(layout, model)
    rows = 1 if len(flat.shape) == 1 else flat.shape[0]
    index = np.stack([hidden_unit_permutation(layout, rng, plan=plan) for _ in range(rows)])
    if isinstance(flat, torch.Tensor):
        index = torch.from_numpy(index).to(flat.device)
        return flat[index[0]] if flat.dim() == 1 else torch.gather(flat, 1, index)
    flat = np.asarray(flat)
    return flat[index[0]] if flat.ndim == 1 else np.take_along_axis(flat, index, axis=1)


def check_permutable_model(model: nn.Module) -> None:
    """Raise PermutationError unless ``model`` is a chain (nested nn.Sequential) of conv/linear/
    batch-norm layers and per-channel modules, i.e. unless the layout tells the whole story."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            continue
        if isinstance(module, WITH_PARAMETERS):
            if isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1:
                raise PermutationError(f"module {name!r} is a grouped convolution (groups={module.groups})")
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise PermutationError(f"module {name!r} flattens dims {module.start_dim}..{module.end_dim}; "
                                       f"only Flatten(1, -1) keeps each channel's features together")
        elif not isinstance(module, CHANNELWISE):
            raise PermutationError(f"module {name!r} ({type(module).__name__}) is not known to act per channel; "
                                   f"permuting units around it may change the network's function")


def _frozen_weights(layout: WeightLayout, model: nn.Module) -> set[str]:
    check_permutable_model(model)
    try:
        named = layout.named_as(model)
    except ValueError:
        raise PermutationError(f"the model's layout {WeightLayout.from_module(model).layout_id} is not "
                               f"layout {layout.layout_id}") from None
    # A frozen weight (the mlp's identity input) is a constant of the family: keep its units.
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {stored.name for stored, built in zip(layout.tensors, named.tensors) if built.name in frozen}


def _block_size(group: UnitGroup, following: UnitGroup) -> int:
    """Input features per unit of ``group`` in the next weight, or PermutationError."""
    inputs, units = following.weight.shape[1], group.n_units
    where = f"{group.weight.name} ({group.kind}, {units} units) → {following.weight.name} ({following.kind})"
    if following.kind == "conv" and group.kind == "conv" and inputs == units:
        return 1
    if following.kind == "linear" and group.kind == "linear" and inputs == units:
        return 1
    if following.kind == "linear" and group.kind == "conv" and inputs % units == 0:
        return inputs // units  # Flatten of [C, H, W]: channel c owns features c*H*W .. (c+1)*H*W - 1
    raise PermutationError(f"cannot match units across {where}: the next layer has {inputs} inputs")
