"""Layer re-initialisation robustness (Zhang, Bengio and Singer, "Are all layers created equal?").

For a trained network, reset one layer's parameters to an earlier snapshot k (k = 0 is the
initialisation) or to a fresh random draw, keep every other layer trained, and measure the
test accuracy on the network's own task. Layers whose reset costs little are "robust";
the paper finds that in deep nets most layers after the first few are.

A layer here is a conv or linear module of the layout together with the batch-norm modules
that directly follow it (a batch norm rescales that layer's outputs, so resetting the layer
without it would mix two different states). Its tensors come from the layout (layer index,
kind), never from architecture-specific code. Resetting copies the layer's positions of
the flat source vector into the trained flat vector and loads the result with the layout's
``unflatten``, so the module always holds "trained + one reset layer" and nothing needs undoing.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.core.models import build_model, flat_to_module
from weightzoo.core.spec import TrainingSettings
from weightzoo.core.tokens import unit_groups
from weightzoo.errors import InputError
from weightzoo.train.evaluate import evaluate_model
from weightzoo.train.tasks import model_task

RANDOM = "random"
WHOLE_NETWORK = -1  # the ``layer`` of rows that reset every layer at once
RESULT_COLUMNS = ("model_id", "layout_id", "layer", "kind", "tensors", "reset", "trained_k", "acc_recorded",
                  "acc_trained", "acc_reset", "drop", "loss_trained", "loss_reset")
# The hyperparameters that weightzoo.train.tasks.model_task turns into test data (label_noise
# touches train labels only); keep in step with it, or models would share the wrong test set.
_DATA_HYPERPARAMETERS = ("dataset", "classes", "pixel_shuffle", "frequency", "input_dim")
# Bookkeeping columns of models.parquet that are not worth repeating on every result row.
_NOT_LABELS = ("row", "fingerprint", "message", "config_json", "training_json", "version_added", "n_snapshots")


@dataclass(frozen=True)
class LayerGroup:
    """The tensors reset together: one conv/linear module and the batch norms that follow it."""

    layer: int  # the layout layer index of the group's first module
    kind: str
    tensors: tuple[TensorSpec, ...]

    @property
    def names(self) -> str:
        """The tensor names, comma-joined."""
        return ",".join(t.name for t in self.tensors)

    @property
    def positions(self) -> np.ndarray:
        """Flat positions of the group's tensors in the layout's vector."""
        return np.concatenate([np.arange(t.offset, t.offset + t.length) for t in self.tensors])


def layer_groups(layout: WeightLayout) -> list[LayerGroup]:
    """The layout's layers in order; a batch-norm module joins the layer before it.

    Built on the tokeniser's unit groups (one conv/linear layer plus its batch norm), merged
    back per layout layer where a layer's tensors do not share a unit axis.
    """
    groups: list[LayerGroup] = []
    for unit in unit_groups(layout):
        if groups and groups[-1].layer == unit.layers[0]:
            last = groups[-1]
            groups[-1] = LayerGroup(last.layer, last.kind, last.tensors + unit.tensors)
        else:
            groups.append(LayerGroup(unit.layers[0], unit.tensors[0].kind, unit.tensors))
    return groups


def random_reinit(config: dict, layout: WeightLayout, *, seed: int, model_id: str) -> np.ndarray:
    """A fresh flat initialisation of ``config``'s architecture with its own init scheme.

    The model is rebuilt with ``build_model`` under a seed derived from (``seed``,
    ``model_id``) and made different from the model's own seed, so the draw comes from the
    same distribution as snapshot 0 but is independent of it. Batch-norm tensors get their
    construction values (weight 1, bias 0, running mean 0, running var 1).
    """
    fresh_seed = zlib.crc32(f"{seed}:{model_id}".encode())
    if fresh_seed == int(config.get("seed", 0)):
        fresh_seed += 1
    module = build_model({**config, "seed": fresh_seed})
    try:
        named = layout.named_as(module)  # a layout stored under older tensor names matches by position
    except ValueError:
        raise ValueError(f"model {model_id!r} rebuilt from its config has layout "
                         f"{WeightLayout.from_module(module).layout_id}, not its stored {layout.layout_id}; "
                         f"cannot draw a random re-initialisation") from None
    return named.flatten(module.state_dict())


def reinit_table(zoo, *, where: str | None = None, model_ids=None, resets=(0, RANDOM), trained_k: int | None = None,
                 max_models: int | None = None, seed: int = 0, whole_network: bool = False,
                 status: str | None = "ok", progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Test accuracy of each selected network with one layer reset, per layer and reset.

    Models: ``zoo.select(where, status=..., model_ids=..., max_models=...)`` (see
    :meth:`weightzoo.io.reader.Zoo.select`), read model by model through that selection.
    ``trained_k`` is the snapshot taken as the trained network (default: each model's last).
    ``resets`` holds snapshot indices k and/or ``"random"`` (:func:`random_reinit`).
    ``whole_network=True`` adds rows (layer -1, kind "all") resetting every layer at once.

    Rows: model_id, layout_id, layer, kind, tensors, reset ("0", "1", ..., "random"),
    trained_k, acc_recorded (test_acc of trained_k in snapshots.parquet), acc_trained,
    acc_reset, drop = acc_trained - acc_reset, loss_trained, loss_reset, then the model's
    hyperparameters and split. Accuracies are NaN on regression tasks; the losses are not.
    Unknown model ids, bad resets and snapshots a model does not have raise InputError (a
    ValueError) before anything is evaluated.
    """
    resets = _check_resets(resets)
    selection = zoo.select(where, snapshots="last" if trained_k is None else trained_k, status=status,
                           model_ids=model_ids, max_models=max_models)
    selection.require_samples()
    models = selection.models
    if 0 in resets:  # resetting to the initialisation needs each model's own k = 0 at epoch 0
        zoo.require_initialisation(models["model_id"], "reinit --resets 0")
    for model in models.itertuples():  # every reset k must exist before anything is evaluated
        _check_reset_snapshots(model, resets, trained_k, zoo.snapshot_ks(model.model_id))
    tasks: dict[str, object] = {}  # prepared test data per (dataset, data options): loaded once per call
    recorded = zoo.snapshots.set_index(["model_id", "k"])["test_acc"]  # indexed once, not scanned per model
    rows = []
    for i, (model, ks, weights) in enumerate(selection.iter_models(all_snapshots=True), start=1):
        k = int(ks[0])
        rows += _reinit_model(zoo, selection.layouts[model.layout_id], model, weights, k, resets, tasks, recorded,
                              seed=seed, whole_network=whole_network)
        if progress:
            progress(f"reinit: model {i}/{len(models)} ({model.model_id}, trained k={k})")
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    labels = models.drop(columns=[c for c in (*_NOT_LABELS, "layout_id") if c in models.columns])
    labels = labels.rename(columns={c: f"hp_{c}" for c in labels.columns if c in RESULT_COLUMNS[1:]})
    return table.merge(labels, on="model_id", how="left")


