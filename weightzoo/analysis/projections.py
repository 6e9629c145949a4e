"""Hyperplane-arrangement bias of trained ConvNets (Gamba et al., "Hyperplane arrangements
of trained ConvNets are biased").

Each filter ``w`` of a conv layer (flattened, ``d = in * kh * kw`` values) defines a
hyperplane; its cosine with the diagonal of the positive orthant,
``sum(w) / (||w|| * sqrt(d))``, says how far the hyperplane leans towards it. Gamba et al.
find that training moves these cosines away from the symmetric distribution of the
initialisation: the mass at or below 0 shrinks and the mean grows. This module computes
the cosines per (model, snapshot, layer), their summary statistics and the distance of
each layer from its initialisation (snapshot 0), the pooled per-network statistics of
Gamba et al.'s ``"net"`` entry, and plots them.

Distances from init follow Gamba et al.'s ``distance_from_init_layer``: both relative to
the initial weight, ``||W - W0||_2 / ||W0||_2`` and ``||W - W0||_inf / ||W0||_inf`` (the max
absolute entry, over the flattened tensor); the absolute ``max |W - W0|`` is reported
beside them, named ``abs_linf_from_init``. Their ``"net"`` entry pools the projections of
every analysed conv layer of a network: its mean and its ECDF mass at 0.

Tensors are chosen from the layout (kind, role, shape), never by architecture name: every
conv weight except 1×1 kernels (a 1×1 filter mixes channels at one pixel and is not a
spatial filter), and linear weights on request (each row is a filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from weightzoo.analysis.records import json_records, json_safe
from weightzoo.analysis.results import StudyResult
from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.errors import InputError

HIST_BINS = np.linspace(-1.0, 1.0, 41)
KIND_ORDER = {"conv": 0, "linear": 1}
STAT_COLUMNS = ("model_id", "layout_id", "k", "layer", "tensor", "kind", "kind_index", "n_filters",
                "filter_dim", "n_zero", "cos_mean", "cos_std", "mass_le0", "rel_l2_from_init", "rel_linf_from_init",
                "abs_linf_from_init")
NETWORK_COLUMNS = ("model_id", "layout_id", "k", "n_tensors", "n_filters", "n_zero", "cos_mean", "mass_le0")


@dataclass(frozen=True)
class ProjectionScan:
    """What one pass over the weights gives: the per-(model, k, tensor) table, the per-filter
    cosines of each model's initial and last selected snapshot, the tensors left out, and the
    per-(model, k) table pooled over conv layers (Gamba et al.'s ``"net"`` entry)."""

    table: pd.DataFrame
    samples: pd.DataFrame  # model_id, layout_id, tensor, kind, kind_index, stage (init/trained), k, cos
    skipped: list[dict] = field(default_factory=list)  # layout_id, tensor, reason
    networks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(NETWORK_COLUMNS)))


def filter_cosines(weight) -> np.ndarray:
    """Cosine of each filter with the all-ones direction: ``sum(w) / (||w|| * sqrt(d))``.

    ``weight`` is a conv weight [out, in, kh, kw] (or any [out, ...]; a linear weight
    [out, in] treats each row as a filter). Returns float64 [out] in [-1, 1]: 1 for a filter
    of equal positive values, -1 for equal negative ones, 0 for a zero-sum filter, and NaN
    for an all-zero filter (it has no direction).
    """
    values = np.asarray(weight, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"expected a weight of shape [out, ...] with at least 2 dims, got shape {values.shape}")
    return _row_cosines(values.reshape(values.shape[0], -1))


