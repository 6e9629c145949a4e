"""Reading published versions: tables as pandas DataFrames, weights from the tagged snapshot.

Only tagged versions exist for readers: a ``versions/vNNNN/`` directory without an Icechunk
tag is a crashed publish and is ignored. Weights are read from
``readonly_session(tag=version)``, so an old version never sees rows appended later.

A zoo in object storage (``open_zoo("s3://bucket/prefix")``, see :mod:`weightzoo.io.location`)
is opened lazily: opening reads the manifest; tables are fetched when first used, and
weights chunk by chunk (one snapshot of one model per chunk) as selections ask for them.
"""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import pandas as pd
import zarr

from weightzoo.core.layout import WeightLayout
from weightzoo.errors import CorruptChunkError, InputError, RecordError, TracesNotFound, VersionNotFound
from weightzoo.io import store, trace_store
from weightzoo.io.handle import ZooHandle
from weightzoo.io.location import ZooLocation
from weightzoo.io.records import Manifest


def list_versions(zoo) -> list[dict]:
    """Published (tagged) versions of ``zoo`` (a handle, path or URL), oldest first:
    {version, parent, created_at, n_models, snapshot_id}."""
    zoo = ZooHandle.at(zoo)
    repo = zoo.repository()
    result = []
    for tag in store.version_tags(repo):
        manifest = _read_manifest(zoo.location, tag)
        result.append({"version": tag, "parent": manifest.parent, "created_at": manifest.created_at,
                       "n_models": manifest.n_models, "snapshot_id": repo.lookup_tag(tag)})
    return result


def open_zoo(zoo, version: str | None = None) -> "Zoo":
    """Open the latest tagged version (or the named one) of ``zoo`` (a path, an ``s3://`` URL
    or a :class:`ZooHandle`).

    Raises NotAZooError for a location without a repository and VersionNotFound (listing the
    available versions) for a version that was never published.
    """
    return ZooHandle.at(zoo).open(version)


