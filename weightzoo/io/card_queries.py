"""The numbers a dataset card shows, computed by DuckDB over a version's Parquet files.

Memory does not grow with the number of networks: DuckDB streams the files and runs with
a memory limit (joins and aggregations beyond it spill to a scratch folder); quartiles,
medians and distinct counts that would need every value in memory are approximate (t-digest,
HyperLogLog); and only results of the card's size reach Python — a row per status, split,
category value, histogram bin, (dataset, k) and listed model.

A table is a local Parquet file (a path) or a :class:`pyarrow.parquet.ParquetFile` (e.g. a
parent version in object storage), which is streamed to DuckDB as Arrow record batches each
time a query reads it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from weightzoo.io.tables import RESERVED

TableSource = Union[str, os.PathLike, pq.ParquetFile]
MEMORY_LIMIT = "128MB"  # DuckDB's own; it spills to the scratch folder beyond this
THREADS = 2
FEW_VALUES = 12  # a column with at most this many values is counted value by value
BATCH_ROWS = 65_536


def quote(name: str) -> str:
    """``name`` as a DuckDB identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a DuckDB string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def value_sql(column: str, arrow_type: pa.DataType | None, table: str = "") -> str:
    """A column as the card compares and summarises it: NaN counts as null, like pandas' ``isna``."""
    name = f"{table}.{quote(column)}" if table else quote(column)
    if arrow_type is not None and pa.types.is_floating(arrow_type):
        return f"(CASE WHEN isnan({name}) THEN NULL ELSE {name} END)"
    return name


def kind_of(arrow_type: pa.DataType) -> str:
    """bool, int, float or str: how the card types a column."""
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    return "float" if pa.types.is_floating(arrow_type) else "str"


@dataclass(frozen=True)
class ColumnSummary:
    """One models-table column: how many values, which, and their range.

    ``counts`` lists every value with its count, in value order (numbers numerically), when
    the column holds at most :data:`FEW_VALUES` values; ``distinct`` is then exact, else
    approximate. ``median`` is approximate and only for numbers.
    """

    name: str
    kind: str
    present: int
    nulls: int
    distinct: int
    minimum: object = None
    maximum: object = None
    median: float | None = None
    counts: tuple | None = None

    @property
    def numeric(self) -> bool:
        """Whether the values are numbers (bools are not)."""
        return self.kind in ("int", "float")

    @property
    def continuous(self) -> bool:
        """Numbers summarised by their range rather than by value counts: floats with more than
        a few values, integers with many, or one value per model."""
        if not self.numeric:
            return False
        few = 6 if self.kind == "float" else FEW_VALUES
        return self.distinct > few or (self.distinct == self.present >= 5)


