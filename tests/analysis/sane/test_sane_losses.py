"""Masked reconstruction and NT-Xent."""

from __future__ import annotations

import math

import pytest
import torch

from weightzoo.analysis.sane.losses import masked_mse, nt_xent, sane_loss


def test_masked_mse_averages_over_real_values_only():
    target = torch.tensor([[[1.0, 2.0, 0.0]]])
    output = torch.tensor([[[2.0, 2.0, 50.0]]])
    mask = torch.tensor([[[1.0, 1.0, 0.0]]])
    assert masked_mse(output, target, mask).item() == pytest.approx(0.5)
    changed = output.clone()
    changed[..., 2] = -7.0
    assert masked_mse(changed, target, mask).item() == masked_mse(output, target, mask).item()


def test_masked_mse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        masked_mse(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2))


def test_nt_xent_known_small_case():
    # two orthogonal anchors, identical views, temperature 1: every anchor sees its partner
    # at cosine 1 and two negatives at cosine 0, so the loss is log((e + 2) / e)
    views = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(views, views.clone(), 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)


def test_nt_xent_prefers_matching_views():
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(16, 8, generator=generator)
    others = torch.randn(16, 8, generator=generator)
    same = nt_xent(anchors, anchors + 0.01 * torch.randn(16, 8, generator=generator), 0.1)
    random_pairs = nt_xent(anchors, others, 0.1)
    assert same.item() < 0.1 * random_pairs.item()


def test_sane_loss_weighs_contrast_by_gamma():
    generator = torch.Generator().manual_seed(1)
    window = {"tokens": torch.randn(3, 2, 4, generator=generator), "mask": torch.ones(3, 2, 4),
              "positions": torch.zeros(3, 2, 3, dtype=torch.int64)}
    out = {"reconstruction": torch.randn(3, 2, 4, generator=generator),
           "projection": torch.randn(3, 5, generator=generator)}
    batch = {"view_a": window, "view_b": window}
    parts = sane_loss(out, out, batch, 0.25, 0.1)
    expected = 0.25 * parts["loss_contrast"] + 0.75 * parts["loss_recon"]
    assert parts["loss"].item() == pytest.approx(expected.item())
    assert parts["loss_recon"].item() == pytest.approx(masked_mse(out["reconstruction"], window["tokens"],
                                                                  window["mask"]).item())
