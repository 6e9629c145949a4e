"""What every importer shares: the imported network, its fingerprint, reading foreign files.

An importer reads one foreign network at a time into an :class:`ImportedNetwork` (flat
float32 weights in the source's tensor order, one snapshot row per k, hyperparameters,
a config and a :class:`WeightLayout`), or raises :class:`SourceError` naming the file
that is missing or malformed. Networks are staged like trained ones; their fingerprint
is a hash of the bytes read from the source, so importing the same files again stages
nothing and publishes nothing new (the import pipeline,
:mod:`weightzoo.pipelines.importing`, stages and publishes them).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from weightzoo.core.fingerprint import fingerprint
from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.core.models import ConfigError, build_model
from weightzoo.errors import InputError

IMPORTER_VERSION = "weightzoo-interop-1"
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def network_folders(source: Path, is_network) -> list[str]:
    """``["."]`` when ``source`` is itself one network's folder (``is_network(folder)``), else
    its sub-folders that are, sorted; SourceError when ``source`` is not a folder."""
    if not source.is_dir():
        raise SourceError(source, "expected a folder")
    if is_network(source):
        return ["."]
    return sorted(p.name for p in source.iterdir() if p.is_dir() and is_network(p))


class SourceError(InputError):
    """A foreign network (or a whole source) that cannot be imported; names file and reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class ContentDigest:
    """sha256 over the bytes an importer reads, each file prefixed by its name relative to
    the network (so renaming a network's folder keeps its fingerprint)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, label: str, data: bytes) -> bytes:
        """Mix ``data`` (under ``label``) into the digest and return it unchanged."""
        self._hash.update(f"{label}\0{len(data)}\0".encode())
        self._hash.update(data)
        return data

    def read(self, path: Path, label: str) -> bytes:
        """Read a file's bytes into the digest; SourceError if it is missing."""
        if not path.is_file():
            raise SourceError(path, "missing file")
        return self.add(label, path.read_bytes())

    def hexdigest(self) -> str:
        """The digest so far."""
        return self._hash.hexdigest()


@dataclass(frozen=True)
class ImportedNetwork:
    """One foreign network read into weightzoo's terms; ``weights`` row k is snapshot k."""

    kind: str
    name: str
    weights: np.ndarray = field(repr=False)
    snapshots: list[dict] = field(repr=False)
    hyperparameters: dict
    config: dict
    layout: WeightLayout = field(repr=False)
    digest: str
    mapped: bool
    training: dict = field(default_factory=dict)  # what the source says about training, if anything
    split: str | None = None  # the source's own split ("train"/"val"/"test"), kept when it has one

    def __post_init__(self):
        if self.split not in (None, "train", "val", "test"):
            raise SourceError(self.name, f"split must be train, val or test, got {self.split!r}")

    @property
    def fingerprint(self) -> str:
        """The staging key: the importer's kind and version and the source bytes' digest."""
        return fingerprint(self.kind, self.digest, IMPORTER_VERSION)

    @property
    def model_id(self) -> str:
        """``"i"`` + 15 hex digits of the fingerprint (native models start with ``"m"``)."""
        return "i" + self.fingerprint[:15]


def snapshot_row(k: int, *, epoch=None, step=None, **metrics) -> dict:
    """A snapshot row: missing metrics stay None; ``gap`` is train − test accuracy where both exist."""
    row = {"k": k, "epoch": _number(epoch), "step": None if step is None else int(step)}
    row.update({name: _number(metrics.get(name)) for name in METRICS})
    gap = metrics.get("gap")
    if gap is None and row["train_acc"] is not None and row["test_acc"] is not None:
        gap = row["train_acc"] - row["test_acc"]
    row["gap"] = _number(gap)
    return row


