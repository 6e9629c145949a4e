"""Scores of the evaluation protocol: metrics over networks with a 95 % bootstrap interval.

Every figure is computed from one row per scored sample (``model_id``, ``k``, ``truth``,
``prediction``). The point value (``mean``) is the metric over all scored samples — for
accuracy the mean of the correct predictions — and the interval comes from a bootstrap over
**networks**: each replicate draws as many networks as were scored, with replacement, and
takes all their snapshots along, so the interval reflects how many networks were tested, not
how many snapshots. Classification reports accuracy and balanced accuracy (the mean recall
over the true classes); regression RMSE and R². Log-scale hyperparameters (learning rate,
weight decay) are scored as log10 values.

Pure numpy/pandas; shared by ``compare``, ``predict``, ``meta-classify`` and ``sane probe``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy")
REGRESSION_METRICS = ("rmse", "r2")
LOWER_IS_BETTER = frozenset({"rmse"})
LOG_SCALE = ("lr", "weight_decay")  # scored (and regressed) as log10(value)
N_BOOTSTRAP = 1000
LEVEL = 0.95


def metrics_of(categorical: bool) -> tuple[str, ...]:
    """The metrics reported for a categorical (classification) or continuous target."""
    return CLASSIFICATION_METRICS if categorical else REGRESSION_METRICS


def scaled(target: str, values) -> np.ndarray:
    """Float values of a continuous target on its scoring scale (log10 for LOG_SCALE names)."""
    values = pd.Series(values).to_numpy(np.float64, na_value=np.nan)
    if target in LOG_SCALE:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(values)
    return values


def labels(values) -> np.ndarray:
    """Class labels as comparable strings (``32`` and ``"32"``, ``True`` and ``"True"`` agree)."""
    return np.array([str(v) for v in values], dtype=object)


def score(frame: pd.DataFrame, categorical: bool, *, target: str = "", seed: int = 0,
          n_bootstrap: int = N_BOOTSTRAP, level: float = LEVEL) -> list[dict]:
    """One row per metric: ``metric``, ``mean`` (over all rows of ``frame``), ``ci_low``,
    ``ci_high`` (percentile bootstrap over networks), ``n_networks`` and ``n_samples``.

    ``frame`` holds ``model_id``, ``truth`` and ``prediction``; rows with a missing truth or
    prediction must have been dropped. An empty frame gives NaN figures.
    """
    sums, n_networks = _network_sums(frame, categorical, target)
    rng = np.random.default_rng(seed)
    weights = (rng.multinomial(n_networks, np.full(n_networks, 1.0 / n_networks), size=n_bootstrap)
               if n_networks else np.zeros((0, 0)))
    rows = []
    for metric in metrics_of(categorical):
        value = _metric(metric, {key: array.sum(axis=0) for key, array in sums.items()})
        low = high = np.nan
        if n_networks > 1:
            replicates = _metric(metric, {key: weights @ array for key, array in sums.items()})
            replicates = replicates[np.isfinite(replicates)]
            if replicates.size:
                low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
        rows.append({"metric": metric, "mean": float(value), "ci_low": float(low), "ci_high": float(high),
                     "n_networks": int(n_networks), "n_samples": int(len(frame))})
    return rows


def beats(row: dict, chance: float) -> bool:
    """Whether a result's interval excludes ``chance`` on the good side (above, or below for RMSE)."""
    if not np.isfinite(chance) or row.get("ci_low") is None or not np.isfinite(row["ci_low"]):
        return False
    return row["ci_high"] < chance if row["metric"] in LOWER_IS_BETTER else row["ci_low"] > chance


def _network_sums(frame: pd.DataFrame, categorical: bool, target: str) -> tuple[dict, int]:
    """Per network (rows) the sufficient statistics of every metric, so that a bootstrap
    replicate is one matrix product: class counts and hits (classification), or n, squared
    error, sum and sum of squares of the truth (regression)."""
    networks, index = np.unique(frame["model_id"].astype(str).to_numpy(), return_inverse=True)
    n = len(networks)
    if categorical:
        truth, prediction = labels(frame["truth"]), labels(frame["prediction"])
        classes, code = np.unique(truth, return_inverse=True)
        counts = np.zeros((n, len(classes)))
        hits = np.zeros((n, len(classes)))
        np.add.at(counts, (index, code), 1.0)
        np.add.at(hits, (index, code), (truth == prediction).astype(float))
        return {"counts": counts, "hits": hits}, n
    truth, prediction = scaled(target, frame["truth"]), scaled(target, frame["prediction"])
    columns = np.stack([np.ones_like(truth), (prediction - truth) ** 2, truth, truth ** 2], axis=1)
    sums = np.zeros((n, 4))
    np.add.at(sums, index, columns)
    return {"n": sums[:, 0], "sse": sums[:, 1], "sy": sums[:, 2], "syy": sums[:, 3]}, n


def _metric(metric: str, s: dict):
    """A metric from summed statistics (scalars, or one value per bootstrap replicate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "accuracy":
            return s["hits"].sum(axis=-1) / s["counts"].sum(axis=-1)
        if metric == "balanced_accuracy":
            recall = np.where(s["counts"] > 0, s["hits"] / s["counts"], np.nan)
            present = (s["counts"] > 0).sum(axis=-1)
            return np.where(present > 0, np.nansum(recall, axis=-1) / np.maximum(present, 1), np.nan)
        if metric == "rmse":
            return np.sqrt(s["sse"] / s["n"])
        if metric == "r2":
            total = s["syy"] - s["sy"] ** 2 / s["n"]
            return np.where(total > 0, 1.0 - s["sse"] / total, np.nan)
    raise ValueError(f"unknown metric {metric!r}; known: {CLASSIFICATION_METRICS + REGRESSION_METRICS}")
