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
MODELS_PER_BATCH = 256  # models whose rows are held at once (about 2 MB of rows for 4 conv layers, 21 snapshots)
SAMPLE_COLUMNS = ["model_id", "layout_id", "tensor", "kind", "kind_index", "stage", "k", "cos"]


@dataclass(frozen=True)
class ProjectionScan:
    """What one pass over the weights gives: the per-(model, k, tensor) table, the tensors left
    out, the per-(model, k) table pooled over conv layers (Gamba et al.'s ``"net"`` entry) and
    the :class:`ProjectionSummary` the study's summary and plots are drawn from."""

    table: pd.DataFrame
    summary: "ProjectionSummary"
    skipped: list[dict] = field(default_factory=list)  # layout_id, tensor, reason
    networks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(NETWORK_COLUMNS)))


@dataclass(frozen=True)
class ProjectionBatch:
    """The rows of a block of consecutive models: ``table`` and ``networks`` with their labels,
    and ``samples``, the per-filter cosines of each model's initial and last selected snapshot
    (model_id, tensor, kind, kind_index, stage, k, cos)."""

    table: pd.DataFrame
    networks: pd.DataFrame
    samples: pd.DataFrame


class ProjectionSummary:
    """Everything the summary records and the plots need, kept per layer rather than per filter
    or per network, so that a study's memory does not grow with the number of networks.

    Per (kind, kind_index): the histogram of filter cosines at init and at the last selected
    snapshot (counts over :data:`HIST_BINS`, with the pooled count at or below 0), the sums of
    each model's cos_mean and mass_le0 at those two stages, the tensors and models seen and the
    sum of rel_l2_from_init at the last k; per (kind, kind_index, k) the sums of cos_mean and
    mass_le0 over models; the pooled "net" entry's sums at init and at the last k.
    """

    def __init__(self):
        self.histograms: dict[tuple, np.ndarray] = {}  # (kind, kind_index, stage) -> counts
        self.pooled: dict[tuple, np.ndarray] = {}  # (kind, kind_index, stage) -> [n finite, n <= 0]
        self.per_model: dict[tuple, np.ndarray] = {}  # (kind, kind_index, stage) -> [n, Σ cos_mean, n_mass, Σ mass]
        self.curves: dict[tuple, np.ndarray] = {}  # (kind, kind_index, k) -> [n, Σ cos_mean, n, Σ mass_le0]
        self.last: dict[tuple, list] = {}  # (kind, kind_index) -> [tensors, n models, n l2, Σ rel_l2]
        self.network: dict[str, np.ndarray] = {}  # init/trained -> [n, Σ cos_mean, n, Σ mass_le0]
        self.n_models = 0

    def add(self, batch: ProjectionBatch) -> None:
        """Fold one batch in (its frames can then be dropped)."""
        samples = batch.samples
        cos = samples["cos"].to_numpy(dtype=np.float64)
        keys = list(zip(samples["kind"], samples["kind_index"].astype(int), samples["stage"]))
        finite = np.isfinite(cos)
        grouped = pd.DataFrame({"key": keys, "model_id": samples["model_id"].to_numpy(), "cos": cos,
                                "finite": finite, "le0": finite & (cos <= 0.0)})
        for key, part in grouped.groupby("key", sort=False):
            values = part["cos"].to_numpy()
            counts, _ = np.histogram(values[np.isfinite(values)], bins=HIST_BINS)
            self.histograms[key] = self.histograms.get(key, 0) + counts
            self.pooled[key] = self.pooled.get(key, 0) + np.array([part["finite"].sum(), part["le0"].sum()])
            per_model = part.groupby("model_id")[["cos", "finite", "le0"]].sum()
            n_finite = per_model["finite"].to_numpy()
            means = per_model["cos"].to_numpy()[n_finite > 0] / n_finite[n_finite > 0]
            masses = per_model["le0"].to_numpy()[n_finite > 0] / n_finite[n_finite > 0]
            self.per_model[key] = self.per_model.get(key, 0) + np.array(
                [len(means), means.sum(), len(masses), masses.sum()])
        table = batch.table
        if len(table):
            _add_sums(self.curves, table, ["kind", "kind_index", "k"])
            last = table[table["k"] == table.groupby("model_id")["k"].transform("max")]
            for (kind, kind_index), rows in last.groupby(["kind", "kind_index"]):
                entry = self.last.setdefault((kind, int(kind_index)), [set(), 0, 0, 0.0])
                entry[0].update(rows["tensor"])
                entry[1] += rows["model_id"].nunique()  # a batch holds whole models
                l2 = rows["rel_l2_from_init"].to_numpy(dtype=np.float64)
                entry[2] += int((~np.isnan(l2)).sum())  # inf (an all-zero init) counts, as in a mean
                entry[3] += float(np.nansum(l2))
            self.n_models += table["model_id"].nunique()
        networks = batch.networks
        if len(networks):
            last = networks["k"] == networks.groupby("model_id")["k"].transform("max")
            for stage, rows in (("init", networks[networks["k"] == 0]), ("trained", networks[last])):
                _add_sums(self.network, rows.assign(stage=stage), ["stage"])

    def records(self) -> list[dict]:
        """JSON-safe records per analysed layer: means over models of cos_mean and mass_le0 at
        init (k = 0) and at each model's last selected snapshot, of rel_l2_from_init at that
        snapshot, and the pooled "net" entry last (when conv layers were analysed)."""
        records = []
        for kind, kind_index in self.layers():
            tensors, n_models, n_l2, sum_l2 = self.last.get((kind, kind_index), [set(), 0, 0, 0.0])
            record = {"kind": kind, "kind_index": kind_index, "label": f"{kind} {kind_index}",
                      "tensors": sorted(tensors), "n_models": n_models,
                      "rel_l2_from_init": sum_l2 / n_l2 if n_l2 else math.nan}
            for statistic, (n, total) in (("cos_mean", (0, 1)), ("mass_le0", (2, 3))):
                for stage in ("init", "trained"):
                    sums = self.per_model.get((kind, kind_index, stage))
                    record[f"{statistic}_{stage}"] = _mean(sums, n, total)
            records.append(json_safe(record))
        if self.network:
            record = {"kind": "net", "kind_index": -1, "label": "net (conv pooled)",
                      "n_models": int(self.network["trained"][0]) if "trained" in self.network else 0}
            for statistic, (n, total) in (("cos_mean", (0, 1)), ("mass_le0", (2, 3))):
                for stage in ("init", "trained"):
                    record[f"{statistic}_{stage}"] = _mean(self.network.get(stage), n, total)
            records.append(json_safe(record))
        return records

    def layers(self) -> list[tuple[str, int]]:
        """Distinct (kind, kind_index) pairs, conv layers first, each kind in depth order."""
        pairs = {(kind, int(index)) for kind, index, _ in self.histograms}
        return sorted(pairs, key=lambda pair: (KIND_ORDER.get(pair[0], len(KIND_ORDER)), pair[1]))

    def curve(self, kind: str, kind_index: int, statistic: str) -> tuple[np.ndarray, np.ndarray]:
        """(k, mean over models of ``statistic``) of one layer, in k order."""
        n, total = {"cos_mean": (0, 1), "mass_le0": (2, 3)}[statistic]
        ks = sorted(k for key_kind, key_index, k in self.curves if (key_kind, key_index) == (kind, kind_index))
        return np.array(ks), np.array([_mean(self.curves[(kind, kind_index, k)], n, total) for k in ks])


