"""One evaluation protocol for every study that predicts a target from weights.

- **Folds by network** (``cv``, the default): K-fold cross-validation over networks, so all
  selected snapshots of one network are on one side; stratified by class for a categorical
  target; seeded. Every network is tested exactly once. ``split`` keeps the zoo's fixed split
  (train and val networks train, test networks are tested) for comparing with published
  numbers.
- **Snapshots**: an explicit choice; by default the trained snapshots ``k >= 1`` for a target
  that is a training hyperparameter (k = 0 is the initialisation, which carries no trace of
  the optimizer, learning rate, batch size, activation, ...), every snapshot for a metric of
  the snapshot (test accuracy, gap, epoch).
- **Chance** is the training folds' majority class (regression: their mean) applied to the
  test fold — the ``majority`` method, scored like any other.
- **Too few networks is said, not scored**: a fold with fewer than ``min_test_networks``
  test networks or a class with fewer than ``min_class_networks`` networks gives a status
  naming the shortfall instead of a number.

A method is a function ``fit_predict(zoo, train_ids, test_ids, target, *, snapshots, seed)``
returning a DataFrame (``model_id``, ``k``, ``prediction``) with one row per selected test
snapshot. Scores and intervals come from :mod:`weightzoo.analysis.scoring`. Pure: no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from weightzoo.analysis import scoring
from weightzoo.core.labels import is_categorical
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.errors import InputError
from weightzoo.io.tables import RESERVED

PROTOCOLS = ("cv", "split")
TRAINED = SnapshotChoice.parse("1:")
# Columns of models.parquet that describe a network but are not training hyperparameters.
NOT_HYPERPARAMETERS = frozenset({"seed"})
RESULT_COLUMNS = ("target", "method", "metric", "mean", "ci_low", "ci_high", "chance", "n_networks", "n_samples",
                  "status", "protocol", "snapshots")
CURVE_COLUMNS = ("target", "method", "k", "metric", "mean", "ci_low", "ci_high", "chance", "n_networks")

Method = Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class Protocol:
    """How networks are split, and what counts as enough of them."""

    kind: str = "cv"
    folds: int = 5
    seed: int = 0
    min_test_networks: int = 5
    min_class_networks: int = 2
    n_bootstrap: int = scoring.N_BOOTSTRAP

    def __post_init__(self) -> None:
        if self.kind not in PROTOCOLS:
            raise InputError(f"--protocol must be one of {list(PROTOCOLS)}, got {self.kind!r}")
        if self.kind == "cv" and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise InputError(f"--folds must be an integer >= 2, got {self.folds!r}")
        if self.min_test_networks < 1 or self.min_class_networks < 1:
            raise InputError("the minimum numbers of networks must be >= 1")

    @property
    def text(self) -> str:
        """How the protocol is named in every output, e.g. ``5-fold cv by network (seed 0)``."""
        if self.kind == "split":
            return "fixed split (train+val → test)"
        return f"{self.folds}-fold cv by network (seed {self.seed})"


@dataclass(frozen=True)
class Fold:
    """One fold: the networks a method trains on and those it predicts."""

    index: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def is_hyperparameter(zoo, target: str) -> bool:
    """Whether ``target`` is a per-network training hyperparameter (a models.parquet column
    that is not a snapshot metric), as opposed to a metric of each snapshot."""
    snapshot_columns = set(zoo.snapshots.columns) - {"model_id"}
    return target in zoo.models.columns and target not in snapshot_columns and target not in RESERVED


def snapshot_choice(zoo, target: str, snapshots=None) -> SnapshotChoice:
    """``snapshots`` as a choice; when None, k >= 1 for a hyperparameter target, else all."""
    if snapshots is not None:
        return SnapshotChoice.of(snapshots)
    return TRAINED if is_hyperparameter(zoo, target) else SnapshotChoice.parse("all")


def truth_table(zoo, target: str, snapshots, where: str | None = None) -> pd.DataFrame:
    """One row per selected snapshot of every ok network (those ``where``, a pandas query on
    models.parquet, selects): ``model_id``, ``k``, ``split``, ``truth``; rows whose target is
    missing (a diverged metric) are left out. InputError names the target when it is not a
    column, or when it is the seed (drawn per model)."""
    known = set(zoo.models.columns) | set(zoo.snapshots.columns)
    if target not in known or target in {"model_id", "k", "layout_id", "status", "split"}:
        raise InputError(f"--target: unknown column {target!r}; known: {sorted(known - {'model_id', 'k'})}")
    if target in NOT_HYPERPARAMETERS:
        raise InputError(f"--target {target!r}: a seed is drawn per model; predicting it means nothing")
    selection = zoo.select(where, snapshots=snapshots)
    selection.require_samples()
    rows = selection.rows
    frame = pd.DataFrame({"model_id": rows["model_id"].astype(str).to_numpy(), "k": rows["k"].to_numpy(np.int64),
                          "split": rows["split"].to_numpy(), "truth": rows[target].to_numpy()})
    return frame[frame["truth"].notna()].reset_index(drop=True)


def target_is_categorical(truth: pd.DataFrame) -> bool:
    """Classification or regression, by :func:`weightzoo.core.labels.is_categorical`."""
    return is_categorical(pd.Series(truth["truth"].to_numpy()).infer_objects())


def make_folds(truth: pd.DataFrame, protocol: Protocol, categorical: bool) -> list[Fold]:
    """The folds over the networks of ``truth``: stratified (categorical) or plain K-fold with
    a seeded shuffle, or the fixed split. Deterministic for the protocol's seed."""
    networks = truth.groupby("model_id", sort=True).agg(label=("truth", "first"), split=("split", "first"))
    ids = networks.index.to_numpy()
    if protocol.kind == "split":
        test = networks["split"].to_numpy() == "test"
        return [Fold(0, tuple(ids[~test]), tuple(ids[test]))]
    if len(ids) < protocol.folds:
        return [Fold(0, tuple(ids), ())]  # too few networks; check() says so
    from sklearn.model_selection import KFold, StratifiedKFold

    if categorical and scoring.labels(networks["label"]).size:
        y = scoring.labels(networks["label"])
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= protocol.folds:
            splitter = StratifiedKFold(protocol.folds, shuffle=True, random_state=protocol.seed)
            parts = splitter.split(ids, y)
        else:  # a class smaller than the number of folds: plain folds (check() names the class when too small)
            parts = KFold(protocol.folds, shuffle=True, random_state=protocol.seed).split(ids)
    else:
        parts = KFold(protocol.folds, shuffle=True, random_state=protocol.seed).split(ids)
    return [Fold(i, tuple(ids[train]), tuple(ids[test])) for i, (train, test) in enumerate(parts)]