class CardData:
    """A DuckDB connection over a version's tables (``models``, ``snapshots``, ``layouts``) and,
    optionally, its parent's (``parent_models``, ``parent_snapshots``); close it when done."""

    def __init__(self, tables: Mapping[str, TableSource], parent_tables: Mapping[str, TableSource] | None,
                 scratch: Path) -> None:
        self.scratch = Path(scratch)
        self.connection = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": THREADS,
                                                 "temp_directory": str(self.scratch / "duckdb"),
                                                 "preserve_insertion_order": False})
        self.connection.execute("SET enable_progress_bar = false")
        try:
            # pyarrow's statistics leave NaN out of min/max; without this DuckDB (2.0) reads them as
            # "no NaN here" and folds isnan(x) to false (duckdb/duckdb#25521)
            self.connection.execute("SET parquet_can_have_nan = true")
        except duckdb.CatalogException:
            pass  # older DuckDB has no such setting and assumes NaN may be anywhere
        self.schemas: dict[str, pa.Schema] = {}
        self._streams: dict[str, pq.ParquetFile] = {}
        for prefix, sources in (("", tables), ("parent_", parent_tables or {})):
            for name, source in sources.items():
                self._attach(prefix + name.removesuffix(".parquet"), source)

    def __enter__(self) -> "CardData":
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()

    def has(self, table: str) -> bool:
        """Whether ``table`` was given."""
        return table in self.schemas

    def columns(self, table: str) -> list[str]:
        """The column names of ``table`` (from the file's schema; nothing is read)."""
        return self.schemas[table].names

    def arrow_type(self, table: str, column: str) -> pa.DataType | None:
        """The Arrow type of ``table.column``; None when the table lacks it."""
        schema = self.schemas[table]
        return schema.field(column).type if column in schema.names else None

    def rows(self, sql: str, parameters: list | None = None) -> list[tuple]:
        """Run ``sql``; its rows (the card's queries return few)."""
        self._stream_parquet_files()
        return self.connection.execute(sql, parameters or []).fetchall()

    def frame(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Run ``sql``; its rows as a DataFrame."""
        self._stream_parquet_files()
        return self.connection.execute(sql, parameters or []).df()

    def value_counts(self, table: str, column: str, limit: int) -> tuple[list[tuple], int]:
        """The first ``limit`` non-null values of ``column`` (value order) with their counts, and
        how many distinct values there are."""
        value = value_sql(column, self.arrow_type(table, column))
        rows = self.rows(f"SELECT {value} AS v, count(*) AS n, count(*) OVER () FROM {table} WHERE v IS NOT NULL "
                         f"GROUP BY v ORDER BY v LIMIT {int(limit)}")
        return [(v, n) for v, n, _ in rows], (rows[0][2] if rows else 0)

    def column_summaries(self, columns: list[str]) -> list[ColumnSummary]:
        """A :class:`ColumnSummary` of each models-table column, from one scan and a value count of
        each column with few values."""
        if not columns:
            return []
        parts = []
        for index, column in enumerate(columns):
            arrow_type = self.arrow_type("models", column)
            value = value_sql(column, arrow_type)
            median = f"approx_quantile({value}, 0.5)" if kind_of(arrow_type) in ("int", "float") else "NULL"
            parts.append(f"count({value}), approx_count_distinct({value}), min({value}), max({value}), {median}")
        row = self.rows(f"SELECT count(*), {', '.join(parts)} FROM models")[0]
        total, summaries = row[0], []
        for index, column in enumerate(columns):
            present, distinct, low, high, median = row[1 + 5 * index: 6 + 5 * index]
            counts = None
            if distinct <= 2 * FEW_VALUES:  # approximate; the exact count decides
                values, exact = self.value_counts("models", column, FEW_VALUES + 1)
                distinct, counts = exact, (tuple(values) if exact <= FEW_VALUES else None)
            summaries.append(ColumnSummary(column, kind_of(self.arrow_type("models", column)), present,
                                           total - present, distinct, low, high,
                                           None if median is None else float(median), counts))
        return summaries

    def histogram(self, summary: ColumnSummary, log: bool, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Bin edges and counts of a numeric column, bins equal in width on a log or linear axis."""
        low, high = float(summary.minimum), float(summary.maximum)
        if high <= low:
            return np.array([low - 0.5, high + 0.5]), np.array([summary.present])
        edges = np.geomspace(low, high, bins + 1) if log else np.linspace(low, high, bins + 1)
        scaled = "ln({v})" if log else "{v}"
        position = scaled.format(v=value_sql(summary.name, self.arrow_type("models", summary.name)) + "::DOUBLE")
        start, width = (math.log(low), math.log(high) - math.log(low)) if log else (low, high - low)
        counts = np.zeros(bins, dtype=np.int64)
        for index, n in self.rows(f"SELECT least(floor(({position} - ?) / ? * {bins}), {bins - 1})::BIGINT AS b, "
                                  f"count(*) FROM models WHERE b IS NOT NULL GROUP BY b", [start, width]):
            counts[int(index)] = n
        return edges, counts

    def accuracy_curves(self) -> pd.DataFrame:
        """Per (dataset, k): n, mean, 25 % and 75 % (approximate) of ``test_acc`` (``test_loss`` for
        a dataset without accuracies). Columns: dataset, metric, k, n, mean, q25, q75."""
        dataset = "CAST(m.dataset AS VARCHAR)" if "dataset" in self.columns("models") else "'all'"
        stats = []
        for metric in ("test_acc", "test_loss"):
            arrow_type = self.arrow_type("snapshots", metric)
            value = value_sql(metric, arrow_type, "s") if arrow_type is not None else "NULL::DOUBLE"
            stats.append(f"count({value}) AS n_{metric}, avg({value}) AS mean_{metric}, "
                         f"approx_quantile({value}, [0.25, 0.75]) AS q_{metric}")
        frame = self.frame(f"SELECT {dataset} AS dataset, s.k, {', '.join(stats)} FROM snapshots s "
                           f"JOIN models m ON s.model_id = m.model_id GROUP BY ALL ORDER BY dataset, k")
        parts = []
        for name, group in frame.groupby("dataset", sort=True):
            metric = "test_acc" if group["n_test_acc"].sum() > 0 else "test_loss"
            group = group[group[f"n_{metric}"] > 0]
            if group.empty:
                continue
            quartiles = np.array([list(q) for q in group[f"q_{metric}"]], dtype=float)
            parts.append(pd.DataFrame({"dataset": name, "metric": metric, "k": group["k"].to_numpy(),
                                       "n": group[f"n_{metric}"].to_numpy(), "mean": group[f"mean_{metric}"].to_numpy(),
                                       "q25": quartiles[:, 0], "q75": quartiles[:, 1]}))
        columns = ["dataset", "metric", "k", "n", "mean", "q25", "q75"]
        return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)

    def runs_not_ok(self, context: list[str], limit: int) -> tuple[list[tuple], pd.DataFrame]:
        """Counts by status of the runs that did not end ``ok``, and the first ``limit`` of them
        (by model_id) with their ``context`` columns and message."""
        by_status = self.rows("SELECT status, count(*) FROM models WHERE status IS DISTINCT FROM 'ok' "
                              "GROUP BY status ORDER BY status")
        columns = ", ".join(quote(c) for c in ["model_id", "status", *context, "message"])
        listed = self.frame(f"SELECT {columns} FROM models WHERE status IS DISTINCT FROM 'ok' "
                            f"ORDER BY model_id LIMIT {int(limit)}")
        return by_status, listed

    def layout_rows(self, limit: int) -> tuple[list[tuple], int]:
        """The first ``limit`` layouts (id, tensors, parameters, models using it) and how many there are."""
        rows = self.rows(f"WITH used AS (SELECT layout_id, count(*) AS n FROM models GROUP BY layout_id) "
                         f"SELECT l.layout_id, count(*), sum(l.length), any_value(coalesce(used.n, 0)), "
                         f"count(*) OVER () FROM layouts l LEFT JOIN used ON l.layout_id = used.layout_id "
                         f"GROUP BY l.layout_id ORDER BY l.layout_id LIMIT {int(limit)}")
        return [row[:4] for row in rows], (rows[0][4] if rows else 0)

    def hyperparameter_columns(self) -> list[str]:
        """The models-table columns that hold hyperparameters (everything but the fixed columns)."""
        return [column for column in self.columns("models") if column not in RESERVED]

    def _attach(self, name: str, source: TableSource) -> None:
        if isinstance(source, pq.ParquetFile):
            self.schemas[name] = source.schema_arrow
            self._streams[name] = source
        elif isinstance(source, (str, os.PathLike)):
            self.schemas[name] = pq.read_schema(source)
            self.connection.execute(f"CREATE VIEW {quote(name)} AS SELECT * FROM read_parquet({literal(Path(source))})")
        else:
            raise TypeError(f"the card reads Parquet files (a path or a pyarrow ParquetFile); {name} is a "
                            f"{type(source).__name__}")

    def _stream_parquet_files(self) -> None:
        # a record batch reader is read once: each query gets fresh ones
        for name, parquet_file in self._streams.items():
            reader = pa.RecordBatchReader.from_batches(parquet_file.schema_arrow,
                                                       parquet_file.iter_batches(batch_size=BATCH_ROWS))
            self.connection.register(name, reader)
