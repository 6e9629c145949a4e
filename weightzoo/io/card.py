"""The dataset card of a version: ``CARD.md`` with PNG plots, from the version's Parquet files.

What it shows: the version's provenance, counts (models, snapshots, by status, split,
dataset and layout), every hyperparameter's distribution (a table and
``card/hyperparameters.png``, drawn as the spec's distributions say: :mod:`weightzoo.io.card_plots`),
test accuracy over snapshots by dataset (test loss for datasets without accuracy;
``card/accuracy.png``), the runs that did not end ``ok``, and the diff against the parent
version (:func:`weightzoo.io.diff.summarise_diff`).

Every number comes from DuckDB queries over the files (:mod:`weightzoo.io.card_queries`), so
the card's memory does not grow with the number of networks. It reads no store, so the
publisher writes it into the version's incomplete folder before it appears: the card is part of
the atomic version, and an error while writing it aborts the publish before the tag (nothing is
lost; the staged models stay, so a re-run resumes).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

from weightzoo.io.card_plots import (MAX_PANELS, draw_accuracy, draw_hyperparameters, number_text, plan_panels,
                                     save_png, spec_distributions)
from weightzoo.io.card_queries import FEW_VALUES, CardData, ColumnSummary, TableSource
from weightzoo.io.diff import summarise_diff
from weightzoo.io.records import Manifest

CARD_NAME = "CARD.md"
PLOT_DIR = "card"
MAX_LISTED = 20  # model ids listed per section; the counts are always complete


def write_card(version_dir: Path, tables: Mapping[str, TableSource], manifest: Manifest,
               parent_tables: Mapping[str, TableSource] | None = None) -> Path:
    """Write ``CARD.md`` and its plots (``card/*.png``) into ``version_dir``; return the card's path.

    ``tables`` maps ``models``, ``snapshots`` and ``layouts`` (optionally with ``.parquet``) to
    the version's Parquet files: local paths or :class:`pyarrow.parquet.ParquetFile`; ``manifest``
    is the version's manifest. ``parent_tables`` are the parent version's ``models`` and
    ``snapshots`` in the same form (e.g. ParquetFiles in object storage); None when the manifest
    names no parent. Plots are written first and the card last, each through a temporary name,
    so a ``CARD.md`` is always complete.
    """
    version_dir = Path(version_dir)
    plots = version_dir / PLOT_DIR
    plots.mkdir(parents=True, exist_ok=True)
    compare = parent_tables is not None and bool(manifest.parent)
    with tempfile.TemporaryDirectory(prefix="weightzoo-card-") as scratch, \
            CardData(tables, parent_tables if compare else None, Path(scratch)) as data:
        summaries = data.column_summaries(data.hyperparameter_columns())
        sections = [
            _header(manifest),
            _counts_section(data),
            _hyperparameter_section(data, summaries, manifest, plots / "hyperparameters.png"),
            _accuracy_section(data, plots / "accuracy.png"),
            _failed_section(data, summaries),
            _diff_section(data, manifest) if compare else _no_parent_section(),
            _files_section(manifest),
        ]
    path = version_dir / CARD_NAME
    _write_text(path, "\n\n".join(sections) + "\n")
    return path


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


def _counts_section(data: CardData) -> str:
    (n_models, low, high), = data.rows("SELECT count(*), min(n_snapshots), max(n_snapshots) FROM models")
    (n_snapshots,), = data.rows("SELECT count(*) FROM snapshots")
    per_model = "-" if low is None else (str(low) if low == high else f"{low}–{high}")
    rows = [["models", n_models], ["snapshots", n_snapshots], ["snapshots per model", per_model]]
    for column in ("status", "split", "dataset", "layout_id"):
        if column in data.columns("models"):
            rows.append([f"by {column}", _counts_text(*data.value_counts("models", column, FEW_VALUES))])
    text = "## Counts\n\n" + _markdown_table(["what", "count"], rows)
    if data.has("layouts"):
        layouts, n_layouts = data.layout_rows(MAX_LISTED)
        if layouts:
            rows = [[f"`{layout_id}`", int(n), int(size), int(used)] for layout_id, n, size, used in layouts]
            text += "\n\n" + _markdown_table(["layout", "tensors", "parameters", "models"], rows)
            text += _more(n_layouts, len(layouts))
    return text


def _hyperparameter_section(data: CardData, summaries: list[ColumnSummary], manifest: Manifest, plot: Path) -> str:
    if not summaries:
        _remove(plot)
        return "## Hyperparameters\n\nThe models table has no hyperparameter columns."
    distributions = spec_distributions(manifest.specs)
    rows = [[f"`{s.name}`", s.kind, _spec_text(distributions, s.name), _distribution_text(s), s.nulls]
            for s in summaries]
    text = "## Hyperparameters\n\n" + _markdown_table(["column", "type", "spec", "values", "nulls"], rows)
    panels, left_out = plan_panels(summaries, distributions)
    if not panels:
        _remove(plot)
        return text
    shown = panels[:MAX_PANELS]
    histograms = {p.column: data.histogram(p.summary, p.log) for p in shown if p.kind == "histogram"}
    save_png(draw_hyperparameters(shown, histograms), plot)
    more = "" if len(panels) <= MAX_PANELS else f" (the first {MAX_PANELS} of {len(panels)})"
    how = "; ".join(f"`{p.column}`: {'log' if p.log else 'linear'} axis, {p.reason}" if p.kind == "histogram"
                    else f"`{p.column}`: {p.reason}" for p in shown)
    text += (f"\n\nDistributions of the hyperparameters that vary{more}:\n\n![hyperparameters]({PLOT_DIR}/{plot.name})"
             f"\n\nHow each panel is drawn: {how}.")
    if left_out:
        text += " Not plotted: " + ", ".join(f"`{column}` ({why})" for column, why in left_out) + "."
    if not distributions:
        text += (" The spec gives no hyperparameter distributions (an imported zoo), so axes follow the values: "
                 "log where they are positive, span a decade or more and their median sits nearer the middle "
                 "on a log axis.")
    return text


def _accuracy_section(data: CardData, plot: Path) -> str:
    curves = data.accuracy_curves()
    if curves.empty:
        _remove(plot)
        return "## Accuracy over snapshots\n\nNo snapshot holds a test accuracy or loss."
    rows = []
    for (dataset, metric), curve in curves.groupby(["dataset", "metric"], sort=True):
        first, last = curve.iloc[0], curve.iloc[-1]
        rows.append([dataset, metric, int(last["n"]), f"{first['mean']:.3f}", f"{last['mean']:.3f}",
                     f"{last['q25']:.3f}–{last['q75']:.3f}", int(last["k"])])
    save_png(draw_accuracy(curves), plot)
    headers = ["dataset", "metric", "models", "mean at k=0", "mean at last k", "last k: 25–75 %", "last k"]
    return ("## Accuracy over snapshots\n\nMean over the models with a value at each snapshot k; k = 0 is the "
            "initialisation. Diverged runs have no value after they diverged. Quartiles are approximate "
            "(t-digest).\n\n" + _markdown_table(headers, rows) + f"\n\n![accuracy by dataset]({PLOT_DIR}/{plot.name})")


def _failed_section(data: CardData, summaries: list[ColumnSummary]) -> str:
    title = "## Diverged and failed runs"
    names = {s.name for s in summaries}
    context = [c for c in ("dataset", "optimizer", "lr", "activation") if c in names]
    by_status, listed = data.runs_not_ok(context, MAX_LISTED)
    n_failed = sum(n for _, n in by_status)
    if not n_failed:
        return f"{title}\n\nEvery run ended with status `ok`."
    (n_models,), = data.rows("SELECT count(*) FROM models")
    rows = [[f"`{row['model_id']}`", row["status"], *[_cell(row[c]) for c in context], _cell(row["message"])]
            for _, row in listed.iterrows()]
    return (f"{title}\n\n{n_failed} of {n_models} runs did not end `ok` "
            f"({_counts_text(by_status, len(by_status))}); their rows are kept, with NaN metrics after the failure.\n\n"
            + _markdown_table(["model", "status", *context, "message"], rows) + _more(n_failed, len(listed)))


def _no_parent_section() -> str:
    return ("## Changes against the parent version\n\nThe manifest names no parent version (a first version, or a "
            "selection published without extending), so there is nothing to compare against.")


def _diff_section(data: CardData, manifest: Manifest) -> str:
    diff = summarise_diff(data, MAX_LISTED)
    counts = diff.counts
    lines = [f"## Changes against the parent version ({manifest.parent})", "",
             _markdown_table(["added", "removed", "changed", "unchanged"],
                             [[counts["added"], counts["removed"], counts["changed"], counts["unchanged"]]])]
    for state in ("added", "removed"):
        ids = diff.listed[state]
        if ids:
            lines += ["", f"{state.capitalize()}: " + ", ".join(f"`{i}`" for i in ids)
                      + ("" if counts[state] <= len(ids) else f" and {counts[state] - len(ids)} more")]
    if diff.listed["changed"]:
        fields = ", ".join(f"`{field}` ({n})" for field, n in diff.field_counts.items())
        rows = [[f"`{model_id}`", ", ".join(changed)] for model_id, changed in diff.listed["changed"].items()]
        lines += ["", f"Changed (same model_id, different values): {fields}.", "",
                  _markdown_table(["model", "fields"], rows) + _more(counts["changed"], len(rows))]
    return "\n".join(lines)


def _files_section(manifest: Manifest) -> str:
    rows = [[f"`{name}`", f"`{digest}`"] for name, digest in sorted(manifest.tables.items())]
    text = ("## Files\n\nRead them with pandas, pyarrow or DuckDB (`weightzoo query`); weights are in the "
            "Icechunk repository under the tag of this version.")
    return text + ("\n\n" + _markdown_table(["table", "sha256"], rows) if rows else "")


def _spec_text(distributions: dict, column: str) -> str:
    return distributions.get(column) or ("-" if column not in distributions else "mixed")


def _distribution_text(summary: ColumnSummary) -> str:
    if not summary.present:
        return "all null"
    if summary.counts is not None and not summary.continuous:
        return _counts_text(summary.counts, summary.distinct)
    if summary.numeric:
        return (f"{number_text(summary.minimum)} … {number_text(summary.maximum)} "
                f"(median ≈ {number_text(summary.median)})")
    return f"≈ {summary.distinct} distinct values, `{summary.minimum}` … `{summary.maximum}`"


def _counts_text(counts, n_distinct: int) -> str:
    shown = ", ".join(f"{number_text(value)}: {n}" for value, n in counts)
    return shown + ("" if n_distinct <= len(counts) else f", … ({n_distinct} values)")


def _more(total: int, shown: int) -> str:
    return "" if total <= shown else f"\n\n… and {total - shown} more."


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return number_text(value).replace("|", "\\|").replace("\n", " ")[:120]


def _markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