def check(truth: pd.DataFrame, folds: list[Fold], protocol: Protocol, categorical: bool) -> str:
    """``"ok"``, or why these networks are too few to give a figure (said, never scored)."""
    n_networks = truth["model_id"].nunique()
    need = protocol.min_test_networks
    if protocol.kind == "cv" and n_networks < protocol.folds:
        return f"too few networks: {n_networks} networks for {protocol.folds} folds"
    for fold in folds:
        if len(fold.test_ids) < need:
            where = "the test split" if protocol.kind == "split" else f"fold {fold.index}"
            noun = "network" if len(fold.test_ids) == 1 else "networks"
            return f"too few networks: {len(fold.test_ids)} test {noun} in {where}, need >= {need}"
        if not fold.train_ids:
            return "too few networks: no training networks"
    if categorical:
        per_network = truth.groupby("model_id")["truth"].first()
        classes, counts = np.unique(scoring.labels(per_network), return_counts=True)
        if len(classes) < 2:
            return f"target has a single class ({classes[0] if len(classes) else 'none'}): nothing to predict"
        small = [(c, n) for c, n in zip(classes, counts) if n < protocol.min_class_networks]
        if small:
            c, n = small[0]
            return (f"too few networks: class {c!r} has {n} network{'s' if n != 1 else ''}, "
                    f"need >= {protocol.min_class_networks}")
        for fold in folds:
            train_classes = set(scoring.labels(per_network.loc[list(fold.train_ids)]))
            if len(train_classes) < 2:
                return f"too few networks: the training networks of fold {fold.index} hold a single class"
    return "ok"


def run_method(method: Method, zoo, folds: list[Fold], target: str, snapshots: SnapshotChoice, seed: int,
               progress=None, name: str = "") -> pd.DataFrame:
    """Out-of-fold predictions of one method: ``fold``, ``model_id``, ``k``, ``prediction``.

    Each fold's test networks must come back with predictions (ValueError otherwise); the
    method is seeded with (seed, fold) so folds differ but runs repeat."""
    parts = []
    for fold in folds:
        if progress:
            progress(f"{name or getattr(method, '__name__', 'method')} {target}: fold {fold.index + 1}/{len(folds)} "
                     f"({len(fold.train_ids)} train, {len(fold.test_ids)} test networks)")
        out = method(zoo, list(fold.train_ids), list(fold.test_ids), target, snapshots=snapshots,
                     seed=seed * 1000 + fold.index)
        missing = {"model_id", "k", "prediction"} - set(out.columns)
        if missing:
            raise ValueError(f"{name}: fit_predict returned no {sorted(missing)} columns")
        stray = set(out["model_id"].astype(str)) - set(fold.test_ids)
        if stray:
            raise ValueError(f"{name}: predictions for networks outside the test fold: {sorted(stray)[:3]}")
        parts.append(out[["model_id", "k", "prediction"]].assign(fold=fold.index))
    frame = pd.concat(parts, ignore_index=True)
    frame["model_id"] = frame["model_id"].astype(str)
    frame["k"] = frame["k"].astype(np.int64)
    return frame


