"""SANE's training loss: masked reconstruction plus an NT-Xent contrastive term.

Convention (SANE, HSG-AIML/SANE ``src/SANE/models/def_loss.py::GammaContrastReconLoss``;
the same in hyper-representations, NeurIPS 2021):

    loss = gamma · NT-Xent(projection(view a), projection(view b))
           + (1 − gamma) · masked MSE(reconstruction, input)

where each augmented view reconstructs its own input (SANE's ``train_step`` concatenates
both views' reconstructions and targets). SANE's pretraining scripts use gamma = 0.05 and
temperature 0.1.

One deliberate difference: SANE multiplies the output by the mask and then averages over
*all* values, padding included, so a network with more padding gets a smaller loss. Here the
mean runs over real values only (sum of masked squared errors / number of real values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real values (mask 1) only; padded values never count."""
    if not reconstruction.shape == target.shape == mask.shape:
        raise ValueError(f"shapes differ: reconstruction {tuple(reconstruction.shape)}, "
                         f"target {tuple(target.shape)}, mask {tuple(mask.shape)}")
    real = mask.to(reconstruction.dtype)
    # where() before squaring, so NaN or inf in padding leaks into neither the value (0·inf)
    # nor the gradient
    error = torch.where(real > 0, reconstruction - target, torch.zeros_like(reconstruction))
    return (error ** 2).sum() / real.sum().clamp(min=1.0)


def nt_xent(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised temperature-scaled cross entropy (SimCLR) between two views [B, D].

    Row i of ``view_a`` and row i of ``view_b`` are a positive pair; the other 2(B − 1)
    rows of the batch are its negatives. The mean over all 2B anchors, as in SANE.
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2:
        raise ValueError(f"views need equal [B, D] shapes, got {tuple(view_a.shape)} and {tuple(view_b.shape)}")
    size = view_a.shape[0]
    both = F.normalize(torch.cat([view_a, view_b], dim=0), dim=1)
    logits = both @ both.T / temperature
    # an anchor is never its own negative
    logits = logits.masked_fill(torch.eye(2 * size, dtype=torch.bool, device=logits.device), float("-inf"))
    partner = torch.arange(2 * size, device=logits.device).roll(size)
    return F.cross_entropy(logits, partner)


def sane_loss(out_a: dict, out_b: dict, batch: dict, gamma: float, temperature: float) -> dict:
    """The combined loss of both views' model outputs and its two parts.

    ``out_a``/``out_b`` are :meth:`SaneAutoencoder.forward` outputs for ``batch["view_a"]`` and
    ``batch["view_b"]``; each view's reconstruction is scored against that view's tokens.
    """
    view_a, view_b = batch["view_a"], batch["view_b"]
    reconstruction = torch.cat([out_a["reconstruction"], out_b["reconstruction"]])
    target = torch.cat([view_a["tokens"], view_b["tokens"]])
    mask = torch.cat([view_a["mask"], view_b["mask"]])
    recon = masked_mse(reconstruction, target, mask)
    contrast = nt_xent(out_a["projection"], out_b["projection"], temperature)
    return {"loss": gamma * contrast + (1.0 - gamma) * recon, "loss_recon": recon, "loss_contrast": contrast}