def summarise(table: pd.DataFrame) -> list[dict]:
    """JSON-safe records of the mean drop (and spread) per (layout, layer, reset)."""
    values = table.assign(loss_rise=table["loss_reset"] - table["loss_trained"])
    grouped = values.groupby(["layout_id", "layer", "kind", "reset"], sort=False).agg(
        n_models=("model_id", "nunique"), drop_mean=("drop", "mean"), drop_std=("drop", "std"),
        acc_trained_mean=("acc_trained", "mean"), acc_reset_mean=("acc_reset", "mean"),
        loss_rise_mean=("loss_rise", "mean")).reset_index()
    return json_records(grouped)


def plot_heatmap(table: pd.DataFrame, path, *, title: str = "") -> None:
    """Mean accuracy drop per layer (rows) and reset (columns: k ascending, then random);
    one annotated panel with a colour bar per layout. A regression layout (no accuracy)
    shows the mean loss increase instead."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layouts = list(dict.fromkeys(table["layout_id"]))
    resets = sorted(table["reset"].unique(), key=_reset_order)
    n_layers = max(table[table["layout_id"] == lid][["layer", "kind"]].drop_duplicates().shape[0] for lid in layouts)
    fig = Figure(figsize=(1.1 * len(resets) * len(layouts) + 2.5 * len(layouts), 0.45 * n_layers + 1.8),
                 layout="constrained")
    FigureCanvasAgg(fig)
    for position, layout_id in enumerate(layouts, start=1):
        ax = fig.add_subplot(1, len(layouts), position)
        _heatmap_panel(fig, ax, table[table["layout_id"] == layout_id], resets)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def run_reinit_study(zoo, out_dir, *, where: str | None = None, model_ids=None, resets=(0, RANDOM),
                     trained_k: int | None = None, max_models: int | None = None, seed: int = 0,
                     whole_network: bool = False, status: str | None = "ok",
                     progress: Callable[[str], None] | None = None,
                     table: pd.DataFrame | None = None) -> StudyResult:
    """reinit_table written to ``out_dir`` as ``reinit.parquet`` and ``reinit.png``.

    ``table`` is a precomputed :func:`reinit_table` (a distributed run builds it in chunks
    of models); otherwise it is computed here. The result's rows are the :func:`summarise`
    records; ``details`` holds the ``table`` and ``plot`` paths, ``n_models`` and the
    ``summary``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = reinit_table(zoo, where=where, model_ids=model_ids, resets=resets, trained_k=trained_k,
                             max_models=max_models, seed=seed, whole_network=whole_network, status=status,
                             progress=progress)
    table_path, plot_path = out / "reinit.parquet", out / "reinit.png"
    table.to_parquet(table_path, index=False)
    plot_heatmap(table, plot_path, title=f"accuracy drop after resetting one layer, {zoo.handle.name} {zoo.version}")
    summary, n_models = summarise(table), int(table["model_id"].nunique())
    resets = ", ".join(str(r) for r in sorted(table["reset"].unique(), key=_reset_order))
    headline = f"{n_models} networks, resets to {resets}; plot {plot_path}"
    return StudyResult.of_directory("reinit", out, headline=headline, rows=summary, details={
        "table": str(table_path), "plot": str(plot_path), "n_models": n_models, "summary": summary})


