"""Figures of the trajectory study (:mod:`weightzoo.analysis.trajectories`).

* ``trajectory_measures.png``: normalised length, normalised within-epoch variance and
  distance from the start against the varying hyperparameter (one dot per model, the
  mean per value as a line) — the paper's "longer, noisier, further" picture.
* ``trajectory_per_epoch.png``: the mean normalised step per epoch, one line per value.
* ``trajectory_pca.png``: a few traces projected on the two leading principal components
  of their pooled points; a circle marks each start, a cross each end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Columns that vary between models of a study zoo but are not what the study varies.
NOT_VARIED = frozenset({"seed"})
PREFERRED = ("frequency", "label_noise")
PANELS = (("length", "normalised length"), ("variance_normalised", "within-epoch variance / lr²"),
          ("distance_final", "distance from start (end)"))
MAX_PCA_POINTS = 2000


def varying_hyperparameter(table: pd.DataFrame, columns=None) -> str | None:
    """The hyperparameter the study varies: frequency or label_noise when they vary, else
    the first non-seed column of ``columns`` (default: the table's ``attrs["hyperparameters"]``)
    with more than one value; None if none varies."""
    columns = table.attrs.get("hyperparameters", []) if columns is None else columns
    candidates = [c for c in columns if c in table.columns and c not in NOT_VARIED
                  and table[c].nunique(dropna=True) > 1]
    preferred = [c for c in PREFERRED if c in candidates]
    return (preferred or candidates or [None])[0]


def plot_trajectories(table: pd.DataFrame, per_epoch: pd.DataFrame, out_dir, *, by: str | None = None,
                      examples: dict[str, np.ndarray] | None = None, title: str = "") -> dict[str, str]:
    """Write the study's PNGs into ``out_dir``; returns {name: path} of those written (the
    PCA plot needs ``examples``: label → [n_points, size] trace)."""
    out = Path(out_dir)
    analysed = table[table["result"] == "analysed"]
    paths = {"measures": out / "trajectory_measures.png", "per_epoch": out / "trajectory_per_epoch.png"}
    _plot_measures(analysed, by, paths["measures"], title)
    _plot_per_epoch(per_epoch, by, paths["per_epoch"], title)
    if examples:
        paths["pca"] = out / "trajectory_pca.png"
        plot_pca(examples, paths["pca"], title=title)
    return {name: str(path) for name, path in paths.items()}


def plot_pca(examples: dict[str, np.ndarray], path, *, title: str = "") -> None:
    """Project the traces on the top two principal components of all their points.

    Traces of another size than the most common one (a traced bias of an 8- and a 16-unit
    layer, say) live in another space and are left out of the plot."""
    traces = {label: np.asarray(points, dtype=np.float64) for label, points in examples.items()}
    sizes = [points.shape[1] for points in traces.values()]
    size = max(set(sizes), key=sizes.count)
    traces = {label: points for label, points in traces.items() if points.shape[1] == size}
    pooled = np.concatenate(list(traces.values()))
    mean = pooled.mean(axis=0)
    _, _, components = np.linalg.svd(pooled - mean, full_matrices=False)
    axes = components[:2].T if components.shape[0] >= 2 else np.pad(components.T, ((0, 0), (0, 1)))
    fig, ax = _figure((5.0, 4.5))
    for i, (label, points) in enumerate(traces.items()):
        keep = np.unique(np.linspace(0, len(points) - 1, min(len(points), MAX_PCA_POINTS)).astype(int))
        xy = (points[keep] - mean) @ axes
        ax.plot(xy[:, 0], xy[:, 1], lw=0.8, color=f"C{i}", label=label)
        ax.plot(*xy[0], "o", color=f"C{i}", ms=5)
        ax.plot(*xy[-1], "x", color=f"C{i}", ms=7)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"trajectories (o start, x end) {title}".strip(), fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)


def _plot_measures(table: pd.DataFrame, by: str | None, path: Path, title: str) -> None:
    fig = Figure(figsize=(12.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    x, ticks = _positions(table, by)
    for i, (column, label) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        values = table[column].to_numpy(dtype=np.float64)
        jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(values))
        ax.scatter(x + jitter, values, s=14, alpha=0.7)
        if len(values):
            means = pd.Series(values).groupby(x).mean()
            ax.plot(means.index, means.to_numpy(), color="black", lw=1.5, marker="_", ms=14)
        if column == "variance_normalised" and len(values) and np.nanmin(values) > 0:
            ax.set_yscale("log")
        ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_xlabel(by or "model", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"first-layer trajectory measures vs {by or 'model'} {title}".strip(), fontsize=10)
    fig.savefig(path, dpi=100)


def _plot_per_epoch(per_epoch: pd.DataFrame, by: str | None, path: Path, title: str) -> None:
    fig, ax = _figure((5.5, 3.8))
    if not per_epoch.empty:
        groups = per_epoch.groupby(by) if by else [("all models", per_epoch)]
        for i, (value, group) in enumerate(groups):
            curve = group.groupby("epoch")["mean_step"].mean()
            ax.plot(curve.index, curve.to_numpy(), marker=".", color=f"C{i}",
                    label=f"{by}={value}" if by else value)
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean normalised step (length / steps)", fontsize=8)
    ax.set_title(f"bias trajectory per epoch {title}".strip(), fontsize=9)
    fig.savefig(path, dpi=100)


def _positions(table: pd.DataFrame, by: str | None) -> tuple[np.ndarray, list[str]]:
    """x position per row (the rank of its ``by`` value) and the tick labels."""
    if by is None:
        return np.arange(len(table), dtype=float), [str(m)[:8] for m in table["model_id"]]
    values = sorted(table[by].dropna().unique())
    index = {v: i for i, v in enumerate(values)}
    return table[by].map(index).to_numpy(dtype=float), [f"{v:g}" if isinstance(v, float) else str(v) for v in values]


def _figure(size):
    # Figure + FigureCanvasAgg instead of pyplot: no global backend switch, no GUI needed.
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()
