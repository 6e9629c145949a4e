"""Property prediction from the weight-statistics baseline s(W).

Predicts per-snapshot properties (test accuracy, generalisation gap, epoch) and the
hyperparameters of a zoo from :func:`weightzoo.core.statistics.weight_statistics`, with a
linear model (ridge regression / logistic regression, regularisation chosen on the ``val``
split) and a gradient-boosted model, scored on the ``test`` split (Unterthiner et al. 2020;
Schürholt et al., NeurIPS 2021). Splits come from models.parquet, so all snapshots of one
network are on one side.

Every requested target gets one result row per model kind with ``status`` ok / skipped /
failed and a ``note`` saying why; a tiny zoo with an empty split gives NaN with a reason,
never an exception and never a missing row.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from weightzoo.analysis.records import json_records
from weightzoo.core.labels import is_categorical
from weightzoo.core.statistics import weight_statistics
from weightzoo.io.tables import RESERVED

METRIC_TARGETS = ("test_acc", "gap", "epoch")
SNAPSHOT_COLUMNS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "gap")
ID_COLUMNS = ("model_id", "layout_id", "k", "split", "status")
FEATURE_PATTERN = re.compile(r"^layer\d+\.\w+\.(mean|var|p\d+)$")
RAW_PATTERN = re.compile(r"^w\d+$")
FEATURE_KINDS = ("stats", "raw")
# A seed is drawn per model; predicting it from weights is meaningless.
NOT_TARGETS = frozenset({"seed"})
# Strongest regularisation first, so that ties on the val split pick the simpler model.
RIDGE_ALPHAS = tuple(np.logspace(5, -3, 9))
LOGISTIC_CS = tuple(np.logspace(-3, 3, 7))
RESULT_COLUMNS = ("target", "task", "model", "metric", "value", "chance", "param", "param_value",
                  "n_train", "n_val", "n_test", "status", "note")


def feature_table(zoo, *, snapshots=None, status: str | None = "ok", layout_id: str | None = None,
                  roles=("weight", "bias"), model_ids=None, features: str = "stats") -> pd.DataFrame:
    """One row per (model_id, k): ids, split, hyperparameters, snapshot metrics and features.

    ``features="stats"`` gives s(W) (``layer{i}.{role}.{stat}``); ``features="raw"`` the flat
    weight vector itself (``w{position}``), which only lines up within one layout — tables
    over several layouts then hold NaN where a layout has no such position, and
    :func:`run_property_study` fits one model per layout. ``model_ids`` restricts the table to
    those models (a distributed run computes the table in chunks of models).

    ``snapshots``: None (all), an int (negative counts from each model's last snapshot), a
    slice, or an iterable of k (k beyond a model's snapshots are left out). ``status=None``
    keeps every model (diverged ones then have NaN features). ``layout_id`` restricts to one
    layout; otherwise s(W) is computed per layout and the tables concatenated: a feature a
    layout lacks (``layer3.*`` of a shallower net) is NaN. Columns align by layer index and
    role only, so across different architectures ``layer0`` may mean different things —
    pass ``layout_id`` when that matters. Raises ValueError when no model matches.
    """
    models = zoo.models
    if status is not None:
        models = models[models["status"] == status]
    if layout_id is not None:
        models = models[models["layout_id"] == layout_id]
    if model_ids is not None:
        models = models[models["model_id"].isin(list(model_ids))]
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {list(FEATURE_KINDS)}; got {features!r}")
    if models.empty:
        raise ValueError(f"no models with status={status!r}, layout_id={layout_id!r} in {zoo.version}")
    parts, names = [], {}
    for lid, group in models.groupby("layout_id", sort=True):
        layout = zoo.layout(lid)
        for model_id, n_snapshots in zip(group["model_id"], group["n_snapshots"]):
            ks = _select_ks(snapshots, int(n_snapshots))
            if not ks.size:
                continue
            if features == "raw":
                values = zoo.weights(model_id)[ks]
                feature_names = [f"w{i}" for i in range(values.shape[1])]
            else:
                values, feature_names = weight_statistics(zoo.weights(model_id)[ks], layout, roles=roles)
            names.update(dict.fromkeys(feature_names))
            frame = pd.DataFrame(values, columns=feature_names)
            frame.insert(0, "k", ks.astype(np.int64))
            frame.insert(0, "layout_id", lid)
            frame.insert(0, "model_id", model_id)
            parts.append(frame)
    if not parts:
        raise ValueError(f"snapshots={snapshots!r} selects no snapshot of the {len(models)} models")
    features = pd.concat(parts, ignore_index=True)
    # A hyperparameter named like a snapshot column would collide in the merge; the snapshot
    # table is the authority for those names.
    hyper = [c for c in models.columns if c not in RESERVED and c not in (*SNAPSHOT_COLUMNS, "k")]
    present = [c for c in SNAPSHOT_COLUMNS if c in zoo.snapshots.columns]
    table = (features.merge(models[["model_id", "split", "status", *hyper]], on="model_id", how="left")
             .merge(zoo.snapshots[["model_id", "k", *present]], on=["model_id", "k"], how="left"))
    # Layer-major order across layouts (a stable sort keeps role/statistic order within a layer).
    ordered = sorted(names, key=_feature_order)
    return table[[*ID_COLUMNS, *hyper, *present, *ordered]]


def combine_feature_tables(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate feature tables computed for disjoint chunks of models (in chunk order):
    the same rows and column order :func:`feature_table` gives for all of them at once."""
    table = pd.concat(parts, ignore_index=True)
    table = table.sort_values("layout_id", kind="stable").reset_index(drop=True)  # layout-major like feature_table
    features = feature_columns(table)
    ordered = sorted(features, key=_feature_order)
    return table[[c for c in table.columns if c not in features] + ordered]


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a table: s(W) (``layer{i}.{role}.{stat}``) or raw (``w{i}``)."""
    return [c for c in table.columns if FEATURE_PATTERN.match(str(c)) or RAW_PATTERN.match(str(c))]


def _feature_order(name: str) -> int:
    if RAW_PATTERN.match(name):
        return int(name[1:])
    return int(name.split(".", 1)[0].removeprefix("layer"))


def default_targets(table: pd.DataFrame) -> list[str]:
    """test_acc, gap, epoch (those present) and every hyperparameter column that varies,
    except the seed. (A column with one value has nothing to predict; name it explicitly to
    get its "skipped" row.)"""
    known = set(ID_COLUMNS) | set(SNAPSHOT_COLUMNS) | set(feature_columns(table)) | NOT_TARGETS
    varying = [c for c in table.columns if c not in known and table[c].astype(str).nunique() > 1]
    return [c for c in METRIC_TARGETS if c in table.columns] + varying


def predict_properties(table: pd.DataFrame, targets=None, *, seed: int = 0, features=None) -> pd.DataFrame:
    """Fit and score a linear and a boosted model per target; one row per (target, model).

    Continuous targets: "ridge" (alpha from a log grid, chosen by val MSE) and "gbm", scored by
    R² on test. Categorical targets (:func:`is_categorical`): "linear" (logistic regression, C
    chosen by val accuracy) and "gbm", scored by test accuracy with ``chance`` = the majority
    class share on test. The linear models impute missing features with train means and
    standardise on train; the chosen model is the one fitted on train. Rows with a missing
    target or with no finite feature (diverged) are left out and counted in ``note``.

    An unknown target name raises KeyError up front; problems of the data (empty split, one
    class, a fit that fails) become rows with status "skipped"/"failed" and a note.
    """
    features = list(features) if features is not None else feature_columns(table)
    if not features:
        raise ValueError("the table has no feature columns (s(W): layer{i}.{role}.{stat}; raw: w{i})")
    targets = list(targets) if targets is not None else default_targets(table)
    missing = [t for t in targets if t not in table.columns]
    if missing:
        raise KeyError(f"no column(s) {missing} in the table; columns: {list(table.columns)}")
    # copy=True: under copy-on-write pandas may hand out a read-only view.
    X = table[features].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    X[~np.isfinite(X)] = np.nan
    alive = ~np.isnan(X).all(axis=1)
    rows = []
    for target in targets:
        rows.extend(_study_target(X, alive, table[target], table["split"], target, seed))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def fit_properties(table: pd.DataFrame, targets=None, *, features: str = "stats", seed: int = 0) -> pd.DataFrame:
    """:func:`predict_properties` the way each feature kind needs it: raw features per layout
    (a ``layout_id`` column says which), s(W) over all layouts at once (``layout_id`` "all");
    a ``features`` column records the kind."""
    if features == "raw":
        parts = []
        for lid, part in table.groupby("layout_id", sort=True):
            part = part.dropna(axis=1, how="all")  # positions only other layouts have
            parts.append(predict_properties(part, targets, seed=seed).assign(layout_id=lid))
        results = pd.concat(parts, ignore_index=True)
    else:
        results = predict_properties(table, targets, seed=seed).assign(layout_id="all")
    return results.assign(features=features)


def run_property_study(zoo, out_dir, *, snapshots=None, targets=None, layout_id=None, seed: int = 0,
                       features: str = "stats", table: pd.DataFrame | None = None,
                       results: pd.DataFrame | None = None) -> dict:
    """feature_table + fit_properties, written to ``out_dir``.

    ``table`` is a precomputed :func:`feature_table` and ``results`` precomputed
    :func:`fit_properties` rows (a distributed run builds both in pieces); whatever is
    missing is computed here.

    Writes ``properties.parquet`` (the results) and ``properties.png`` (the metric per target
    and model kind). Returns ``{"results", "plot"}`` paths, ``n_samples`` and the results as
    JSON-safe ``records`` (NaN as None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = feature_table(zoo, snapshots=snapshots, layout_id=layout_id, features=features)
    if results is None:
        results = fit_properties(table, targets, features=features, seed=seed)
    results_path, plot_path = out / "properties.parquet", out / "properties.png"
    results.to_parquet(results_path, index=False)
    plot_results(results, plot_path, title=f"{features} property prediction, {zoo.handle.name} {zoo.version}")
    return {"results": str(results_path), "plot": str(plot_path), "n_samples": len(table),
            "records": json_records(results)}


def plot_results(results: pd.DataFrame, path, *, title: str = "") -> None:
    """Bar plot of the metric per target: linear vs boosted model; chance levels as black ticks.

    R² below -1 (a model worse than predicting the mean) is drawn at -1 and labelled with its
    value, so that one bad fit does not flatten every other bar.
    """
    # Figure + FigureCanvasAgg instead of pyplot: no global backend switch, no GUI needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "layout_id" in results.columns and set(results["layout_id"]) - {"all"}:  # one bar group per layout
        results = results.assign(target=results["target"] + " · " + results["layout_id"].astype(str).str[:8])
    targets = list(dict.fromkeys(results["target"]))
    # ridge (regression) and logistic (classification) share the "linear" slot of a target.
    slot = results["model"].replace({"ridge": "linear"})
    kinds = list(dict.fromkeys(slot))
    fig = Figure(figsize=(max(4.0, 0.9 * len(targets) + 1.5), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        sub = results[slot == kind].set_index("target").reindex(targets)
        x = np.arange(len(targets)) + (j - (len(kinds) - 1) / 2) * width
        label = "ridge / logistic" if kind == "linear" else kind
        ax.bar(x, sub["value"].clip(lower=-1.0).fillna(0.0), width, label=label, color=f"C{j}")
        for xi, value, chance in zip(x, sub["value"], sub["chance"]):
            if pd.isna(value) or value < -1.0:  # skipped, or clipped: say so instead of a bare bar
                text = "n/a" if pd.isna(value) else f"{value:.2g}"
                ax.text(xi, 0.02, text, ha="center", va="bottom", fontsize=7, rotation=90)
            if pd.notna(chance):
                ax.plot([xi - width / 2, xi + width / 2], [chance, chance], color="black", lw=1.5)
    metrics = "/".join(dict.fromkeys(results["metric"])) or "metric"
    ax.set_xticks(np.arange(len(targets)), targets, rotation=30, ha="right")
    ax.set_ylabel(f"{metrics} on test (black: chance)", fontsize=8)
    lowest = results["value"].clip(lower=-1.0).min()  # NaN when nothing was analysed
    ax.set_ylim(min(-0.05, lowest - 0.05) if pd.notna(lowest) else -0.05, 1.1)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title(title, fontsize=9)
    if kinds:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def _select_ks(snapshots, n_snapshots: int) -> np.ndarray:
    """The snapshot indices of one model that ``snapshots`` selects (see feature_table)."""
    every = np.arange(n_snapshots)
    if snapshots is None:
        return every
    if isinstance(snapshots, (int, np.integer)):
        return every[[snapshots]] if -n_snapshots <= snapshots < n_snapshots else every[:0]
    if isinstance(snapshots, slice):
        return every[snapshots]
    ks = np.asarray(sorted({int(k) for k in snapshots}), dtype=np.int64)
    return ks[(ks >= 0) & (ks < n_snapshots)]


def _study_target(X, alive, y, split, target, seed) -> list[dict]:
    """The result rows of one target (one per model kind)."""
    categorical = is_categorical(y)
    task, linear_kind = ("classification", "linear") if categorical else ("regression", "ridge")
    keep = alive & y.notna().to_numpy()
    dropped = int((~keep).sum())
    y, split = y.to_numpy()[keep], split.to_numpy()[keep]
    parts = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    base = {"target": target, "task": task, "metric": "accuracy" if categorical else "r2",
            "value": np.nan, "chance": np.nan, "param": None, "param_value": np.nan,
            **{f"n_{name}": int(idx.size) for name, idx in parts.items()}, "status": "ok", "note": ""}
    if categorical and parts["test"].size:
        _, counts = np.unique(y[parts["test"]].astype(str), return_counts=True)
        base["chance"] = float(counts.max() / counts.sum())
    prefix = f"left out {dropped} rows with a missing target or no finite feature; " if dropped else ""
    rows = []
    for kind in (linear_kind, "gbm"):
        row = dict(base, model=kind)
        reason = _skip_reason(kind, categorical, y, parts)
        if reason:
            row.update(status="skipped", note=prefix + reason)
        else:
            try:
                row.update(_fit_score(kind, categorical, X[keep], y, parts, seed))
                row["note"] = prefix.rstrip("; ")
            except Exception as error:  # reported per target: one bad target must not stop the study
                row.update(status="failed", note=prefix + f"{type(error).__name__}: {error}")
        rows.append(row)
    return rows


def _skip_reason(kind, categorical, y, parts) -> str:
    """Why (kind, target) cannot be analysed on these splits, or "" when it can."""
    if np.unique(y.astype(str)).size < 2:
        return f"target has a single value ({y[0]})" if y.size else "no rows with this target"
    for name in ("train", "test") + (("val",) if kind != "gbm" else ()):
        if not parts[name].size:
            why = " (needed to choose the regularisation)" if name == "val" else ""
            return f"{name} split is empty{why}"
    if categorical and np.unique(y[parts["train"]].astype(str)).size < 2:
        return "train split has a single class"
    if not categorical and parts["test"].size < 2:
        return "R² needs at least 2 test rows"
    return ""


def _fit_score(kind, categorical, X, y, parts, seed) -> dict:
    """Fit on train (choosing regularisation on val for linear models) and score on test."""
    train, val, test = parts["train"], parts["val"], parts["test"]
    if categorical:
        y = y.astype(str)  # mixed or boolean labels become one comparable label type
    if kind == "gbm":
        cls = HistGradientBoostingClassifier if categorical else HistGradientBoostingRegressor
        model, param, best = cls(random_state=seed).fit(X[train], y[train]), None, np.nan
    else:
        param = "C" if categorical else "alpha"
        best_loss, model, best = np.inf, None, np.nan
        for value in LOGISTIC_CS if categorical else RIDGE_ALPHAS:
            estimator = (LogisticRegression(C=value, max_iter=2000) if categorical
                         else Ridge(alpha=value))
            candidate = make_pipeline(SimpleImputer(), StandardScaler(), estimator)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                candidate.fit(X[train], y[train])
            prediction = candidate.predict(X[val])
            loss = (np.mean(prediction != y[val]) if categorical
                    else np.mean((prediction - y[val].astype(float)) ** 2))
            if loss < best_loss:  # strict: a tie keeps the stronger regularisation
                best_loss, model, best = loss, candidate, float(value)
    prediction = model.predict(X[test])
    value = accuracy_score(y[test], prediction) if categorical else r2_score(y[test].astype(float), prediction)
    return {"value": float(value), "param": param, "param_value": best, "status": "ok"}
