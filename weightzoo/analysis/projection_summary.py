"""What the projection study keeps while it streams (see :mod:`weightzoo.analysis.projections`):
per-layer sums instead of per-filter rows, so memory does not grow with the number of
networks, and the two plots drawn from them (the cosine histograms at init and after
training, and cos_mean / mass_le0 against snapshot k)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from weightzoo.analysis.records import json_safe

HIST_BINS = np.linspace(-1.0, 1.0, 41)
KIND_ORDER = {"conv": 0, "linear": 1}


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

    def add(self, batch) -> None:
        """Fold one :class:`~weightzoo.analysis.projections.ProjectionBatch` in (its frames can then be dropped)."""
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
