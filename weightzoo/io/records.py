"""The typed records that cross the store's boundaries, validated where they cross.

- :class:`StagedRecord` — what a producer (training, an importer, SANE sampling, a pull) says
  about one model when it stages it; becomes the model's row of ``models.parquet``.
- :class:`Receipt` — what staging returns for a staged model (small; tasks return these,
  never arrays).
- :class:`SplitSettings` — how a version splits its models into train/val/test.
- :class:`Manifest` — ``versions/vNNNN/manifest.json``.

Each has ``to_dict()`` (strict JSON: NaN becomes null) and ``from_dict(data, where)``, which
raises RecordError naming ``where`` and the field when something is missing or mistyped.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Mapping

import numpy as np

from weightzoo.errors import RecordError
from weightzoo.io.tables import SPLITS, check_fractions

STATUSES = ("ok", "diverged", "failed")


_PLAIN = frozenset({str, int, bool, type(None)})


def to_jsonable(value):
    """Numpy scalars/arrays, tuples and non-finite floats as strict-JSON values (NaN → None)."""
    kind = type(value)
    if kind in _PLAIN:  # exact types first: records are mostly plain values, and ABC checks are slow
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict or isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, *, indent: int | None = None) -> str:
    """Strict, sorted-key JSON of ``value`` (after :func:`to_jsonable`)."""
    try:  # plain values need no conversion: let the C encoder do all of it
        return json.dumps(value, sort_keys=True, allow_nan=False, indent=indent)
    except (TypeError, ValueError):  # numpy values, NaN, keys of mixed types
        return json.dumps(to_jsonable(value), sort_keys=True, allow_nan=False, indent=indent)


def _require(cls, data, where: str) -> dict:
    if not isinstance(data, Mapping):
        raise RecordError(f"{where}: expected a JSON object for a {cls.__name__}, got {type(data).__name__}")
    names, required = _field_names(cls), _required_names(cls)
    missing = [name for name in required if name not in data]
    if missing:
        raise RecordError(f"{where}: {cls.__name__} lacks {missing}")
    return {key: value for key, value in data.items() if key in names}


@functools.lru_cache(maxsize=None)
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@functools.lru_cache(maxsize=None)
def _required_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)


class _Record:
    """What every record shares: strict-JSON ``to_dict`` and a validating ``from_dict``."""

    def to_dict(self) -> dict:
        """The record as strict-JSON values."""
        # to_jsonable copies every container, so asdict's deep copy would be paid twice
        return to_jsonable({name: getattr(self, name) for name in _field_names(type(self))})

    @classmethod
    def from_dict(cls, data, where: str = "record"):
        """The record read back from JSON; RecordError names ``where`` and the field."""
        return cls(**_require(cls, data, where))


@dataclass(frozen=True)
class StagedRecord(_Record):
    """One staged model as its producer describes it."""

    model_id: str
    fingerprint: str
    status: str
    layout_id: str
    n_params: int
    hyperparameters: dict
    config: dict
    training: dict
    spec_name: str
    code_version: str
    message: str = ""
    dataset_options: dict = field(default_factory=dict)
    train_seconds: float | None = None
    environment: dict | None = None  # where it was trained (weightzoo.io.environment)
    fleet: dict | None = None  # {"trainer", "models"}: which models trained together
    split: str | None = None  # a split the source fixed (imports, pulls); None: assigned at publish

    def __post_init__(self) -> None:
        where = f"staged record of {self.model_id!r}"
        if self.status not in STATUSES:
            raise RecordError(f"{where}: status {self.status!r} is not one of {STATUSES}")
        if self.split is not None and self.split not in SPLITS:
            raise RecordError(f"{where}: split {self.split!r} is not one of {SPLITS}")
        for name in ("hyperparameters", "config", "training", "dataset_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise RecordError(f"{where}: {name} must be a mapping, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.n_params, (int, np.integer)) or self.n_params < 0:
            raise RecordError(f"{where}: n_params must be a non-negative integer, got {self.n_params!r}")


@dataclass(frozen=True)
class Receipt(_Record):
    """A completely staged model: where it is and the checksums of its files."""

    fingerprint: str
    model_id: str
    path: str
    sha256: str
    layout_id: str
    n_snapshots: int
    status: str
    n_trace_steps: int = 0
    trace_tensors: tuple[str, ...] = ()
    steps_per_epoch: int | None = None
    traces_sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "trace_tensors", tuple(self.trace_tensors or ()))


@dataclass(frozen=True)
class SplitSettings(_Record):
    """A version's split: a model's split is a pure function of (model_id, seed, fractions)."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fractions", check_fractions(self.fractions))
        except (TypeError, ValueError) as error:
            raise RecordError(f"split: {error}") from None
        object.__setattr__(self, "seed", int(self.seed))

    def to_dict(self) -> dict:
        """``{"seed": int, "fractions": [train, val, test]}``."""
        return {"seed": self.seed, "fractions": list(self.fractions)}


@dataclass(frozen=True)
class Manifest(_Record):
    """``versions/vNNNN/manifest.json``: what a version is, where it came from, its checksums."""

    version: str
    parent: str | None
    icechunk_snapshot_id: str
    created_at: str
    counts: dict  # models, snapshots, by_status, by_layout
    split: SplitSettings
    tables: dict  # file name → sha256
    code_version: str = ""
    message: str = ""
    specs: list = field(default_factory=list)
    models_digest: str = ""
    n_new_models: int = 0
    packages: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)  # publish platform, training environments
    fleets: list = field(default_factory=list)
    source: dict | None = None  # pulled versions: where from
    arrays: dict = field(default_factory=dict)  # array path → its layout, shape, chunking (empty before shards)
    extra: dict = field(default_factory=dict)  # fields of newer code, kept as read

    @property
    def n_models(self) -> int:
        """Models in the version."""
        return int(self.counts["models"])

    def with_tables(self, tables: Mapping[str, str]) -> "Manifest":
        """This manifest with the tables' checksums filled in."""
        return replace(self, tables=dict(tables))

    def to_dict(self) -> dict:
        """The manifest as strict-JSON values (the file's content)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "split")}
        data["split"] = self.split.to_dict()
        if self.source is None:
            data.pop("source")
        return to_jsonable({**self.extra, **data})

    def to_json(self) -> bytes:
        """The file's bytes."""
        return dumps(self.to_dict(), indent=2).encode()

    @classmethod
    def from_dict(cls, data, where: str = "manifest.json") -> "Manifest":
        """A manifest read back; RecordError names ``where`` and the missing field."""
        values = _require(cls, data, where)
        values["split"] = SplitSettings.from_dict(values["split"], f"{where}: split")
        values["extra"] = {k: v for k, v in data.items() if k not in {f.name for f in fields(cls)}}
        return cls(**values)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        """A manifest from the file's bytes; RecordError names ``where`` when it is not JSON."""
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecordError(f"{where}: not valid JSON ({error})") from None
        return cls.from_dict(parsed, where)
