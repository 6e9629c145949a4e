"""The symmetry structure of a feed-forward layout: which axes of which tensors permute together.

A neural functional (Zhou et al., NeurIPS 2023; Navon et al., ICML 2023) sees a network as a
chain of layers. Layer ``i`` holds

- a **weight** ``[n_out, n_in, spatial]``: rows are the layer's units, columns the units of
  the layer before (or, for the first layer, the network's input channels / features), and
  ``spatial`` whatever else belongs to one (row, column) pair: a conv kernel's ``h × w``
  values, or the ``H × W`` features a channel owns in a linear layer after ``Flatten``;
- **unit values** ``[n_out, n_values]``: per unit its bias and the four values of every batch
  norm after the layer (weight, bias, running mean, running variance), in layout order.

Permuting the hidden units of layer ``i`` permutes the rows of weight ``i`` and unit values
``i`` and the columns of weight ``i + 1`` together; the first layer's columns (the input) and
the last layer's rows (the output) never move. Everything here is derived from the
:class:`~weightzoo.core.layout.WeightLayout` through :func:`weightzoo.core.tokens.unit_groups`
and :func:`weightzoo.core.permutations.permutation_plan`, the same plan that
:func:`~weightzoo.core.permutations.permute_hidden_units` follows, so no architecture is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from weightzoo.core.layout import WeightLayout
from weightzoo.core.permutations import PermutationError, permutation_plan
from weightzoo.core.tokens import unit_groups
from weightzoo.errors import InputError


@dataclass(frozen=True, eq=False)
class LayerStructure:
    """One conv/linear layer of the chain: flat positions of its weight and unit values."""

    name: str  # the weight tensor's name
    weight_index: np.ndarray  # int64 [n_out, n_in, spatial]
    unit_index: np.ndarray  # int64 [n_out, n_values]
    unit_roles: tuple[str, ...]  # role of each unit value column (bias, bn_weight, ...)

    @property
    def n_out(self) -> int:
        """Units of this layer (rows)."""
        return int(self.weight_index.shape[0])

    @property
    def n_in(self) -> int:
        """Units of the layer before, or the network's inputs for the first layer (columns)."""
        return int(self.weight_index.shape[1])

    @property
    def spatial(self) -> int:
        """Values per (row, column) pair: kernel size, or features per channel after Flatten."""
        return int(self.weight_index.shape[2])

    @property
    def n_values(self) -> int:
        """Values per unit (bias and batch-norm values)."""
        return int(self.unit_index.shape[1])


@dataclass(frozen=True, eq=False)
class NetworkStructure:
    """The chain of layers of one layout, and the split of flat vectors into their tensors."""

    layout: WeightLayout
    layers: tuple[LayerStructure, ...]

    @classmethod
    def of(cls, layout: WeightLayout) -> "NetworkStructure":
        """The structure of ``layout``; InputError for a layout that is not a chain of conv and
        linear layers whose hidden units can be permuted (see ``permutation_plan``)."""
        try:
            plan = permutation_plan(layout)
        except PermutationError as error:
            raise InputError(f"the neural functional needs a chain of conv/linear layers: {error}") from None
        groups = unit_groups(layout)
        inputs = [(None, 1)] + [(group.n_units, block) for group, _, block in plan]
        return cls(layout, tuple(_layer(group, *inputs[i]) for i, group in enumerate(groups)))

    @property
    def n_layers(self) -> int:
        """Layers of the chain."""
        return len(self.layers)

    @cached_property
    def tensor_of_position(self) -> np.ndarray:
        """int64 [n_params]: the index (into ``layout.tensors``) of the tensor each flat value is in."""
        result = np.empty(self.layout.n_params, dtype=np.int64)
        for number, spec in enumerate(self.layout.tensors):
            result[spec.offset:spec.offset + spec.length] = number
        return result

    @cached_property
    def _gathers(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return ([torch.from_numpy(layer.weight_index) for layer in self.layers],
                [torch.from_numpy(layer.unit_index) for layer in self.layers])

    def split(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Flat vectors ``[B, n_params]`` → per layer (weights ``[B, n_out, n_in, spatial]``,
        unit values ``[B, n_out, n_values]``)."""
        weights, units = self._gathers
        return [flat[:, index] for index in weights], [flat[:, index] for index in units]

    def describe(self) -> str:
        """One line per layer: its shape as the functional sees it."""
        return "; ".join(f"{layer.name}: {layer.n_out}×{layer.n_in}×{layer.spatial} + {layer.n_out}×"
                         f"{layer.n_values} ({', '.join(layer.unit_roles)})" for layer in self.layers)


def _layer(group, in_units: int | None, block: int) -> LayerStructure:
    """A unit group as a layer whose inputs are ``in_units`` units of the layer before, each
    owning ``block`` consecutive input features (None: the first layer, whose inputs are the
    network's)."""
    weight = group.weight
    n_in = weight.shape[1] if in_units is None else in_units
    if weight.shape[1] != n_in * block:
        raise InputError(f"{weight.name}: {weight.shape[1]} inputs, but the layer before yields {n_in * block}")
    weight_index = np.arange(weight.offset, weight.offset + weight.length, dtype=np.int64)
    others = [spec for spec in group.tensors if spec is not weight]
    wrong = [spec.name for spec in others if spec.length != group.n_units]
    if wrong:
        raise InputError(f"tensors {wrong} of layer {weight.name} hold not one value per unit")
    if not others:
        raise InputError(f"layer {weight.name} has no bias: the neural functional needs per-unit values")
    unit_index = np.stack([np.arange(spec.offset, spec.offset + spec.length, dtype=np.int64) for spec in others],
                          axis=1)
    return LayerStructure(weight.name, weight_index.reshape(group.n_units, n_in, -1), unit_index,
                          tuple(spec.role for spec in others))
