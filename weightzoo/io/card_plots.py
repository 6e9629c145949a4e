"""The dataset card's plots: how each hyperparameter is drawn, and the drawing.

How a column is drawn is decided by :func:`plan_panels` from the distribution the version's
spec(s) give it (``manifest.specs``), not from its values:

- ``log-uniform``: a histogram with log-spaced bins on a log axis;
- ``uniform``: a histogram on a linear axis;
- ``categorical``, ``integer`` and ``fixed`` values, bools and text: one bar per value, numbers in
  numeric order (32 before 128), text in alphabetical order; a column with more than a few
  values is a histogram (numbers) or left out (text);
- seeds (``seed``, ``*_seed``) are left out: they identify a run, they are not a choice, and
  columns that do not vary are left out too.

Imported zoos have no distributions in their spec: a numeric column is then drawn on a log
axis only when its values are positive, span at least a decade and their median sits nearer
the middle of the range on a log axis than on a linear one (as it does for values drawn
log-uniformly); the card says which rule drew each panel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from weightzoo.io.card_queries import ColumnSummary
from weightzoo.io.tables import hyperparameter_column

MAX_PANELS = 16


@dataclass(frozen=True)
class Panel:
    """One hyperparameter's panel: a ``histogram`` (``log`` axis or linear) or ``bars``, and why."""

    summary: ColumnSummary
    kind: str
    log: bool
    reason: str

    @property
    def column(self) -> str:
        """The models-table column drawn."""
        return self.summary.name


def spec_distributions(specs) -> dict[str, str | None]:
    """{models-table column: the distribution kind the specs give it}; None where specs disagree
    (``fixed`` in one spec and varied in another counts as varied)."""
    kinds: dict[str, set] = {}
    for spec in specs or ():
        for name, distribution in (spec.get("hyperparameters") or {}).items():
            kind = next(iter(distribution)) if isinstance(distribution, dict) and len(distribution) == 1 else None
            kinds.setdefault(hyperparameter_column(name), set()).add(kind)
    result = {}
    for column, found in kinds.items():
        varied = found - {"fixed"} or found
        result[column] = next(iter(varied)) if len(varied) == 1 else None
    return result


def is_seed(column: str) -> bool:
    """Whether a column holds seeds (left out of the plots)."""
    return column == "seed" or column.endswith("_seed")


def plan_panels(summaries: list[ColumnSummary], distributions: dict[str, str | None]) -> tuple[list[Panel], list]:
    """The panels to draw, in column order, and the columns left out with the reason."""
    panels, left_out = [], []
    for summary in summaries:
        if is_seed(summary.name):
            left_out.append((summary.name, "a seed"))
        elif summary.distinct <= 1:
            continue  # the table gives its one value
        else:
            panel = _panel(summary, distributions.get(summary.name))
            if isinstance(panel, Panel):
                panels.append(panel)
            else:
                left_out.append((summary.name, panel))
    return panels, left_out


def _panel(summary: ColumnSummary, distribution: str | None) -> Panel | str:
    spec = f"{distribution} in the spec" if distribution else "no distribution in the spec"
    if summary.numeric and distribution == "log-uniform" and summary.minimum > 0:
        return Panel(summary, "histogram", True, spec)
    if summary.numeric and distribution == "uniform":
        return Panel(summary, "histogram", False, spec)
    if summary.counts is not None and (distribution is not None or not summary.continuous):
        order = "numeric order" if summary.numeric else "alphabetical order"
        return Panel(summary, "bars", False, f"{spec}; bars in {order}")
    if not summary.numeric:
        return f"{summary.distinct} distinct values"
    if distribution is not None:
        return Panel(summary, "histogram", False, f"{spec}; many values")
    log = log_by_values(summary)
    return Panel(summary, "histogram", log, f"{spec}; {'log' if log else 'linear'} axis from the values")


def log_by_values(summary: ColumnSummary) -> bool:
    """Without a spec: positive values spanning a decade or more whose median sits nearer the
    middle of their range on a log axis than on a linear one."""
    low, high, median = summary.minimum, summary.maximum, summary.median
    if median is None or not low > 0 or high / low < 10:
        return False
    linear = (median - low) / (high - low)
    logarithmic = (math.log(median) - math.log(low)) / (math.log(high) - math.log(low))
    return abs(logarithmic - 0.5) < abs(linear - 0.5)


def draw_hyperparameters(panels: list[Panel], histograms: dict):
    """A figure with one axes per panel (titled by its column); ``histograms`` maps each
    histogram panel's column to its (bin edges, counts)."""
    n_cols = min(4, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    figure = _figure(3.2 * n_cols, 2.4 * n_rows)
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(n_rows, n_cols, index)
        if panel.kind == "histogram":
            edges, counts = histograms[panel.column]
            axes.stairs(counts, edges, fill=True, color="tab:blue")
            if panel.log:
                _log_axis(axes.xaxis)
        else:
            labels = [number_text(value) for value, _ in panel.summary.counts]
            axes.bar(range(len(labels)), [n for _, n in panel.summary.counts], color="tab:blue")
            axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        axes.set_title(panel.column, fontsize=9)
        axes.tick_params(labelsize=7)
    # fixed margins: tight_layout measures every tick label and takes most of the card's time
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.25 / n_rows, top=1 - 0.1 / n_rows, wspace=0.3,
                           hspace=0.7)
    return figure


def draw_accuracy(curves: pd.DataFrame):
    """A figure of the mean (and 25–75 % band) of each dataset's metric over snapshots k."""
    metrics = sorted(curves["metric"].unique())
    figure = _figure(4.5 * len(metrics), 3.2)
    for index, metric in enumerate(metrics, start=1):
        axes = figure.add_subplot(1, len(metrics), index)
        for dataset, curve in curves[curves["metric"] == metric].groupby("dataset", sort=True):
            line, = axes.plot(curve["k"], curve["mean"], marker="o", label=f"{dataset} (n={int(curve['n'].max())})")
            axes.fill_between(curve["k"], curve["q25"], curve["q75"], color=line.get_color(), alpha=0.2)
        axes.xaxis.set_major_locator(_integer_ticks())
        axes.set_xlabel("snapshot k")
        axes.set_ylabel(f"{metric} (mean, 25–75 %)")
        axes.legend(fontsize=7)
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.15, top=0.95, wspace=0.3)
    return figure


def save_png(figure, path: Path) -> None:
    """Write ``figure`` as a PNG through a temporary name."""
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, dpi=80, format="png")
    os.replace(tmp, path)


def number_text(value) -> str:
    """A value as the card prints it (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def _figure(width: float, height: float):
    # matplotlib is imported here, not at module level: publishing imports this module
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _log_axis(axis) -> None:
    """A log scale with a few plainly labelled ticks (matplotlib labels minor ticks of a short range,
    which overlap in a small panel)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log")
    low, high = axis.axes.get_xlim()
    subs = (1.0, 2.0, 5.0) if high / low < 10 else (1.0, 3.0) if high / low < 1000 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=5))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)
