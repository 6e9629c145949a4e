"""The methods the protocol compares, each a ``fit_predict(zoo, train_ids, test_ids, target, *,
snapshots, seed) -> DataFrame(model_id, k, prediction)``.

=================  ===========================================================================
``majority``       chance: the training networks' majority class (regression: their mean)
``stats-linear``   s(W) per-layer statistics + logistic / ridge regression
``stats-boosted``  s(W) + histogram gradient boosting
``raw-linear``     the flat weight vector + logistic / ridge regression
``meta-classifier``  the NWS slice CNN (:mod:`weightzoo.analysis.meta_classifier`)
``sane-linear``    SANE embeddings (an autoencoder trained on the training networks of the
                   fold only) + logistic / ridge regression
``sane-boosted``   the same embeddings + gradient boosting
``nfn``            the permutation-invariant neural functional (:mod:`weightzoo.analysis.nfn`)
=================  ===========================================================================

Linear models standardise on the training rows and choose their regularisation on a
held-out quarter of the training *networks* (never the test fold), then refit on all of
them. Continuous log-scale targets (learning rate) are fitted as log10 and returned on
their own scale. Feature tables are computed once per process and zoo version (every fold
reuses them). The methods that read one layout's weights (``raw-linear``, ``nfn``, the SANE
probes) fit each layout of a fold on its own (:func:`by_layout`); the others fit all networks
together.
"""

from __future__ import annotations

import warnings
from functools import partial, wraps

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from weightzoo.analysis import scoring
from weightzoo.core.labels import is_categorical
from weightzoo.errors import InputError

RIDGE_ALPHAS = tuple(np.logspace(5, -3, 9))  # strongest first: a tie keeps the simpler model
LOGISTIC_CS = tuple(np.logspace(-3, 3, 7))
METHOD_NAMES = ("majority", "stats-linear", "stats-boosted", "raw-linear", "meta-classifier", "sane-linear",
                "sane-boosted", "nfn")
# SANE trains one autoencoder per fold (minutes each on the demo zoo): named explicitly with --methods.
DEFAULT_METHODS = ("majority", "stats-linear", "stats-boosted", "raw-linear", "meta-classifier", "nfn")
DEFAULT_OPTIONS = {"meta_epochs": 10, "slice_length": 1000, "nfn_epochs": 40, "sane_epochs": 10}
_TABLES: dict = {}  # (zoo, version, snapshots, kind, layout) -> feature table
TABLE_BYTES = 2 * 2**30  # feature tables kept per process (the newest is always kept)


def methods_for(names=None, options: dict | None = None) -> dict:
    """The methods called ``names`` (default: DEFAULT_METHODS), in the order given, with
    ``options`` (``meta_epochs``, ``slice_length``, ``nfn_epochs``, ``sane_epochs``).
    InputError names an unknown method or option."""
    names = list(names or DEFAULT_METHODS)
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown or not names:
        raise InputError(f"--methods: unknown method(s) {unknown}; known: {list(METHOD_NAMES)}")
    o = {**DEFAULT_OPTIONS, **{k: v for k, v in (options or {}).items() if v is not None}}
    bad = sorted(set(o) - set(DEFAULT_OPTIONS))
    if bad:
        raise InputError(f"unknown method option(s) {bad}; known: {sorted(DEFAULT_OPTIONS)}")
    table = {"majority": majority, "stats-linear": partial(stats_method, model="linear"),
             "stats-boosted": partial(stats_method, model="boosted"),
             "raw-linear": partial(by_layout(raw_method), model="linear"),
             "meta-classifier": partial(meta_classifier_method, epochs=int(o["meta_epochs"]),
                                        slice_length=int(o["slice_length"])),
             "sane-linear": partial(by_layout(sane_method), model="linear", epochs=int(o["sane_epochs"])),
             "sane-boosted": partial(by_layout(sane_method), model="boosted", epochs=int(o["sane_epochs"])),
             "nfn": partial(by_layout(nfn_method), epochs=int(o["nfn_epochs"]))}
    return {name: table[name] for name in dict.fromkeys(names)}


