"""What changed between two versions of a zoo: models added, removed and changed.

Models are matched by ``model_id``. A model present in both versions is **changed** when
any of its models-table columns differs (fingerprint, status, message, split, row,
hyperparameters, ...; a column one version lacks counts as null) or any of its
snapshots-table rows differs (a snapshot k present in one version only is reported as
``snapshots.k``, a differing metric as ``snapshots.<metric>``). Values are compared
exactly, with null equal to null (NaN included), since both sides are stored values, not
recomputed ones.

:func:`diff_tables` compares DataFrames and lists every model; :func:`summarise_diff` compares
the Parquet files with DuckDB in memory that does not grow with the number of models (the
dataset card's diff): it counts every model and lists at most ``limit`` of each kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from weightzoo.io.card_queries import CardData, kind_of, literal, value_sql

SNAPSHOT_KEY = ["model_id", "k"]
STATES = ("added", "removed", "changed", "unchanged")
SQL_TYPES = {"bool": "BOOLEAN", "int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR"}


@dataclass(frozen=True)
class VersionDiff:
    """The difference between version ``a`` (older) and version ``b``."""

    version_a: str
    version_b: str
    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]] = field(default_factory=dict)  # model_id → changed fields
    n_unchanged: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able values, with counts."""
        return {"version_a": self.version_a, "version_b": self.version_b,
                "counts": {"added": len(self.added), "removed": len(self.removed),
                           "changed": len(self.changed), "unchanged": self.n_unchanged},
                "added": self.added, "removed": self.removed, "changed": self.changed}


def diff_tables(models_a: pd.DataFrame, snapshots_a: pd.DataFrame, models_b: pd.DataFrame,
                snapshots_b: pd.DataFrame, *, version_a: str = "a", version_b: str = "b") -> VersionDiff:
    """Compare two versions' models and snapshots tables (see the module docstring)."""
    ids_a, ids_b = set(models_a["model_id"]), set(models_b["model_id"])
    common = sorted(ids_a & ids_b)
    changed: dict[str, list[str]] = {model_id: [] for model_id in common}
    for model_id, column in _changed_model_columns(models_a, models_b, common):
        changed[model_id].append(column)
    for model_id, column in _changed_snapshot_columns(snapshots_a, snapshots_b, set(common)):
        changed[model_id].append(f"snapshots.{column}")
    changed = {model_id: fields for model_id, fields in changed.items() if fields}
    return VersionDiff(version_a, version_b, added=sorted(ids_b - ids_a), removed=sorted(ids_a - ids_b),
                       changed=changed, n_unchanged=len(common) - len(changed))


def diff_versions(zoo, version_a: str, version_b: str) -> VersionDiff:
    """Compare two published versions of ``zoo`` (a ZooHandle); VersionNotFound names a missing one."""
    zoo_a, zoo_b = zoo.open(version_a), zoo.open(version_b)
    return diff_tables(zoo_a.models, zoo_a.snapshots, zoo_b.models, zoo_b.snapshots,
                       version_a=version_a, version_b=version_b)


def _changed_model_columns(models_a, models_b, common: list[str]):
    """(model_id, column) for every differing models-table cell of the common models."""
    left = models_a.set_index("model_id").loc[common]
    right = models_b.set_index("model_id").loc[common]
    columns = list(dict.fromkeys([*left.columns, *right.columns]))
    for column in columns:
        differs = ~_same(_column(left, column), _column(right, column))
        for model_id in differs.index[differs.to_numpy()]:
            yield model_id, column


def _changed_snapshot_columns(snapshots_a, snapshots_b, common: set[str]):
    """(model_id, column) for snapshot rows of the common models that differ or exist on one side."""
    left = snapshots_a[snapshots_a["model_id"].isin(common)]
    right = snapshots_b[snapshots_b["model_id"].isin(common)]
    merged = left.merge(right, on=SNAPSHOT_KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    one_sided = merged.loc[merged["_merge"] != "both", "model_id"]
    for model_id in dict.fromkeys(one_sided):
        yield model_id, "k"
    both = merged[merged["_merge"] == "both"]
    metrics = [c for c in dict.fromkeys([*left.columns, *right.columns]) if c not in SNAPSHOT_KEY]
    for column in metrics:
        differs = ~_same(_column(both, f"{column}_a"), _column(both, f"{column}_b"))
        for model_id in dict.fromkeys(both.loc[differs.to_numpy(), "model_id"]):
            yield model_id, column


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype="object")


