"""WeightLayout: the fixed order in which a network's tensors form one flat vector.

The order is the module's ``state_dict`` order (parameters and batch-norm running
statistics; ``num_batches_tracked`` counters are excluded because they do not change
outputs). Each tensor records its layer index (the position of the owning module
among modules that own tensors) and its role, so readers can select "the conv part"
or "layer 3 biases" without knowing the architecture.

Tensor names are the module's state-dict names, so they follow its module indices. The
builders give every block the same modules whether or not it uses dropout (a rate of 0
is an identity), so networks that differ only in dropout share one layout. Layouts
published before that (their names counted Dropout modules only where the rate was
positive) stay readable: :meth:`WeightLayout.named_as` matches a stored layout to the
module built from a config by position, shape, role and kind, and renames it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is imported where a module is flattened or built, not to read tables
    import torch

ROLES = ("weight", "bias", "bn_weight", "bn_bias", "bn_mean", "bn_var")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a layout: where it lives in the flat vector and what it is."""

    name: str
    shape: tuple[int, ...]
    offset: int
    length: int
    layer: int
    role: str
    kind: str  # module kind: conv, linear, batchnorm

    def to_record(self) -> dict:
        """A plain dict for a Parquet row (shape as a list of ints)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "offset": self.offset,
            "length": self.length,
            "layer": self.layer,
            "role": self.role,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class WeightLayout:
    """Ordered tensors of an architecture; immutable and hashable."""

    tensors: tuple[TensorSpec, ...]

    @functools.cached_property
    def layout_id(self) -> str:
        """A short content hash: equal layouts get equal ids across zoos."""
        canonical = json.dumps(
            [[t.name, list(t.shape), t.role, t.layer, t.kind] for t in self.tensors],
            separators=(",", ":"),
        )
        return "L" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def n_params(self) -> int:
        """Length of the flat vector."""
        return sum(t.length for t in self.tensors)

    @property
    def n_layers(self) -> int:
        """Number of tensor-owning modules."""
        return 1 + max(t.layer for t in self.tensors)

    def tensor(self, name: str) -> TensorSpec:
        """The tensor called ``name``; KeyError names the known tensors."""
        for spec in self.tensors:
            if spec.name == name:
                return spec
        raise KeyError(f"no tensor {name!r} in layout {self.layout_id}; known: {[t.name for t in self.tensors]}")

    def indices(self, names: Iterable[str] | None = None, kinds: Iterable[str] | None = None,
                layers: Iterable[int] | None = None, roles: Iterable[str] | None = None) -> np.ndarray:
        """Flat positions of the tensors that match every given filter (in layout order)."""
        names, kinds = _as_set(names), _as_set(kinds)
        layers, roles = _as_set(layers), _as_set(roles)
        parts = [
            np.arange(t.offset, t.offset + t.length)
            for t in self.tensors
            if (names is None or t.name in names)
            and (kinds is None or t.kind in kinds)
            and (layers is None or t.layer in layers)
            and (roles is None or t.role in roles)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def flatten(self, state: Mapping[str, "torch.Tensor"]) -> np.ndarray:
        """A state dict (or parameter dict) as one float32 vector in layout order."""
        import torch  # here, not at import: reading a zoo's tables needs no torch

        flat = np.empty(self.n_params, dtype=np.float32)
        for t in self.tensors:
            if t.name not in state:
                raise KeyError(f"state has no tensor {t.name!r} required by layout {self.layout_id}")
            value = state[t.name].detach().to("cpu", torch.float32).reshape(-1).numpy()
            if value.size != t.length:
                raise ValueError(f"tensor {t.name!r} has {value.size} values; layout expects {t.length}")
            flat[t.offset:t.offset + t.length] = value
        return flat

    def unflatten(self, flat: "np.ndarray | torch.Tensor") -> "dict[str, torch.Tensor]":
        """The inverse of :meth:`flatten`: a dict loadable with ``load_state_dict(strict=False)``."""
        import torch

        flat = torch.as_tensor(np.asarray(flat, dtype=np.float32))
        if flat.numel() != self.n_params:
            raise ValueError(f"flat vector has {flat.numel()} values; layout {self.layout_id} has {self.n_params}")
        return {t.name: flat[t.offset:t.offset + t.length].reshape(t.shape).clone() for t in self.tensors}

    def same_tensors(self, other: "WeightLayout") -> bool:
        """True if ``other`` differs from this layout at most in tensor names (same shapes,
        offsets, layers, roles and kinds, in the same order): the same flat vector loads
        into modules of either."""
        strip = lambda layout: [(t.shape, t.offset, t.length, t.layer, t.role, t.kind) for t in layout.tensors]
        return strip(self) == strip(other)

    def named_as(self, module: "torch.nn.Module") -> "WeightLayout":
        """This layout with ``module``'s state-dict names, for loading into ``module``;
        ValueError if the module's tensors are not this layout's (by position, shape, role
        and kind). A layout stored under older names (see the module docstring) is matched
        to today's builders this way."""
        built = WeightLayout.from_module(module)
        if built.layout_id == self.layout_id:
            return self
        if not self.same_tensors(built):
            raise ValueError(f"the module's tensors ({built.layout_id}: {[t.name for t in built.tensors]}) are not "
                             f"those of layout {self.layout_id} ({[t.name for t in self.tensors]})")
        return built

    def to_records(self) -> list[dict]:
        """Rows for ``layouts.parquet`` (without the layout_id column)."""
        return [dict(t.to_record(), index=i) for i, t in enumerate(self.tensors)]

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> "WeightLayout":
        """Rebuild a layout from rows of ``layouts.parquet`` (any order)."""
        rows = sorted(records, key=lambda r: int(r["offset"]))
        return cls(tuple(
            TensorSpec(str(r["name"]), tuple(int(s) for s in r["shape"]), int(r["offset"]),
                       int(r["length"]), int(r["layer"]), str(r["role"]), str(r["kind"]))
            for r in rows
        ))

    @classmethod
    def from_module(cls, module: "torch.nn.Module") -> "WeightLayout":
        """The layout of a module's state dict, layer-indexed by owning submodule."""
        owners = _owner_kinds(module)
        specs, offset, layer_of = [], 0, {}
        for name, value in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            owner, _, leaf = name.rpartition(".")
            kind = owners.get(owner, "other")
            layer = layer_of.setdefault(owner, len(layer_of))
            role = _role(kind, leaf)
            specs.append(TensorSpec(name, tuple(value.shape), offset, value.numel(), layer, role, kind))
            offset += value.numel()
        return cls(tuple(specs))


def _as_set(values):
    return None if values is None else set(values)


def _owner_kinds(module: "torch.nn.Module") -> dict[str, str]:
    import torch

    kinds = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            kinds[name] = "conv"
        elif isinstance(sub, torch.nn.Linear):
            kinds[name] = "linear"
        elif isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            kinds[name] = "batchnorm"
    return kinds


def _role(kind: str, leaf: str) -> str:
    if kind == "batchnorm":
        return {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean", "running_var": "bn_var"}[leaf]
    return leaf if leaf in ("weight", "bias") else leaf
