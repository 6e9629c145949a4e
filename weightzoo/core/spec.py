"""Zoo specs: the validated description of a model zoo.

A spec (YAML, JSON or a mapping) is checked against the zoo-spec JSON Schema first
(``weightzoo.core.spec_schema`` builds it; ``schemas/zoo-spec.schema.json`` is its
written-out copy); the schema is the single source of truth for structure and value domains.
Checks that JSON Schema cannot express (low < high, snapshot epochs within the
training run, grid sampling only over discrete values) follow. Every failure is a
``SpecError`` naming the dotted field path and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jsonschema
import yaml

from weightzoo.core.fingerprint import canonical_json
from weightzoo.errors import InputError
from weightzoo.core.sampling import Distribution
from weightzoo.core.spec_schema import DATASETS, HYPERPARAMETERS, MAX_MODELS, Hyperparameter, spec_schema

if TYPE_CHECKING:  # traces imports SpecError from here
    from weightzoo.core.traces import TraceSettings


class SpecError(InputError):
    """A spec is invalid; ``field`` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field or '<spec>'}: {message}")

    def __reduce__(self):
        return (type(self), (self.field, self.message))


@dataclass(frozen=True)
class TrainingSettings:
    """How every model of a zoo is trained; snapshot 0 (initialisation) is implicit."""

    epochs: int
    snapshot_epochs: tuple[int, ...]
    device: str = "cpu"
    split_seed: int = 0
    test_fraction: float = 0.2
    deterministic: bool = True
    traces: TraceSettings | None = None

    def to_dict(self) -> dict:
        """Return the canonical spec form (snapshots as explicit epochs).

        ``traces`` appears only when set: untraced settings keep the form (and so the model
        fingerprints) they had before traces existed.
        """
        out = {
            "epochs": self.epochs,
            "snapshots": {"epochs": list(self.snapshot_epochs)},
            "device": self.device,
            "split_seed": self.split_seed,
            "test_fraction": self.test_fraction,
            "deterministic": self.deterministic,
        }
        if self.traces is not None:
            out["traces"] = self.traces.to_dict()
        return out

    def __hash__(self) -> int:
        return _cached_hash(self)


@dataclass(frozen=True)
class ZooSpec:
    """A validated zoo spec; ``raw`` keeps the original mapping for manifests."""

    name: str
    description: str
    architecture: str
    models: int | None
    sampling: dict
    hyperparameters: dict
    training: TrainingSettings
    dataset_options: dict
    raw: dict = field(compare=False, repr=False)

    def to_dict(self) -> dict:
        """Return the canonical, JSON-able form; ``load_spec(spec.to_dict()) == spec``."""
        out = {"name": self.name, "architecture": self.architecture,
               "sampling": dict(self.sampling), "training": self.training.to_dict(),
               "hyperparameters": {n: d.to_dict() for n, d in self.hyperparameters.items()}}
        if self.description:
            out["description"] = self.description
        if self.models is not None:
            out["models"] = self.models
        if self.dataset_options:
            out["dataset_options"] = copy.deepcopy(self.dataset_options)
        return out

    def with_models(self, n: int) -> ZooSpec:
        """Return this spec with ``models`` set to ``n`` (validated like any spec)."""
        spec = load_spec({**self.to_dict(), "models": n})
        return replace(spec, raw={**self.raw, "models": n})

    def __hash__(self) -> int:
        return _cached_hash(self)


def check_model_count(n: int | None, field: str = "models") -> None:
    """Raise SpecError naming ``field`` unless ``n`` is None or 1..MAX_MODELS."""
    if n is not None and not 1 <= n <= MAX_MODELS:
        raise SpecError(field, f"expected a number of models in 1..{MAX_MODELS:,}, got {n}")


def load_spec(source: str | Path | Mapping | ZooSpec) -> ZooSpec:
    """Load and validate a spec from a .yaml/.yml/.json path, a preset name or a mapping."""
    if isinstance(source, ZooSpec):
        return source
    data = _to_plain(_read_source(source), "")
    _validate_schema(data)
    return _build_spec(data)


