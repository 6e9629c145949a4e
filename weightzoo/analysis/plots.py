"""Plots shared by the studies: the meta-classifier's confusion matrix and the bar chart of
property-prediction results (s(W), raw weights and SANE probes).

Figure + FigureCanvasAgg instead of pyplot: no global backend switch, no GUI, no figure
registry to leak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_confusion(matrix: np.ndarray, classes: list[str], label: str, path: Path) -> None:
    """A confusion matrix (rows: true class, columns: predicted) as a PNG."""
    figure = Figure(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel(f"predicted {label}")
    axes.set_ylabel(f"true {label}")
    for (i, j), value in np.ndenumerate(matrix):
        dark = value > matrix.max() / 2
        axes.text(j, i, str(value), ha="center", va="center", color="white" if dark else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_results(results: pd.DataFrame, path, *, title: str = "") -> None:
    """Bar plot of the metric per target: linear vs boosted model; chance levels as black ticks.

    R² below -1 (a model worse than predicting the mean) is drawn at -1 and labelled with its
    value, so that one bad fit does not flatten every other bar.
    """
    if "layout_id" in results.columns and set(results["layout_id"]) - {"all"}:  # one bar group per layout
        results = results.assign(target=results["target"] + " · " + results["layout_id"].astype(str).str[:8])
    targets = list(dict.fromkeys(results["target"]))
    # ridge (regression) and logistic (classification) share the "linear" slot of a target.
    slot = results["model"].replace({"ridge": "linear"})
    kinds = list(dict.fromkeys(slot))
    fig = Figure(figsize=(max(4.0, 0.9 * len(targets) + 1.5), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        sub = results[slot == kind].set_index("target").reindex(targets)
        x = np.arange(len(targets)) + (j - (len(kinds) - 1) / 2) * width
        label = "ridge / logistic" if kind == "linear" else kind
        ax.bar(x, sub["value"].clip(lower=-1.0).fillna(0.0), width, label=label, color=f"C{j}")
        for xi, value, chance in zip(x, sub["value"], sub["chance"]):
            if pd.isna(value) or value < -1.0:  # skipped, or clipped: say so instead of a bare bar
                text = "n/a" if pd.isna(value) else f"{value:.2g}"
                ax.text(xi, 0.02, text, ha="center", va="bottom", fontsize=7, rotation=90)
            if pd.notna(chance):
                ax.plot([xi - width / 2, xi + width / 2], [chance, chance], color="black", lw=1.5)
    metrics = "/".join(dict.fromkeys(results["metric"])) or "metric"
    ax.set_xticks(np.arange(len(targets)), targets, rotation=30, ha="right")
    ax.set_ylabel(f"{metrics} on test (black: chance)", fontsize=8)
    lowest = results["value"].clip(lower=-1.0).min()  # NaN when nothing was analysed
    ax.set_ylim(min(-0.05, lowest - 0.05) if pd.notna(lowest) else -0.05, 1.1)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title(title, fontsize=9)
    if kinds:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
