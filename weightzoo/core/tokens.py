"""Tokenising flat weight vectors per unit (neuron / channel), as SANE does.

Schürholt et al. (SANE, ICML 2024) turn a network into a sequence of tokens: every output
unit of every layer contributes one row (its incoming weights, then its bias), and rows
longer than the token size are cut into several zero-padded tokens. Here the rows come from
a :class:`~weightzoo.core.layout.WeightLayout`, never from tensor names:

- A **unit group** is one conv/linear layout layer plus the batch-norm layout layers that
  directly follow it with the same number of units. Unit ``u``'s row is, in layout order,
  ``weight[u].ravel()``, ``bias[u]``, then per batch norm ``weight[u]``, ``bias[u]``,
  ``running_mean[u]``, ``running_var[u]``. ``num_batches_tracked`` is not in any layout (it
  does not change outputs), so it is not tokenised; load with ``strict=False`` as
  :meth:`weightzoo.io.reader.Zoo.load_model` does.
- **Odd tensors** (a batch norm with no matching layer before it, modules of kind
  ``other``) still become tokens: a layout layer whose tensors share a leading dimension is
  a group with that many units (0-d tensors count as one unit); otherwise each of its
  tensors is a group of its own, with rows along its first axis. So every value of the flat
  vector lands in exactly one token slot and :meth:`Tokenizer.detokenize` is exact.

Batch norm can be arranged three ways (``bn=``):

- ``"append"`` (the default): as above, a batch norm's four values of unit ``u`` end the
  row of the layer it normalises. One token row then holds everything one hidden unit
  owns, so a permutation of hidden units (the augmentation SANE trains with) moves whole
  rows, and the sequence is no longer for batch norm.
- ``"separate"``: SANE's own ``tokenize_checkpoint`` arrangement. Every tensor whose
  role is a weight (conv, linear or batch-norm weight) is a group with its bias appended
  per unit; a batch norm's running mean and running variance are groups of their own. On
  the state dict of a weightzoo model this gives SANE's tokens and positions bit for bit,
  so their code (``tokens_to_checkpoint``, their datasets and models) reads tokens of
  batch-norm zoos.
- ``"ignore"``: SANE's ``ignore_bn``: batch-norm tensors are left out (SANE recognises
  them by torchvision names, ``bn``/``downsample.1``; here by the layout's kind, so it also
  works on ``nn.Sequential`` names). :meth:`Tokenizer.detokenize` then needs ``fill``, a
  flat vector to take the left-out values from.

Token format, identical for every vector of a layout (computed once per layout and size):
``tokens`` float32 [n_tokens, token_size] (zero padding), ``mask`` bool [n_tokens,
token_size] (True = a real value), ``positions`` int64 [n_tokens, 3] = (global token index,
unit-group index, unit index within the group). The tokens of one unit are consecutive and
share their (group, unit) pair; their order within the unit is the global index's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch

from weightzoo.core.layout import TensorSpec, WeightLayout

UNIT_KINDS = ("conv", "linear")


@dataclass(frozen=True)
class UnitGroup:
    """Tensors whose first axis indexes the same units: a layer and the batch norms after it."""

    layers: tuple[int, ...]  # layout layer indices; the conv/linear layer first
    kind: str  # the kind of the first tensor: conv, linear, batchnorm or other
    n_units: int
    tensors: tuple[TensorSpec, ...]

    @property
    def weight(self) -> TensorSpec | None:
        """The conv/linear weight tensor of the group (None for an odd group)."""
        for spec in self.tensors:
            if spec.role == "weight" and spec.kind in UNIT_KINDS:
                return spec
        return None

    def unit_indices(self) -> np.ndarray:
        """Flat positions of the group as [n_units, row_length], one row per unit."""
        return np.hstack([np.arange(t.offset, t.offset + t.length).reshape(self.n_units, -1)
                          for t in self.tensors])


BN_ARRANGEMENTS = ("append", "separate", "ignore")


def unit_groups(layout: WeightLayout, bn: str = "append") -> tuple[UnitGroup, ...]:
    """The layout's unit groups in layout order, batch norm arranged as ``bn`` says (see
    the module docstring)."""
    if bn not in BN_ARRANGEMENTS:
        raise ValueError(f"bn must be one of {BN_ARRANGEMENTS}, got {bn!r}")
    if bn != "append":
        return _sane_groups(layout, keep_bn=bn == "separate")
    groups: list[UnitGroup] = []
    for layer in sorted({t.layer for t in layout.tensors}):
        specs = tuple(t for t in layout.tensors if t.layer == layer)
        previous = groups[-1] if groups else None
        if _joins(previous, specs):
            groups[-1] = UnitGroup(previous.layers + (layer,), previous.kind, previous.n_units,
                                   previous.tensors + specs)
        elif len({_leading(t) for t in specs}) == 1:
            groups.append(UnitGroup((layer,), specs[0].kind, _leading(specs[0]), specs))
        else:  # no shared unit axis: each tensor is its own group so that it still round-trips
            groups.extend(UnitGroup((layer,), t.kind, _leading(t), (t,)) for t in specs)
    return tuple(groups)


def _sane_groups(layout: WeightLayout, keep_bn: bool) -> tuple[UnitGroup, ...]:
    """SANE's tokenize_checkpoint rule on layout tensors: a weight (conv, linear or batch
    norm) with its bias appended, running mean and variance alone; batch norm left out
    without ``keep_bn``. A tensor the rule does not cover (SANE skips it; no builder of ours
    makes one) is a group of its own, so that the round trip stays exact."""
    tensors = [t for t in layout.tensors if keep_bn or t.kind != "batchnorm"]
    biases = {_owner(t): t for t in tensors if t.role in ("bias", "bn_bias")}
    bias_of = {t.name: biases[_owner(t)] for t in tensors if t.role in ("weight", "bn_weight")
               and _owner(t) in biases and biases[_owner(t)].shape == (_leading(t),)}
    appended = {bias.name for bias in bias_of.values()}
    groups = []
    for spec in tensors:
        if spec.name in appended:
            continue
        members = (spec, bias_of[spec.name]) if spec.name in bias_of else (spec,)
        groups.append(UnitGroup((spec.layer,), spec.kind, _leading(spec), members))
    return tuple(groups)


def _owner(spec: TensorSpec) -> str:
    return spec.name.rpartition(".")[0]


def _leading(spec: TensorSpec) -> int:
    return spec.shape[0] if spec.shape else 1


def _joins(previous: UnitGroup | None, specs: tuple[TensorSpec, ...]) -> bool:
    """A batch norm joins the conv/linear group right before it when its features match."""
    return (previous is not None and previous.weight is not None
            and all(t.kind == "batchnorm" and t.shape == (previous.n_units,) for t in specs))


class Tokenizer:
    """Flat weight vectors of one layout ↔ per-unit tokens of ``token_size`` values.

    ``flat_index`` [n_tokens, token_size] holds the flat position of each token value (-1 for
    padding); tokenising is a gather with it and detokenising the inverse gather, so the
    round trip is bit-exact. Use :func:`tokenizer_for` to share one instance per layout.
    """

    def __init__(self, layout: WeightLayout, token_size: int, bn: str = "append"):
        if int(token_size) != token_size or token_size < 1:
            raise ValueError(f"token_size must be a positive integer; got {token_size!r}")
        self.layout = layout
        self.token_size = int(token_size)
        self.bn = bn
        self.groups = unit_groups(layout, bn)
        index, positions = _token_table(self.groups, self.token_size)
        self.flat_index: np.ndarray = index
        self.mask: np.ndarray = index >= 0
        self.positions: np.ndarray = positions
        # slot of each flat value in tokens.reshape(-1): detokenising is one gather; values
        # left out of the tokens (bn="ignore") have none and come from detokenize's fill
        self._slots = np.full(layout.n_params, -1, dtype=np.int64)
        self._slots[index[self.mask]] = np.flatnonzero(self.mask.ravel())
        self.covered: np.ndarray = self._slots >= 0
        self._slots = np.where(self.covered, self._slots, 0)
        self._gather = np.where(self.mask, index, 0)
        for array in (self.flat_index, self.mask, self.positions, self._slots, self._gather, self.covered):
            array.setflags(write=False)
        self._torch_tables: dict = {}

    def __repr__(self) -> str:
        return (f"Tokenizer({self.layout.layout_id}, token_size={self.token_size}, bn={self.bn!r}, "
                f"n_tokens={self.n_tokens}, groups={len(self.groups)})")

    @property
    def n_tokens(self) -> int:
        """Length of the token sequence."""
        return int(self.flat_index.shape[0])

    @property
    def max_row_length(self) -> int:
        """The longest unit row: the token size at which every unit is exactly one token."""
        return max(g.unit_indices().shape[1] for g in self.groups)

    @cached_property
    def value_layers(self) -> np.ndarray:
        """Layout layer index of every token value, int64 [n_tokens, token_size] (-1 = padding)."""
        layer_of = np.empty(self.layout.n_params, dtype=np.int64)
        for spec in self.layout.tensors:
            layer_of[spec.offset:spec.offset + spec.length] = spec.layer
        result = np.where(self.mask, layer_of[self._gather], -1)
        result.setflags(write=False)
        return result

    def tokenize(self, flat):
        """[..., n_params] → tokens [..., n_tokens, token_size], zero where ``mask`` is False.

        NumPy input gives float32; a torch tensor keeps its dtype and device (and gradient).
        """
        self._check(flat, (self.layout.n_params,), "flat vector")
        if isinstance(flat, torch.Tensor):
            gather, mask, _ = self._tables(flat.device)
            return torch.where(mask, flat[..., gather], torch.zeros((), dtype=flat.dtype, device=flat.device))
        flat = np.asarray(flat, dtype=np.float32)
        return np.where(self.mask, flat[..., self._gather], np.float32(0))

    def detokenize(self, tokens, fill=None):
        """The inverse of :meth:`tokenize`: tokens [..., n_tokens, token_size] → [..., n_params].

        Values the tokens leave out (``bn="ignore"``) are taken from ``fill`` (a flat vector
        or a batch of them); without ``fill`` that is a ValueError.
        """
        self._check(tokens, self.flat_index.shape, "tokens")
        values = tokens.reshape(*tokens.shape[:-2], -1)
        if isinstance(tokens, torch.Tensor):
            flat = values[..., self._tables(tokens.device)[2]]
        else:
            flat = np.asarray(values)[..., self._slots]
        if self.covered.all():
            return flat
        if fill is None:
            raise ValueError(f"tokens with bn={self.bn!r} leave {int((~self.covered).sum())} values of layout "
                             f"{self.layout.layout_id} out; pass fill= (a flat vector) to take them from")
        if isinstance(flat, torch.Tensor):
            covered = torch.as_tensor(self.covered, device=flat.device)
            return torch.where(covered, flat, torch.as_tensor(fill, dtype=flat.dtype, device=flat.device))
        return np.where(self.covered, flat, np.asarray(fill, dtype=flat.dtype))

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gather, mask, slots) as torch tensors on ``device``, made once per device."""
        key = str(device)
        if key not in self._torch_tables:
            self._torch_tables[key] = tuple(torch.from_numpy(a.copy()).to(device)
                                            for a in (self._gather, self.mask, self._slots))
        return self._torch_tables[key]

    def _check(self, array, tail: tuple[int, ...], what: str) -> None:
        shape = tuple(array.shape)
        if shape[len(shape) - len(tail):] != tail or len(shape) < len(tail):
            raise ValueError(f"{what} of shape {shape} does not fit layout {self.layout.layout_id} with "
                             f"token_size {self.token_size}: expected [..., {', '.join(map(str, tail))}]")