def _same(left: pd.Series, right: pd.Series) -> pd.Series:
    """Element-wise equality with null == null (numbers compare by value: 3 == 3.0)."""
    null_left, null_right = left.isna().to_numpy(), right.isna().to_numpy()
    present = ~(null_left | null_right)
    same = null_left & null_right
    same[present] = left.to_numpy(dtype=object)[present] == right.to_numpy(dtype=object)[present]
    return pd.Series(same, index=left.index)


@dataclass(frozen=True)
class DiffSummary:
    """Counts of added, removed, changed and unchanged models; at most ``limit`` ids of each kind
    (sorted), the changed ones with their changed fields; how many models changed each field."""

    counts: dict  # state → number of models
    listed: dict  # added/removed → [model_id], changed → {model_id: [field]}
    field_counts: dict  # field → number of changed models


def summarise_diff(data: CardData, limit: int) -> DiffSummary:
    """The diff from ``parent_models``/``parent_snapshots`` to ``models``/``snapshots`` of ``data``
    (same rules as :func:`diff_tables`), in streaming passes through scratch files, then counted.

    1. models whose snapshot rows may differ: a per-model digest (XOR of row hashes) of the k
       values or of whole rows differs between the versions (an extension finds none);
    2. the snapshot rows of just those models, joined on (model_id, k): which fields differ;
    3. the models tables joined on model_id, each cell as a 64-bit hash (null, NaN, -0.0 and
       numbers of another type normalised first), with the snapshot fields of step 2.
    """
    scratch = data.scratch
    metrics = _differences(data, "parent_snapshots", "snapshots", SNAPSHOT_KEY, "snapshots.")
    _copy(data, _suspects_sql(data, [name.removeprefix("snapshots.") for name, _ in metrics]), scratch / "suspects")
    _copy(data, _snapshot_fields_sql(metrics, scratch / "suspects.parquet"), scratch / "snapshot_fields")
    _copy(data, _diff_sql(data, [name for name, _ in metrics], scratch / "snapshot_fields.parquet"), scratch / "diff")
    table = f"read_parquet({literal(scratch / 'diff.parquet')})"
    counts = dict.fromkeys(STATES, 0) | dict(data.rows(f"SELECT state, count(*) FROM {table} GROUP BY state"))
    listed = {}
    for state in ("added", "removed", "changed"):
        rows = data.rows(f"SELECT model_id, fields FROM {table} WHERE state = ? ORDER BY model_id LIMIT {int(limit)}",
                         [state])
        listed[state] = dict(rows) if state == "changed" else [model_id for model_id, _ in rows]
    field_counts = dict(data.rows(f"SELECT field, count(*) FROM (SELECT unnest(fields) AS field FROM {table} "
                                  f"WHERE state = 'changed') GROUP BY field ORDER BY count(*) DESC, field"))
    return DiffSummary(counts, listed, field_counts)


def _copy(data: CardData, sql: str, stem: Path) -> None:
    data.rows(f"COPY ({sql}) TO {literal(stem.with_suffix('.parquet'))} (FORMAT parquet)")


def _suspects_sql(data: CardData, metrics: list[str]) -> str:
    """Model ids whose snapshot rows may differ (equal digests mean equal rows)."""
    def digests(table: str) -> str:
        values = [_cell_sql(table, m, data.arrow_type(table, m), _digest_type(data.arrow_type(table, m)))
                  for m in metrics]
        return (f"SELECT model_id, bit_xor(hash(k::BIGINT)) AS ks, bit_xor(hash(k::BIGINT, {', '.join(values) or 'NULL'})) AS rows_ "
                f"FROM {table} GROUP BY model_id")
    return (f"SELECT coalesce(a.model_id, b.model_id) AS model_id FROM ({digests('parent_snapshots')}) a "
            f"FULL OUTER JOIN ({digests('snapshots')}) b ON a.model_id = b.model_id "
            f"WHERE a.ks IS DISTINCT FROM b.ks OR a.rows_ IS DISTINCT FROM b.rows_")


def _digest_type(arrow_type: pa.DataType | None) -> str | None:
    """The type a snapshot cell is hashed as in a digest (each version on its own, so numbers as DOUBLE)."""
    if arrow_type is None:
        return None
    kind = kind_of(arrow_type)
    return "DOUBLE" if kind in ("bool", "int", "float") else SQL_TYPES[kind]


def _snapshot_fields_sql(metrics: list[tuple[str, str]], suspects: Path) -> str:
    """Per suspect model: whether a k is on one side only, and whether each metric differs on a shared k."""
    flags = "".join(f", bool_or(a.k IS NOT NULL AND b.k IS NOT NULL AND {condition}) AS s{i}"
                    for i, (_, condition) in enumerate(metrics))
    suspect = f"model_id IN (SELECT model_id FROM read_parquet({literal(suspects)}))"
    return (f"SELECT coalesce(a.model_id, b.model_id) AS model_id, bool_or(a.k IS NULL OR b.k IS NULL) AS one_sided"
            f"{flags} FROM (SELECT * FROM parent_snapshots WHERE {suspect}) a FULL OUTER JOIN "
            f"(SELECT * FROM snapshots WHERE {suspect}) b ON a.model_id = b.model_id AND a.k = b.k GROUP BY 1")


