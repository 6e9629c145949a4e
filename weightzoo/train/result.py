"""What training returns: snapshots as a flat-weight matrix plus per-snapshot metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.core.traces import Trace

STATUS_OK, STATUS_DIVERGED, STATUS_FAILED = "ok", "diverged", "failed"


@dataclass
class TrainResult:
    """One trained model: ``weights`` is float32 [n_snapshots, n_params]; row k is snapshot k;
    ``traces`` is set when the training settings ask for traces."""

    layout: WeightLayout
    weights: np.ndarray
    snapshots: list[dict] = field(default_factory=list)
    status: str = STATUS_OK
    message: str = ""
    seconds: float = 0.0
    traces: Trace | None = None


def snapshot_row(k: int, epoch: int, step: int, train: tuple[float, float], test: tuple[float, float],
                 task: str) -> dict:
    """Metrics of snapshot k. ``gap`` is train − test accuracy (classification) or
    test − train loss (regression, where accuracy is undefined and stored as NaN)."""
    (train_loss, train_acc), (test_loss, test_acc) = train, test
    if task == "classification":
        gap = train_acc - test_acc
    else:
        gap = test_loss - train_loss
    return {"k": k, "epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "gap": gap if math.isfinite(gap) else float("nan")}


def fill_missing_snapshots(result: TrainResult, plan: dict[int, int], task: str) -> None:
    """Snapshots not reached (after a divergence) exist as rows with NaN metrics (their
    weights stay NaN); rows end up ordered by k."""
    done = {row["k"] for row in result.snapshots}
    nan = (float("nan"), float("nan"))
    for epoch, k in plan.items():
        if k not in done:
            result.snapshots.append(snapshot_row(k, epoch, None, nan, nan, task))
    result.snapshots.sort(key=lambda row: row["k"])
