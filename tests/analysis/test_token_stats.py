"""Per-layer token normalisation: train-split statistics from Dask, and an exact-enough way back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from weightzoo.analysis.token_stats import (COLUMNS, denormalize_tokens, layer_statistics, load_layer_statistics,
                                            normalize_tokens, save_layer_statistics, token_moments)
from weightzoo.core.models import build_model
from weightzoo.core.tokens import Tokenizer
from weightzoo.io.selection import Selection
from weightzoo.io.tables import SPLITS

# Six nws-cnn models on digits, with and without batch norm (two layouts), snapshots k = 0, 1.
SPEC = {
    "name": "token-stats-test", "architecture": "nws-cnn", "models": 6,
    "sampling": {"method": "grid", "seeds": 3, "seed": 0},
    "hyperparameters": {"dataset": "digits", "batch_norm": [False, True], "conv_layers": 2, "conv_width": 4,
                        "filter_size": 3, "fc_layers": 1, "fc_width": 8, "optimizer": "adam", "lr": 0.01,
                        "batch_size": 64},
    "training": {"epochs": 1, "snapshots": {"count": 1}},
}


@pytest.fixture(scope="module")
def zoo(build_zoo):
    """Trained and published in-process with the package's build steps (about two seconds)."""
    return build_zoo("token-stats", SPEC)


@pytest.fixture(scope="module")
def bn_layout_id(zoo):
    return zoo.models.loc[zoo.models["batch_norm"], "layout_id"].iloc[0]


@pytest.fixture(scope="module")
def bn_model(zoo, bn_layout_id) -> pd.Series:
    """A model of the batch-norm layout (any split)."""
    return zoo.models[zoo.models["layout_id"] == bn_layout_id].iloc[0]


@pytest.fixture(scope="module")
def stats(zoo, bn_layout_id):
    return layer_statistics(zoo, bn_layout_id)


def split_weights(zoo, layout_id, splits=("train",)) -> np.ndarray:
    """Every snapshot of every model of the layout in ``splits``, read model by model."""
    models = zoo.models[(zoo.models["layout_id"] == layout_id) & zoo.models["split"].isin(splits)]
    assert len(models), f"the fixture zoo must have {splits} models of the layout"
    return np.concatenate([zoo.weights(model_id) for model_id in models["model_id"]])


def test_statistics_match_numpy_over_the_train_split(zoo, bn_layout_id, stats):
    layout = zoo.layout(bn_layout_id)
    weights = split_weights(zoo, bn_layout_id).astype(np.float64)
    assert list(stats.columns) == list(COLUMNS) and stats["layer"].tolist() == list(range(layout.n_layers))
    for row in stats.itertuples():
        values = weights[:, layout.indices(layers=[row.layer])]
        assert row.n_values == values.size
        assert row.mean == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert row.std == pytest.approx(values.std(), rel=1e-9)
    assert stats["kind"].tolist() == ["conv", "batchnorm", "conv", "batchnorm", "linear", "batchnorm", "linear"]
    assert stats.attrs["split"] == "train" and stats.attrs["n_samples"] == weights.shape[0]


def test_statistics_are_computed_with_dask_not_by_loading_numpy(zoo, bn_layout_id, stats, monkeypatch):
    def refuse(self):
        raise AssertionError("layer_statistics must reduce with Dask")

    monkeypatch.setattr(Selection, "to_numpy", refuse)
    again = layer_statistics(zoo, bn_layout_id, chunk_samples=1)  # one model per chunk: a real reduction
    pd.testing.assert_frame_equal(again, stats, rtol=1e-12)


