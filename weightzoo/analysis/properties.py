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
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from weightzoo.analysis import scoring
from weightzoo.analysis.plots import plot_results
from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
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
RESULT_COLUMNS = ("target", "task", "model", "metric", "value", "ci_low", "ci_high", "chance", "metric_2", "value_2",
                  "ci_low_2", "ci_high_2", "chance_2", "param", "param_value", "n_train", "n_val", "n_test",
                  "n_test_networks", "status", "note", "protocol")
# The protocol these studies score under (see weightzoo.analysis.protocol; `weightzoo compare` cross-validates).
PROTOCOL = "fixed split (train → test, regularisation chosen on val)"


def feature_table(zoo, where: str | None = None, *, snapshots=None, status: str | None = "ok",
                  layout_id: str | None = None, model_ids=None, roles=("weight", "bias"), features: str = "stats",
                  **equals) -> pd.DataFrame:
    """One row per (model_id, k): ids, split, hyperparameters, snapshot metrics and features.

    ``features="stats"`` gives s(W) (``layer{i}.{role}.{stat}``); ``features="raw"`` the flat
    weight vector itself (``w{position}``), which only lines up within one layout — tables
    over several layouts then hold NaN where a layout has no such position, and
    :func:`run_property_study` fits one model per layout.

    The models and snapshots are those of ``zoo.select(where, snapshots=..., status=...,
    model_ids=..., layout_id=..., **equals)`` (see :meth:`weightzoo.io.reader.Zoo.select`: a
    snapshot a model lacks is an error; ``"last"`` takes each model's last). ``status=None``
    keeps every model (diverged ones then have NaN features). Without ``layout_id``, s(W) is
    computed per layout and the tables concatenated: a feature a layout lacks (``layer3.*`` of
    a shallower net) is NaN. Columns align by layer index and role only, so across different
    architectures ``layer0`` may mean different things — pass ``layout_id`` when that matters.
    Raises InputError when no model matches.
    """
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {list(FEATURE_KINDS)}; got {features!r}")
    if layout_id is not None:
        equals["layout_id"] = layout_id
    selection = zoo.select(where, snapshots=snapshots, status=status, model_ids=model_ids, **equals)
    selection.require_samples()
    models_seen, blocks = [], []
    for model, ks, weights in selection.iter_models():
        models_seen.append((model.model_id, model.layout_id, ks))
        if features == "raw":
            blocks.append(weights)
        else:
            values, feature_names = weight_statistics(weights, selection.layouts[model.layout_id], roles=roles)
            blocks.append(pd.DataFrame(values, columns=feature_names))
    if features == "raw":
        values = _raw_frame(blocks)  # w0, w1, … already in order
    else:
        values = pd.concat(blocks, ignore_index=True)
        values = values[sorted(values.columns, key=_feature_order)]  # layer-major across layouts (stable)
    counts = [len(ks) for _, _, ks in models_seen]
    ids = pd.DataFrame({"model_id": np.repeat([m for m, _, _ in models_seen], counts),
                        "layout_id": np.repeat([lid for _, lid, _ in models_seen], counts),
                        "k": np.concatenate([ks for _, _, ks in models_seen]).astype(np.int64)})
    models = selection.models
    # A hyperparameter named like a snapshot column would collide in the merge; the snapshot
    # table is the authority for those names.
    hyper = [c for c in models.columns if c not in RESERVED and c not in (*SNAPSHOT_COLUMNS, "k")]
    present = [c for c in SNAPSHOT_COLUMNS if c in zoo.snapshots.columns]
    labels = (ids.merge(models[["model_id", "split", "status", *hyper]], on="model_id", how="left")
              .merge(zoo.snapshots[["model_id", "k", *present]], on=["model_id", "k"], how="left"))
    return pd.concat([labels[[*ID_COLUMNS, *hyper, *present]], values], axis=1)