def _check_resets(resets) -> list:
    values = [resets] if isinstance(resets, (int, str)) else list(resets)
    bad = [r for r in values if r != RANDOM and not (isinstance(r, (int, np.integer)) and not isinstance(r, bool)
                                                     and r >= 0)]
    if bad or not values:
        raise ValueError(f"resets must be snapshot indices k >= 0 and/or {RANDOM!r}; got {resets!r}")
    return sorted(dict.fromkeys(r if r == RANDOM else int(r) for r in values), key=_reset_order)


def _check_reset_snapshots(model, resets: list, trained_k: int | None, stored) -> None:
    """Every snapshot k a reset asks for must be stored for the model (``stored``: its k)."""
    stored = [int(k) for k in stored]
    missing = [r for r in resets if r != RANDOM and r not in stored]
    if missing:
        have = f"0..{stored[-1]}" if stored == list(range(len(stored))) else ",".join(map(str, stored))
        raise InputError(f"model {model.model_id!r} has snapshots k = {have}; "
                         f"asked for k = {missing} (trained_k={trained_k!r}, resets={resets!r})")


def _reinit_model(zoo, layout: WeightLayout, model, weights: np.ndarray, trained_k: int, resets: list, tasks: dict,
                  recorded_acc: pd.Series, *, seed: int, whole_network: bool) -> list:
    """The result rows of one network (``weights``: its every snapshot): every layer group × every reset."""
    config = json.loads(model.config_json)
    task = _test_data(zoo, model, config, tasks)
    trained = weights[trained_k]
    module = flat_to_module(config, layout, trained)  # checks that config and layout agree
    named = layout.named_as(module)  # the stored layout under the module's tensor names
    loss_trained, acc_trained = evaluate_model(module, task.x_test, task.y_test, task.task)
    sources = {str(r): (random_reinit(config, layout, seed=seed, model_id=model.model_id) if r == RANDOM
                        else weights[r])
               for r in resets}
    groups = [(g.layer, g.kind, g.names, g.positions) for g in layer_groups(layout)]
    if whole_network:
        groups.append((WHOLE_NETWORK, "all", "*", np.arange(layout.n_params)))
    value = recorded_acc.get((model.model_id, trained_k))
    recorded = float(value) if value is not None and pd.notna(value) else math.nan
    rows = []
    for layer, kind, names, positions in groups:
        for reset, source in sources.items():
            flat = trained.copy()
            flat[positions] = source[positions]
            module.load_state_dict(named.unflatten(flat), strict=False)
            loss_reset, acc_reset = evaluate_model(module, task.x_test, task.y_test, task.task)
            rows.append((model.model_id, model.layout_id, layer, kind, names, reset, trained_k, recorded,
                         acc_trained, acc_reset, acc_trained - acc_reset, loss_trained, loss_reset))
    return rows