def majority(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0) -> pd.DataFrame:
    """Every test snapshot gets the training snapshots' most common class (ties: the first in
    sorted order), or for a continuous target their mean (on the log scale for lr)."""
    train = zoo.select(snapshots=snapshots, model_ids=list(train_ids)).rows
    test = zoo.select(snapshots=snapshots, model_ids=list(test_ids)).rows
    values = train[target].dropna()
    if _categorical(train[target], test[target]):
        classes, counts = np.unique(scoring.labels(values), return_counts=True)
        value = classes[int(np.argmax(counts))]
    else:
        value = float(_unscaled(target, np.nanmean(scoring.scaled(target, values))))
    return pd.DataFrame({"model_id": test["model_id"].astype(str).to_numpy(), "k": test["k"].to_numpy(),
                         "prediction": [value] * len(test)})


def stats_method(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0,
                 model: str = "linear") -> pd.DataFrame:
    """s(W) + a linear or boosted model."""
    table = feature_table_of(zoo, snapshots, "stats")
    return fit_predict_table(table, train_ids, test_ids, target, model=model, seed=seed)


def raw_method(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0, model: str = "linear") -> pd.DataFrame:
    """The flat weight vectors of networks of one layout (see :func:`by_layout`) + a linear or
    boosted model; the table holds that layout's networks only."""
    layout_id = zoo.models.set_index("model_id").at[train_ids[0], "layout_id"]
    table = feature_table_of(zoo, snapshots, "raw", layout_id)
    return fit_predict_table(table, train_ids, test_ids, target, model=model, seed=seed)


def by_layout(method):
    """``method`` fitted on each layout of the fold on its own: the test networks of a layout
    are predicted from the training networks of that layout. For the methods whose input is
    one layout's weights (raw vectors, the neural functional, SANE's tokens), so that they
    compare a zoo of several layouts as the s(W) methods do. InputError when a layout of the
    test fold has no training network."""

    @wraps(method)
    def fit_predict(zoo, train_ids, test_ids, target, **kwargs) -> pd.DataFrame:
        layouts = zoo.models.set_index("model_id")["layout_id"]
        train_layouts = layouts.loc[list(train_ids)]
        test_layouts = layouts.loc[list(test_ids)]
        parts = []
        for layout_id, ids in test_layouts.groupby(test_layouts, sort=True):
            train_here = list(train_layouts.index[train_layouts == layout_id])
            if not train_here:
                raise InputError(f"no training network of layout {layout_id} in this fold ({len(ids)} test "
                                 f"networks): it has too few networks to compare; leave it out with --where "
                                 f"\"layout_id != '{layout_id}'\"")
            parts.append(method(zoo, train_here, list(ids.index), target, **kwargs))
        return pd.concat(parts, ignore_index=True)

    return fit_predict


def feature_table_of(zoo, snapshots, kind: str, layout_id: str | None = None) -> pd.DataFrame:
    """:func:`weightzoo.analysis.properties.feature_table` of every ok network (of
    ``layout_id`` only, when given), computed once per process for (zoo version, snapshots,
    kind, layout)."""
    from weightzoo.analysis.properties import feature_table
    from weightzoo.core.snapshots import SnapshotChoice

    key = (str(zoo.handle), zoo.version, SnapshotChoice.of(snapshots).text, kind, layout_id)
    if key not in _TABLES:
        table = feature_table(zoo, snapshots=snapshots, features=kind, layout_id=layout_id)
        while _TABLES and sum(_bytes(t) for t in _TABLES.values()) + _bytes(table) > TABLE_BYTES:
            _TABLES.pop(next(iter(_TABLES)))  # the oldest first
        _TABLES[key] = table
    return _TABLES[key]


