"""Sampling concrete model configurations from a zoo spec.

Random sampling draws model ``i`` from ``numpy.random.default_rng([spec seed, i])``, so a
config never depends on how many models are sampled: growing a zoo keeps the configs it
already has. Grid sampling orders the replicas seed-major (all grid points with seed 0,
then with seed 1, ...), so adding seeds also keeps the existing configs first.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from weightzoo.core.fingerprint import CODE_VERSION, canonical_json, fingerprint_of_texts

BUILDER_REVISION = "builders-dropout-slots"

if TYPE_CHECKING:  # spec imports Distribution from here
    from weightzoo.core.spec import TrainingSettings, ZooSpec

SEED_LIMIT = 2**31
GRID_SEED_STRIDE = 1000


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's distribution: fixed, categorical, uniform, log-uniform, integer."""

    kind: str
    values: tuple = ()
    low: float | int | None = None
    high: float | int | None = None

    def to_dict(self) -> dict:
        """Return the explicit spec form, e.g. ``{"log-uniform": [0.001, 0.1]}``."""
        if self.kind == "fixed":
            return {"fixed": self.values[0]}
        if self.kind == "categorical":
            return {"categorical": list(self.values)}
        return {self.kind: [self.low, self.high]}

    @property
    def is_discrete(self) -> bool:
        """Whether the distribution has finitely many values (so a grid can enumerate it)."""
        return self.kind in ("fixed", "categorical", "integer")

    def grid_values(self) -> tuple:
        """Return every value of a discrete distribution, in spec order."""
        if self.kind == "integer":
            return tuple(range(self.low, self.high + 1))
        if self.kind in ("fixed", "categorical"):
            return self.values
        raise ValueError(f"a {self.kind} distribution has no grid values")

    def grid_size(self) -> int:
        """Return the number of grid values without enumerating them."""
        return self.high - self.low + 1 if self.kind == "integer" else len(self.grid_values())

    def contains(self, value: Any) -> bool:
        """Return whether ``value`` can be drawn from this distribution."""
        if self.kind in ("fixed", "categorical"):
            return any(value == v and type(value) is type(v) for v in self.values)
        if self.kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        return self.low <= value <= self.high


@dataclass(frozen=True)
class ModelConfig:
    """One concrete model of a zoo: its hyperparameters, training settings and identity."""

    index: int
    hyperparameters: tuple[tuple[str, Any], ...]
    training: TrainingSettings
    spec_name: str
    dataset_options: tuple = ()

    @property
    def params(self) -> dict:
        """The hyperparameters (including ``seed`` and ``architecture``) as a dict (a fresh copy)."""
        return dict(self.hyperparameters)

    @property
    def dataset_kwargs(self) -> dict:
        """The loader options of this model's dataset as a plain (JSON-like) dict."""
        return _thaw(self.dataset_options)

    def fingerprint(self, code_version: str = CODE_VERSION) -> str:
        """Hash of the config, the training settings, the dataset options and the code version
        (and the builders' revision, for the configs whose meaning it changed); computed once per
        config and code version: planning asks for it several times."""
        cache = self.__dict__.setdefault("_fingerprints", {})  # frozen: cached beside the fields
        if code_version not in cache:
            revision = builder_revision(self.params, self.training.traces is not None)
            cache[code_version] = fingerprint_of_texts(
                canonical_json(self.params), _canonical_part(self.training), _canonical_part(self.dataset_options),
                canonical_json(code_version), *(canonical_json(part) for part in revision))
        return cache[code_version]

    @property
    def model_id(self) -> str:
        """The model's identity in a zoo: ``"m"`` + 15 hex digits of its fingerprint."""
        return "m" + self.fingerprint(CODE_VERSION)[:15]


@functools.lru_cache(maxsize=64)
def _canonical_part(value) -> str:
    """The canonical JSON of a part every config of a spec shares (training settings, frozen
    dataset options), made once per distinct value."""
    return canonical_json(value.to_dict() if hasattr(value, "to_dict") else _thaw(value))


