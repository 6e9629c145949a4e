"""The figure and the markdown summary of a method comparison (``weightzoo compare``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from weightzoo.analysis import scoring


def plot_comparison(results: pd.DataFrame, curve: pd.DataFrame, path, *, title: str = "") -> None:
    """One column per metric: top, every method as a point with its 95 % interval and chance
    as a dashed line; bottom, the score against snapshot k per method (intervals as bands)."""
    metrics = list(dict.fromkeys(results["metric"]))
    figure = Figure(figsize=(5.2 * len(metrics), 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(metrics), squeeze=False)
    methods = list(dict.fromkeys(results["method"]))
    colours = {name: f"C{i % 10}" for i, name in enumerate(methods)}
    for column, metric in enumerate(metrics):
        top, bottom = grid[0, column], grid[1, column]
        rows = results[results["metric"] == metric].reset_index(drop=True)
        for i, row in rows.iterrows():
            if row["status"] != "ok" or not np.isfinite(row["mean"]):
                top.annotate(str(row["status"])[:40], (i, 0), rotation=90, fontsize=7, ha="center",
                             va="bottom", xycoords=("data", "axes fraction"))
                continue
            low, high = _bounds(row)
            top.errorbar([i], [row["mean"]], yerr=[[row["mean"] - low], [high - row["mean"]]], fmt="o",
                         color=colours[row["method"]], capsize=4)
        chance = rows["chance"].dropna()
        if len(chance):
            kind = "mean" if metric in scoring.REGRESSION_METRICS else "majority"
            top.axhline(float(chance.iloc[0]), color="black", ls="--", lw=1, label=f"chance (training-fold {kind})")
            top.legend(fontsize=7, loc="best")
        top.set_xticks(range(len(rows)), rows["method"], rotation=30, ha="right", fontsize=8)
        top.set_ylabel(metric + (" (lower is better)" if metric in scoring.LOWER_IS_BETTER else ""))
        top.set_title(f"{metric}: mean and 95 % interval", fontsize=9)
        part = curve[curve["metric"] == metric] if len(curve) else curve
        for name, group in part.groupby("method", sort=False) if len(part) else []:
            group = group.sort_values("k")
            bottom.plot(group["k"], group["mean"], marker="o", ms=3, color=colours.get(name, "C0"), label=name)
            bottom.fill_between(group["k"], group["ci_low"].astype(float), group["ci_high"].astype(float),
                                color=colours.get(name, "C0"), alpha=0.15)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_xlabel("snapshot k")
        bottom.set_ylabel(metric)
        bottom.set_title(f"{metric} against snapshot k", fontsize=9)
        if metric == "r2" and len(part) and float(part["mean"].min()) < -1:  # k = 0: targets that barely vary
            bottom.set_ylim(-1.05, 1.0)
            bottom.set_title("r2 against snapshot k (below -1 not shown)", fontsize=9)
        if len(part):
            bottom.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=100)


def summary_markdown(results: pd.DataFrame, *, target: str, zoo_name: str, protocol: str, snapshots: str,
                     n_networks: int) -> str:
    """A short markdown note: the table, then which methods beat chance with an interval that
    excludes it, per metric, and which could not be scored (with their status)."""
    lines = [f"# {target}: methods compared on {zoo_name}", "",
             f"Protocol: {protocol}; snapshots {snapshots}; {n_networks} networks. Each figure is the score over "
             f"every tested snapshot with a 95 % interval from a bootstrap over networks; chance is the training "
             f"folds' majority class (regression: their mean) applied to each test fold.", "",
             "| method | metric | mean | 95 % interval | chance | networks | status |",
             "|---|---|---|---|---|---|---|"]
    for _, row in results.iterrows():
        lines.append(f"| {row['method']} | {row['metric']} | {_number(row['mean'])} | "
                     f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}] | {_number(row['chance'])} | "
                     f"{int(row['n_networks'])} | {row['status']} |")
    lines.append("")
    for metric, rows in results.groupby("metric", sort=False):
        scored = rows[(rows["status"] == "ok") & (rows["method"] != "majority")]
        better = [r["method"] for _, r in scored.iterrows() if scoring.beats(r.to_dict(), float(r["chance"]))]
        rest = [r["method"] for _, r in scored.iterrows() if r["method"] not in better]
        side = "below" if metric in scoring.LOWER_IS_BETTER else "above"
        lines.append(f"- **{metric}**: interval {side} chance: {', '.join(better) or 'none'}; "
                     f"not distinguishable from chance: {', '.join(rest) or 'none'}.")
    unscored = results[results["status"] != "ok"].drop_duplicates("method")
    for _, row in unscored.iterrows():
        lines.append(f"- {row['method']}: no figure — {row['status']}")
    return "\n".join(lines) + "\n"


def _bounds(row) -> tuple[float, float]:
    low, high = row["ci_low"], row["ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return row["mean"], row["mean"]
    return float(low), float(high)


def _number(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