def _test_data(zoo, model, config: dict, tasks: dict):
    """The model's own task (its dataset, options and the zoo's split), cached per call.

    Label noise is dropped from the key: it corrupts train labels only, so every model of
    a dataset shares one test set.
    """
    training = _training_settings(model.training_json)
    options = _dataset_options(zoo, model.spec_name, config.get("dataset"))
    params = {**config, "label_noise": 0.0}
    key = json.dumps([options, training.split_seed, training.test_fraction,
                      {name: config.get(name) for name in _DATA_HYPERPARAMETERS}], sort_keys=True, default=str)
    if key not in tasks:
        tasks[key] = model_task(params, training, options)
    return tasks[key]


def _training_settings(training_json: str) -> TrainingSettings:
    """The split settings of a models-table row (only split_seed and test_fraction matter here)."""
    stored = json.loads(training_json or "{}")
    split = {name: stored[name] for name in ("split_seed", "test_fraction") if name in stored}
    epochs = tuple(stored.get("snapshots", {}).get("epochs", ()))
    return TrainingSettings(epochs=int(stored.get("epochs", 0)), snapshot_epochs=epochs, **split)


def _dataset_options(zoo, spec_name: str, dataset) -> dict:
    """The loader options the spec gave ``dataset``; models.parquet does not store them."""
    for spec in zoo.manifest.specs:
        if spec.get("name") == spec_name:
            return dict(spec.get("dataset_options", {}).get(dataset, {}))
    return {}


def _heatmap_panel(fig, ax, table: pd.DataFrame, resets: list) -> None:
    """One layout's mean drop (or mean loss increase for regression) as an annotated heatmap."""
    metric, label = ("drop", "mean accuracy drop")
    values = table.assign(loss_rise=table["loss_reset"] - table["loss_trained"])
    if values["drop"].isna().all():
        metric, label = "loss_rise", "mean test-loss increase"
    layers = values[["layer", "kind"]].drop_duplicates()
    # the whole-network row goes last, below the deepest layer
    layers = layers.sort_values("layer", key=lambda layer: layer.where(layer != WHOLE_NETWORK, np.iinfo(np.int64).max))
    means = (values.groupby(["layer", "kind", "reset"])[metric].mean().unstack("reset")
             .reindex(index=pd.MultiIndex.from_frame(layers), columns=resets))
    grid = means.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-max(limit, 1e-9), vmax=max(limit, 1e-9), aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        text = "n/a" if not np.isfinite(value) else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if np.isfinite(value) and abs(value) > 0.6 * limit else "black")
    ax.set_xticks(range(len(resets)), [f"k={r}" if r != RANDOM else r for r in resets])
    ax.set_yticks(range(len(means)), [("all layers" if layer == WHOLE_NETWORK else f"{layer} {kind}")
                                      for layer, kind in means.index])
    ax.set_xlabel("reset to")
    ax.set_ylabel("layer")
    name = table["architecture"].iloc[0] if "architecture" in table.columns else ""
    ax.set_title(f"{name} {table['layout_id'].iloc[0]} ({table['model_id'].nunique()} models)".strip(), fontsize=9)
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)


def _reset_order(reset) -> tuple:
    text = str(reset)
    return (1, 0) if text == RANDOM else (0, int(text))


