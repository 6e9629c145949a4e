"""The dataset card of a version: ``CARD.md`` with PNG plots, from the version's tables.

What it shows: the version's provenance, counts (models, snapshots, by status, split,
dataset and layout), every hyperparameter's distribution (a table and
``card/hyperparameters.png``), test accuracy over snapshots by dataset (test loss for
datasets without accuracy; ``card/accuracy.png``), the runs that did not end ``ok``, and
the diff against the parent version (:mod:`weightzoo.io.diff`).

It is built from the tables in memory (no store access), so the publisher can write it into
the version's incomplete folder before it appears: the card is part of the atomic version, and
an error while writing it aborts the publish before the tag (nothing is lost; the staged
models stay, so a re-run resumes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from weightzoo.io.diff import diff_tables
from weightzoo.io.records import Manifest
from weightzoo.io.tables import RESERVED

CARD_NAME = "CARD.md"
PLOT_DIR = "card"
MAX_LISTED = 20  # model ids listed per section; the counts are always complete
MAX_PANELS = 16
CATEGORY_LIMIT = 12  # a column with more distinct values than this is plotted as a histogram


def write_card(version_dir: Path, tables: Mapping, manifest: Manifest, parent_tables: Mapping | None = None) -> Path:
    """Write ``CARD.md`` and its plots (``card/*.png``) into ``version_dir``; return the card's path.

    ``tables`` maps ``models``, ``snapshots`` and ``layouts`` (optionally with ``.parquet``)
    to Parquet files, pyarrow Tables, DataFrames or lists of row dicts; ``manifest`` is the version's
    manifest. ``parent_tables`` are the parent version's ``models`` and ``snapshots`` in the
    same form; None when the manifest names no parent. Plots are written first and the card
    last, each through a temporary name, so a ``CARD.md`` is always complete.
    """
    version_dir = Path(version_dir)
    frames = _frames(tables)
    models, snapshots = frames["models"], frames["snapshots"]
    plots = version_dir / PLOT_DIR
    plots.mkdir(parents=True, exist_ok=True)
    hyper = hyperparameter_columns(models)
    sections = [
        _header(manifest),
        _counts_section(models, snapshots, frames.get("layouts")),
        _hyperparameter_section(models, hyper, plots / "hyperparameters.png"),
        _accuracy_section(models, snapshots, plots / "accuracy.png"),
        _failed_section(models, hyper),
        _diff_section(models, snapshots, manifest, parent_tables),
        _files_section(manifest),
    ]
    path = version_dir / CARD_NAME
    _write_text(path, "\n\n".join(sections) + "\n")
    return path


def hyperparameter_columns(models: pd.DataFrame) -> list[str]:
    """The models-table columns that hold hyperparameters (everything but the fixed columns)."""
    return [column for column in models.columns if column not in RESERVED]


def _frames(tables: Mapping) -> dict[str, pd.DataFrame]:
    return {name.removesuffix(".parquet"): _frame(table) for name, table in tables.items()}


def _frame(table) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, (str, os.PathLike)):
        return pd.read_parquet(table)
    return pd.DataFrame(table) if isinstance(table, list) else table.to_pandas()


def _header(manifest: Manifest) -> str:
    names = ", ".join(dict.fromkeys(spec.get("name", "?") for spec in manifest.specs)) or "zoo"
    lines = [f"# Dataset card: {names} — version {manifest.version}", "",
             f"- parent version: {manifest.parent or 'none (first version)'}",
             f"- created: {manifest.created_at}",
             f"- code: {manifest.code_version or '?'}",
             f"- Icechunk snapshot: `{manifest.icechunk_snapshot_id}`"]
    if manifest.message:
        lines.append(f"- message: {manifest.message}")
    split = manifest.split
    lines.append(f"- splits by model: seed {split.seed}, fractions {list(split.fractions)} (train/val/test)")
    return "\n".join(lines)


def _counts_section(models: pd.DataFrame, snapshots: pd.DataFrame, layouts: pd.DataFrame | None) -> str:
    rows = [["models", len(models)], ["snapshots", len(snapshots)],
            ["snapshots per model", _range_text(models["n_snapshots"]) if len(models) else "-"]]
    for column in ("status", "split", "dataset", "layout_id"):
        if column in models.columns:
            rows.append([f"by {column}", _value_counts_text(models[column])])
    text = "## Counts\n\n" + _markdown_table(["what", "count"], rows)
    if layouts is not None and len(layouts):
        sizes = layouts.groupby("layout_id")["length"].sum()
        n_tensors = layouts.groupby("layout_id").size()
        used = models["layout_id"].value_counts()
        layout_rows = [[f"`{lid}`", int(n_tensors[lid]), int(sizes[lid]), int(used.get(lid, 0))]
                       for lid in sizes.index]
        text += "\n\n" + _markdown_table(["layout", "tensors", "parameters", "models"], layout_rows)
    return text


def _hyperparameter_section(models: pd.DataFrame, hyper: list[str], plot: Path) -> str:
    if not hyper:
        return "## Hyperparameters\n\nThe models table has no hyperparameter columns."
    rows = [[f"`{column}`", _kind(models[column]), _distribution_text(models[column]),
             int(models[column].isna().sum())] for column in hyper]
    text = "## Hyperparameters\n\n" + _markdown_table(["column", "type", "values", "nulls"], rows)
    varying = [column for column in hyper if models[column].nunique(dropna=True) > 1]
    if varying:
        _plot_hyperparameters(models, varying[:MAX_PANELS], plot)
        shown = "" if len(varying) <= MAX_PANELS else f" (the first {MAX_PANELS} of {len(varying)})"
        text += f"\n\nDistributions of the hyperparameters that vary{shown}:\n\n![hyperparameters]({PLOT_DIR}/{plot.name})"
    else:
        _remove(plot)
    return text


def _accuracy_section(models: pd.DataFrame, snapshots: pd.DataFrame, plot: Path) -> str:
    curves = accuracy_curves(models, snapshots)
    if curves.empty:
        _remove(plot)
        return "## Accuracy over snapshots\n\nNo snapshot holds a test accuracy or loss."
    rows = []
    for (dataset, metric), curve in curves.groupby(["dataset", "metric"], sort=True):
        first, last = curve.iloc[0], curve.iloc[-1]
        rows.append([dataset, metric, int(last["n"]), f"{first['mean']:.3f}", f"{last['mean']:.3f}",
                     f"{last['q25']:.3f}–{last['q75']:.3f}", int(last["k"])])
    _plot_accuracy(curves, plot)
    headers = ["dataset", "metric", "models", "mean at k=0", "mean at last k", "last k: 25–75 %", "last k"]
    return ("## Accuracy over snapshots\n\nMean over the models with a value at each snapshot k; k = 0 is the "
            "initialisation. Diverged runs have no value after they diverged.\n\n"
            + _markdown_table(headers, rows) + f"\n\n![accuracy by dataset]({PLOT_DIR}/{plot.name})")


def accuracy_curves(models: pd.DataFrame, snapshots: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, k): n, mean, 25 % and 75 % of ``test_acc`` (``test_loss`` for a dataset
    without accuracies). Columns: dataset, metric, k, n, mean, q25, q75."""
    dataset = models["dataset"].astype(str) if "dataset" in models.columns else pd.Series("all", index=models.index)
    joined = snapshots.merge(pd.DataFrame({"model_id": models["model_id"], "dataset": dataset}), on="model_id")
    parts = []
    for name, group in joined.groupby("dataset", sort=True):
        metric = "test_acc" if group["test_acc"].notna().any() else "test_loss"
        values = group[["k", metric]].dropna()
        if values.empty:
            continue
        stats = values.groupby("k")[metric].agg(n="count", mean="mean", q25=lambda v: v.quantile(0.25),
                                                q75=lambda v: v.quantile(0.75)).reset_index()
        parts.append(stats.assign(dataset=name, metric=metric))
    columns = ["dataset", "metric", "k", "n", "mean", "q25", "q75"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _failed_section(models: pd.DataFrame, hyper: list[str]) -> str:
    failed = models[models["status"] != "ok"]
    title = "## Diverged and failed runs"
    if failed.empty:
        return f"{title}\n\nEvery run ended with status `ok`."
    context = [c for c in ("dataset", "optimizer", "lr", "activation") if c in hyper]
    rows = [[f"`{row['model_id']}`", row["status"], *[_cell(row[c]) for c in context], _cell(row["message"])]
            for _, row in failed.head(MAX_LISTED).iterrows()]
    more = "" if len(failed) <= MAX_LISTED else f"\n\n… and {len(failed) - MAX_LISTED} more."
    return (f"{title}\n\n{len(failed)} of {len(models)} runs did not end `ok` "
            f"({_value_counts_text(failed['status'])}); their rows are kept, with NaN metrics after the failure.\n\n"
            + _markdown_table(["model", "status", *context, "message"], rows) + more)


def _diff_section(models: pd.DataFrame, snapshots: pd.DataFrame, manifest: Manifest,
                  parent_tables: Mapping | None) -> str:
    title = "## Changes against the parent version"
    if parent_tables is None or not manifest.parent:
        return (f"{title}\n\nThe manifest names no parent version (a first version, or a selection "
                f"published without extending), so there is nothing to compare against.")
    frames = _frames(parent_tables)
    diff = diff_tables(frames["models"], frames["snapshots"], models, snapshots,
                       version_a=manifest.parent, version_b=manifest.version)
    counts = diff.to_dict()["counts"]
    lines = [f"{title} ({diff.version_a})", "",
             _markdown_table(["added", "removed", "changed", "unchanged"], [list(counts.values())])]
    for label, ids in (("Added", diff.added), ("Removed", diff.removed)):
        if ids:
            lines += ["", f"{label}: " + ", ".join(f"`{i}`" for i in ids[:MAX_LISTED])
                      + ("" if len(ids) <= MAX_LISTED else f" and {len(ids) - MAX_LISTED} more")]
    if diff.changed:
        rows = [[f"`{model_id}`", ", ".join(fields)] for model_id, fields in list(diff.changed.items())[:MAX_LISTED]]
        lines += ["", "Changed (same model_id, different values):", "", _markdown_table(["model", "fields"], rows)]
    return "\n".join(lines)


def _files_section(manifest: Manifest) -> str:
    rows = [[f"`{name}`", f"`{digest}`"] for name, digest in sorted(manifest.tables.items())]
    text = ("## Files\n\nRead them with pandas, pyarrow or DuckDB (`weightzoo query`); weights are in the "
            "Icechunk repository under the tag of this version.")
    return text + ("\n\n" + _markdown_table(["table", "sha256"], rows) if rows else "")


def _plot_hyperparameters(models: pd.DataFrame, columns: list[str], path: Path) -> None:
    n_cols = min(4, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    figure = _figure(3.2 * n_cols, 2.4 * n_rows)
    for index, column in enumerate(columns, start=1):
        axes = figure.add_subplot(n_rows, n_cols, index)
        values = models[column].dropna()
        title = column
        if _continuous(values):
            values = values.astype(float)
            # log10 on a linear axis: log-scaled axes cost seconds of tick layout per figure
            if (values > 0).all() and values.max() / values.min() > 100:
                values, title = np.log10(values), f"log10 {column}"
            axes.hist(values, bins=20, color="tab:blue")
        else:
            counts = values.map(_number).value_counts().sort_index().head(CATEGORY_LIMIT)
            axes.bar(range(len(counts)), counts.to_numpy(), color="tab:blue")
            axes.set_xticks(range(len(counts)), counts.index, rotation=30, ha="right", fontsize=7)
        axes.set_title(title, fontsize=9)
        axes.tick_params(labelsize=7)
    # fixed margins: tight_layout measures every tick label and takes most of the card's time
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.25 / n_rows, top=1 - 0.1 / n_rows, wspace=0.3,
                           hspace=0.7)
    _save(figure, path)


def _plot_accuracy(curves: pd.DataFrame, path: Path) -> None:
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
    _save(figure, path)


def _figure(width: float, height: float):
    # matplotlib is imported here, not at module level: publishing imports this module
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, dpi=80, format="png")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _continuous(values: pd.Series) -> bool:
    """Numbers summarised by their range and a histogram rather than by value counts: floats
    with more than a few values, many integers, or one value per model (seeds)."""
    if not _is_numeric(values):
        return False
    distinct = values.nunique()
    few = 6 if pd.api.types.is_float_dtype(values) else CATEGORY_LIMIT
    return distinct > few or (distinct == len(values) >= 5)


def _kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    return "float" if pd.api.types.is_float_dtype(values) else "str"


def _distribution_text(values: pd.Series) -> str:
    present = values.dropna()
    if present.empty:
        return "all null"
    if _continuous(present):
        return f"{_number(present.min())} … {_number(present.max())} (median {_number(present.median())})"
    return _value_counts_text(present)


def _value_counts_text(values: pd.Series) -> str:
    counts = values.map(_number).value_counts().sort_index()
    shown = ", ".join(f"{key}: {count}" for key, count in counts.head(CATEGORY_LIMIT).items())
    return shown + ("" if len(counts) <= CATEGORY_LIMIT else f", … ({len(counts)} values)")


def _range_text(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}–{high}"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _number(value).replace("|", "\\|").replace("\n", " ")[:120]


def _markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
