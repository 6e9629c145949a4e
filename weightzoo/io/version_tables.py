"""Writing a version's three tables in row groups, so a publish's memory does not grow with
the number of models.

The parent version's rows stream through (Parquet row group by row group); each new model's
rows are added as the publish reads its staged file (once, for its weights and its metadata).
A hyperparameter column gets one type, decided from every value it holds (the rules of
:mod:`weightzoo.io.tables`: bool, int64, float64, else string), which is known only at the end:
new models' rows are therefore buffered on disk (Arrow IPC, hyperparameters as JSON) and
written to ``models.parquet`` batch by batch once the types are known.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weightzoo.io import tables
from weightzoo.io.records import Receipt, SplitSettings

BATCH_ROWS = 1024
TABLE_NAMES = ("models.parquet", "snapshots.parquet", "layouts.parquet")
BUFFER = ".new-models.arrow"
_HYPER = "__hyperparameters"
_KIND_OF_ARROW = {pa.bool_(): "bool", pa.int64(): "int", pa.float64(): "float"}
_BUFFER_SCHEMA = pa.schema([pa.field(n, t) for n, t in {**tables.LEADING_COLUMNS, **tables.TRAILING_COLUMNS}.items()]
                           + [pa.field(_HYPER, pa.string())])


@dataclass
class VersionCounts:
    """What the manifest records about a version's tables."""

    models: int = 0
    snapshots: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_layout: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        """The manifest's ``counts``."""
        return {"models": self.models, "snapshots": self.snapshots, "by_status": dict(sorted(self.by_status.items())),
                "by_layout": dict(sorted(self.by_layout.items()))}


@dataclass(frozen=True)
class ParentRows:
    """The parent version's tables (empty for a first version) and which models the new one keeps."""

    files: dict  # table name -> pq.ParquetFile
    keep: set | None = None  # model ids kept; None: all
    resplit: SplitSettings | None = None  # a fresh selection may assign splits anew