def _diff_sql(data: CardData, metrics: list[str], snapshot_fields: Path) -> str:
    """One row per model of either version: model_id, state, the changed fields (in diff_tables' order)."""
    columns = [c for c in dict.fromkeys([*data.columns("parent_models"), *data.columns("models")]) if c != "model_id"]
    types = {c: (data.arrow_type("parent_models", c), data.arrow_type("models", c)) for c in columns}
    cells = {side: ", ".join(f"{_cell_sql(table, c, types[c][index], _common(*types[c]))} AS c{i}"
                             for i, c in enumerate(columns)) or "NULL AS c"
             for index, (side, table) in enumerate((("a", "parent_models"), ("b", "models")))}
    names = [*(f"CASE WHEN {_cell_differs(i, _common(*types[c]))} THEN {literal(c)} END" for i, c in enumerate(columns)),
             "CASE WHEN s.one_sided THEN 'snapshots.k' END",
             *(f"CASE WHEN s.s{i} THEN {literal(name)} END" for i, name in enumerate(metrics))]
    return f"""
        SELECT model_id, CASE WHEN a_missing THEN 'added' WHEN b_missing THEN 'removed'
                              WHEN len(fields) > 0 THEN 'changed' ELSE 'unchanged' END AS state, fields
        FROM (SELECT coalesce(a.model_id, b.model_id) AS model_id, a.model_id IS NULL AS a_missing,
                     b.model_id IS NULL AS b_missing, list_filter([{", ".join(names)}], lambda x: x IS NOT NULL) AS fields
              FROM (SELECT model_id, {cells["a"]} FROM parent_models) a
              FULL OUTER JOIN (SELECT model_id, {cells["b"]} FROM models) b ON a.model_id = b.model_id
              LEFT JOIN read_parquet({literal(snapshot_fields)}) s ON s.model_id = coalesce(a.model_id, b.model_id))"""


def _common(type_a: pa.DataType | None, type_b: pa.DataType | None) -> str | None:
    """The SQL type both versions' cells of a column are compared as (numbers of different types
    as DOUBLE); None when only their being null can be compared: a number never equals a text,
    and a column one version lacks counts as null."""
    if type_a is None or type_b is None:
        return None
    kinds = {kind_of(type_a), kind_of(type_b)}
    if len(kinds) == 1:
        return SQL_TYPES[kinds.pop()]
    return "DOUBLE" if kinds <= {"bool", "int", "float"} else None


def _cell_sql(table: str, column: str, arrow_type: pa.DataType | None, common: str | None) -> str:
    """A cell as its comparable key: a 64-bit hash of the value as ``common``, or whether it is null."""
    if arrow_type is None:
        return "TRUE"
    value = value_sql(column, arrow_type)
    if common is None:
        return f"({value} IS NULL)"
    # + 0.0 turns -0.0 into 0.0, which it equals
    return f"hash(CAST({value} AS DOUBLE) + 0.0)" if common == "DOUBLE" else f"hash(CAST({value} AS {common}))"


def _cell_differs(index: int, common: str | None) -> str:
    if common is None:
        return f"NOT (a.c{index} AND b.c{index})"
    return f"a.c{index} IS DISTINCT FROM b.c{index}"


def _differences(data: CardData, table_a: str, table_b: str, key: list[str], prefix: str) -> list[tuple[str, str]]:
    """(field name, SQL condition that its values differ) for every non-key column of either table."""
    columns = [c for c in dict.fromkeys([*data.columns(table_a), *data.columns(table_b)]) if c not in key]
    return [(prefix + column, _differs(column, data.arrow_type(table_a, column), data.arrow_type(table_b, column)))
            for column in columns]


def _differs(column: str, type_a: pa.DataType | None, type_b: pa.DataType | None) -> str:
    """SQL: ``a.column`` and ``b.column`` differ (null equals null; numbers compare by value)."""
    a = value_sql(column, type_a, "a") if type_a is not None else "NULL"
    b = value_sql(column, type_b, "b") if type_b is not None else "NULL"
    common = _common(type_a, type_b)
    if common is None:
        return f"NOT ({a} IS NULL AND {b} IS NULL)"
    return f"CAST({a} AS {common}) IS DISTINCT FROM CAST({b} AS {common})"
