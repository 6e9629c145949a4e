"""Losses and metrics shared by the single-model and fleet trainers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EVAL_CHUNK = 1024


def per_sample_loss(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy (classification) or squared error (regression), one value per sample.

    ``output`` is [..., n_out] and ``target`` [...]; leading dims are kept.
    """
    if task == "classification":
        flat = F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="none")
        return flat.reshape(target.shape)
    return (output.squeeze(-1) - target) ** 2


def correct(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """1.0 where the prediction is right (classification); NaN for regression."""
    if task == "classification":
        return (output.argmax(-1) == target).float()
    return torch.full(target.shape, float("nan"))


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> tuple[float, float]:
    """Mean loss and accuracy of one module over (x, y), in eval mode, in chunks."""
    was_training = model.training
    model.eval()
    losses, hits = [], []
    for start in range(0, len(x), EVAL_CHUNK):
        out = model(x[start:start + EVAL_CHUNK])
        target = y[start:start + EVAL_CHUNK]
        losses.append(per_sample_loss(out, target, task))
        hits.append(correct(out, target, task))
    model.train(was_training)
    return float(torch.cat(losses).mean()), float(torch.cat(hits).mean())
