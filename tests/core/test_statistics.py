"""s(W): per-layer statistics against a plain loop, names, NaN rows."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.core.statistics import STATISTICS, statistic_names, weight_statistics


def small_layout() -> WeightLayout:
    """Conv (weight+bias), batch norm, linear without bias, linear with bias."""
    return WeightLayout.from_module(nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4, bias=False), nn.Linear(4, 3)))


def reference(flat: np.ndarray, layout: WeightLayout, roles) -> dict[str, np.ndarray]:
    """The obvious computation, one row and one tensor at a time."""
    out = {}
    for t in layout.tensors:
        if t.role not in roles:
            continue
        for stat in STATISTICS:
            values = [row[t.offset:t.offset + t.length].astype(np.float64) for row in flat]
            if stat == "mean":
                result = [v.mean() for v in values]
            elif stat == "var":
                result = [v.var() for v in values]
            else:
                result = [np.percentile(v, int(stat[1:])) for v in values]
            out[f"layer{t.layer}.{t.role}.{stat}"] = np.array(result)
    return out


def test_matches_per_layer_loop():
    layout = small_layout()
    flat = np.random.default_rng(0).normal(size=(5, layout.n_params)).astype(np.float32)
    features, names = weight_statistics(flat, layout)
    expected = reference(flat, layout, ("weight", "bias"))
    assert features.dtype == np.float32 and features.shape == (5, len(names))
    assert sorted(names) == sorted(expected)
    for j, name in enumerate(names):
        np.testing.assert_allclose(features[:, j], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_names_are_layer_major_and_match_statistic_names():
    layout = small_layout()
    _, names = weight_statistics(np.zeros(layout.n_params, np.float32), layout)
    assert names == statistic_names(layout)
    # conv w+b (layer 0), no bn (not a requested role), linear w only (2), linear w+b (3)
    prefixes = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
    assert prefixes == ["layer0.weight", "layer0.bias", "layer2.weight", "layer3.weight", "layer3.bias"]
    assert len(names) == len(prefixes) * len(STATISTICS) == len(set(names))
    assert names[:7] == [f"layer0.weight.{s}" for s in ("mean", "var", "p1", "p25", "p50", "p75", "p99")]


def test_other_roles_on_request():
    layout = small_layout()
    flat = np.random.default_rng(1).normal(size=(2, layout.n_params))
    features, names = weight_statistics(flat, layout, roles=("bn_var",))
    assert names == [f"layer1.bn_var.{s}" for s in STATISTICS]
    np.testing.assert_allclose(features[:, 0], reference(flat, layout, ("bn_var",))["layer1.bn_var.mean"], rtol=1e-5)
    with pytest.raises(ValueError, match="no tensors with roles"):
        weight_statistics(flat, layout, roles=("nonsense",))


def test_nan_row_gives_nan_features_and_leaves_others_alone():
    layout = small_layout()
    flat = np.random.default_rng(2).normal(size=(3, layout.n_params)).astype(np.float32)
    clean, _ = weight_statistics(flat, layout)
    flat[1] = np.nan
    features, _ = weight_statistics(flat, layout)
    assert np.isnan(features[1]).all()
    np.testing.assert_array_equal(features[[0, 2]], clean[[0, 2]])


def test_shape_mismatch_is_a_clear_error():
    layout = small_layout()
    with pytest.raises(ValueError, match="do not match layout"):
        weight_statistics(np.zeros((2, layout.n_params + 1)), layout)
