"""The weight-statistics baseline s(W): a few order statistics per layer.

Unterthiner et al. ("Predicting neural network accuracy from weights", 2020) and Schürholt
et al. (NeurIPS 2021) summarise each layer's weights and biases separately by their mean,
variance and the 1/25/50/75/99 percentiles; a linear or boosted model over these few
numbers is the baseline every learned weight representation has to beat.

Features are named ``layer{i}.{role}.{stat}`` (``layer0.weight.p25``) so that tables built
from different models of one layout line up column by column. Pure numpy.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from weightzoo.core.layout import WeightLayout

PERCENTILES = (1, 25, 50, 75, 99)
STATISTICS = ("mean", "var") + tuple(f"p{q}" for q in PERCENTILES)


def statistic_groups(layout: WeightLayout, roles: Iterable[str] = ("weight", "bias")) -> list[tuple[str, np.ndarray]]:
    """``(prefix, flat indices)`` per (layer, role) present in ``layout``, layer-major.

    Tensors sharing a layer and role are pooled, so a module with several weight tensors
    still yields one group. Roles follow the order given in ``roles``.
    """
    roles = tuple(roles)
    groups = []
    for layer in sorted({t.layer for t in layout.tensors}):
        for role in roles:
            index = layout.indices(layers=[layer], roles=[role])
            if index.size:
                groups.append((f"layer{layer}.{role}", index))
    return groups


def statistic_names(layout: WeightLayout, roles: Iterable[str] = ("weight", "bias")) -> list[str]:
    """The feature names :func:`weight_statistics` returns for ``layout``, without any data."""
    return [f"{prefix}.{stat}" for prefix, _ in statistic_groups(layout, roles) for stat in STATISTICS]


def weight_statistics(flat: np.ndarray, layout: WeightLayout, *,
                      roles: Iterable[str] = ("weight", "bias")) -> tuple[np.ndarray, list[str]]:
    """s(W) of every row of ``flat`` [n, n_params]: ``(features [n, n_features] float32, names)``.

    Per (layer, role) group: mean, variance (population, ddof=0) and the 1/25/50/75/99
    percentiles (linear interpolation, numpy's default). A 1-D ``flat`` is one row. A row with
    any NaN (a diverged snapshot) gets NaN in every statistic of the groups it touches rather
    than statistics of its finite part, which would look like a healthy network.
    """
    flat = np.atleast_2d(np.asarray(flat))
    if flat.ndim != 2 or flat.shape[1] != layout.n_params:
        raise ValueError(f"weights of shape {flat.shape} do not match layout {layout.layout_id} "
                         f"with {layout.n_params} parameters per row")
    groups = statistic_groups(layout, roles)
    if not groups:
        known = sorted({t.role for t in layout.tensors})
        raise ValueError(f"layout {layout.layout_id} has no tensors with roles {tuple(roles)}; it has {known}")
    n = flat.shape[0]
    features = np.empty((n, len(groups) * len(STATISTICS)), dtype=np.float32)
    for g, (_, index) in enumerate(groups):
        # float64 so that the variance of large layers does not lose digits; one layer at a
        # time keeps the temporary copy small.
        values = _take(flat, index).astype(np.float64, copy=False)
        block = features[:, g * len(STATISTICS):(g + 1) * len(STATISTICS)]
        with np.errstate(invalid="ignore", over="ignore"):
            block[:, 0] = values.mean(axis=1)
            block[:, 1] = values.var(axis=1)
            block[:, 2:] = np.percentile(values, PERCENTILES, axis=1).T
    return features, statistic_names(layout, roles)


def _take(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Columns ``index`` of ``flat``; a view when they are contiguous (the usual single tensor)."""
    if index.size and index[-1] - index[0] + 1 == index.size:
        return flat[:, index[0]:index[-1] + 1]
    return flat[:, index]
