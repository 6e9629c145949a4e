"""Selections of a published version: which models, which snapshots, which weights.

``zoo.select(...)`` resolves table filters, a snapshot choice and a part of the network into
a :class:`Selection`, whose samples are (model, snapshot k) pairs in storage order (by
layout, then array row, then k) and whose features are flat positions of the model's layout.
It is the one read path of the studies: every filter (``where``, column=value, ``split``,
``status``, ``model_ids``, ``max_models``) and every snapshot choice
(:class:`weightzoo.core.snapshots.SnapshotChoice`: a k a model lacks is an error naming it)
is resolved here and nowhere else.

Parts: ``"conv"`` = tensors of kind ``conv`` (weights and biases of conv layers), ``"fc"`` =
kind ``linear``, ``"all"`` = everything. Batch-norm tensors belong to neither conv nor fc;
select them with ``part="all"`` (plus ``layers``/``tensors``).

Reading: weights are read through :class:`weightzoo.io.weights.WeightsReader`, which fetches
only the (model, snapshot) chunks a read asks for (a whole shard at once when a read needs all
of it); features are sliced in memory: arrays (:meth:`Selection.to_dask`,
:meth:`Selection.to_numpy`), torch batches, or model by model with
:meth:`Selection.iter_models`. Readers open the version's
read-only Icechunk session themselves from ``(zoo handle, version)`` (cached per process), so
a selection pickles cheaply into Dask tasks and DataLoader workers and never ships arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from weightzoo.core.labels import is_categorical
from weightzoo.core.layout import WeightLayout
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.errors import InputError
from weightzoo.io.tables import SPLITS
from weightzoo.io.version_weights import read_rows

PARTS = {"conv": ["conv"], "fc": ["linear"], "all": None}
# Bulky or bookkeeping columns that are never labels.
_NOT_LABELS = ("fingerprint", "message", "config_json", "training_json")
BLOCK_BYTES = 64 * 2**20  # weights read at once by Selection.iter_models


def select(zoo, where: str | None = None, *, snapshots=None, part: str | None = None,
           layers: list[int] | None = None, tensors: list[str] | None = None,
           split: str | list[str] | None = None, status: str | None = "ok", model_ids=None,
           max_models: int | None = None, **equals) -> "Selection":
    """Resolve filters on ``zoo.models`` plus snapshot/part choices into a Selection (see Zoo.select)."""
    choice = SnapshotChoice.of(snapshots)
    models = _filter_models(zoo, where, equals, split, status, model_ids, max_models)
    if part not in (None, *PARTS):
        raise InputError(f"part must be one of {list(PARTS)}; got {part!r}")
    models = models.sort_values(["layout_id", "row"]).reset_index(drop=True)
    sparse = zoo.sparse_snapshot_ks  # models of a pulled slice: k kept, stored at their rank
    stored = {m: sparse[m] for m in models["model_id"] if m in sparse}
    ks = {m.model_id: (choice.resolve_ks(stored[m.model_id], m.model_id) if m.model_id in stored
                       else choice.resolve(m.n_snapshots, m.model_id)) for m in models.itertuples()}
    layouts = {lid: zoo.layout(lid) for lid in models["layout_id"].unique()}
    features = {lid: _features(layout, lid, part, layers, tensors) for lid, layout in layouts.items()}
    samples = pd.DataFrame({"model_id": np.repeat(models["model_id"].to_numpy(), [len(k) for k in ks.values()]),
                            "k": np.concatenate(list(ks.values())) if ks else np.zeros(0, np.int64)})
    labels = models.drop(columns=[c for c in _NOT_LABELS if c in models.columns])
    rows = samples.merge(labels, on="model_id", how="left")
    rows = rows.merge(zoo.snapshots, on=["model_id", "k"], how="left", suffixes=("", "_snapshot"))
    front = ["model_id", "layout_id", "row", "k"]
    rows = rows[front + [c for c in rows.columns if c not in front]]
    description = {"where": where, "snapshots": None if snapshots is None else choice.text, "part": part,
                   "layers": layers, "tensors": tensors, "split": split, "status": status,
                   "model_ids": model_ids, "max_models": max_models, **equals}
    return Selection(zoo.handle, zoo.version, models, rows, ks, layouts, features,
                     {key: value for key, value in description.items() if value is not None},
                     n_total=len(zoo.models), snapshots=choice, stored=stored)


def _filter_models(zoo, where, equals: dict, split, status, model_ids, max_models) -> pd.DataFrame:
    """The rows of ``zoo.models`` that pass every filter; the first ``max_models`` in table order."""
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
    if model_ids is not None:
        wanted = [model_ids] if isinstance(model_ids, str) else list(model_ids)
        unknown = sorted(set(wanted) - set(zoo.models["model_id"]))
        if unknown:
            raise InputError(f"unknown model id(s) {unknown} in {zoo.handle} version {zoo.version}")
        models = models[models["model_id"].isin(wanted)]
    if max_models is not None:
        if isinstance(max_models, bool) or not isinstance(max_models, (int, np.integer)) or max_models < 1:
            raise InputError(f"max_models must be a positive integer; got {max_models!r}")
        models = models.head(int(max_models))
    return models


class Selection:
    """(model, snapshot) samples of one version with a per-layout choice of weight positions."""

    def __init__(self, handle, version, models, rows, ks, layouts, features, description, *,
                 n_total: int, snapshots: SnapshotChoice, stored: dict | None = None) -> None:
        self.handle, self.version = handle, version
        self.models: pd.DataFrame = models  # selected models, sorted by (layout_id, row)
        self.rows: pd.DataFrame = rows  # one row per sample: model_id, layout_id, row, k, labels
        self.layouts: dict[str, WeightLayout] = layouts
        self.snapshots: SnapshotChoice = snapshots  # the choice every model's ks were resolved from
        self._ks: dict[str, np.ndarray] = ks  # per selected model (in models order): its snapshot indices
        self._features = features  # per layout: sorted flat positions
        self._description = description
        self._n_total = n_total
        # models whose stored snapshots are not k = 0..n-1 (a pulled slice): their stored k
        self._stored: dict[str, np.ndarray] = {m: s for m, s in (stored or {}).items() if m in ks}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return (f"Selection({self.version}, models={len(self.models)}, samples={len(self)}, "
                f"features={self.feature_lengths}, filters={self._description})")

    @property
    def snapshot_indices(self) -> dict[str, np.ndarray]:
        """model_id → its selected snapshot indices k (ascending), in the order of ``models``."""
        return dict(self._ks)

    @property
    def feature_lengths(self) -> dict[str, int]:
        """Number of selected weight positions per layout."""
        return {lid: int(f.size) for lid, f in self._features.items()}

    @property
    def n_features(self) -> int:
        """The common feature length; InputError if the layouts of the selection differ."""
        self.require_samples()
        lengths = set(self.feature_lengths.values())
        if len(lengths) > 1:
            raise InputError(f"the selection spans layouts with different feature lengths "
                             f"{self.feature_lengths}; filter with layout_id=... or use .by_layout()")
        return lengths.pop()

    def features(self, layout_id: str) -> np.ndarray:
        """Flat positions (into the layout's vector) selected for ``layout_id``."""
        return self._features[layout_id]

    def require_samples(self) -> None:
        """InputError naming the filters when the selection holds no sample (no model matched)."""
        if not len(self):
            raise InputError(f"the selection is empty: no models match {self._description} in {self.version} "
                             f"({self._n_total} models in total)")

    def by_layout(self) -> dict[str, "Selection"]:
        """One Selection per layout, each with a uniform feature length."""
        result = {}
        for lid in self._features:
            keep = (self.models["layout_id"] == lid).to_numpy()
            models = self.models[keep].reset_index(drop=True)
            result[lid] = Selection(
                self.handle, self.version, models, self.rows[self.rows["layout_id"] == lid].reset_index(drop=True),
                {m: self._ks[m] for m in models["model_id"]}, {lid: self.layouts[lid]},
                {lid: self._features[lid]}, dict(self._description, layout_id=lid), n_total=self._n_total,
                snapshots=self.snapshots, stored=self._stored)
        return result

    def iter_models(self, *, all_snapshots: bool = False, block_bytes: int = BLOCK_BYTES):
        """Every selected model with its weights, in storage order: ``(model, ks, weights)``.

        ``model`` is its row of :attr:`models` (a namedtuple), ``ks`` its selected snapshot
        indices and ``weights`` float32 ``[len(ks), n_features]`` of the selected features; with
        ``all_snapshots``, indexed by k: ``[n_snapshots, n_features]`` (every snapshot, ``ks``
        indexing into it: e.g. the initialisation as a reference); for a pulled slice whose k
        are not 0..n-1, ``[max k + 1, n_features]`` with NaN rows for the k it lacks (see
        :meth:`stored_ks`). Consecutive model rows of one layout are
        read together, about ``block_bytes`` at a time (one request per block).
        """
        models = list(self.models.itertuples())
        n_read = (lambda m: int(m.n_snapshots)) if all_snapshots else (lambda m: len(self._ks[m.model_id]))
        for block in self._groups(lambda m: 4 * n_read(m) * int(m.n_params), block_bytes):
            for position, weights in zip(block, self.read_models(block, all_snapshots=all_snapshots)):
                yield models[position], self._ks[models[position].model_id], weights

    def stored_ks(self, model_id: str) -> np.ndarray | None:
        """The stored k of a selected model whose snapshots are not k = 0..n-1 (a pulled slice
        keeps its original k), else None (its k are 0..n_snapshots-1)."""
        stored = self._stored.get(model_id)
        return None if stored is None else stored.copy()

    def _positions(self, model_id: str):
        """Storage positions of the model's selected k (k itself unless it is a pulled slice)."""
        stored = self._stored.get(model_id)
        ks = self._ks[model_id]
        return ks if stored is None else np.searchsorted(stored, ks)

    def read_models(self, positions, *, all_snapshots: bool = False) -> list[np.ndarray]:
        """The weights of the models at ``positions`` (indices into :attr:`models`), in that order:
        float32 ``[len(ks), n_features]`` each (``[n_snapshots, n_features]`` with ``all_snapshots``).
        Only the selected snapshots are fetched; rows are read in storage order, one read per layout."""
        positions = [int(p) for p in positions]
        result: dict[int, np.ndarray] = {}
        models = self.models
        layout_ids, rows = models["layout_id"].to_numpy(), models["row"].to_numpy()
        n_snapshots, model_ids = models["n_snapshots"].to_numpy(), models["model_id"].to_numpy()
        for layout_id in dict.fromkeys(layout_ids[positions]):
            mine = sorted((p for p in positions if layout_ids[p] == layout_id),
                          key=lambda p: rows[p])  # storage order: contiguous reads when possible
            ks = [range(int(n_snapshots[p])) if all_snapshots else self._positions(model_ids[p]) for p in mine]
            data = read_rows(self.handle, self.version, layout_id, [int(rows[p]) for p in mine], ks)
            columns = self._features[layout_id]
            whole = columns.size == self.layouts[layout_id].n_params  # every position: no copy of the columns
            for p, values in zip(mine, data):
                result[p] = values if whole else values[:, columns]
                stored = self._stored.get(model_ids[p])
                if all_snapshots and stored is not None:  # indexed by k: NaN rows for the k not stored
                    by_k = np.full((int(stored[-1]) + 1, result[p].shape[1]), np.nan, dtype=np.float32)
                    by_k[stored] = result[p]
                    result[p] = by_k
        return [result[p] for p in positions]

    def blocks(self, chunk_samples: int = 100) -> list[tuple]:
        """Read tasks over consecutive model rows of one layout, each ≥ ``chunk_samples`` if possible.

        A block is ``(handle, version, layout_id, rows, ks, column_ranges)``; pass it to
        :func:`read_block`. Blocks never split a model's snapshots.
        """
        return [self._block(group) for group in self._groups(lambda m: len(self._ks[m.model_id]), chunk_samples)]

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

    def _groups(self, size_of, limit: int) -> list[list[int]]:
        """Positions of consecutive models of one layout, cut once a group's ``size_of`` sum reaches ``limit``."""
        result, current, total = [], [], 0
        for position, model in enumerate(self.models.itertuples()):
            if current and (model.layout_id != self.models.at[current[0], "layout_id"] or total >= limit):
                result.append(current)
                current, total = [], 0
            current.append(position)
            total += size_of(model)
        return result + [current] if current else result

    def _block(self, positions: list[int]) -> tuple:
        layout_id = self.models.at[positions[0], "layout_id"]
        rows = tuple(int(self.models.at[p, "row"]) for p in positions)
        ks = tuple(tuple(int(k) for k in self._positions(self.models.at[p, "model_id"])) for p in positions)
        return (self.handle, self.version, layout_id, rows, ks, _ranges(self._features[layout_id]))


def read_block(block: tuple) -> np.ndarray:
    """Read one block from :meth:`Selection.blocks`: float32 [sum of len(ks), n_features]."""
    handle, version, layout_id, rows, ks, column_ranges = block
    columns = _ranges_index(column_ranges)
    data = read_rows(handle, version, layout_id, rows, ks)
    return np.concatenate([values[:, columns] for values in data]).astype(np.float32, copy=False)


def _check_column(name: str, columns: list[str]) -> None:
    if name not in columns:
        raise InputError(f"unknown column {name!r}; available columns: {columns}")


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