def fit_predict_table(table: pd.DataFrame, train_ids, test_ids, target: str, *, model: str, seed: int,
                      features=None) -> pd.DataFrame:
    """Fit ``model`` ("linear" or "boosted") on the rows of ``train_ids`` and predict the rows of
    ``test_ids``; ``features`` defaults to the table's s(W)/raw columns."""
    from weightzoo.analysis.properties import feature_columns

    features = list(features) if features is not None else feature_columns(table)
    if target not in table.columns:
        raise InputError(f"no column {target!r} in the feature table")
    train = table[table["model_id"].isin(list(train_ids))]
    test = table[table["model_id"].isin(list(test_ids))]
    categorical = _categorical(train[target], test[target])
    train = train[train[target].notna()]
    # a feature no training row has (a layer of another layout, when the compared networks are
    # some layouts of the zoo) says nothing, and boosted trees cannot bin an all-missing column
    features = [c for c in features if train[c].notna().any()]
    if not features:
        raise InputError(f"{target}: no feature has a value in the training networks")
    X_train, X_test = _matrix(train, features), _matrix(test, features)
    y = scoring.labels(train[target]) if categorical else scoring.scaled(target, train[target])
    if categorical and np.unique(y).size < 2:
        raise InputError(f"{target}: the training networks hold a single class {np.unique(y).tolist()}")
    if model not in ("linear", "boosted"):
        raise ValueError(f"model must be 'linear' or 'boosted', got {model!r}")
    # one thread: these fits are small, and OpenMP/BLAS threads on a shared machine made them 30x slower
    with threadpool_limits(1):
        if model == "boosted":
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

            cls = HistGradientBoostingClassifier if categorical else HistGradientBoostingRegressor
            estimator = cls(random_state=seed).fit(X_train, y)
        else:
            estimator = _fit_linear(X_train, y, train["model_id"].to_numpy(), categorical, seed)
        prediction = estimator.predict(X_test)
    values = list(prediction) if categorical else list(_unscaled(target, prediction.astype(float)))
    return pd.DataFrame({"model_id": test["model_id"].astype(str).to_numpy(), "k": test["k"].to_numpy(),
                         "prediction": values})


def _fit_linear(X, y, groups, categorical: bool, seed: int):
    """Logistic / ridge regression, its regularisation chosen on a held-out quarter of the
    training networks, refitted on all of them."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def make(value):
        estimator = LogisticRegression(C=value, max_iter=2000) if categorical else Ridge(alpha=value)
        return make_pipeline(SimpleImputer(), StandardScaler(), estimator)

    grid = LOGISTIC_CS if categorical else RIDGE_ALPHAS
    best = grid[len(grid) // 2]
    if np.unique(groups).size >= 4:
        inner, held = next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(X, y, groups))
        if not categorical or np.unique(y[inner]).size >= 2:
            best_loss = np.inf
            for value in grid:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    prediction = make(value).fit(X[inner], y[inner]).predict(X[held])
                loss = np.mean(prediction != y[held]) if categorical else np.mean((prediction - y[held]) ** 2)
                if loss < best_loss:
                    best_loss, best = loss, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make(best).fit(X, y)


def meta_classifier_method(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0, epochs: int = 10,
                           slice_length: int = 1000) -> pd.DataFrame:
    """The NWS meta-classifier trained on the training networks' snapshots."""
    from weightzoo.analysis.meta_classifier import fit_predict

    return fit_predict(zoo, train_ids, test_ids, target, snapshots=snapshots, seed=seed, epochs=epochs,
                       slice_length=slice_length)


def nfn_method(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0, epochs: int = 40) -> pd.DataFrame:
    """The neural functional with its default settings (``epochs`` passes)."""
    from weightzoo.analysis.nfn import Settings, fit_predict

    return fit_predict(zoo, train_ids, test_ids, target, snapshots=snapshots, seed=seed,
                       settings=Settings(epochs=epochs))


def sane_method(zoo, train_ids, test_ids, target, *, snapshots, seed: int = 0, model: str = "linear",
                epochs: int = 10) -> pd.DataFrame:
    """A probe on SANE embeddings of an autoencoder trained on this fold's training networks."""
    from weightzoo.analysis.sane.fold import fold_embeddings

    embeddings = fold_embeddings(zoo, train_ids, test_ids, snapshots=snapshots, seed=seed, epochs=epochs)
    rows = zoo.select(snapshots=snapshots, model_ids=list(train_ids) + list(test_ids)).rows
    table = embeddings.merge(rows[["model_id", "k", target]], on=["model_id", "k"], how="left")
    columns = [c for c in embeddings.columns if c.startswith("e") and c[1:].isdigit()]
    return fit_predict_table(table, train_ids, test_ids, target, model=model, seed=seed, features=columns)


def _bytes(table: pd.DataFrame) -> int:
    return int(table.memory_usage(index=False, deep=False).sum())


def _categorical(*parts) -> bool:
    return is_categorical(pd.concat([pd.Series(p.to_numpy()) for p in parts], ignore_index=True).infer_objects())


def _matrix(frame: pd.DataFrame, features) -> np.ndarray:
    X = frame[features].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    X[~np.isfinite(X)] = np.nan
    return X


def _unscaled(target: str, values):
    return 10 ** np.asarray(values, dtype=float) if target in scoring.LOG_SCALE else np.asarray(values, dtype=float)