class VersionTablesWriter:
    """Writes ``models.parquet``, ``snapshots.parquet`` and ``layouts.parquet`` into ``folder``:
    the parent's kept rows first, then each new model as :meth:`add` receives it."""

    def __init__(self, folder: Path, parent: ParentRows, version: str, split: SplitSettings) -> None:
        self.folder, self.parent, self.version, self.split = Path(folder), parent, version, split
        self.counts = VersionCounts()
        self.kinds: dict[str, set] = {}
        self.layouts: dict[str, list[dict]] = {}
        self._rows: list[dict] = []
        self._snapshot_rows: list[dict] = []
        self._snapshots = pq.ParquetWriter(self.folder / "snapshots.parquet", tables.SNAPSHOT_SCHEMA)
        self._buffer = pa.ipc.new_file(self.folder / BUFFER, _BUFFER_SCHEMA)
        for batch in self._parent_batches("snapshots.parquet"):
            self._snapshots.write_table(batch)
            self.counts.snapshots += batch.num_rows

    def add(self, receipt: Receipt, staged, row: int) -> None:
        """One new model: its staged metadata (a :class:`weightzoo.io.staging.StagedModel`) and array row."""
        record = staged.record
        split = record.split or tables.assign_split(record.model_id, self.split.seed, self.split.fractions)
        values = tables.model_row(record, row=row, n_snapshots=receipt.n_snapshots, split=split,
                                  version_added=self.version, n_trace_steps=receipt.n_trace_steps,
                                  steps_per_epoch=receipt.steps_per_epoch)
        hyper = {name: value for name, value in values.items() if name not in tables.RESERVED}
        for name, value in hyper.items():
            self.kinds.setdefault(name, set()).add(tables.value_kind(value))
        self._rows.append({**{n: values[n] for n in tables.RESERVED}, _HYPER: json.dumps(hyper)})
        self._snapshot_rows += tables.snapshot_rows(record.model_id, staged.snapshots)
        if staged.layout.layout_id not in self.layouts:
            self.layouts[staged.layout.layout_id] = tables.layout_rows(staged.layout)
        if len(self._rows) >= BATCH_ROWS:
            self._flush()

    def finish(self) -> VersionCounts:
        """Write the models and layouts tables; the counts."""
        self._flush()
        self._buffer.close()
        self._snapshots.close()
        schema = self._models_schema()
        with pq.ParquetWriter(self.folder / "models.parquet", schema) as writer:
            for batch in self._parent_batches("models.parquet"):
                self._write(writer, _conform(_resplit(batch, self.parent.resplit), schema))
            with pa.memory_map(str(self.folder / BUFFER)) as source:
                reader = pa.ipc.open_file(source)
                for index in range(reader.num_record_batches):
                    self._write(writer, _expand(reader.get_batch(index), schema))
        (self.folder / BUFFER).unlink()
        self._write_layouts()
        return self.counts

    def _flush(self) -> None:
        if self._rows:
            self._buffer.write_table(pa.Table.from_pylist(self._rows, schema=_BUFFER_SCHEMA))
            self._rows = []
        if self._snapshot_rows:
            self._snapshots.write_table(tables.snapshots_table(self._snapshot_rows))
            self.counts.snapshots += len(self._snapshot_rows)
            self._snapshot_rows = []

    def _write(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        writer.write_table(table)
        self.counts.models += table.num_rows
        self.counts.by_status.update(table.column("status").to_pylist())
        self.counts.by_layout.update(table.column("layout_id").to_pylist())

    def _parent_batches(self, name: str):
        if name not in self.parent.files:
            return
        keep = None if self.parent.keep is None else pa.array(sorted(self.parent.keep), pa.string())
        for batch in self.parent.files[name].iter_batches(batch_size=BATCH_ROWS * 8):
            table = pa.Table.from_batches([batch])
            if keep is not None:
                table = table.filter(pc.is_in(table.column("model_id"), value_set=keep))
            if table.num_rows:
                yield table

    def _models_schema(self) -> pa.Schema:
        """Leading columns, every hyperparameter (the parent's first, in order of appearance), trailing."""
        kinds: dict[str, set] = {}
        if "models.parquet" in self.parent.files:
            for arrow_field in self.parent.files["models.parquet"].schema_arrow:
                if arrow_field.name not in tables.RESERVED:
                    kinds[arrow_field.name] = {_KIND_OF_ARROW.get(arrow_field.type, "str")}
        for name, found in self.kinds.items():
            kinds.setdefault(name, set()).update(found)
        hyper = [pa.field(name, tables.column_type(found)) for name, found in kinds.items()]
        return pa.schema([pa.field(n, t) for n, t in tables.LEADING_COLUMNS.items()] + hyper
                         + [pa.field(n, t) for n, t in tables.TRAILING_COLUMNS.items()])

    def _write_layouts(self) -> None:
        rows = [row for rows_ in self.layouts.values() for row in rows_]
        if "layouts.parquet" in self.parent.files:
            rows += [row for row in self.parent.files["layouts.parquet"].read().to_pylist()
                     if row["layout_id"] in self.counts.by_layout and row["layout_id"] not in self.layouts]
        rows.sort(key=lambda r: (r["layout_id"], r["index"]))
        pq.write_table(tables.layouts_table(rows), self.folder / "layouts.parquet")


def _expand(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Buffered new-model rows in the final schema (hyperparameters out of their JSON)."""
    hyper = [json.loads(text) for text in batch.column(_HYPER).to_pylist()]
    columns = []
    for arrow_field in schema:
        if arrow_field.name in tables.RESERVED:
            columns.append(batch.column(arrow_field.name))
        else:
            values = tables.conform_values([row.get(arrow_field.name) for row in hyper], arrow_field.type)
            columns.append(pa.array(values, type=arrow_field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _resplit(table: pa.Table, split: SplitSettings | None) -> pa.Table:
    if split is None:
        return table  # a version that extends its parent never moves a split
    # a network imported with its source's split keeps it (training_json "source_split")
    values = [json.loads(training or "{}").get("source_split") or tables.assign_split(m, split.seed, split.fractions)
              for m, training in zip(table.column("model_id").to_pylist(), table.column("training_json").to_pylist())]
    return table.set_column(table.schema.get_field_index("split"), "split", pa.array(values, pa.string()))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The parent's rows in the new schema: missing columns null, others cast to their new type."""
    columns = []
    for arrow_field in schema:
        if arrow_field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, arrow_field.type))
        elif table.column(arrow_field.name).type == arrow_field.type:
            columns.append(table.column(arrow_field.name))
        else:
            values = tables.conform_values(table.column(arrow_field.name).to_pylist(), arrow_field.type)
            columns.append(pa.array(values, type=arrow_field.type))
    return pa.Table.from_arrays(columns, schema=schema)
