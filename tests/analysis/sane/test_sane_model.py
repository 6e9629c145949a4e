"""The SANE autoencoder: shapes, padding that never matters, position tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightzoo.analysis.sane.losses import sane_loss
from weightzoo.analysis.sane.model import SaneAutoencoder, SaneConfig, max_positions_of, pool_tokens


def _model(zoo, **overrides) -> SaneAutoencoder:
    torch.manual_seed(0)
    config = SaneConfig(token_size=zoo["tokens"].shape[2], max_positions=max_positions_of(zoo["positions"]),
                        **overrides)
    return SaneAutoencoder(config).eval()


def _window(zoo, start=14, size=8, rows=4):
    cut = slice(start, start + size)
    tokens = torch.as_tensor(zoo["tokens"][:rows, cut])
    mask = torch.as_tensor(zoo["mask"][cut]).expand(rows, -1, -1)
    positions = torch.as_tensor(zoo["positions"][cut]).expand(rows, -1, -1)
    return tokens, mask, positions


def test_shapes_follow_the_config(token_zoo):
    model = _model(token_zoo, latent_dim=5, projection_dim=7)
    tokens, mask, positions = _window(token_zoo)
    out = model(tokens, positions, mask)
    assert out["latents"].shape == (4, 8, 5)
    assert out["reconstruction"].shape == tokens.shape
    assert out["projection"].shape == (4, 7)
    assert model.embed(tokens, positions, mask).shape == (4, 8, 5)


def test_padded_values_change_neither_latents_nor_loss(token_zoo):
    model = _model(token_zoo, gamma=0.3)
    tokens, mask, positions = _window(token_zoo)  # holds padded values (NaN) of the last layer
    assert (mask == 0).any(), "the window must contain padding for this test to mean anything"
    losses = []
    for fill in (0.0, 123.0, float("nan")):
        filled = torch.where(mask > 0, tokens, torch.full_like(tokens, fill))
        view = {"tokens": filled, "mask": mask, "positions": positions}
        out = model(filled, positions, mask)
        parts = sane_loss(out, out, {"view_a": view, "view_b": view}, 0.3, 0.1)
        losses.append(parts["loss"].item())
        assert torch.isfinite(out["latents"]).all()
    assert losses[0] == losses[1] == losses[2], losses


def test_gradients_stay_finite_with_nan_padding(token_zoo):
    model = _model(token_zoo).train()
    tokens, mask, positions = _window(token_zoo)
    view = {"tokens": tokens, "mask": mask, "positions": positions}
    out = model(tokens, positions, mask)
    sane_loss(out, out, {"view_a": view, "view_b": view}, 0.5, 0.1)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_pooling_ignores_tokens_without_real_values():
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    assert pool_tokens(values, mask).item() == pytest.approx(2.0)


def test_positions_outside_the_tables_are_a_clear_error(token_zoo):
    model = _model(token_zoo)
    tokens, mask, positions = _window(token_zoo)
    too_far = positions.clone()
    too_far[..., 1] = model.config.max_positions[1]
    with pytest.raises(ValueError, match="layer index .* outside the embedding table"):
        model.embed(tokens, too_far, mask)


def test_max_positions_cover_the_largest_index(token_zoo):
    assert max_positions_of(token_zoo["positions"]) == (22, 3, 8)
    assert max_positions_of(np.array([[[0, 4, 1]], [[9, 0, 2]]])) == (10, 5, 3)


@pytest.mark.parametrize("change", [{"d_model": 30, "n_heads": 4}, {"gamma": 1.5},
                                    {"max_positions": (4, 2)}, {"temperature": 0.0}])
def test_invalid_configs_are_rejected(change):
    values = {"token_size": 4, "max_positions": (8, 2, 4), **change}
    with pytest.raises(ValueError):
        SaneConfig(**values)


def test_config_round_trips_through_a_dict():
    config = SaneConfig(token_size=4, max_positions=[8, 2, 4], latent_dim=3)
    assert SaneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        SaneConfig.from_dict({**config.to_dict(), "colour": "red"})