def _add_sums(sums: dict, frame: pd.DataFrame, by: list[str]) -> None:
    """Add per-group [n finite cos_mean, Σ cos_mean, n finite mass_le0, Σ mass_le0] into ``sums``."""
    cos, mass = frame["cos_mean"].astype(float), frame["mass_le0"].astype(float)
    parts = pd.DataFrame({c: frame[c].to_numpy() for c in by}).assign(
        n_cos=cos.notna().to_numpy(), cos=cos.fillna(0.0).to_numpy(),
        n_mass=mass.notna().to_numpy(), mass=mass.fillna(0.0).to_numpy())
    for key, row in parts.groupby(by)[["n_cos", "cos", "n_mass", "mass"]].sum().iterrows():
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(int(v) if isinstance(v, (np.integer,)) else v for v in key)
        key = key[0] if len(by) == 1 else key
        sums[key] = sums.get(key, 0) + row.to_numpy(dtype=np.float64)


def _mean(sums, n: int, total: int) -> float:
    return float(sums[total] / sums[n]) if sums is not None and sums[n] else math.nan


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
    """Read every selected model once (one storage chunk) and compute its projection statistics,
    in memory (see :func:`run_projection_study` for the streaming study).

    ``where``/``snapshots``/``status`` select as :meth:`weightzoo.io.reader.Zoo.select` does.
    Snapshot 0 is always read as the reference for the distance from init, whether selected
    or not. Raises InputError when no model matches and ValueError when no selected layout has
    a tensor to analyse (naming the tensors seen).
    """
    selection, plan, skipped = _select(zoo, where, snapshots, status, include_linear)
    summary, tables, networks = ProjectionSummary(), [], []
    for batch in iter_projection_batches(selection, plan, progress=progress):
        summary.add(batch)
        tables.append(batch.table)
        networks.append(batch.networks)
    return ProjectionScan(pd.concat(tables, ignore_index=True), summary, skipped,
                          pd.concat(networks, ignore_index=True))