def mass_le0(cosines) -> float:
    """Share of filters with cosine <= 0 among those with a defined cosine (NaN if none)."""
    values = np.asarray(cosines, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(np.mean(finite <= 0.0)) if finite.size else math.nan


def distance_from_init(weight, initial) -> dict[str, float]:
    """A tensor's distance from its initial value, as Gamba et al. measure it, and absolute.

    ``rel_l2_from_init`` = ||W - W0||_2 / ||W0||_2 and ``rel_linf_from_init`` =
    ||W - W0||_inf / ||W0||_inf (norms of the flattened tensor, as their
    ``distance_from_init_layer``); ``abs_linf_from_init`` = max |W - W0|. A relative
    distance is inf when W0 is all zeros and W is not (NaN when both are).
    """
    w, w0 = np.asarray(weight, dtype=np.float64), np.asarray(initial, dtype=np.float64)
    if w.shape != w0.shape:
        raise ValueError(f"weight has shape {w.shape} but its initial value has shape {w0.shape}")
    delta = np.abs(w - w0).ravel()
    start = np.abs(w0).ravel()
    linf = float(delta.max()) if delta.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_l2 = np.linalg.norm(delta) / np.linalg.norm(start)
        rel_linf = np.float64(linf) / (start.max() if start.size else 0.0)
    return {"rel_l2_from_init": float(rel_l2), "rel_linf_from_init": float(rel_linf), "abs_linf_from_init": linf}


def projection_tensors(layout: WeightLayout, *, include_linear: bool = False) -> tuple[list, list[dict]]:
    """The layout's tensors to analyse, as ``(spec, kind_index)`` pairs, and the filter weights
    left out as ``{tensor, kind, shape, reason}`` records.

    ``kind_index`` counts analysed tensors of one kind in layout order ("the 2nd conv
    layer"), which lines up layers of different layouts better than raw layer indices.
    """
    chosen, skipped, counts = [], [], {}
    for spec in layout.tensors:
        if spec.role != "weight" or spec.kind not in KIND_ORDER:
            continue  # biases and batch-norm parameters are not filters
        reason = _skip_reason(spec, include_linear)
        if reason:
            skipped.append({"tensor": spec.name, "kind": spec.kind, "shape": list(spec.shape), "reason": reason})
            continue
        chosen.append((spec, counts.setdefault(spec.kind, 0)))
        counts[spec.kind] += 1
    return chosen, skipped


def scan_projections(zoo, *, where: str | None = None, snapshots=None, include_linear: bool = False,
                     status: str | None = "ok", progress: Callable[[str], None] | None = None) -> ProjectionScan:
    """Read every selected model once (one storage chunk) and compute its projection statistics.

    ``where``/``snapshots``/``status`` select as :meth:`weightzoo.io.reader.Zoo.select` does.
    Snapshot 0 is always read as the reference for the distance from init, whether selected
    or not. Raises InputError when no model matches and ValueError when no selected layout has
    a tensor to analyse (naming the tensors seen).
    """
    selection = zoo.select(where, snapshots=snapshots, status=status)
    selection.require_samples()
    plan, skipped = check_projection_inputs(zoo, selection, include_linear=include_linear)
    stats, samples, networks, total = [], [], [], len(selection.models)
    # every snapshot of a model: snapshot 0 is the reference whether selected or not
    for i, (model, ks, weights) in enumerate(selection.iter_models(all_snapshots=True), start=1):
        for spec, kind_index in plan[model.layout_id]:
            model_stats, model_samples = _tensor_statistics(weights, spec, ks)
            ids = {"model_id": model.model_id, "layout_id": model.layout_id, "tensor": spec.name,
                   "kind": spec.kind, "kind_index": kind_index}
            stats += [dict(ids, layer=spec.layer, **row) for row in model_stats]
            samples.append(pd.DataFrame({**ids, **model_samples}))
        conv = [spec for spec, _ in plan[model.layout_id] if spec.kind == "conv"]
        networks += [dict(model_id=model.model_id, layout_id=model.layout_id, **row)
                     for row in network_statistics(weights, conv, ks)]
        if progress and (i == total or i % max(1, total // 10) == 0):  # about ten lines per run
            progress(f"projections: model {i}/{total} ({model.model_id})")
    network_table = pd.DataFrame(networks, columns=list(NETWORK_COLUMNS))
    return ProjectionScan(_with_labels(pd.DataFrame(stats), selection.rows, STAT_COLUMNS),
                          pd.concat(samples, ignore_index=True), skipped,
                          _with_labels(network_table, selection.rows, NETWORK_COLUMNS))


class NothingToAnalyse(InputError):
    """No selected layout has a tensor the projections can analyse; ``option`` names how the
    caller turns on linear layers (``include_linear=True`` in Python, ``--include-linear``)."""


def check_projection_inputs(zoo, selection, *, include_linear: bool = False,
                            option: str = "include_linear=True") -> tuple[dict, list]:
    """The tensors to analyse per layout and the ones left out, after the checks that need no
    weights: some tensor to analyse (NothingToAnalyse naming ``option``, the caller's spelling
    of "include linear layers") and each model's initialisation (k = 0 at epoch 0; the distance
    from init never takes a slice's first snapshot as init)."""
    plan, skipped = {}, []
    for layout_id, layout in selection.layouts.items():
        plan[layout_id], left_out = projection_tensors(layout, include_linear=include_linear)
        skipped += [dict(record, layout_id=layout_id) for record in left_out]
    if not any(plan.values()):
        raise NothingToAnalyse(_nothing_to_analyse(selection, include_linear, option))
    zoo.require_initialisation(selection.models["model_id"], "projections (distance from init)")
    return plan, skipped


def network_statistics(weights: np.ndarray, tensors: list[TensorSpec], ks) -> list[dict]:
    """Gamba et al.'s per-network ``"net"`` entry at each k: the cosines of every filter of
    ``tensors`` pooled, their mean and mass at or below 0 (all-zero filters left out and
    counted in ``n_zero``). Empty when ``tensors`` is."""
    if not tensors:
        return []
    rows = []
    for k in ks:
        pooled = np.concatenate([_row_cosines(weights[int(k), t.offset:t.offset + t.length].astype(np.float64)
                                              .reshape(t.shape[0], -1)) for t in tensors])
        finite = pooled[np.isfinite(pooled)]
        rows.append({"k": int(k), "n_tensors": len(tensors), "n_filters": int(pooled.size),
                     "n_zero": int(pooled.size - finite.size),
                     "cos_mean": float(finite.mean()) if finite.size else math.nan, "mass_le0": mass_le0(finite)})
    return rows


def projection_table(zoo, *, where: str | None = None, snapshots=None, include_linear: bool = False,
                     status: str | None = "ok", progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per (model_id, k, analysed tensor): filter-cosine statistics and distance from init.

    Columns: model_id, layout_id, k, epoch, layer, tensor, kind, kind_index, n_filters,
    filter_dim (d = in * kh * kw), n_zero (all-zero filters, left out of the statistics), cos_mean, cos_std, mass_le0,
    rel_l2_from_init, rel_linf_from_init, abs_linf_from_init, then the models table's columns (hyperparameters,
    split, status; one named like a statistic gets an ``hp_`` prefix) and the snapshot's
    metrics (test_acc, ...). See
    :func:`scan_projections` for the selection arguments and errors.
    """
    return scan_projections(zoo, where=where, snapshots=snapshots, include_linear=include_linear,
                            status=status, progress=progress).table


def summarise(scan: ProjectionScan) -> list[dict]:
    """JSON-safe records per analysed layer (kind, kind_index): means over models of cos_mean
    and mass_le0 at init (k = 0) and at each model's last selected snapshot, and of
    rel_l2_from_init at that snapshot."""
    per_model = (scan.samples.groupby(["kind", "kind_index", "stage", "model_id"])["cos"]
                 .agg(cos_mean="mean", mass_le0=mass_le0).reset_index())
    means = per_model.groupby(["kind", "kind_index", "stage"])[["cos_mean", "mass_le0"]].mean().unstack("stage")
    table = scan.table
    last = table[table["k"] == table.groupby("model_id")["k"].transform("max")]
    records = []
    for kind, kind_index in _layer_keys(scan.samples):
        rows = last[(last["kind"] == kind) & (last["kind_index"] == kind_index)]
        record = {"kind": kind, "kind_index": int(kind_index), "label": f"{kind} {kind_index}",
                  "tensors": sorted(rows["tensor"].unique()), "n_models": int(rows["model_id"].nunique()),
                  "rel_l2_from_init": float(rows["rel_l2_from_init"].mean())}
        for statistic in ("cos_mean", "mass_le0"):
            for stage in ("init", "trained"):
                record[f"{statistic}_{stage}"] = float(means.loc[(kind, kind_index), (statistic, stage)])
        records.append(json_safe(record))
    if not scan.networks.empty:
        records.append(json_safe(_network_record(scan.networks)))
    return records


def _network_record(networks: pd.DataFrame) -> dict:
    """The pooled "net" entry: means over models at k = 0 and at each model's last k."""
    init = networks[networks["k"] == 0]
    last = networks[networks["k"] == networks.groupby("model_id")["k"].transform("max")]
    record = {"kind": "net", "kind_index": -1, "label": "net (conv pooled)",
              "n_models": int(networks["model_id"].nunique())}
    for statistic in ("cos_mean", "mass_le0"):
        record[f"{statistic}_init"] = float(init[statistic].mean()) if len(init) else math.nan
        record[f"{statistic}_trained"] = float(last[statistic].mean())
    return record


def plot_histograms(samples: pd.DataFrame, path, *, title: str = "") -> None:
    """Per analysed layer, the histogram of filter cosines at init against the last selected
    snapshot, pooled over models; one subplot per layer, mass at <= 0 in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = _layer_keys(samples)
    columns = min(4, len(keys))
    n_rows = -(-len(keys) // columns)
    fig = Figure(figsize=(3.2 * columns, 2.6 * n_rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    for position, (kind, kind_index) in enumerate(keys, start=1):
        ax = fig.add_subplot(n_rows, columns, position)
        layer = samples[(samples["kind"] == kind) & (samples["kind_index"] == kind_index)]
        for stage, colour in (("init", "C0"), ("trained", "C3")):
            values = layer.loc[layer["stage"] == stage, "cos"].dropna().to_numpy()
            label = f"{stage} (≤0: {mass_le0(values):.2f})"
            ax.hist(values, bins=HIST_BINS, density=True, alpha=0.55, color=colour, label=label)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"{kind} {kind_index} ({layer['model_id'].nunique()} models)", fontsize=9)
        ax.set_xlabel("cos(filter, 1)", fontsize=8)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def plot_trajectories(table: pd.DataFrame, path, *, title: str = "") -> None:
    """cos_mean and mass_le0 over snapshot k, one line per analysed layer (mean over models)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    means = table.groupby(["kind", "kind_index", "k"])[["cos_mean", "mass_le0"]].mean()
    for position, statistic in enumerate(("cos_mean", "mass_le0"), start=1):
        ax = fig.add_subplot(1, 2, position)
        for j, (kind, kind_index) in enumerate(_layer_keys(table)):
            curve = means.loc[(kind, kind_index)][statistic]
            ax.plot(curve.index, curve.to_numpy(), marker="o", ms=3, color=f"C{j}", label=f"{kind} {kind_index}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("snapshot k")
        ax.set_ylabel(statistic)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def run_projection_study(zoo, out_dir, *, where: str | None = None, snapshots=None, include_linear: bool = False,
                         status: str | None = "ok", progress: Callable[[str], None] | None = None) -> StudyResult:
    """scan_projections, written to ``out_dir``: ``projections.parquet``, ``networks.parquet``
    (Gamba et al.'s pooled per-network entry), ``histograms.png`` and ``trajectories.png``.

    The result's rows are the :func:`summarise` records (one per analysed layer); ``details``
    holds the ``table``, ``networks`` and ``plots`` paths, ``n_models``, the ``summary`` and the filter
    weights left out (``skipped``, with reasons).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_projections(zoo, where=where, snapshots=snapshots, include_linear=include_linear,
                            status=status, progress=progress)
    table_path, plots = out / "projections.parquet", [out / "histograms.png", out / "trajectories.png"]
    scan.table.to_parquet(table_path, index=False)
    scan.networks.to_parquet(out / "networks.parquet", index=False)
    title = f"filter cosines with the all-ones direction, {zoo.handle.name} {zoo.version}"
    plot_histograms(scan.samples, plots[0], title=title)
    plot_trajectories(scan.table, plots[1], title=title)
    summary, n_models = summarise(scan), int(scan.table["model_id"].nunique())
    skipped = sorted({f"{record['tensor']} ({record['reason']})" for record in scan.skipped})
    headline = (f"{n_models} networks, {len(summary)} layers analysed"
                + (f"; left out: {', '.join(skipped)}" if skipped else ""))
    return StudyResult.of_directory("projections", out, headline=headline, rows=summary, details={
        "table": str(table_path), "networks": str(out / "networks.parquet"), "plots": [str(p) for p in plots], "n_models": n_models, "summary": summary,
        "skipped": json_records(scan.skipped)})


def _row_cosines(rows: np.ndarray) -> np.ndarray:
    """Cosines of the last axis of ``rows`` [..., n_filters, d] with the all-ones direction."""
    d = rows.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):  # zero filters give NaN on purpose
        return rows.sum(axis=-1) / (np.linalg.norm(rows, axis=-1) * math.sqrt(d))


def _skip_reason(spec: TensorSpec, include_linear: bool) -> str:
    if spec.kind == "linear" and not include_linear:
        return "linear layer (left out unless linear layers are included: --include-linear, include_linear=True)"
    if len(spec.shape) < 2:
        return f"weight of shape {list(spec.shape)} has no filter axis"
    if spec.kind == "conv" and math.prod(spec.shape[2:]) == 1:
        return "1x1 kernel (mixes channels at one position; not a spatial filter)"
    return ""


def _tensor_statistics(weights: np.ndarray, spec: TensorSpec, ks: np.ndarray) -> tuple[list[dict], dict]:
    """Statistics per selected k of one tensor, and the cosines at k = 0 and the last selected k."""
    n_filters = spec.shape[0]
    block = weights[:, spec.offset:spec.offset + spec.length].astype(np.float64)
    filters = block.reshape(len(block), n_filters, -1)
    cosines = _row_cosines(filters[ks])  # [len(ks), n_filters]
    rows = []
    for k, cos in zip(ks, cosines):
        finite = cos[np.isfinite(cos)]
        rows.append({"k": int(k), "n_filters": n_filters, "filter_dim": filters.shape[-1],
                     "n_zero": int(n_filters - finite.size),
                     "cos_mean": float(finite.mean()) if finite.size else math.nan,
                     "cos_std": float(finite.std()) if finite.size else math.nan,
                     "mass_le0": mass_le0(finite), **distance_from_init(block[k], block[0])})
    last = int(ks.max())
    samples = {"stage": ["init"] * n_filters + ["trained"] * n_filters, "k": [0] * n_filters + [last] * n_filters,
               "cos": np.concatenate([_row_cosines(filters[0]), _row_cosines(filters[last])])}
    return rows, samples


def _with_labels(stats: pd.DataFrame, rows: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Join the selection's labels (hyperparameters, split, status, snapshot metrics) on (model, k)."""
    labels = rows.drop(columns=[c for c in ("row", "layout_id") if c in rows.columns])
    # nws-cnn's hyperparameter filter_size must not collide with a statistic's column
    labels = labels.rename(columns={c: f"hp_{c}" for c in labels.columns if c in columns[3:]})
    table = stats.merge(labels, on=["model_id", "k"], how="left")
    front = list(columns[:3]) + (["epoch"] if "epoch" in table.columns else []) + list(columns[3:])
    return table[front + [c for c in table.columns if c not in front]]


def _layer_keys(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """Distinct (kind, kind_index) pairs, conv layers first, each kind in depth order."""
    pairs = {(kind, int(index)) for kind, index in zip(frame["kind"], frame["kind_index"])}
    return sorted(pairs, key=lambda pair: (KIND_ORDER.get(pair[0], len(KIND_ORDER)), pair[1]))


def _nothing_to_analyse(selection, include_linear: bool, option: str = "include_linear=True") -> str:
    seen = []
    for layout_id, layout in selection.layouts.items():
        models = selection.models[selection.models["layout_id"] == layout_id]
        architectures = sorted(models["architecture"].dropna().astype(str).unique()) \
            if "architecture" in models.columns else []
        tensors = [f"{t.name} ({t.kind} {t.role} {list(t.shape)})" for t in layout.tensors]
        seen.append(f"{layout_id} [{', '.join(architectures) or 'architecture unknown'}]: {', '.join(tensors)}")
    wanted = "conv weights with kernels larger than 1x1" + (" or linear weights" if include_linear else "")
    hint = "" if include_linear else f"; pass {option} to analyse linear layers"
    return f"no {wanted} in the selected models{hint}. Layouts seen: " + "; ".join(seen)