@lru_cache(maxsize=32)
def tokenizer_for(layout: WeightLayout, token_size: int, bn: str = "append") -> Tokenizer:
    """A shared :class:`Tokenizer` per (layout, token_size, bn): its tables are built once."""
    return Tokenizer(layout, token_size, bn)


def tokenize(flat, layout: WeightLayout, token_size: int, bn: str = "append"):
    """``(tokens, mask, positions)`` of ``flat`` [..., n_params]; mask and positions are shared."""
    tokenizer = tokenizer_for(layout, token_size, bn)
    return tokenizer.tokenize(flat), tokenizer.mask, tokenizer.positions


def detokenize(tokens, layout: WeightLayout, token_size: int | None = None, bn: str = "append", fill=None):
    """The flat vector(s) [..., n_params] of ``tokens`` [..., n_tokens, token_size]."""
    return tokenizer_for(layout, int(token_size or tokens.shape[-1]), bn).detokenize(tokens, fill)


def _token_table(groups: tuple[UnitGroup, ...], token_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat_index [n_tokens, token_size] with -1 padding, positions [n_tokens, 3])."""
    indices, positions = [], []
    for number, group in enumerate(groups):
        rows = group.unit_indices()
        per_unit = -(-rows.shape[1] // token_size)  # ceil: tokens per unit
        padded = np.full((group.n_units, per_unit * token_size), -1, dtype=np.int64)
        padded[:, :rows.shape[1]] = rows
        indices.append(padded.reshape(-1, token_size))
        units = np.repeat(np.arange(group.n_units, dtype=np.int64), per_unit)
        positions.append(np.stack([np.full_like(units, number), units], axis=1))
    index = np.concatenate(indices)
    places = np.concatenate(positions)
    global_index = np.arange(len(index), dtype=np.int64)[:, None]
    return index, np.hstack([global_index, places])
