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

from weightzoo.analysis.projection_summary import KIND_ORDER, ProjectionSummary, plot_histograms, plot_trajectories
from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.errors import InputError

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
    summary: ProjectionSummary
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