class Zoo:
    """One published version of a zoo: its manifest, tables, layouts and weights."""

    def __init__(self, handle: ZooHandle, version: str) -> None:
        self.handle = handle
        self.version = version
        self._layouts: dict[str, WeightLayout] = {}
        self.manifest: Manifest = _read_manifest(handle.location, version)
        tagged = handle.repository().lookup_tag(version)
        if self.manifest.icechunk_snapshot_id != tagged:
            raise RecordError(f"{self.location.join(self.folder + '/manifest.json')} names snapshot "
                              f"{self.manifest.icechunk_snapshot_id} but tag {version} is {tagged}")

    @classmethod
    def open(cls, handle: ZooHandle, version: str | None = None) -> "Zoo":
        """The published ``version`` of the zoo (default: the latest); see :func:`open_zoo`."""
        tags = handle.version_tags()
        if version is None:
            if not tags:
                raise VersionNotFound(f"{handle} has no published versions yet")
            version = tags[-1]
        elif version not in tags:
            raise VersionNotFound(f"version {version!r} is not published in {handle}; "
                                  f"available: {', '.join(tags) or 'none'}")
        return cls(handle, version)

    def __repr__(self) -> str:
        return f"Zoo({self.handle.url!r}, version={self.version!r}, models={self.manifest.n_models})"

    @property
    def location(self) -> ZooLocation:
        """Where the zoo's store is (local folder or object storage)."""
        return self.handle.location

    @property
    def folder(self) -> str:
        """The version's folder, relative to the zoo (``versions/vNNNN``)."""
        return f"versions/{self.version}"

    @cached_property
    def models(self) -> pd.DataFrame:
        """models.parquet: one row per model."""
        return self._read_table("models.parquet")

    @cached_property
    def snapshots(self) -> pd.DataFrame:
        """snapshots.parquet: one row per (model_id, k)."""
        return self._read_table("snapshots.parquet")

    @cached_property
    def layouts(self) -> pd.DataFrame:
        """layouts.parquet: one row per (layout_id, tensor)."""
        return self._read_table("layouts.parquet")

    def layout(self, layout_id: str) -> WeightLayout:
        """The WeightLayout of ``layout_id``; KeyError lists the version's layouts."""
        if layout_id not in self._layouts:
            rows = self.layouts[self.layouts["layout_id"] == layout_id]
            if rows.empty:
                raise KeyError(f"no layout {layout_id!r} in {self.version}; "
                               f"known: {sorted(self.layouts['layout_id'].unique())}")
            self._layouts[layout_id] = WeightLayout.from_records(rows.to_dict("records"))
        return self._layouts[layout_id]

    def weights_array(self, layout_id: str) -> zarr.Array:
        """The read-only ``weights/<layout_id>`` array as of this version's tag."""
        array = store.open_weights_array(self._session.store, layout_id)
        if array is None:
            raise KeyError(f"no weights array for layout {layout_id!r} in {self.version}")
        return array

    def weights(self, model_id: str, k=None) -> np.ndarray:
        """A model's weights: [n_snapshots, n_params]; [n_params] for snapshot ``k``; [len(k), n_params]
        for a list of snapshots ``k``. Only those snapshots are fetched."""
        from weightzoo.io.version_weights import read_rows

        row = self._storage_row(model_id)
        n_snapshots = int(row["n_snapshots"])
        ks = range(n_snapshots) if k is None else [k] if np.ndim(k) == 0 else list(k)
        stored = None if k is None else self.sparse_snapshot_ks.get(model_id)
        if stored is None:
            outside = [int(i) for i in ks if not 0 <= int(i) < n_snapshots]
            if outside:
                raise IndexError(f"model {model_id!r} has snapshots 0..{n_snapshots - 1}; asked for k={outside}")
        else:  # a pulled slice: snapshot k is stored at its rank among the model's k values
            outside = [int(i) for i in ks if int(i) not in set(stored.tolist())]
            if outside:
                raise IndexError(f"model {model_id!r} has snapshots k = {','.join(map(str, stored.tolist()))}; "
                                 f"asked for k={outside}")
            ks = [int(np.searchsorted(stored, int(i))) for i in ks]
        (values,) = read_rows(self.handle, self.version, row["layout_id"], [int(row["row"])], [ks])
        return values[0] if k is not None and np.ndim(k) == 0 else values

    def require_initialisation(self, model_ids, study: str) -> None:
        """InputError unless every model of ``model_ids`` has its initialisation: snapshot k = 0
        at epoch 0 (an unknown epoch counts as 0). A slice pulled with ``--snapshots 1:3`` keeps
        k = 1, 2 and has none; a slice pulled by older weightzoo renumbered its first kept
        snapshot to k = 0 but kept its epoch, which gives it away."""
        ids = list(dict.fromkeys(model_ids))
        snaps = self.snapshots[self.snapshots["model_id"].isin(ids)]
        first = snaps.sort_values(["model_id", "k"]).drop_duplicates("model_id")
        epoch = first["epoch"] if "epoch" in first.columns else pd.Series(np.nan, index=first.index)
        lacking = first[(first["k"] != 0) | (epoch.notna() & (epoch != 0))]
        if lacking.empty:
            return
        example = lacking.iloc[0]
        epoch_text = "" if pd.isna(example.get("epoch")) else f", epoch {example['epoch']:g}"
        raise InputError(f"{study} needs each model's initialisation (snapshot k = 0 at epoch 0), but "
                         f"{len(lacking)} of the {len(ids)} selected models lack it in {self.handle}@{self.version}, "
                         f"e.g. {example['model_id']!r}, whose first stored snapshot is k = {int(example['k'])}"
                         f"{epoch_text} (a slice pulled without k = 0); pull again including k = 0, e.g. "
                         f"--snapshots 0,{max(int(example['k']), 1)}")

    def snapshot_ks(self, model_id: str) -> np.ndarray:
        """The k of a model's stored snapshots, ascending (0..n-1, except in a pulled slice,
        which keeps the original k: ``pull --snapshots 1:3`` stores k = 1, 2). ``weights(model_id)``
        returns them in this order."""
        stored = self.sparse_snapshot_ks.get(model_id)
        return stored.copy() if stored is not None else np.arange(int(self._storage_row(model_id)["n_snapshots"]))

    @cached_property
    def sparse_snapshot_ks(self) -> dict[str, np.ndarray]:
        """model_id → its stored k (ascending) for the models whose k are not 0..n-1 (slices
        pulled with ``--snapshots``); empty for every built or imported version."""
        if "snapshots" in self.__dict__:  # read already: no second read of the file
            table = self.snapshots[["model_id", "k"]]
        else:
            table = self.location.read_table(f"{self.folder}/snapshots.parquet", ["model_id", "k"]).to_pandas()
        if table.empty:
            return {}
        stats = table.groupby("model_id")["k"].agg(["min", "max", "count"])
        odd = stats.index[(stats["min"] != 0) | (stats["max"] != stats["count"] - 1)]
        if not len(odd):
            return {}
        table = table[table["model_id"].isin(odd)].sort_values(["model_id", "k"])
        return {model_id: group.to_numpy(np.int64) for model_id, group in table.groupby("model_id")["k"]}

    def trace_array(self, layout_id: str, name: str) -> zarr.Array:
        """The read-only ``traces/<layout_id>/<name>`` array as of this version's tag
        (``name`` "_steps" for the step, epoch, lr and loss columns)."""
        array = trace_store.open_trace_array(self._session.store, layout_id, name)
        if array is None:
            raise KeyError(f"no trace array {trace_store.traces_path(layout_id, name)} in {self.version}; "
                           f"traced: {trace_store.trace_tensor_names(self._session.store, layout_id)}")
        return array

    def traces(self, model_id: str) -> dict:
        """A model's dense training traces (see :mod:`weightzoo.io.trace_store`).

        Returns tensor name → float32 [n_points, size] for each tensor its spec traced, plus
        ``step`` and ``epoch`` (int64) and ``lr`` and ``loss`` (float64), all of length
        n_points. Point 0 is the initialisation (epoch 0, lr and loss NaN). Raises
        TracesNotFound when the model (or the whole version) recorded no traces.
        """
        row = self._model(model_id)
        n_points = row.get("n_trace_steps")
        if pd.isna(n_points) or not int(n_points):
            raise TracesNotFound(self._no_traces_message(model_id))
        try:
            return trace_store.read_trace_row(self._session.store, row["layout_id"], int(row["row"]),
                                              int(n_points), _traced_tensors(row))
        except KeyError:  # a missing array names itself; that is not a corrupt chunk
            raise
        except Exception as error:  # codec errors surface as ValueError/RuntimeError/IcechunkError
            raise CorruptChunkError(f"cannot read traces of model {model_id!r} (row {int(row['row'])} of "
                                    f"traces/{row['layout_id']}, version {self.version}): {error}") from error

    def load_model(self, model_id: str, k: int, builder=None):
        """A torch module with snapshot ``k`` of ``model_id`` loaded, in eval mode.

        ``builder(config) -> nn.Module`` defaults to ``weightzoo.core.models.build_model``.
        """
        row = self._model(model_id)
        if builder is None:
            from weightzoo.core.models import build_model as builder
        module = builder(json.loads(row["config_json"]))
        mismatch = f"model {model_id!r} built from its config does not match layout {row['layout_id']}"
        try:  # a layout stored under older tensor names loads by position (WeightLayout.named_as)
            state = self.layout(row["layout_id"]).named_as(module).unflatten(self.weights(model_id, k))
        except ValueError as error:
            raise ValueError(f"{mismatch}: {error}") from error
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches raise even when strict=False
            raise ValueError(f"{mismatch}: {error}") from error
        # strict=False only tolerates the counters a layout leaves out on purpose.
        missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"{mismatch}: missing {missing}, unexpected {result.unexpected_keys}")
        return module.eval()

    def dataset(self, model_id: str):
        """The model's own data: a :class:`weightzoo.data.datasets.TaskData` (``x_train``,
        ``y_train``, ``x_test``, ``y_test``, ``task``, ...) of its dataset with the loader options
        of its spec and the split seed and test fraction of its record, exactly as it was trained
        (train labels with the label noise it was trained on; test labels are never corrupted).

        InputError for a model whose record names no built-in dataset (e.g. an imported one).
        """
        from weightzoo.core.spec import TrainingSettings
        from weightzoo.train.tasks import model_task

        row = self._model(model_id)
        config = json.loads(row["config_json"] or "{}")
        stored = json.loads(row["training_json"] or "{}") if "training_json" in row else {}
        if not config.get("dataset") or not config.get("architecture"):
            raise InputError(f"model {model_id!r} has no training config naming a dataset (imported?): "
                             f"its own data is not known")
        split = {name: stored[name] for name in ("split_seed", "test_fraction") if name in stored}
        training = TrainingSettings(epochs=int(stored.get("epochs", 0) or 0),
                                    snapshot_epochs=tuple(stored.get("snapshots", {}).get("epochs", ())), **split)
        options = {}
        for spec in self.manifest.specs:
            if spec.get("name") == row.get("spec_name"):
                options = dict(spec.get("dataset_options", {}).get(config["dataset"], {}))
        return model_task(config, training, options)

    def evaluate(self, model_id: str, k: int) -> dict:
        """Snapshot ``k`` of ``model_id`` evaluated on its own test data (:meth:`dataset`):
        ``{"model_id", "k", "test_acc", "test_loss", "n_test"}``; ``test_acc`` is NaN for a
        regression task. Reproduces the ``test_acc`` and ``test_loss`` stored in snapshots.parquet."""
        from weightzoo.train.evaluate import evaluate_model

        task = self.dataset(model_id)
        module = self.load_model(model_id, k)
        loss, accuracy = evaluate_model(module, task.x_test, task.y_test, task.task)  # accuracy NaN: regression
        return {"model_id": model_id, "k": int(k), "test_acc": accuracy, "test_loss": loss, "n_test": len(task.y_test)}

    def select(self, where: str | None = None, *, snapshots=None, part: str | None = None,
               layers: list[int] | None = None, tensors: list[str] | None = None,
               split: str | list[str] | None = None, status: str | None = "ok", model_ids=None,
               max_models: int | None = None, **equals):
        """Samples (model, snapshot) chosen by table filters, a snapshot choice and a network part.

        ``where`` is a ``DataFrame.query`` over models.parquet; ``**equals`` are column=value(s)
        filters; ``status=None`` keeps diverged runs; ``model_ids`` names models (unknown ids are
        an error); ``max_models`` keeps the first that many in table order. ``snapshots`` is any
        form of :class:`weightzoo.core.snapshots.SnapshotChoice` (``"all"``, ``"last"``, ``3``,
        ``"1:5"``, ``range(1, 5)``, ``[0, 2]``, ...): a k a selected model lacks is an error.
        Returns a :class:`weightzoo.io.selection.Selection` (Dask/NumPy arrays, labels, torch
        batches, model by model).
        """
        from weightzoo.io.selection import select
        return select(self, where, snapshots=snapshots, part=part, layers=layers, tensors=tensors,
                      split=split, status=status, model_ids=model_ids, max_models=max_models, **equals)

    def summary(self) -> dict:
        """Counts by status/layout/dataset, last-snapshot test accuracy, sizes."""
        models = self.models
        result = {
            "version": self.version,
            "n_models": len(models),
            "n_snapshots": len(self.snapshots),
            "by_status": _counts(models["status"]),
            "layouts": _counts(models["layout_id"]),
            "test_acc_last": self._last_test_accuracy(),
            "repo_bytes": self.location.total_bytes("repo"),
        }
        if "dataset" in models.columns:
            result["datasets"] = _counts(models["dataset"])
        return result

    def _read_table(self, name: str) -> pd.DataFrame:
        return self.location.read_table(f"{self.folder}/{name}").to_pandas()

    @cached_property
    def _session(self):
        return self.handle.repository().readonly_session(tag=self.version)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {model_id: i for i, model_id in enumerate(self.models["model_id"])}

    @cached_property
    def _storage_rows(self) -> dict[str, dict]:
        # where each model's weights are, without reading the whole models table
        columns = ["model_id", "layout_id", "row", "n_snapshots"]
        return {r["model_id"]: r for r in self.location.read_table(f"{self.folder}/models.parquet", columns).to_pylist()}

    def _storage_row(self, model_id: str) -> dict:
        if model_id not in self._storage_rows:
            raise KeyError(f"no model {model_id!r} in {self.handle} version {self.version}")
        return self._storage_rows[model_id]

    def _model(self, model_id: str) -> pd.Series:
        if model_id not in self._positions:
            raise KeyError(f"no model {model_id!r} in {self.handle} version {self.version}")
        return self.models.iloc[self._positions[model_id]]

    def _no_traces_message(self, model_id: str) -> str:
        counts = self.models.get("n_trace_steps", pd.Series(dtype="float64")).fillna(0)
        traced = int((counts > 0).sum())
        if not traced:
            return (f"version {self.version} of {self.handle} has no traces: no model was trained with "
                    f"training.traces set")
        return f"model {model_id!r} has no traces in version {self.version} ({traced} of its models have)"

    def _last_test_accuracy(self) -> dict:
        snapshots = self.snapshots.sort_values(["model_id", "k"])
        # The last snapshot's value, not the last non-null one: a diverged model has no accuracy.
        last = snapshots.drop_duplicates("model_id", keep="last")["test_acc"].dropna()
        if last.empty:
            return {"count": 0, "mean": None, "min": None, "max": None, "median": None}
        return {"count": int(last.size), "mean": float(last.mean()), "min": float(last.min()),
                "max": float(last.max()), "median": float(last.median())}


def _traced_tensors(row: pd.Series) -> list[str] | None:
    """The tensors a model's training settings traced (None: all of its layout's)."""
    traces = json.loads(row["training_json"] or "{}").get("traces") if "training_json" in row else None
    return list(traces["tensors"]) if isinstance(traces, dict) and traces.get("tensors") else None


def _counts(column: pd.Series) -> dict:
    return {str(key): int(value) for key, value in column.value_counts(dropna=False).sort_index().items()}


def _read_manifest(location: ZooLocation, version: str) -> Manifest:
    relative = f"versions/{version}/manifest.json"
    try:
        return Manifest.from_json(location.read_bytes(relative), location.join(relative))
    except FileNotFoundError:
        raise FileNotFoundError(f"version {version} is tagged but {location.join(relative)} is missing") from None
