"""Per-network embeddings and decoding with a (briefly) trained SANE model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_score

from weightzoo.analysis.sane.batches import window_batches
from weightzoo.analysis.sane.embed import decode_latents, embed_networks, token_latents, window_starts
from weightzoo.analysis.sane.model import SaneConfig, max_positions_of
from weightzoo.analysis.sane.train import train_sane

WINDOW = 8


def _train(zoo, epochs: int):
    config = SaneConfig(token_size=6, max_positions=max_positions_of(zoo["positions"]), latent_dim=5, lr=3e-3)
    model, _ = train_sane(lambda epoch: window_batches(zoo["tokens"], zoo["mask"], zoo["positions"], WINDOW, 16,
                                                       seed=0, epoch=epoch, windows_per_sample=2),
                          config, epochs=epochs, seed=0, threads=1)
    return model


@pytest.fixture(scope="module")
def trained(token_zoo):
    return _train(token_zoo, epochs=8)


def _embed(model, zoo, **options):
    return embed_networks(model, zoo["tokens"], zoo["mask"], zoo["positions"], window=WINDOW, **options)


@pytest.mark.parametrize(("n_tokens", "window", "starts"), [(22, 8, [0, 8, 14]), (16, 8, [0, 8]),
                                                            (5, 8, [0]), (9, 3, [0, 3, 6])])
def test_windows_cover_the_sequence_without_overhang(n_tokens, window, starts):
    assert window_starts(n_tokens, window) == starts


def test_embeddings_are_deterministic_with_one_row_per_network(trained, token_zoo):
    first = _embed(trained, token_zoo)
    assert first.shape == (48, 5) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, _embed(trained, token_zoo))
    np.testing.assert_allclose(first, _embed(trained, token_zoo, batch_size=7), rtol=1e-5, atol=1e-6)


def test_a_network_embedding_is_its_mean_token_latent(trained, token_zoo):
    latents = token_latents(trained, token_zoo["tokens"], token_zoo["mask"], token_zoo["positions"], window=WINDOW)
    assert latents.shape == (48, 22, 5)
    np.testing.assert_allclose(_embed(trained, token_zoo), latents.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_layer_pooling_concatenates_the_mean_latent_of_each_layer(trained, token_zoo):
    latents = token_latents(trained, token_zoo["tokens"], token_zoo["mask"], token_zoo["positions"], window=WINDOW)
    layers = np.asarray(token_zoo["positions"])[:, 1]
    pooled = _embed(trained, token_zoo, pooling="layers")
    assert len(np.unique(layers)) > 1 and pooled.shape == (48, 5 * len(np.unique(layers)))
    for i, layer in enumerate(np.unique(layers)):
        np.testing.assert_allclose(pooled[:, 5 * i:5 * (i + 1)], latents[:, layers == layer].mean(axis=1),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pooling must be one of"):
        _embed(trained, token_zoo, pooling="max")


def test_embeddings_do_not_depend_on_the_other_networks(trained, token_zoo):
    subset = {key: token_zoo[key] for key in ("mask", "positions")} | {"tokens": token_zoo["tokens"][[5, 2]]}
    np.testing.assert_allclose(_embed(trained, subset), _embed(trained, token_zoo)[[5, 2]], rtol=1e-5, atol=1e-6)


def test_decoding_token_latents_gives_tokens_of_the_input_shape(trained, token_zoo):
    latents = token_latents(trained, token_zoo["tokens"], token_zoo["mask"], token_zoo["positions"], window=WINDOW)
    decoded = decode_latents(trained, latents, token_zoo["positions"], window=WINDOW, mask=token_zoo["mask"])
    assert decoded.shape == token_zoo["tokens"].shape
    assert np.isfinite(decoded).all()
    assert (decoded[:, token_zoo["mask"] == 0] == 0).all()
    unmasked = decode_latents(trained, latents, token_zoo["positions"], window=WINDOW)
    assert unmasked.shape == token_zoo["tokens"].shape


def test_decoding_a_per_network_mean_is_refused(trained, token_zoo):
    with pytest.raises(ValueError, match="per token"):
        decode_latents(trained, _embed(trained, token_zoo), token_zoo["positions"], window=WINDOW)


def test_embeddings_carry_the_code_each_network_was_made_from(trained, token_zoo):
    def explained(model) -> float:
        embeddings = _embed(model, token_zoo)
        return float(np.mean(cross_val_score(RidgeCV(), embeddings, token_zoo["codes"], cv=4, scoring="r2")))
    untrained = _train(token_zoo, epochs=0)
    assert explained(trained) > max(0.3, explained(untrained) + 0.3), (explained(trained), explained(untrained))
