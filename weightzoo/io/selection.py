"""Selections of a published version: which models, which snapshots, which weights.

``zoo.select(...)`` resolves table filters, a snapshot range and a part of the network into
a :class:`Selection`, whose samples are (model, snapshot k) pairs in storage order (by
layout, then array row, then k) and whose features are flat positions of the model's layout.

Parts: ``"conv"`` = tensors of kind ``conv`` (weights and biases of conv layers), ``"fc"`` =
kind ``linear``, ``"all"`` = everything. Batch-norm tensors belong to neither conv nor fc;
select them with ``part="all"`` (plus ``layers``/``tensors``).

Reading: one storage chunk is one model row ``[snapshot, param]``, so every reader reads
whole rows and slices snapshots and features in memory. Readers open the version's
read-only Icechunk session themselves from ``(zoo handle, version)`` (cached per process), so
a selection pickles cheaply into Dask tasks and DataLoader workers and never ships arrays.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from weightzoo.core.labels import is_categorical
from weightzoo.core.layout import WeightLayout
from weightzoo.io import store
from weightzoo.errors import CorruptChunkError, InputError
from weightzoo.io.tables import SPLITS

PARTS = {"conv": ["conv"], "fc": ["linear"], "all": None}
# Bulky or bookkeeping columns that are never labels.
_NOT_LABELS = ("fingerprint", "message", "config_json", "training_json")
_ARRAYS: dict = {}


def select(zoo, where: str | None = None, *, snapshots=None, part: str | None = None,
           layers: list[int] | None = None, tensors: list[str] | None = None,
           split: str | list[str] | None = None, status: str | None = "ok", **equals) -> "Selection":
    """Resolve filters on ``zoo.models`` plus snapshot/part choices into a Selection (see Zoo.select)."""
    models = zoo.models
    columns = list(models.columns)
    for name in equals:
        _check_column(name, columns)
    if where:
        try:
            models = models.query(where)
        except (NameError, KeyError) as error:  # pandas' UndefinedVariableError is a NameError
            raise InputError(f"cannot filter by {where!r}: {error}; models.parquet columns: {columns}") from error
        except SyntaxError as error:
            raise InputError(f"invalid where-query {where!r}: {error}") from error
    for name, value in equals.items():
        values = value if isinstance(value, (list, tuple, set, np.ndarray)) else [value]
        models = models[models[name].isin(list(values))]
    if split is not None:
        splits = [split] if isinstance(split, str) else list(split)
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise InputError(f"unknown split {unknown}; splits are {list(SPLITS)}")
        models = models[models["split"].isin(splits)]
    if status is not None:
        models = models[models["status"] == status]
    if part not in (None, *PARTS):
        raise InputError(f"part must be one of {list(PARTS)}; got {part!r}")
    models = models.sort_values(["layout_id", "row"]).reset_index(drop=True)
    ks = [_resolve_snapshots(snapshots, m.model_id, int(m.n_snapshots)) for m in models.itertuples()]
    layouts = {lid: zoo.layout(lid) for lid in models["layout_id"].unique()}
    features = {lid: _features(layout, lid, part, layers, tensors) for lid, layout in layouts.items()}
    samples = pd.DataFrame({"model_id": np.repeat(models["model_id"].to_numpy(), [len(k) for k in ks]),
                            "k": np.concatenate(ks) if ks else np.zeros(0, np.int64)})
    labels = models.drop(columns=[c for c in _NOT_LABELS if c in models.columns])
    rows = samples.merge(labels, on="model_id", how="left")
    rows = rows.merge(zoo.snapshots, on=["model_id", "k"], how="left", suffixes=("", "_snapshot"))
    front = ["model_id", "layout_id", "row", "k"]
    rows = rows[front + [c for c in rows.columns if c not in front]]
    description = {"where": where, "snapshots": snapshots, "part": part, "layers": layers,
                   "tensors": tensors, "split": split, "status": status, **equals}
    return Selection(zoo.handle, zoo.version, models, rows, ks, layouts, features,
                     {key: value for key, value in description.items() if value is not None})


class Selection:
    """(model, snapshot) samples of one version with a per-layout choice of weight positions."""

    def __init__(self, handle, version, models, rows, ks, layouts, features, description) -> None:
        self.handle, self.version = handle, version
        self.models: pd.DataFrame = models  # selected models, sorted by (layout_id, row)
        self.rows: pd.DataFrame = rows  # one row per sample: model_id, layout_id, row, k, labels
        self.layouts: dict[str, WeightLayout] = layouts
        self._ks = ks  # per selected model: its snapshot indices
        self._features = features  # per layout: sorted flat positions
        self._description = description

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return (f"Selection({self.version}, models={len(self.models)}, samples={len(self)}, "
                f"features={self.feature_lengths}, filters={self._description})")

    @property
    def feature_lengths(self) -> dict[str, int]:
        """Number of selected weight positions per layout."""
        return {lid: int(f.size) for lid, f in self._features.items()}

    @property
    def n_features(self) -> int:
        """The common feature length; ValueError if the layouts of the selection differ."""
        self._require_samples()
        lengths = set(self.feature_lengths.values())
        if len(lengths) > 1:
            raise InputError(f"the selection spans layouts with different feature lengths "
                             f"{self.feature_lengths}; filter with layout_id=... or use .by_layout()")
        return lengths.pop()

    def features(self, layout_id: str) -> np.ndarray:
        """Flat positions (into the layout's vector) selected for ``layout_id``."""
        return self._features[layout_id]

    def by_layout(self) -> dict[str, "Selection"]:
        """One Selection per layout, each with a uniform feature length."""
        result = {}
        for lid in self._features:
            keep = (self.models["layout_id"] == lid).to_numpy()
            result[lid] = Selection(
                self.handle, self.version, self.models[keep].reset_index(drop=True),
                self.rows[self.rows["layout_id"] == lid].reset_index(drop=True),
                [k for k, kept in zip(self._ks, keep) if kept], {lid: self.layouts[lid]},
                {lid: self._features[lid]}, dict(self._description, layout_id=lid))
        return result

    def blocks(self, chunk_samples: int = 100) -> list[tuple]:
        """Read tasks over consecutive model rows of one layout, each ≥ ``chunk_samples`` if possible.

        A block is ``(handle, version, layout_id, rows, ks, column_ranges)``; pass it to
        :func:`read_block`. Blocks never split a model row (one storage chunk).
        """
        result, current, count = [], [], 0
        for position, model in enumerate(self.models.itertuples()):
            if current and (model.layout_id != self.models.at[current[0], "layout_id"] or count >= chunk_samples):
                result.append(self._block(current))
                current, count = [], 0
            current.append(position)
            count += len(self._ks[position])
        if current:
            result.append(self._block(current))
        return result

    def to_dask(self, chunk_samples: int = 100):
        """A lazy float32 dask array [n_samples, n_features]; one chunk = whole model rows."""
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        n_features = self.n_features
        blocks = self.blocks(chunk_samples)
        name = "weightzoo-select-" + tokenize(self.handle.url, self.version, blocks)
        # Each task holds only (handle, version, rows, ...): the worker opens the array itself.
        graph = {(name, i, 0): (read_block, block) for i, block in enumerate(blocks)}
        chunks = (tuple(sum(len(k) for k in block[4]) for block in blocks), (n_features,))
        return da.Array(HighLevelGraph.from_collections(name, graph, dependencies=[]), name,
                        chunks, dtype=np.float32)

    def to_numpy(self) -> np.ndarray:
        """All samples as a float32 array [n_samples, n_features] (read block by block)."""
        n_features = self.n_features
        parts = [read_block(block) for block in self.blocks()]
        return np.concatenate(parts) if parts else np.zeros((0, n_features), np.float32)

    def to_xarray(self):
        """An xarray.DataArray (sample × feature) over :meth:`to_dask` with label coordinates.

        Optional: needs xarray installed (not a dependency of weightzoo).
        """
        import xarray as xr

        coords = {column: ("sample", self.rows[column].to_numpy()) for column in self.rows.columns}
        return xr.DataArray(self.to_dask(), dims=("sample", "feature"), coords=coords)

    def labels(self, column: str) -> np.ndarray:
        """Values of a models/snapshots column, one per sample (aligned with the arrays)."""
        _check_column(column, list(self.rows.columns))
        return self.rows[column].to_numpy()

    def classes(self, column: str) -> list:
        """Sorted distinct non-null values of a categorical column (code i ↔ classes[i])."""
        _check_column(column, list(self.rows.columns))
        return sorted(pd.unique(self.rows[column].dropna()).tolist())

    def label_values(self, column: str) -> np.ndarray:
        """Training targets: int64 codes into :meth:`classes` for categorical columns (strings,
        booleans, few-valued integers: :func:`weightzoo.core.labels.is_categorical`), else float32."""
        _check_column(column, list(self.rows.columns))
        values = self.rows[column]
        if is_categorical(values):
            if values.isna().any():
                raise InputError(f"label {column!r} is null for {int(values.isna().sum())} samples; "
                                 f"filter them out (e.g. where='{column}.notna()')")
            codes = {value: code for code, value in enumerate(self.classes(column))}
            return np.array(values.map(codes), dtype=np.int64)  # a writable copy (pandas may return views)
        return np.array(values.to_numpy(np.float32, na_value=np.nan))

    def torch_batches(self, batch_size: int, **options):
        """An iterable of torch batch dicts; every ``iter()`` is one epoch (see weightzoo.io.batches)."""
        from weightzoo.io.batches import TorchBatches
        return TorchBatches(self, batch_size, **options)

    def torch_dataset(self, batch_size: int, **options):
        """A torch IterableDataset of batch dicts, sharded across DataLoader workers (batch_size=None)."""
        from weightzoo.io.batches import WeightBatchDataset
        return WeightBatchDataset(self, batch_size, **options)

    def torch_loader(self, batch_size: int, *, num_workers: int = 2, **options):
        """A torch DataLoader of batch dicts with fork-safe persistent workers (see weightzoo.io.batches)."""
        from weightzoo.io.batches import torch_loader
        return torch_loader(self, batch_size, num_workers=num_workers, **options)

    def _block(self, positions: list[int]) -> tuple:
        layout_id = self.models.at[positions[0], "layout_id"]
        rows = tuple(int(self.models.at[p, "row"]) for p in positions)
        ks = tuple(tuple(int(k) for k in self._ks[p]) for p in positions)
        return (self.handle, self.version, layout_id, rows, ks, _ranges(self._features[layout_id]))

    def _require_samples(self) -> None:
        if not len(self):
            raise InputError(f"the selection is empty (filters {self._description}); "
                             f"{self.version} has models with other values")


def read_block(block: tuple) -> np.ndarray:
    """Read one block from :meth:`Selection.blocks`: float32 [sum of len(ks), n_features]."""
    handle, version, layout_id, rows, ks, column_ranges = block
    data = read_rows(handle, version, layout_id, rows)
    columns = _ranges_index(column_ranges)
    return np.concatenate([data[i][list(k)][:, columns] for i, k in enumerate(ks)]).astype(np.float32, copy=False)


def read_rows(handle, version: str, layout_id: str, rows) -> np.ndarray:
    """Whole model rows [len(rows), n_snapshot, n_param] of ``weights/<layout_id>`` at ``version``."""
    array = weights_array(handle, version, layout_id)
    rows = list(rows)
    try:
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return array[rows[0]:rows[0] + len(rows)]  # contiguous: one request, chunks fetched concurrently
        return array.get_orthogonal_selection((rows, slice(None), slice(None)))
    except Exception as error:  # codec/checksum errors surface as several exception types
        raise CorruptChunkError(f"cannot read rows {rows} of weights/{layout_id} in {handle} "
                                f"version {version}: {_bad_models(array, handle, version, layout_id, rows)}"
                                f"{error}") from error


def _bad_models(array, handle, version: str, layout_id: str, rows: list[int]) -> str:
    """Error path only: the models (and their snapshots) whose chunks fail, re-read one row at a time."""
    bad = []
    for row in rows:
        try:
            array[row]
        except Exception:  # noqa: BLE001 - the same codec errors as the caller's
            bad.append(row)
    models = handle.location.read_table(f"versions/{version}/models.parquet",
                                        columns=["model_id", "layout_id", "row", "n_snapshots"]).to_pandas()
    models = models[(models["layout_id"] == layout_id) & models["row"].isin(bad)]
    # one chunk is a whole model row: every snapshot of the model is in it
    names = [f"model {m.model_id!r} (row {m.row}, snapshots k=0..{m.n_snapshots - 1})" for m in models.itertuples()]
    return f"damaged chunk of {', '.join(names)}; " if names else ""


def weights_array(handle, version: str, layout_id: str):
    """The read-only array, opened once per process (after fork, a worker reopens its own)."""
    key = (os.getpid(), handle.url, version, layout_id)
    if key not in _ARRAYS:
        session = handle.repository().readonly_session(tag=version)
        _ARRAYS[key] = store.open_weights_array(session.store, layout_id)
    return _ARRAYS[key]


def _check_column(name: str, columns: list[str]) -> None:
    if name not in columns:
        raise InputError(f"unknown column {name!r}; available columns: {columns}")


def _resolve_snapshots(snapshots, model_id: str, n_snapshots: int) -> np.ndarray:
    if snapshots is None:
        return np.arange(n_snapshots)
    if isinstance(snapshots, slice):
        if snapshots.step is not None and snapshots.step <= 0:
            raise InputError(f"snapshot slice step must be positive; got {snapshots}")
        start = 0 if snapshots.start is None else snapshots.start
        stop = n_snapshots if snapshots.stop is None else snapshots.stop
        # Python slicing would silently clip; a short model must not shrink the range unnoticed,
        # so the range's ends are checked like explicit k's.
        ends = np.array([start, stop - 1]) if start < 0 or stop < 0 or stop > n_snapshots else None
        ks = np.arange(start, stop, snapshots.step or 1) if ends is None else ends
    else:
        ks = np.atleast_1d(np.asarray(snapshots, dtype=np.int64))  # a list, range or single k
    bad = ks[(ks < 0) | (ks >= n_snapshots)]
    if bad.size:
        raise InputError(f"snapshots {snapshots!r} ask for k={int(bad[0])} but model {model_id!r} has "
                         f"n_snapshots={n_snapshots} (k = 0..{n_snapshots - 1}); negative k is not allowed")
    if not ks.size:
        raise InputError(f"snapshots {snapshots!r} select no snapshot of model {model_id!r}")
    return ks.astype(np.int64)


def _features(layout: WeightLayout, layout_id: str, part, layers, tensors) -> np.ndarray:
    if tensors is not None:
        known = {t.name for t in layout.tensors}
        missing = [name for name in tensors if name not in known]
        if missing:
            raise InputError(f"no tensor {missing} in layout {layout_id}; known: {sorted(known)}")
    result = layout.indices(names=tensors, kinds=PARTS[part or "all"], layers=layers)
    if not result.size:
        raise InputError(f"part={part!r}, layers={layers}, tensors={tensors} select no weights of "
                         f"layout {layout_id}; filter its models out (layout_id != '{layout_id}')")
    return result


def _ranges(indices: np.ndarray) -> tuple[tuple[int, int], ...]:
    # Layout positions are runs of whole tensors: a few (start, stop) pairs ship cheaply.
    if not indices.size:
        return ()
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts, stops = np.r_[0, breaks], np.r_[breaks, indices.size]
    return tuple((int(indices[a]), int(indices[b - 1]) + 1) for a, b in zip(starts, stops))


def _ranges_index(column_ranges):
    if len(column_ranges) == 1:
        return slice(*column_ranges[0])
    return np.concatenate([np.arange(a, b) for a, b in column_ranges])