def score_methods(truth: pd.DataFrame, predictions: dict[str, pd.DataFrame | str], target: str,
                  protocol: Protocol, snapshots: SnapshotChoice, *, chance_method: str = "majority"
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results table (one row per method and metric) and the per-snapshot curve (one row
    per method, k and metric) of out-of-fold predictions.

    ``predictions[name]`` is :func:`run_method`'s frame, or a status text when the method
    could not run (its rows then carry that status and no number). ``chance`` is the
    ``chance_method``'s value for the metric (NaN when it is absent or failed)."""
    categorical = target_is_categorical(truth)
    metrics = scoring.metrics_of(categorical)
    results, curve = [], []
    chance, chance_by_k = {}, {}
    names = sorted(predictions, key=lambda n: n != chance_method)  # the chance method first
    for name in names:
        frame = predictions[name]
        base = {"target": target, "method": name, "protocol": protocol.text, "snapshots": snapshots.text}
        if isinstance(frame, str):
            results += [dict(base, metric=m, mean=np.nan, ci_low=np.nan, ci_high=np.nan, n_networks=0, n_samples=0,
                             status=frame, chance=chance.get(m, np.nan)) for m in metrics]
            continue
        scored = frame.merge(truth[["model_id", "k", "truth"]], on=["model_id", "k"], how="inner")
        scored = scored[scored["prediction"].notna()]
        seed = protocol.seed
        for row in scoring.score(scored, categorical, target=target, seed=seed, n_bootstrap=protocol.n_bootstrap):
            if name == chance_method:
                chance[row["metric"]] = row["mean"]
            results.append(dict(base, **row, status="ok", chance=chance.get(row["metric"], np.nan)))
        for k, part in scored.groupby("k", sort=True):
            for row in scoring.score(part, categorical, target=target, seed=seed, n_bootstrap=protocol.n_bootstrap):
                if name == chance_method:
                    chance_by_k[(int(k), row["metric"])] = row["mean"]
                curve.append({"target": target, "method": name, "k": int(k), "metric": row["metric"],
                              "mean": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                              "chance": chance_by_k.get((int(k), row["metric"]), np.nan),
                              "n_networks": row["n_networks"]})
    return (pd.DataFrame(results, columns=list(RESULT_COLUMNS)), pd.DataFrame(curve, columns=list(CURVE_COLUMNS)))


def status_rows(target: str, names, status: str, protocol: Protocol, snapshots: SnapshotChoice,
                categorical: bool) -> pd.DataFrame:
    """The results table when no figure can be given: every method and metric with ``status``."""
    rows = [{"target": target, "method": name, "metric": metric, "mean": np.nan, "ci_low": np.nan,
             "ci_high": np.nan, "chance": np.nan, "n_networks": 0, "n_samples": 0, "status": status,
             "protocol": protocol.text, "snapshots": snapshots.text}
            for name in names for metric in scoring.metrics_of(categorical)]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def evaluate(zoo, target: str, methods: dict[str, Method], protocol: Protocol = Protocol(), *, snapshots=None,
             progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method on the same folds: (results, curve) as :func:`score_methods` gives them.

    A method that fails on a fold gets status ``failed: <error>`` and no figure; the others
    still run. Too few networks gives every method the status (see :func:`check`)."""
    choice = snapshot_choice(zoo, target, snapshots)
    truth = truth_table(zoo, target, choice)
    categorical = target_is_categorical(truth)
    folds = make_folds(truth, protocol, categorical)
    status = check(truth, folds, protocol, categorical)
    if status != "ok":
        return status_rows(target, methods, status, protocol, choice, categorical), pd.DataFrame(
            columns=list(CURVE_COLUMNS))
    predictions = {}
    for name, method in methods.items():
        try:
            predictions[name] = run_method(method, zoo, folds, target, choice, protocol.seed, progress, name)
        except Exception as error:  # noqa: BLE001 - reported in the method's row; the others still run
            predictions[name] = f"failed: {type(error).__name__}: {error}"
    return score_methods(truth, predictions, target, protocol, choice)