def _raw_frame(blocks: list[np.ndarray]) -> pd.DataFrame:
    """The flat weight vectors as one float32 frame ``w0…`` built from one matrix (NaN past
    a shorter layout's end): thousands of columns, so never as a concat of per-model frames."""
    width = max(block.shape[1] for block in blocks)
    matrix = np.full((sum(len(block) for block in blocks), width), np.nan, dtype=np.float32)
    row = 0
    for block in blocks:
        matrix[row:row + len(block), :block.shape[1]] = block
        row += len(block)
    return pd.DataFrame(matrix, columns=[f"w{i}" for i in range(width)], copy=False)


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
    R² (``value``) and RMSE (``value_2``) on test. Categorical targets (:func:`is_categorical`):
    "linear" (logistic regression, C chosen by val accuracy) and "gbm", scored by test accuracy
    (``value``) and balanced accuracy (``value_2``). Scores come from
    :mod:`weightzoo.analysis.scoring`: a 95 % interval (``ci_low``/``ci_high``) from a
    bootstrap over test networks (``model_id``; each row is its own network when the table has
    none), and ``chance``/``chance_2`` = the train split's majority class (regression: its mean)
    applied to test. ``protocol`` names the fixed split. The linear models impute missing features with train means and
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
    ids = (table["model_id"].astype(str).to_numpy() if "model_id" in table.columns
           else np.arange(len(table)).astype(str))
    rows = []
    for target in targets:
        rows.extend(_study_target(X, alive, table[target], table["split"], target, seed, ids))
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
                       results: pd.DataFrame | None = None) -> StudyResult:
    """feature_table + fit_properties, written to ``out_dir``.

    ``table`` is a precomputed :func:`feature_table` and ``results`` precomputed
    :func:`fit_properties` rows (a distributed run builds both in pieces); whatever is
    missing is computed here.

    Writes ``properties.parquet`` (the results) and ``properties.png`` (the metric per target
    and model kind). The result's rows are one per (target, model kind[, layout]); ``details``
    holds the ``results`` and ``plot`` paths, ``features``, ``n_samples`` and every result
    column as JSON-safe ``records`` (NaN as None).
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
    records = json_records(results)
    counts = results["status"].value_counts()
    headline = (f"{features} features of {len(table)} snapshots, {results['target'].nunique()} targets, "
                f"{PROTOCOL}, 95 % intervals over test networks: "
                + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "skipped", "failed")))
    return StudyResult.of_directory("properties", out, headline=headline, rows=result_rows(records), details={
        "results": str(results_path), "plot": str(plot_path), "features": features, "n_samples": len(table),
        "records": records})


def result_rows(records: list[dict]) -> list[dict]:
    """The printed summary of property-prediction records: what was predicted, how well, status."""
    keys = ("target", "layout_id", "features", "model", "metric", "value", "ci_low", "ci_high", "chance", "metric_2",
            "value_2", "chance_2", "status", "note")
    return [{key: record.get(key) for key in keys if key in record} for record in records]


def _study_target(X, alive, y, split, target, seed, ids) -> list[dict]:
    """The result rows of one target (one per model kind)."""
    categorical = is_categorical(y)
    task, linear_kind = ("classification", "linear") if categorical else ("regression", "ridge")
    keep = alive & y.notna().to_numpy()
    dropped = int((~keep).sum())
    y, split, ids = y.to_numpy()[keep], split.to_numpy()[keep], ids[keep]
    parts = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    names = ("accuracy", "balanced_accuracy") if categorical else ("r2", "rmse")
    base = {"target": target, "task": task, "metric": names[0], "metric_2": names[1], "protocol": PROTOCOL,
            **{key: np.nan for key in ("value", "ci_low", "ci_high", "chance", "value_2", "ci_low_2", "ci_high_2",
                                       "chance_2", "param_value")}, "param": None,
            **{f"n_{name}": int(idx.size) for name, idx in parts.items()},
            "n_test_networks": int(np.unique(ids[parts["test"]]).size), "status": "ok", "note": ""}
    if parts["train"].size and parts["test"].size:
        base.update(_chance(y, parts, categorical, ids, seed, names))
    prefix = f"left out {dropped} rows with a missing target or no finite feature; " if dropped else ""
    rows = []
    for kind in (linear_kind, "gbm"):
        row = dict(base, model=kind)
        reason = _skip_reason(kind, categorical, y, parts)
        if reason:
            row.update(status="skipped", note=prefix + reason)
        else:
            try:
                row.update(_fit_score(kind, categorical, X[keep], y, parts, seed, ids, names))
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
    if not categorical and np.unique(y[parts["test"]].astype(float)).size < 2:
        return "the test targets do not vary (R² is undefined)"
    return ""


def _scores(categorical, y, prediction, ids, seed, names) -> dict:
    """The two metrics of test predictions with their bootstrap intervals over networks."""
    frame = pd.DataFrame({"model_id": ids, "truth": y, "prediction": prediction})
    rows = {row["metric"]: row for row in scoring.score(frame, categorical, seed=seed)}
    first, second = rows[names[0]], rows[names[1]]
    return {"value": first["mean"], "ci_low": first["ci_low"], "ci_high": first["ci_high"],
            "value_2": second["mean"], "ci_low_2": second["ci_low"], "ci_high_2": second["ci_high"]}


def _chance(y, parts, categorical, ids, seed, names) -> dict:
    """Chance: the train split's majority class (or mean) predicted for every test row."""
    train, test = y[parts["train"]], y[parts["test"]]
    if categorical:
        classes, counts = np.unique(scoring.labels(train), return_counts=True)
        guess = np.full(test.size, classes[int(np.argmax(counts))], dtype=object)
        truth = scoring.labels(test)
    else:
        guess, truth = np.full(test.size, float(np.mean(train.astype(float)))), test.astype(float)
    scores = _scores(categorical, truth, guess, ids[parts["test"]], seed, names)
    return {"chance": scores["value"], "chance_2": scores["value_2"]}


def _fit_score(kind, categorical, X, y, parts, seed, ids, names) -> dict:
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
    truth = y[test] if categorical else y[test].astype(float)
    return {**_scores(categorical, truth, prediction, ids[test], seed, names), "param": param, "param_value": best,
            "status": "ok"}
