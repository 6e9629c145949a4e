"""The Parquet tables of a version: rows as plain dicts in, typed Arrow tables out.

models.parquet
    model_id, fingerprint, layout_id (str), row (int64: the row in ``weights/<layout_id>``),
    one typed column per hyperparameter (bool, int64, float64 or string; null where a model
    lacks it; a hyperparameter whose name clashes with a fixed column is stored as
    ``hp_<name>``; lists/dicts as canonical JSON strings, mixed types as strings),
    split ("train"/"val"/"test"), status, message, n_params, n_snapshots (int64),
    n_trace_steps (int64: recorded trace points, 0 without traces; null for models published
    before traces existed), steps_per_epoch (int64, null without traces), spec_name,
    config_json, training_json, version_added (str).
snapshots.parquet
    model_id, k (int64), epoch (float64, so fractional epochs fit), step (int64),
    train_loss, train_acc, test_loss, test_acc, gap (float64); nulls allowed.
layouts.parquet
    layout_id, index, name, shape (list<int32>), offset, length, layer, role, kind.

Splits are a pure function of (model_id, split_seed, fractions): extending a zoo never moves
a model, and all snapshots of a network share its split.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable, Mapping

import pyarrow as pa

from weightzoo.core.layout import WeightLayout

SPLITS = ("train", "val", "test")
LEADING_COLUMNS = {"model_id": pa.string(), "fingerprint": pa.string(), "layout_id": pa.string(),
                   "row": pa.int64()}
TRAILING_COLUMNS = {"split": pa.string(), "status": pa.string(), "message": pa.string(),
                    "n_params": pa.int64(), "n_snapshots": pa.int64(), "n_trace_steps": pa.int64(),
                    "steps_per_epoch": pa.int64(), "spec_name": pa.string(),
                    "config_json": pa.string(), "training_json": pa.string(),
                    "version_added": pa.string()}
RESERVED = set(LEADING_COLUMNS) | set(TRAILING_COLUMNS)
SNAPSHOT_SCHEMA = pa.schema([
    ("model_id", pa.string()), ("k", pa.int64()), ("epoch", pa.float64()), ("step", pa.int64()),
    ("train_loss", pa.float64()), ("train_acc", pa.float64()), ("test_loss", pa.float64()),
    ("test_acc", pa.float64()), ("gap", pa.float64()),
])
LAYOUT_SCHEMA = pa.schema([
    ("layout_id", pa.string()), ("index", pa.int64()), ("name", pa.string()),
    ("shape", pa.list_(pa.int32())), ("offset", pa.int64()), ("length", pa.int64()),
    ("layer", pa.int64()), ("role", pa.string()), ("kind", pa.string()),
])


def check_fractions(fractions) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1; got {fractions}")
    return values


def assign_split(model_id: str, split_seed: int, fractions) -> str:
    """The split of a model: sha256(seed, model_id) as a uniform number against the fractions."""
    digest = hashlib.sha256(f"{int(split_seed)}:{model_id}".encode()).digest()
    uniform = int.from_bytes(digest[:8], "big") / 2.0**64
    train, val, _ = check_fractions(fractions)
    if uniform < train:
        return "train"
    return "val" if uniform < train + val else "test"


def canonical_json(value) -> str:
    """Sorted-key, compact JSON: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def hyperparameter_column(name: str) -> str:
    """The models-table column of a hyperparameter (prefixed when it clashes with a fixed column)."""
    return f"hp_{name}" if name in RESERVED else name


def model_row(record, *, row: int, split: str, n_snapshots: int, version_added: str,
              n_trace_steps: int = 0, steps_per_epoch: int | None = None) -> dict:
    """One models-table row from a staged record (:class:`weightzoo.io.records.StagedRecord`)."""
    result = {"model_id": str(record.model_id), "fingerprint": record.fingerprint,
              "layout_id": record.layout_id, "row": int(row)}
    for name, value in record.hyperparameters.items():
        result[hyperparameter_column(name)] = value
    result.update(split=split, status=record.status, message=str(record.message or ""),
                  n_params=int(record.n_params), n_snapshots=int(n_snapshots), n_trace_steps=int(n_trace_steps),
                  steps_per_epoch=steps_per_epoch, spec_name=record.spec_name,
                  config_json=canonical_json(record.config), training_json=canonical_json(record.training),
                  version_added=version_added)
    return result


def snapshot_rows(model_id: str, snapshots: Iterable[Mapping]) -> list[dict]:
    """Snapshots-table rows of one model (missing metrics become null)."""
    return [{name: (model_id if name == "model_id" else snap.get(name)) for name in SNAPSHOT_SCHEMA.names}
            for snap in snapshots]


def layout_rows(layout: WeightLayout) -> list[dict]:
    """Layouts-table rows of one layout."""
    return [dict(record, layout_id=layout.layout_id) for record in layout.to_records()]


def models_table(rows: list[dict]) -> pa.Table:
    """A typed models table; hyperparameter columns in order of first appearance."""
    hyper = list(dict.fromkeys(key for row in rows for key in row if key not in RESERVED))
    fields, arrays = [], []
    for name, kind in list(LEADING_COLUMNS.items()) + [(h, None) for h in hyper] + list(TRAILING_COLUMNS.items()):
        values = [row.get(name) for row in rows]
        if kind is None:
            kind = column_type({value_kind(v) for v in values})
            values = conform_values(values, kind)
        fields.append(pa.field(name, kind))
        arrays.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def snapshots_table(rows: list[dict]) -> pa.Table:
    """A typed snapshots table."""
    return pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)


def layouts_table(rows: list[dict]) -> pa.Table:
    """A typed layouts table."""
    return pa.Table.from_pylist(rows, schema=LAYOUT_SCHEMA)


def value_kind(value) -> str:
    """A hyperparameter value's kind for typing its column: null, bool, int, float or str."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "float" if isinstance(value, float) else "str"


def column_type(kinds: set) -> pa.DataType:
    """The type of a hyperparameter column holding values of ``kinds``: bool, int64 or float64
    when every present value allows it, else string (nulls never decide)."""
    present = set(kinds) - {"null"}
    if present and present <= {"bool"}:
        return pa.bool_()
    if present and present <= {"int"}:
        return pa.int64()
    if present and present <= {"int", "float"}:
        return pa.float64()
    return pa.string()


def conform_values(values: list, kind: pa.DataType) -> list:
    """Python values ready for a column of ``kind`` (ints as floats, anything as text for strings)."""
    if kind == pa.string():
        return [None if v is None else _as_text(v) for v in values]
    if kind == pa.float64():
        return [None if v is None else float(v) for v in values]
    return values


def _as_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return canonical_json(value)
    return str(value)