def builder_revision(params: dict, traced: bool) -> tuple[str, ...]:
    """``(BUILDER_REVISION,)`` for the configs whose trained weights or traces changed meaning
    when every block got its Dropout module (see :mod:`weightzoo.core.models`), else ``()``
    so every other fingerprint stays as it was: a small-cnn with dropout (it lost the dropout
    after its third conv, as in Schürholt et al.'s CNN), and traced models whose tensor
    names moved (dropout 0, or a small-cnn): a trace spec's ``"9.bias"`` may now name
    another tensor."""
    rate = float(params.get("dropout") or 0.0)
    small_cnn = params.get("architecture") == "small-cnn"
    if (small_cnn and rate > 0) or (traced and (rate == 0 or small_cnn)):
        return (BUILDER_REVISION,)
    return ()


def sample_configs(spec: ZooSpec, n: int | None = None) -> list[ModelConfig]:
    """Return the first ``n`` (default: ``spec.models``) configs of ``spec``'s sequence."""
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if spec.sampling["method"] == "grid":
        draws = _grid_draws(spec, n if n is not None else spec.models)
    else:
        draws = _random_draws(spec, n if n is not None else spec.models)
    return [make_config(spec, i, params) for i, params in enumerate(draws)]


def draw_value(distribution: Distribution, rng: np.random.Generator) -> Any:
    """Draw one plain Python value (int, float, str or bool) from ``distribution``."""
    kind = distribution.kind
    if kind == "fixed":
        return distribution.values[0]
    if kind == "categorical":
        return distribution.values[int(rng.integers(len(distribution.values)))]
    if kind == "integer":
        return int(rng.integers(distribution.low, distribution.high + 1))
    if kind == "uniform":
        return float(rng.uniform(distribution.low, distribution.high))
    if kind == "log-uniform":
        value = math.exp(rng.uniform(math.log(distribution.low), math.log(distribution.high)))
        return min(max(value, distribution.low), distribution.high)  # exp(log(x)) may drift by an ulp
    raise ValueError(f"unknown distribution kind {kind!r}")


def _random_draws(spec: ZooSpec, n: int) -> Iterator[dict]:
    for i in range(n):
        rng = np.random.default_rng([spec.sampling["seed"], i])
        # The seed is drawn first so that it does not depend on the hyperparameter set.
        params = {"seed": int(rng.integers(SEED_LIMIT))}
        for name in sorted(spec.hyperparameters):
            params[name] = draw_value(spec.hyperparameters[name], rng)
        yield params


def grid_size(spec: ZooSpec) -> int:
    """Return the number of grid points × seeds of a grid spec (ignoring ``models``)."""
    sizes = [d.grid_size() for d in spec.hyperparameters.values()]
    return math.prod(sizes) * spec.sampling["seeds"]


def _grid_draws(spec: ZooSpec, n: int | None) -> Iterator[dict]:
    total = grid_size(spec)
    n = total if n is None else n
    if n > total:
        raise ValueError(f"the grid of spec {spec.name!r} has {total} models, asked for {n}")
    names = sorted(spec.hyperparameters)
    points = itertools.product(range(spec.sampling["seeds"]),
                               *(spec.hyperparameters[name].grid_values() for name in names))
    base_seed = spec.sampling["seed"] * GRID_SEED_STRIDE
    for seed_index, *values in itertools.islice(points, n):
        yield {"seed": base_seed + seed_index, **dict(zip(names, values))}


def make_config(spec: ZooSpec, index: int, params: dict) -> ModelConfig:
    params.setdefault("architecture", spec.architecture)
    options = spec.dataset_options.get(params["dataset"], {})
    return ModelConfig(
        index=index,
        hyperparameters=tuple(sorted(params.items())),
        training=spec.training,
        spec_name=spec.name,
        dataset_options=_freeze(options),
    )


def _freeze(value: Any) -> Any:
    """Return a hashable copy: mappings become sorted item tuples, lists become tuples."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("__list__", tuple(_freeze(item) for item in value))
    return value


def _thaw(value: Any) -> Any:
    """Invert ``_freeze`` for a frozen mapping."""
    return {key: _thaw_value(item) for key, item in value}


def _thaw_value(value: Any) -> Any:
    if isinstance(value, tuple) and value[:1] == ("__list__",):
        return [_thaw_value(item) for item in value[1]]
    if isinstance(value, tuple):
        return _thaw(value)
    return value