# --- reading -----------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_source(source: Any) -> Any:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        return _read_file(Path(source))
    if isinstance(source, str):
        return _read_file(_preset_path(source))
    raise SpecError("", f"expected a path, a preset name or a mapping, got {type(source).__name__}")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix in (".yaml", ".yml", ".json")


def _preset_path(name: str) -> Path:
    from weightzoo.presets import list_presets, preset_path

    if name not in list_presets():
        raise SpecError("", f"no spec file or preset named {name!r}{_suggest(name, list_presets())}")
    return preset_path(name)


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.load(text, _YamlLoader)
    except OSError as error:
        raise SpecError("", f"cannot read spec file {str(path)!r}: {error}") from None
    except (ValueError, yaml.YAMLError) as error:
        raise SpecError("", f"{str(path)!r} is not valid YAML/JSON: {error}") from None


def _to_plain(value: Any, path: str) -> Any:
    """Copy ``value`` as plain JSON data, rejecting what JSON cannot represent."""
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise SpecError(path, f"expected string keys, got {bad[0]!r}")
        return {k: _to_plain(v, _join(path, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(path, f"expected a finite number, got {value!r}")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise SpecError(path, f"expected a JSON value, got {type(value).__name__} {value!r:.60}")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (known: {', '.join(sorted(known))})"


# --- schema validation -------------------------------------------------------------


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(spec_schema())


def _validate_schema(data: Any) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        raise _schema_error_to_spec_error(error)


def _schema_error_to_spec_error(error: jsonschema.ValidationError) -> SpecError:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(r for r in error.validator_value if r not in error.instance)
        known = error.schema.get("properties", {})
        typo = difflib.get_close_matches(missing, [str(k) for k in error.instance if k not in known], n=1)
        if typo:  # `hyperparamters:` is the missing `hyperparameters:` misspelt, not a second problem
            return SpecError(_dotted(path + [typo[0]]), f"unknown field {typo[0]!r}; did you mean {missing!r}? "
                                                        f"(required field {missing!r} is missing)")
        return SpecError(_dotted(path + [missing]), "required field is missing")
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        name = next(k for k in error.instance if k not in known)
        what = "hyperparameter" if path == ["hyperparameters"] else "field"
        return SpecError(_dotted(path + [name]), f"unknown {what} {name!r}{_suggest(name, known)}")
    if "propertyNames" in error.absolute_schema_path:
        return SpecError(_dotted(path + [error.instance]),
                         f"unknown dataset {error.instance!r}{_suggest(error.instance, DATASETS)}")
    if path[:1] == ["hyperparameters"] and len(path) > 1:
        schema = spec_schema()["properties"]["hyperparameters"]["properties"][path[1]]
        return SpecError(_dotted(path[:2]), f"expected {schema['description']}; {_short(error.message)}")
    expected = error.schema.get("description") if isinstance(error.schema, dict) else None
    suffix = f" (expected {expected})" if expected else ""
    return SpecError(_dotted(path), _short(error.message) + suffix)


def _dotted(path: list) -> str:
    dotted = ""
    for key in path:
        dotted = _join(dotted, key)
    return dotted


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


# --- building ----------------------------------------------------------------------


def _build_spec(data: dict) -> ZooSpec:
    hyperparameters = {name: _parse_distribution(name, value)
                       for name, value in sorted(data["hyperparameters"].items())}
    sampling = _parse_sampling(data.get("sampling"))
    models = int(data["models"]) if "models" in data else None
    if sampling["method"] == "grid":
        _check_grid(hyperparameters, sampling["seeds"], models)
    return ZooSpec(
        name=data["name"], description=data.get("description", ""),
        architecture=data.get("architecture", _default("architecture")),
        models=models, sampling=sampling, hyperparameters=hyperparameters,
        training=_parse_training(data["training"]),
        dataset_options=copy.deepcopy(data.get("dataset_options", {})),
        raw=copy.deepcopy(data),
    )


def _default(*keys: str) -> Any:
    schema = spec_schema()
    for key in keys[:-1]:
        schema = schema["properties"][key]
    return copy.deepcopy(schema["properties"][keys[-1]]["default"])


def _parse_distribution(name: str, value: Any) -> Distribution:
    info = HYPERPARAMETERS[name]
    if isinstance(value, dict):
        ((kind, argument),) = value.items()
    else:
        kind, argument = ("categorical", value) if isinstance(value, list) else ("fixed", value)
    if kind == "fixed":
        return Distribution("fixed", (info.coerce(argument),))
    if kind == "categorical":
        return Distribution("categorical", tuple(info.coerce(v) for v in argument))
    low, high = (info.coerce(v) for v in argument)
    _check_range(name, kind, low, high, info)
    return Distribution(kind, low=low, high=high)


def _check_range(name: str, kind: str, low: Any, high: Any, info: Hyperparameter) -> None:
    field_name = f"hyperparameters.{name}"
    if kind == "integer" and low > high:
        raise SpecError(field_name, f"expected {{'integer': [low, high]}} with low <= high, got {[low, high]}")
    if kind == "integer" and info.odd and low != high:
        raise SpecError(field_name, f"an integer range includes even values; list odd values instead, got {[low, high]}")
    if kind == "uniform" and not low < high:
        raise SpecError(field_name, f"expected {{'uniform': [low, high]}} with low < high, got {[low, high]}")
    if kind == "log-uniform" and not 0 < low < high:
        raise SpecError(field_name, f"expected {{'log-uniform': [low, high]}} with 0 < low < high, got {[low, high]}")


def _parse_sampling(sampling: dict | None) -> dict:
    sampling = sampling if sampling is not None else _default("sampling")
    seed = int(sampling.get("seed", 0))
    if sampling["method"] == "random":
        if "seeds" in sampling:
            raise SpecError("sampling.seeds", "expected only with method grid (random sampling draws a seed per model)")
        return {"method": "random", "seed": seed}
    return {"method": "grid", "seed": seed, "seeds": int(sampling.get("seeds", 1))}


def _check_grid(hyperparameters: dict, seeds: int, models: int | None) -> None:
    size = seeds
    for name, distribution in hyperparameters.items():
        if not distribution.is_discrete:
            raise SpecError(f"hyperparameters.{name}",
                            f"grid sampling needs fixed, categorical or integer values, got {distribution.kind}")
        size *= distribution.grid_size()
    if models is not None and models > size:
        raise SpecError("models", f"expected at most the grid size × seeds = {size}, got {models}")


def _parse_training(training: dict) -> TrainingSettings:
    from weightzoo.core.traces import TraceSettings

    epochs = int(training["epochs"])
    return TrainingSettings(
        epochs=epochs,
        snapshot_epochs=_resolve_snapshots(training.get("snapshots"), epochs),
        device=training.get("device", _default("training", "device")),
        split_seed=int(training.get("split_seed", _default("training", "split_seed"))),
        test_fraction=float(training.get("test_fraction", _default("training", "test_fraction"))),
        deterministic=training.get("deterministic", _default("training", "deterministic")),
        traces=TraceSettings.from_spec(training.get("traces")),
    )


def _resolve_snapshots(snapshots: dict | None, epochs: int) -> tuple[int, ...]:
    """Return the epochs of snapshots 1..K (default: every epoch)."""
    if snapshots is None:
        return tuple(range(1, epochs + 1))
    if "count" in snapshots:
        count = int(snapshots["count"])
        if count > epochs:
            raise SpecError("training.snapshots.count", f"expected at most epochs = {epochs}, got {count}")
        # Evenly spaced, rounded half up, ending at `epochs`; distinct because count <= epochs.
        return tuple((2 * j * epochs + count) // (2 * count) for j in range(1, count + 1))
    explicit = [int(e) for e in snapshots["epochs"]]
    if explicit != sorted(explicit):
        raise SpecError("training.snapshots.epochs", f"expected sorted epochs, got {explicit}")
    if explicit[-1] > epochs:
        raise SpecError("training.snapshots.epochs", f"expected epochs within 1..{epochs}, got {explicit[-1]}")
    return tuple(explicit)


def _cached_hash(value) -> int:
    """The hash of a frozen settings object's canonical JSON, made once (planning looks settings
    up once per config). The text is kept, not the hash: it pickles to another process as is."""
    text = value.__dict__.get("_canonical")
    if text is None:
        text = canonical_json(value.to_dict())
        value.__dict__["_canonical"] = text  # frozen dataclass: cached beside the fields
    return hash(text)
