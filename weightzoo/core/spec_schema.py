"""The zoo-spec schema's one source: the hyperparameter table and the shape of a spec.

``spec_schema()`` builds the JSON Schema (draft 2020-12) that ``load_spec`` validates
against from the values below; the parser reads the same ``HYPERPARAMETERS`` table for
each value's Python type. ``schemas/zoo-spec.schema.json`` at the repository root is this
schema written out for editors and other tools, and a test fails when it differs, so
change the schema here and regenerate the file::

    python -m weightzoo.core.spec_schema schemas/zoo-spec.schema.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATASETS = ("mnist5k", "digits", "sinusoid", "mnist-idx", "cifar10")
ARCHITECTURES = ("nws-cnn", "small-cnn", "large-cnn", "mlp")
# Planning a build samples and builds every config up front: a count beyond this is a typo
# that would hang the planner, not a zoo.
MAX_MODELS = 1_000_000

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_RANGE_KINDS = {"int": ("integer",), "float": ("uniform", "log-uniform")}


@dataclass(frozen=True)
class Hyperparameter:
    """The value domain of one known hyperparameter and what it means.

    ``description`` names the hyperparameter; the schema's description adds the domain
    (and ``note``, e.g. what a special value means) and the accepted distribution forms.
    """

    type: str  # "str" | "int" | "float" | "bool"
    description: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    odd: bool = False
    note: str = ""

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this hyperparameter's Python type (3.0 -> 3, 0 -> 0.0)."""
        return {"int": int, "float": float}.get(self.type, lambda v: v)(value)

    @property
    def range_kinds(self) -> tuple[str, ...]:
        """The distributions given as ``[low, high]``: integer, or uniform and log-uniform."""
        return _RANGE_KINDS.get(self.type, ())

    def describe(self) -> str:
        """Return the schema description, e.g. ``"learning rate, number in (0, 10]; given as ..."``."""
        if self.choices:
            text = f"{self.description} ({' | '.join(self.choices)})"
        else:
            text = f"{self.description}, {self._domain()}"
        if self.note:
            text += f" ({self.note})"
        forms = ["a value", "a list (categorical)", "{fixed: v}", "{categorical: [...]}"]
        forms += [f"{{{kind}: [low, high]}}" for kind in self.range_kinds]
        return f"{text}; given as {', '.join(forms)}"

    def _domain(self) -> str:
        if self.type == "bool":
            return "boolean"
        if self.type == "int":
            kind = "odd integer" if self.odd else "integer"
            bounds = f">= {self.minimum}" if self.maximum is None else f"{self.minimum}..{self.maximum}"
            return f"{kind} {bounds}"
        if self.maximum is None:
            return f"number {'>' if self.exclusive_minimum else '>='} {self.minimum}"
        low, high = "[("[self.exclusive_minimum], "])"[self.exclusive_maximum]
        return f"number in {low}{self.minimum}, {self.maximum}{high}"

    def value_schema(self) -> dict:
        """Return the JSON Schema of one value of this hyperparameter."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type]}
        if self.choices:
            schema["enum"] = list(self.choices)
        bounds = {"minimum": None if self.exclusive_minimum else self.minimum,
                  "maximum": None if self.exclusive_maximum else self.maximum,
                  "exclusiveMinimum": self.minimum if self.exclusive_minimum else None,
                  "exclusiveMaximum": self.maximum if self.exclusive_maximum else None}
        schema.update({key: bound for key, bound in bounds.items() if bound is not None})
        if self.odd:
            schema["not"] = {"multipleOf": 2}
        return schema

    def to_schema(self) -> dict:
        """Return the JSON Schema of the hyperparameter: a value, a list or a distribution."""
        value = self.value_schema()
        values = {"type": "array", "items": value, "minItems": 1, "uniqueItems": True}
        pair = {"type": "array", "prefixItems": [value, value], "minItems": 2, "maxItems": 2}
        forms = [value, values, _single_key("fixed", value), _single_key("categorical", values)]
        forms += [_single_key(kind, pair) for kind in self.range_kinds]
        return {"description": self.describe(), "anyOf": forms}


def _choice(description: str, choices: tuple[str, ...]) -> Hyperparameter:
    return Hyperparameter("str", description, choices)


def _integer(description: str, low: int, high: int | None = None, odd: bool = False,
             note: str = "") -> Hyperparameter:
    return Hyperparameter("int", description, minimum=low, maximum=high, odd=odd, note=note)


def _number(description: str, low: float, high: float | None = None,
            exclusive_minimum: bool = False, exclusive_maximum: bool = False) -> Hyperparameter:
    return Hyperparameter("float", description, minimum=low, maximum=high,
                          exclusive_minimum=exclusive_minimum, exclusive_maximum=exclusive_maximum)


def _boolean(description: str) -> Hyperparameter:
    return Hyperparameter("bool", description)


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "dataset": _choice("task dataset", DATASETS),
    "architecture": _choice("architecture family", ARCHITECTURES),
    "conv_layers": _integer("number of conv layers", 1, 8),
    "conv_width": _integer("filters per conv layer", 1, 256),
    "filter_size": _integer("conv filter size", 1, 9, odd=True),
    "fc_layers": _integer("hidden fully connected layers", 0, 4),
    "fc_width": _integer("units per fully connected layer", 1, 1024),
    "hidden_layers": _integer("mlp hidden layers", 1, 8),
    "hidden_width": _integer("mlp units per hidden layer", 1, 2048),
    "activation": _choice("activation function", ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu")),
    "init": _choice("weight initialisation", ("default", "kaiming_uniform", "kaiming_normal", "xavier_uniform",
                                              "xavier_normal", "orthogonal", "uniform", "normal")),
    "optimizer": _choice("optimizer", ("sgd", "momentum", "adam", "rmsprop")),
    "lr": _number("learning rate", 0, 10, exclusive_minimum=True),
    "batch_size": _integer("batch size", 1, 4096),
    "weight_decay": _number("weight decay", 0),
    "dropout": _number("dropout probability", 0, 1, exclusive_maximum=True),
    "batch_norm": _boolean("batch normalisation"),
    "augmentation": _choice("data augmentation", ("none", "shift", "noise", "flip")),
    "label_noise": _number("fraction of corrupted labels", 0, 1),
    "classes": _integer("number of classes used", 0, note="0 = all"),
    "pixel_shuffle": _boolean("fixed random pixel permutation"),
    "frequency": _number("sinusoid frequency", 0, exclusive_minimum=True),
    "input_dim": _integer("sinusoid input dimension: the 2-D points are embedded in this many dimensions "
                          "by a seeded random orthogonal map (Loukas et al. use 10)", 2, 4096),
    "frozen_identity_input": _boolean("mlp only: a first layer with a frozen identity weight "
                                      "(square, input size) and a trainable bias"),
}
"""Known hyperparameters (in schema order) and their domains: the source of the schema."""


def _single_key(key: str, value: dict) -> dict:
    """Schema of an object with exactly the one field ``key``, e.g. ``{fixed: v}``."""
    return {"type": "object", "required": [key], "additionalProperties": False, "properties": {key: value}}


def _integer_field(minimum: int, maximum: int | None = None, default: int | None = None) -> dict:
    """Schema of a plain integer field (not a hyperparameter) with optional maximum and default."""
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default}
    return {key: value for key, value in schema.items() if value is not None}


_SAMPLING = {
    "description": "{method: random, seed: s} or {method: grid, seeds: n, seed: s}",
    "type": "object",
    "required": ["method"],
    "additionalProperties": False,
    "properties": {
        "method": {"enum": ["random", "grid"]},
        "seed": _integer_field(0, default=0),
        "seeds": {"description": "grid only: replicas of every grid point", **_integer_field(1, default=1)},
    },
    "default": {"method": "random", "seed": 0},
}

_SNAPSHOTS = {
    "description": "{count: K} evenly spaced snapshots, or {epochs: [...]} explicit; snapshot 0 "
                   "(initialisation) is always added; default: every epoch",
    "anyOf": [
        _single_key("count", _integer_field(1)),
        _single_key("epochs", {"type": "array", "items": _integer_field(1), "minItems": 1, "uniqueItems": True}),
    ],
}

_TRACES = {
    "description": "per-step traces {tensors: [WeightLayout tensor names, e.g. 1.bias], every: N}: the "
                   "tensors' values, learning rate and loss after every N-th optimisation step (default 1); "
                   "absent (or []) for none",
    "anyOf": [
        {
            "type": "object",
            "required": ["tensors"],
            "additionalProperties": False,
            "properties": {
                "tensors": {"type": "array", "items": {"type": "string", "minLength": 1},
                            "minItems": 1, "uniqueItems": True},
                "every": _integer_field(1, default=1),
            },
        },
        {"description": "[] (legacy form of no traces); to record, use {tensors: [names], every: N}",
         "type": "array", "maxItems": 0},
    ],
}

_TRAINING = {
    "type": "object",
    "required": ["epochs"],
    "additionalProperties": False,
    "properties": {
        "epochs": _integer_field(1, maximum=100_000),
        "snapshots": _SNAPSHOTS,
        "device": {"description": "cpu, cuda or cuda:N", "type": "string",
                   "pattern": "^(cpu|cuda(:[0-9]+)?)$", "default": "cpu"},
        "split_seed": _integer_field(0, default=0),
        "test_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.2},
        "deterministic": {"type": "boolean", "default": True},
        "traces": _TRACES,
    },
}


def build_spec_schema() -> dict:
    """Return a new copy of the zoo-spec JSON Schema built from this module's values."""
    properties = {
        "name": {"description": "lowercase letters, digits and hyphens", "type": "string",
                 "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 64},
        "description": {"type": "string"},
        "architecture": {"description": "default architecture family; a hyperparameter named "
                                        "architecture overrides it",
                         "default": ARCHITECTURES[0], "type": "string", "enum": list(ARCHITECTURES)},
        "models": {"description": f"number of models (random sampling), or a cap on the grid; "
                                  f"at most {MAX_MODELS:,}",
                   **_integer_field(1, maximum=MAX_MODELS)},
        "sampling": _SAMPLING,
        "hyperparameters": {
            "description": "hyperparameter name -> distribution; dataset is required",
            "type": "object",
            "required": ["dataset"],
            "additionalProperties": False,
            "properties": {name: info.to_schema() for name, info in HYPERPARAMETERS.items()},
        },
        "training": _TRAINING,
        "dataset_options": {"description": "dataset name -> options passed to its loader", "type": "object",
                            "propertyNames": {"enum": list(DATASETS)},
                            "additionalProperties": {"type": "object"}},
    }
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://weightzoo.dev/schemas/zoo-spec.schema.json",
        "$comment": "Generated from weightzoo/core/spec_schema.py by "
                    "`python -m weightzoo.core.spec_schema`; edit that module, not this file.",
        "title": "weightzoo zoo spec",
        "description": "A model zoo: the hyperparameter space, how to sample it, and how every model is trained.",
        "type": "object",
        "required": ["name", "hyperparameters", "training"],
        "additionalProperties": False,
        "properties": properties,
        # Random sampling needs a model count; a grid may omit it (then it is the grid size).
        "if": {"required": ["sampling"],
               "properties": {"sampling": {"required": ["method"], "properties": {"method": {"const": "grid"}}}}},
        "then": {},
        "else": {"required": ["models"]},
    }
    return json.loads(json.dumps(schema))  # no dict shared between parts or with the constants


@lru_cache(maxsize=1)
def spec_schema() -> dict:
    """Return the zoo-spec JSON Schema (built once; treat it as read-only)."""
    return build_spec_schema()


def spec_schema_text() -> str:
    """Return the schema as the text of ``schemas/zoo-spec.schema.json``."""
    return json.dumps(spec_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the schema to the path given as the only argument, or to stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        raise SystemExit("usage: python -m weightzoo.core.spec_schema [OUTPUT.json]")
    if args:
        Path(args[0]).write_text(spec_schema_text(), encoding="utf-8")
    else:
        sys.stdout.write(spec_schema_text())


if __name__ == "__main__":
    main()