def _number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def state_tensors(state: Mapping, path) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state dict in order (without batch counters);
    SourceError naming ``path`` if it is not a mapping of tensors."""
    if not isinstance(state, Mapping) or not state:
        raise SourceError(path, f"expected a non-empty state dict, got {type(state).__name__}")
    tensors = {}
    for name, value in state.items():
        if str(name).endswith("num_batches_tracked"):
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise SourceError(path, f"entry {name!r} is not a floating-point tensor")
        tensors[str(name)] = value.detach().cpu()
    return tensors


def layout_from_tensors(tensors: Mapping[str, torch.Tensor]) -> WeightLayout:
    """A layout named after a state dict's own keys: kind from the owner's weight rank
    (conv ≥ 3-D, linear 2-D), batchnorm where the owner has running statistics."""
    owners = {name.rpartition(".")[0] for name in tensors}
    kinds = {owner: _owner_kind(owner, tensors) for owner in owners}
    specs, offset, layer_of = [], 0, {}
    for name, value in tensors.items():
        owner, _, leaf = name.rpartition(".")
        kind = kinds[owner]
        layer = layer_of.setdefault(owner, len(layer_of))
        specs.append(TensorSpec(name, tuple(value.shape), offset, value.numel(), layer, _role(kind, leaf), kind))
        offset += value.numel()
    return WeightLayout(tuple(specs))


def _owner_kind(owner: str, tensors) -> str:
    prefix = f"{owner}." if owner else ""
    if f"{prefix}running_mean" in tensors:
        return "batchnorm"
    weight = tensors.get(f"{prefix}weight")
    if weight is None:
        return "other"
    return "conv" if weight.dim() >= 3 else "linear" if weight.dim() == 2 else "other"


def _role(kind: str, leaf: str) -> str:
    if kind == "batchnorm":
        return {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean",
                "running_var": "bn_var"}.get(leaf, leaf)
    return leaf


def matching_layout(config: Mapping | None, tensors: Mapping[str, torch.Tensor]) -> WeightLayout | None:
    """The layout of the weightzoo model built from ``config`` if its tensors have the
    source's shapes in the source's order (so load_model can rebuild it), else None."""
    if not config:
        return None
    try:
        layout = WeightLayout.from_module(build_model(config))
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
    shapes = [tuple(value.shape) for value in tensors.values()]
    return layout if shapes == [spec.shape for spec in layout.tensors] else None


def flatten_tensors(tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The tensors concatenated in order as one float32 vector."""
    parts = [value.to(torch.float32).reshape(-1).numpy() for value in tensors.values()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def unmapped_config(kind: str) -> dict:
    """The config of a network no weightzoo builder reproduces (its hyperparameters are in
    the models table): ``load_model`` then fails with a ConfigError naming ``imported:<kind>``."""
    return {"architecture": f"imported:{kind}"}


def load_state(path: Path, digest: ContentDigest, label: str) -> dict[str, torch.Tensor]:
    """A torch snapshot file (a state dict or ``{"state_dict": ...}``) as ordered tensors,
    read safely (``weights_only``); SourceError naming the file if it is not one."""
    data = digest.read(path, label)
    try:
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SourceError(path, f"not a readable torch file ({first_line[:200]})") from None
    if isinstance(value, Mapping) and isinstance(value.get("state_dict"), Mapping):
        value = value["state_dict"]
    return state_tensors(value, path)


def stack_states(states: list[tuple[Path, dict[str, torch.Tensor]]]) -> np.ndarray:
    """Flatten snapshots that must share tensor names and shapes: float32 [n_snapshots, n_params]."""
    first_path, first = states[0]
    expected = [(name, tuple(value.shape)) for name, value in first.items()]
    for path, tensors in states[1:]:
        found = [(name, tuple(value.shape)) for name, value in tensors.items()]
        if found != expected:
            difference = next(((a, b) for a, b in zip(found, expected) if a != b), (found[len(expected):],
                                                                                     expected[len(found):]))
            raise SourceError(path, f"tensors differ from {first_path.parent.name}/{first_path.name}: "
                                    f"{difference[0]} where it has {difference[1]}")
    return np.stack([flatten_tensors(tensors) for _, tensors in states])


def read_json(path: Path, digest: ContentDigest, label: str):
    """A JSON file through the digest; SourceError naming the file if it is missing or malformed."""
    try:
        return json.loads(digest.read(path, label))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SourceError(path, f"bad JSON: {error}") from None


def read_json_lines(path: Path, digest: ContentDigest, label: str) -> list[dict]:
    """A JSON-lines file (blank lines skipped); SourceError naming the file and line."""
    rows = []
    for number, line in enumerate(digest.read(path, label).decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SourceError(path, f"line {number}: bad JSON: {error}") from None
        if not isinstance(row, dict):
            raise SourceError(path, f"line {number}: expected a JSON object")
        rows.append(row)
    return rows