def test_other_splits_and_filters_give_their_own_statistics(zoo, bn_layout_id, stats):
    every = layer_statistics(zoo, bn_layout_id, split=list(SPLITS))
    weights = split_weights(zoo, bn_layout_id, SPLITS).astype(np.float64)
    layout = zoo.layout(bn_layout_id)
    expected = [weights[:, layout.indices(layers=[layer])].mean() for layer in every["layer"]]
    np.testing.assert_allclose(every["mean"], expected, rtol=1e-9, atol=1e-12)
    assert every.attrs["n_samples"] == weights.shape[0] >= stats.attrs["n_samples"]
    first = layer_statistics(zoo, bn_layout_id, snapshots=[0])
    assert not np.allclose(first["std"], stats["std"]), "initial weights differ from the trained ones"
    with pytest.raises(ValueError, match="one layout"):
        layer_statistics(zoo)
    with pytest.raises(ValueError, match="whole layouts"):
        layer_statistics(zoo, bn_layout_id, part="conv")


def test_statistics_survive_a_parquet_round_trip(stats, tmp_path):
    path = tmp_path / "token-stats.parquet"
    save_layer_statistics(stats, path)
    loaded = load_layer_statistics(path)
    pd.testing.assert_frame_equal(loaded, stats)
    assert loaded.attrs == stats.attrs
    pd.DataFrame({"layer": [0]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a layer statistics table"):
        load_layer_statistics(tmp_path / "other.parquet")


@pytest.mark.parametrize("as_torch", [False, True], ids=["numpy", "torch"])
def test_normalised_layers_have_zero_mean_unit_std_and_the_round_trip_holds(zoo, bn_layout_id, stats, as_torch):
    tokenizer = Tokenizer(zoo.layout(bn_layout_id), 6)
    tokens = tokenizer.tokenize(split_weights(zoo, bn_layout_id))
    tokens_in = torch.from_numpy(tokens) if as_torch else tokens
    normalised = normalize_tokens(tokens_in, stats, tokenizer)
    restored = np.asarray(denormalize_tokens(normalised, stats, tokenizer))
    normalised = np.asarray(normalised)
    np.testing.assert_allclose(restored, tokens, rtol=1e-5, atol=1e-6)
    padding = np.broadcast_to(~tokenizer.mask, tokens.shape)
    assert (normalised[padding] == 0).all() and (restored[padding] == 0).all()
    layers = np.broadcast_to(tokenizer.value_layers, tokens.shape)
    for layer in stats["layer"]:
        values = normalised[layers == layer].astype(np.float64)
        assert abs(values.mean()) < 1e-5 and abs(values.std() - 1) < 1e-5, layer


def test_denormalised_tokens_rebuild_the_stored_model(zoo, bn_layout_id, bn_model, stats):
    layout = zoo.layout(bn_layout_id)
    tokenizer = Tokenizer(layout, 16)
    normalised = normalize_tokens(tokenizer.tokenize(zoo.weights(bn_model.model_id, 1)), stats, tokenizer)
    flat = tokenizer.detokenize(denormalize_tokens(normalised, stats, tokenizer))
    stored = zoo.load_model(bn_model.model_id, 1)
    rebuilt = build_model(json.loads(bn_model.config_json))
    rebuilt.load_state_dict(layout.unflatten(flat), strict=False)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), stored(x), rtol=1e-4, atol=1e-5)


def test_moments_need_the_statistics_of_the_tokenizers_layout(zoo, bn_layout_id, bn_model, stats):
    other = zoo.models.loc[~zoo.models["batch_norm"], "layout_id"].iloc[0]
    with pytest.raises(ValueError, match="no rows for layers"):
        token_moments(stats, Tokenizer(zoo.layout(other), 6))
    flat_stats = stats.assign(std=0.0)  # a constant layer must not divide by zero
    tokenizer = Tokenizer(zoo.layout(bn_layout_id), 6)
    _, std = token_moments(flat_stats, tokenizer)
    assert (std == 1).all()
    tokens = tokenizer.tokenize(zoo.weights(bn_model.model_id, 0))
    assert np.isfinite(normalize_tokens(tokens, flat_stats, tokenizer)).all()