def iter_projection_batches(selection, plan: dict, *, models_per_batch: int | None = None,
                            progress: Callable[[str], None] | None = None):
    """The selection's projection rows as :class:`ProjectionBatch` es of ``models_per_batch``
    consecutive models (storage order), each with its labels joined: what is held at once is
    one batch, whatever the number of networks."""
    rows = selection.rows
    total, models_per_batch = len(selection.models), models_per_batch or MODELS_PER_BATCH
    stats, samples, networks, ids = [], [], [], []

    def batch() -> ProjectionBatch:
        wanted = _labels(rows[rows["model_id"].isin(ids)])
        network_table = pd.DataFrame(networks, columns=list(NETWORK_COLUMNS))
        stat_table = pd.DataFrame(stats, columns=list(STAT_COLUMNS))
        sample_table = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=SAMPLE_COLUMNS)
        return ProjectionBatch(_with_labels(stat_table, wanted, STAT_COLUMNS),
                               _with_labels(network_table, wanted, NETWORK_COLUMNS), sample_table)

    # every snapshot of a model: snapshot 0 is the reference whether selected or not
    for i, (model, ks, weights) in enumerate(selection.iter_models(all_snapshots=True), start=1):
        for spec, kind_index in plan[model.layout_id]:
            model_stats, model_samples = _tensor_statistics(weights, spec, ks)
            keys = {"model_id": model.model_id, "layout_id": model.layout_id, "tensor": spec.name,
                    "kind": spec.kind, "kind_index": kind_index}
            stats += [dict(keys, layer=spec.layer, **row) for row in model_stats]
            samples.append(pd.DataFrame({**keys, **model_samples}))
        conv = [spec for spec, _ in plan[model.layout_id] if spec.kind == "conv"]
        networks += [dict(model_id=model.model_id, layout_id=model.layout_id, **row)
                     for row in network_statistics(weights, conv, ks)]
        ids.append(model.model_id)
        if progress and (i == total or i % max(1, total // 10) == 0):  # about ten lines per run
            progress(f"projections: model {i}/{total} ({model.model_id})")
        if len(ids) == models_per_batch:
            yield batch()
            stats, samples, networks, ids = [], [], [], []
    if ids:
        yield batch()


def _select(zoo, where, snapshots, status, include_linear):
    selection = zoo.select(where, snapshots=snapshots, status=status)
    selection.require_samples()
    plan, skipped = check_projection_inputs(zoo, selection, include_linear=include_linear)
    return selection, plan, skipped


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


def plot_histograms(summary: ProjectionSummary, path, *, title: str = "") -> None:
    """Per analysed layer, the histogram of filter cosines at init against the last selected
    snapshot, pooled over models; one subplot per layer, mass at <= 0 in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = summary.layers()
    columns = min(4, len(keys))
    n_rows = -(-len(keys) // columns)
    fig = Figure(figsize=(3.2 * columns, 2.6 * n_rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    widths = np.diff(HIST_BINS)
    for position, (kind, kind_index) in enumerate(keys, start=1):
        ax = fig.add_subplot(n_rows, columns, position)
        for stage, colour in (("init", "C0"), ("trained", "C3")):
            counts = np.asarray(summary.histograms.get((kind, kind_index, stage), np.zeros(len(widths))), float)
            n_finite, n_le0 = summary.pooled.get((kind, kind_index, stage), (0, 0))
            density = counts / (counts.sum() * widths) if counts.sum() else counts
            mass = n_le0 / n_finite if n_finite else math.nan
            ax.hist(HIST_BINS[:-1], bins=HIST_BINS, weights=density, alpha=0.55, color=colour,
                    label=f"{stage} (≤0: {mass:.2f})")
        ax.axvline(0.0, color="black", lw=0.8)
        n_models = summary.last.get((kind, kind_index), [None, 0])[1]
        ax.set_title(f"{kind} {kind_index} ({n_models} models)", fontsize=9)
        ax.set_xlabel("cos(filter, 1)", fontsize=8)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def plot_trajectories(summary: ProjectionSummary, path, *, title: str = "") -> None:
    """cos_mean and mass_le0 over snapshot k, one line per analysed layer (mean over models)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    for position, statistic in enumerate(("cos_mean", "mass_le0"), start=1):
        ax = fig.add_subplot(1, 2, position)
        for j, (kind, kind_index) in enumerate(summary.layers()):
            ks, means = summary.curve(kind, kind_index, statistic)
            ax.plot(ks, means, marker="o", ms=3, color=f"C{j}", label=f"{kind} {kind_index}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("snapshot k")
        ax.set_ylabel(statistic)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def run_projection_study(zoo, out_dir, *, where: str | None = None, snapshots=None, include_linear: bool = False,
                         status: str | None = "ok", progress: Callable[[str], None] | None = None) -> StudyResult:
    """The projections of the selected networks, streamed to ``out_dir`` one batch of models at
    a time (memory does not grow with the number of networks): ``projections.parquet`` (the
    :func:`projection_table` rows), ``networks.parquet`` (Gamba et al.'s pooled per-network
    entry), ``histograms.png`` and ``trajectories.png``.

    The result's rows are the :meth:`ProjectionSummary.records` (one per analysed layer, then
    the pooled "net" entry); ``details`` holds the ``table``, ``networks`` and ``plots`` paths,
    ``n_models``, the ``summary`` and the filter weights left out (``skipped``, with reasons).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selection, plan, left_out = _select(zoo, where, snapshots, status, include_linear)
    table_path, networks_path = out / "projections.parquet", out / "networks.parquet"
    plots = [out / "histograms.png", out / "trajectories.png"]
    summary = ProjectionSummary()
    label_types = _arrow_types(_labels(selection.rows))
    with _TableWriter(table_path, label_types) as tables, _TableWriter(networks_path, label_types) as networks:
        for batch in iter_projection_batches(selection, plan, progress=progress):
            summary.add(batch)
            tables.write(batch.table)
            networks.write(batch.networks)
    title = f"filter cosines with the all-ones direction, {zoo.handle.name} {zoo.version}"
    plot_histograms(summary, plots[0], title=title)
    plot_trajectories(summary, plots[1], title=title)
    records, n_models = summary.records(), summary.n_models
    by_reason: dict[str, set] = {}
    for record in left_out:
        by_reason.setdefault(record["reason"], set()).add(record["tensor"])
    skipped = [f"{', '.join(sorted(tensors))} ({reason})" for reason, tensors in sorted(by_reason.items())]
    headline = (f"{n_models} networks, {len(records)} layers analysed"
                + (f"; left out: {'; '.join(skipped)}" if skipped else ""))
    return StudyResult.of_directory("projections", out, headline=headline, rows=records, details={
        "table": str(table_path), "networks": str(networks_path), "plots": [str(p) for p in plots],
        "n_models": n_models, "summary": records, "skipped": json_records(left_out)})


class _TableWriter:
    """A Parquet file written one batch (row group) at a time; every batch is cast to the first
    one's schema, with the label columns' types taken from the whole selection (a batch whose
    labels are all null keeps the column's type)."""

    def __init__(self, path: Path, label_types: dict):
        self.path, self.label_types, self.writer, self.empty = path, label_types, None, None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if frame.empty:  # its columns have no types to go by (e.g. a batch of linear-only models)
            self.empty = frame
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            schema = pa.schema([pa.field(f.name, self.label_types.get(f.name, f.type)) for f in table.schema],
                               metadata=table.schema.metadata)
            self.writer = pq.ParquetWriter(self.path, schema)
        self.writer.write_table(table.cast(self.writer.schema))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
        elif self.empty is not None and exc[0] is None:
            self.empty.to_parquet(self.path, index=False)


def _arrow_types(labels: pd.DataFrame) -> dict:
    """Arrow type per label column, inferred from every selected row (hp_-renamed names too)."""
    import pyarrow as pa

    types = {f.name: f.type for f in pa.Schema.from_pandas(labels, preserve_index=False)}
    return {**types, **{f"hp_{name}": t for name, t in types.items()}}


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


def _labels(rows: pd.DataFrame) -> pd.DataFrame:
    """The selection's labels per (model, k): hyperparameters, split, status, snapshot metrics."""
    return rows.drop(columns=[c for c in ("row", "layout_id") if c in rows.columns])


def _with_labels(stats: pd.DataFrame, labels: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Join labels (:func:`_labels`) on (model, k)."""
    # nws-cnn's hyperparameter filter_size must not collide with a statistic's column
    labels = labels.rename(columns={c: f"hp_{c}" for c in labels.columns if c in columns[3:]})
    table = stats.merge(labels, on=["model_id", "k"], how="left")
    front = list(columns[:3]) + (["epoch"] if "epoch" in table.columns else []) + list(columns[3:])
    return table[front + [c for c in table.columns if c not in front]]


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


