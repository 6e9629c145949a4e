"""Trajectory measures of Loukas, Poiitis and Jegelka, "What training reveals about neural
network complexity" (NeurIPS 2021), on the dense traces of a zoo.

A trace is points θ_0, θ_1, …, θ_n of one tensor (usually the first layer's bias): θ_0 the
initialisation, θ_i the value after optimisation step s_i, taken in epoch e_i with learning
rate η_i on a batch with training loss ℓ_i (see :mod:`weightzoo.core.traces`). With
d_i = ||θ_i − θ_{i−1}||₂ (i ≥ 1):

* **length_raw** = Σ d_i, the Euclidean length of the path (a straight path: its chord).
* **length** = Σ d_i / (η_i · ε_i · (s_i − s_{i−1})), the *normalised* length. ε_i is the
  magnitude of the loss derivative with respect to the network output, recovered from the
  recorded loss: for the squared error ℓ = (ŷ − y)² it is |∂ℓ/∂ŷ| = 2√ℓ; for cross-entropy it
  is |∂ℓ/∂z_y| = 1 − p_y = 1 − e^{−ℓ} (the true-class component of the output gradient; the
  full gradient norm lies between it and √2 times it). With a frozen identity first layer the
  bias gradient equals the input gradient, so for plain SGD with batch size 1 each term is
  ||∇ₓf(x_i)||, the network's local Lipschitz constant at the training point: a longer
  normalised path means a more complex learned function (the paper's Theorem 1). For batch
  sizes > 1, ℓ is the batch mean and ε is that of the batch's RMS error; with ``every`` > 1 a
  displacement spans several steps and is divided by their number. The authors' code pairs
  d_i with the *previous* step's η and error; we pair each displacement with the step that
  made it, as the theorem does. Steps with ε below ``min_scale`` (1e-6) are left out of the
  normalised measures and counted as ``n_flat_steps``: a float32 cross-entropy rounds to 0
  once p_y is within ~1e-7 of 1 while its gradient does not, so the ratio means nothing there.
* **mean_step** = length / (steps − flat steps): the mean normalised step, the per-epoch
  value the authors plot (their per-epoch sum divided by the steps per epoch).
* **variance** = mean over epochs of (1/|E|) Σ_{i∈E} ||θ_i − θ̄_E||², the spread of an epoch's
  points around their mean, summed over coordinates; **variance_normalised** divides each
  term by η_i² (the paper's Corollary 1 form).
* **distance_final** = ||θ_n − θ_0||, **distance_max** = max_i ||θ_i − θ_0||.

Per-epoch values use the points recorded in that epoch (the initial point belongs to no
epoch). Every model gets a row with ``result`` analysed / skipped / failed and a ``note``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.analysis.trajectory_plots import plot_trajectories, varying_hyperparameter
from weightzoo.errors import TracesNotFound
from weightzoo.io.tables import RESERVED

TASKS = ("regression", "classification")
MEASURES = ("length", "length_raw", "mean_step", "variance", "variance_normalised", "distance_final",
            "distance_max", "n_steps", "n_flat_steps")
MEASURE_COLUMNS_PER_EPOCH = ("n_steps", "n_flat_steps", "length", "length_raw", "mean_step", "variance",
                             "variance_normalised", "distance_end")
MIN_SCALE = 1e-6
TRACE_KEYS = ("step", "epoch", "lr", "loss")
MODELS_PER_BLOCK = 500


def loss_scale(loss, task: str) -> np.ndarray:
    """ε: the magnitude of the loss derivative w.r.t. the output, from the loss value."""
    loss = np.maximum(np.asarray(loss, dtype=np.float64), 0.0)
    if task == "regression":
        return 2.0 * np.sqrt(loss)
    if task == "classification":
        return -np.expm1(-loss)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def trajectory_measures(points, lr, loss, epoch, *, step=None, task: str = "regression",
                        min_scale: float = MIN_SCALE) -> dict:
    """The measures of one trace (see the module docstring) and a ``per_epoch`` DataFrame.

    ``points`` is [n_points, size] (point 0 the start); ``lr``, ``loss``, ``epoch`` and
    ``step`` (default 0, 1, 2, …) have one value per point, those of point 0 unused.
    Raises ValueError for non-finite points or mismatched lengths.
    """
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    lr, loss, epoch = (np.asarray(v, dtype=np.float64) for v in (lr, loss, epoch))
    step = np.arange(len(points), dtype=np.float64) if step is None else np.asarray(step, dtype=np.float64)
    if not len(points) or any(len(v) != len(points) for v in (lr, loss, epoch, step)):
        raise ValueError(f"need one lr, loss, epoch and step per point; got {len(points)} points and "
                         f"{[len(v) for v in (lr, loss, epoch, step)]} values")
    if not np.isfinite(points).all():
        raise ValueError("the trace holds non-finite values")
    raw = np.linalg.norm(np.diff(points, axis=0), axis=1)
    scale = loss_scale(loss[1:], task)
    denominator = lr[1:] * scale * np.diff(step)
    flat = ~((scale >= min_scale) & (denominator > 0))  # NaN loss or lr counts as flat too
    normalised = np.where(flat, 0.0, raw / np.where(flat, 1.0, denominator))
    distance = np.linalg.norm(points - points[0], axis=1)
    per_epoch = _per_epoch(points[1:], raw, normalised, flat, lr[1:], epoch[1:], distance[1:])
    n_steps, n_informative = int(raw.size), int((~flat).sum())
    return {
        "length": float(normalised.sum()), "length_raw": float(raw.sum()),
        "mean_step": float(normalised.sum() / n_informative) if n_informative else math.nan,
        "variance": float(per_epoch["variance"].mean()) if len(per_epoch) else math.nan,
        "variance_normalised": float(per_epoch["variance_normalised"].mean()) if len(per_epoch) else math.nan,
        "distance_final": float(distance[-1]), "distance_max": float(distance.max()),
        "n_steps": n_steps, "n_flat_steps": n_steps - n_informative, "per_epoch": per_epoch,
    }


def trajectory_table(zoo, *, where: str | None = None, tensor: str | None = None, per_epoch: bool = False,
                     progress=None) -> pd.DataFrame:
    """One row per model: ids, hyperparameters, final metrics, the measures of its trace of
    ``tensor`` (default: the first tensor its spec traced), ``result`` and ``note``.

    ``where`` is a ``DataFrame.query`` over models.parquet (models of every status, as
    :meth:`weightzoo.io.reader.Zoo.select` with ``status=None`` chooses them). With
    ``per_epoch`` the long per-epoch table is returned instead (one row per analysed model
    and epoch).
    """
    models, epochs = measure_zoo(zoo, where=where, tensor=tensor, progress=progress)
    return epochs if per_epoch else models


def measure_zoo(zoo, *, where: str | None = None, tensor: str | None = None,
                progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-model table, per-epoch table) of :func:`trajectory_table`, computed once."""
    selection = zoo.select(where, status=None)  # diverged runs too: their traces end where they diverged
    selection.require_samples()
    models = selection.models
    context = _model_context(zoo, models)
    rows, epochs, epoch_blocks = [], [], []
    for i, model in enumerate(models.to_dict("records"), start=1):
        row, per_epoch = _measure_model(zoo, model, context, tensor)
        rows.append(row)
        if per_epoch is not None:
            epochs.append(per_epoch)
        if progress:
            progress(f"trajectories: {i}/{len(models)} models")
        if len(epochs) == MODELS_PER_BLOCK:  # a small frame per model costs ~50 KB; a block ~5 KB a model
            epoch_blocks.append(pd.concat(epochs, ignore_index=True))
            epochs = []
    table = pd.DataFrame(rows)
    table.attrs["hyperparameters"] = list(context["hyper"])
    ids = ["model_id", *context["hyper"]]
    epoch_blocks += epochs
    per_epoch_table = (pd.concat(epoch_blocks, ignore_index=True) if epoch_blocks
                       else pd.DataFrame(columns=[*ids, "tensor", "epoch", *MEASURE_COLUMNS_PER_EPOCH]))
    return table, per_epoch_table


