"""A permutation-invariant network over weights: NP-style equivariant layers, pooling, an MLP.

The layers follow the "NP" neural functionals of Zhou et al. (Permutation Equivariant Neural
Functionals, NeurIPS 2023; DWSNets of Navon et al., ICML 2023 is the same idea with the full
basis): every weight entry ``W_i[o, j]`` and unit value ``V_i[o]`` carries a vector of
channels, and a layer maps them with a few shared linear maps of

- the entry itself (pointwise),
- sums over the axes it shares with other tensors: the mean of its row (over inputs ``j``),
  the mean of its column (over units ``o``), its unit's values ``V_i[o]``, the next layer's
  column of unit ``o`` (``W_{i+1}[:, o]`` averaged over its rows) and, for the inputs
  ``j``, the previous layer's row of unit ``j`` and its values ``V_{i-1}[j]``,
- the means of every tensor (one global vector).

Each term is equivariant to any permutation of hidden units, so the layer is. Features are
channel-last: weights ``[B, n_out, n_in, C]``, unit values ``[B, n_out, C]``. The first
layer reads the raw values, with a conv kernel's ``h × w`` values (or the ``H × W`` features
of a channel after Flatten) and the bias/batch-norm values of a unit as its input channels.

The input and output axes are not symmetries of the networks: as NFN's ``io_embed`` does,
every layer adds a learned embedding per input position to the first weight and per output
position to the last weight and last unit values, and the pooling keeps the output axis.
Pooling averages every hidden axis (mean over units and over inputs), then an MLP reads the
pooled vector, so the network's output is invariant to hidden-unit permutations only.
"""

from __future__ import annotations

import torch
from torch import nn

from weightzoo.analysis.nfn.structure import NetworkStructure

Features = tuple[list[torch.Tensor], list[torch.Tensor]]  # per layer: weights, unit values


class EquivariantLayer(nn.Module):
    """One NP layer: per-layer input channels ``(weight, unit)`` → ``width`` channels everywhere."""

    def __init__(self, structure: NetworkStructure, channels: list[tuple[int, int]], width: int):
        super().__init__()
        n = structure.n_layers
        total = sum(c + d for c, d in channels)
        self.point, self.columns, self.rows, self.units = (nn.ModuleList() for _ in range(4))
        self.weight_global, self.unit_global = nn.ModuleList(), nn.ModuleList()
        for i, (c, d) in enumerate(channels):
            before = sum(channels[i - 1]) if i > 0 else 0
            after = channels[i + 1][0] if i < n - 1 else 0
            self.point.append(nn.Linear(c, width))
            self.columns.append(nn.Linear(c + before, width, bias=False))
            self.rows.append(nn.Linear(c + d + after, width, bias=False))
            self.units.append(nn.Linear(c + d + after, width))
            self.weight_global.append(nn.Linear(total, width, bias=False))
            self.unit_global.append(nn.Linear(total, width, bias=False))
        first, last = structure.layers[0], structure.layers[-1]
        self.in_embed = nn.Parameter(0.5 * torch.randn(first.n_in, channels[0][0]))
        self.out_embed = nn.Parameter(0.5 * torch.randn(last.n_out, channels[-1][0]))
        self.out_unit_embed = nn.Parameter(0.5 * torch.randn(last.n_out, channels[-1][1]))

    def forward(self, features: Features) -> Features:
        """Map ``(weights, units)`` of every layer to ``width`` channels, equivariantly."""
        weights, units = self._embed(*features)
        row_means = [w.mean(dim=2) for w in weights]  # [B, n_out, c]: over a unit's inputs
        column_means = [w.mean(dim=1) for w in weights]  # [B, n_in, c]: over the layer's units
        pooled = torch.cat([w.mean(dim=(1, 2)) for w in weights] + [u.mean(dim=1) for u in units], dim=-1)
        out_weights, out_units = [], []
        for i, (weight, unit) in enumerate(zip(weights, units)):
            by_column = [column_means[i]] + ([row_means[i - 1], units[i - 1]] if i > 0 else [])
            by_row = [row_means[i], unit] + ([column_means[i + 1]] if i + 1 < len(weights) else [])
            by_row = torch.cat(by_row, dim=-1)  # [B, n_out, ·]: everything indexed by unit o
            out_weights.append(self.point[i](weight) + self.columns[i](torch.cat(by_column, dim=-1))[:, None]
                               + self.rows[i](by_row)[:, :, None]
                               + self.weight_global[i](pooled)[:, None, None])
            out_units.append(self.units[i](by_row) + self.unit_global[i](pooled)[:, None])
        return out_weights, out_units

    def _embed(self, weights: list[torch.Tensor], units: list[torch.Tensor]) -> Features:
        """Add the input- and output-position embeddings that break the io symmetry."""
        weights, units = list(weights), list(units)
        weights[0] = weights[0] + self.in_embed[None, None]
        weights[-1] = weights[-1] + self.out_embed[None, :, None]
        units[-1] = units[-1] + self.out_unit_embed[None]
        return weights, units


def invariant_pool(features: Features) -> torch.Tensor:
    """``[B, pooled]``: every hidden axis averaged, the last layer's output axis kept."""
    weights, units = features
    parts = []
    for i, (weight, unit) in enumerate(zip(weights, units)):
        by_unit = torch.stack([weight.mean(dim=2), unit], dim=-1)  # [B, n_out, C, 2]
        parts.append(by_unit.flatten(1) if i == len(weights) - 1 else by_unit.mean(dim=1).flatten(1))
    return torch.cat(parts, dim=1)


def pooled_size(structure: NetworkStructure, width: int) -> int:
    """Length of :func:`invariant_pool`'s output."""
    return 2 * width * (structure.n_layers - 1 + structure.layers[-1].n_out)


class InvariantNetwork(nn.Module):
    """Flat weight vectors ``[B, n_params]`` of one layout → ``[B, n_outputs]``, invariant to
    permutations of hidden units. ``shift``/``scale`` standardise each tensor (one scalar per
    tensor, so the standardisation commutes with every permutation)."""

    def __init__(self, structure: NetworkStructure, n_outputs: int, *, width: int = 32, depth: int = 3,
                 hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.structure = structure
        self.register_buffer("shift", torch.zeros(structure.layout.n_params))
        self.register_buffer("scale", torch.ones(structure.layout.n_params))
        channels = [(layer.spatial, layer.n_values) for layer in structure.layers]
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(EquivariantLayer(structure, channels, width))
            channels = [(width, width)] * structure.n_layers
        self.head = nn.Sequential(nn.Linear(pooled_size(structure, width), hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_outputs))

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        """Predictions (logits or standardised regression values) for ``flat`` [B, n_params]."""
        features = self.structure.split((flat - self.shift) / self.scale)
        for layer in self.layers:
            weights, units = layer(features)
            features = [torch.relu(w) for w in weights], [torch.relu(u) for u in units]
        return self.head(invariant_pool(features))