def run_trajectory_study(zoo, out_dir, *, where: str | None = None, tensor: str | None = None,
                         by: str | None = None, progress=None) -> StudyResult:
    """Measure every selected model's trace and write the results to ``out_dir``.

    Writes ``trajectories.parquet`` (per model), ``trajectories_per_epoch.parquet`` and the
    PNGs of :func:`~weightzoo.analysis.trajectory_plots.plot_trajectories`, against ``by``
    (default: the varying hyperparameter, e.g. frequency or label_noise). The result's rows
    are the per-value ``summary``; ``details`` holds the paths (``table``, ``per_epoch``,
    ``plots``), ``by``, ``n_models``, ``n_analysed``, the ``summary``, Spearman correlations of
    the measures with ``by`` and the per-model results as JSON-safe ``records``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, per_epoch = measure_zoo(zoo, where=where, tensor=tensor, progress=progress)
    by = by or varying_hyperparameter(table)
    paths = {"table": out / "trajectories.parquet", "per_epoch": out / "trajectories_per_epoch.parquet"}
    table.to_parquet(paths["table"], index=False)
    per_epoch.to_parquet(paths["per_epoch"], index=False)
    examples = example_trajectories(zoo, table, by)
    plots = plot_trajectories(table, per_epoch, out, by=by, examples=examples,
                              title=f"{zoo.handle.name} {zoo.version}")
    analysed = table[table["result"] == "analysed"]
    summary, spearman = json_records(summarise(analysed, by)), _spearman(analysed, by)
    correlations = ", ".join(f"{name} {value:.2f}" for name, value in spearman.items() if value is not None)
    headline = (f"{len(analysed)}/{len(table)} networks measured against {by}"
                + (f"; Spearman with {by}: {correlations}" if correlations else ""))
    return StudyResult.of_directory("trajectories", out, headline=headline, rows=summary, details={
        **{k: str(v) for k, v in paths.items()}, "plots": plots, "by": by, "n_models": len(table),
        "n_analysed": len(analysed), "summary": summary, "spearman": spearman, "records": json_records(table)})


def summarise(table: pd.DataFrame, by: str | None) -> list[dict]:
    """Mean (and count) of the measures and final metrics per value of ``by``."""
    columns = [c for c in (*MEASURES, "test_acc", "test_loss") if c in table.columns]
    if table.empty:
        return []
    if by is None:
        return [{"n_models": len(table), **table[columns].mean(numeric_only=True).to_dict()}]
    grouped = table.groupby(by, dropna=False)[columns]
    summary = grouped.mean(numeric_only=True).join(grouped.size().rename("n_models")).reset_index()
    return summary.to_dict("records")


def example_trajectories(zoo, table: pd.DataFrame, by: str | None, limit: int = 6) -> dict[str, np.ndarray]:
    """Up to ``limit`` traces for the PCA plot: one per value of ``by`` (the lowest seed),
    labelled ``by=value``."""
    analysed = table[table["result"] == "analysed"]
    if analysed.empty:
        return {}
    order = [c for c in ("seed", "model_id") if c in analysed.columns]
    picks = analysed.sort_values(order)
    if by:
        picks = picks.drop_duplicates(by).sort_values(by)
    picks = picks.head(limit)
    examples = {}
    for row in picks.to_dict("records"):
        label = f"{by}={row[by]}" if by else row["model_id"]
        examples[label] = zoo.traces(row["model_id"])[row["tensor"]]
    return examples


def _per_epoch(points, raw, normalised, flat, lr, epoch, distance) -> pd.DataFrame:
    rows = []
    for value in np.unique(epoch):
        mask = epoch == value
        squares = ((points[mask] - points[mask].mean(axis=0)) ** 2).sum(axis=1)
        length, n, n_flat = float(normalised[mask].sum()), int(mask.sum()), int(flat[mask].sum())
        mean_step = length / (n - n_flat) if n > n_flat else math.nan
        rows.append({"epoch": int(value), "n_steps": n, "n_flat_steps": n_flat, "length": length,
                     "length_raw": float(raw[mask].sum()), "mean_step": mean_step,
                     "variance": float(squares.mean()), "variance_normalised": float((squares / lr[mask] ** 2).mean()),
                     "distance_end": float(distance[mask][-1])})
    return pd.DataFrame(rows, columns=["epoch", *MEASURE_COLUMNS_PER_EPOCH])


def _model_context(zoo, models: pd.DataFrame) -> dict:
    """What every row needs: hyperparameter columns, final metrics and the task per model."""
    snapshots = zoo.snapshots[zoo.snapshots["model_id"].isin(models["model_id"])].sort_values(["model_id", "k"])
    last = snapshots.drop_duplicates("model_id", keep="last").set_index("model_id")
    first = snapshots.drop_duplicates("model_id", keep="first").set_index("model_id")
    # accuracy is NaN for regression and finite for classification at initialisation
    tasks = {m: ("classification" if pd.notna(acc) else "regression") for m, acc in first["test_acc"].items()}
    return {"hyper": [c for c in models.columns if c not in RESERVED], "last": last, "tasks": tasks}


def _measure_model(zoo, model: dict, context: dict, tensor: str | None) -> tuple[dict, pd.DataFrame | None]:
    model_id = model["model_id"]
    row = {"model_id": model_id, "layout_id": model["layout_id"], "split": model["split"],
           "status": model["status"], **{h: model[h] for h in context["hyper"]}, "tensor": tensor,
           "task": context["tasks"].get(model_id, "regression")}
    last = context["last"].loc[model_id] if model_id in context["last"].index else None
    for metric in ("train_loss", "test_loss", "test_acc"):
        row[metric] = float(last[metric]) if last is not None and pd.notna(last[metric]) else math.nan
    try:
        traces = zoo.traces(model_id)
    except TracesNotFound as error:
        return {**row, **_empty_measures(), "result": "skipped", "note": str(error)}, None
    traced = [k for k in traces if k not in TRACE_KEYS]
    name = tensor or traced[0]
    if name not in traces:
        return {**row, **_empty_measures(), "result": "skipped",
                "note": f"tensor {name!r} was not traced (traced: {traced})"}, None
    try:
        measures = trajectory_measures(traces[name], traces["lr"], traces["loss"], traces["epoch"],
                                       step=traces["step"], task=row["task"])
    except ValueError as error:
        return {**row, "tensor": name, **_empty_measures(), "result": "failed", "note": str(error)}, None
    per_epoch = measures.pop("per_epoch")
    note = "training diverged; the trace ends there" if model["status"] == "diverged" else ""
    row.update(tensor=name, **measures, result="analysed", note=note)
    per_epoch.insert(0, "tensor", name)
    for column in reversed(["model_id", *context["hyper"]]):
        per_epoch.insert(0, column, row[column])
    return row, per_epoch


def _empty_measures() -> dict:
    return {name: (0 if name.startswith("n_") else math.nan) for name in MEASURES}


def _spearman(table: pd.DataFrame, by: str | None) -> dict:
    """Rank correlation of each measure with ``by`` (None where undefined)."""
    if by is None or table.empty or not pd.api.types.is_numeric_dtype(table[by]) or table[by].nunique() < 2:
        return {}
    result = {}
    for name in ("length", "length_raw", "variance_normalised", "distance_final"):
        value = table[by].astype(float).corr(table[name].astype(float), method="spearman")
        result[name] = None if pd.isna(value) else float(value)
    return result


