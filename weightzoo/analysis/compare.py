"""``weightzoo compare``: every method on the same folds of one target, in one table.

The study is cut in three so that a flow can run the method groups as parallel tasks:
:func:`plan` (snapshots, truth, folds, and whether there are enough networks),
:func:`predict_group` (out-of-fold predictions of methods that share a process — the s(W)
methods share one feature table, the two SANE probes one autoencoder per fold), and
:func:`write_study` (scores, table, curve, plot, summary). :func:`run_compare_study` chains
them in this process; :func:`run_compare` adds the result cache.

Files: ``results.parquet``/``results.csv`` (target, method, metric, mean, ci_low, ci_high,
chance, n_networks, n_samples, status, protocol, snapshots), ``curve.parquet``/``curve.csv``
(the same per snapshot k), ``predictions.parquet`` (every out-of-fold prediction, with its
fold), ``compare.png`` and ``summary.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from weightzoo.analysis import protocol as protocols
from weightzoo.analysis.baselines import DEFAULT_METHODS, methods_for
from weightzoo.analysis.cache import cached_result, result_dir, stored_result
from weightzoo.analysis.compare_plots import plot_comparison, summary_markdown
from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.core.snapshots import SnapshotChoice

# Methods run together in one process (one task): they share a feature table or an autoencoder.
GROUPS = (("majority", "stats-linear", "stats-boosted"), ("raw-linear",), ("meta-classifier",),
          ("sane-linear", "sane-boosted"), ("nfn",))


@dataclass(frozen=True)
class Plan:
    """What every method of one comparison shares."""

    target: str
    snapshots: SnapshotChoice
    truth: pd.DataFrame
    folds: list
    categorical: bool
    status: str  # "ok", or why there are too few networks
    where: str | None = None  # the networks compared (a pandas query on models.parquet); None: all


def plan(zoo, target: str, protocol: protocols.Protocol, snapshots=None, where: str | None = None) -> Plan:
    """The snapshot choice (k >= 1 by default for hyperparameters), truth, folds and status of
    the networks ``where`` selects (all by default; e.g. one layout, for the neural functional)."""
    choice = protocols.snapshot_choice(zoo, target, snapshots)
    truth = protocols.truth_table(zoo, target, choice, where)
    categorical = protocols.target_is_categorical(truth)
    folds = protocols.make_folds(truth, protocol, categorical)
    return Plan(target, choice, truth, folds, categorical, protocols.check(truth, folds, protocol, categorical),
                where)


def groups_of(names) -> list[list[str]]:
    """``names`` cut into the method groups that share a process (order kept within a group)."""
    names = list(names)
    groups = [[n for n in group if n in names] for group in GROUPS]
    return [g for g in groups if g]


def predict_group(zoo, names, the_plan: Plan, seed: int, options: dict | None = None, progress=None) -> dict:
    """Out-of-fold predictions of the methods ``names``: per name a DataFrame, or the status
    ``failed: <error>`` when the method could not run (the other methods still run)."""
    methods = methods_for(names, options)
    out = {}
    for name, method in methods.items():
        try:
            out[name] = protocols.run_method(method, zoo, the_plan.folds, the_plan.target, the_plan.snapshots,
                                             seed, progress, name)
        except Exception as error:  # noqa: BLE001 - reported in the method's row
            out[name] = f"failed: {type(error).__name__}: {error}"
    return out


def reusable_predictions(zoo, parameters: dict, the_plan: Plan) -> dict[str, pd.DataFrame]:
    """Out-of-fold predictions of the methods that succeeded in the stored result of these
    ``parameters`` (one that is run again because other methods failed): the same networks,
    folds and seed give the same predictions, so only the failed methods need to run.
    Predictions are stored as text; they are read back as the target's values."""
    stored = stored_result(zoo, "compare", parameters)
    path = result_dir(zoo, "compare", parameters) / "predictions.parquet"
    if stored is None or not path.exists():
        return {}
    succeeded = {row["method"] for row in stored.rows if row.get("status") == "ok"}
    succeeded -= {row["method"] for row in stored.failures}
    frame = pd.read_parquet(path)
    if the_plan.categorical:
        values = {str(value): value for value in the_plan.truth["truth"].unique()}
        frame["prediction"] = frame["prediction"].map(values)
    else:
        frame["prediction"] = pd.to_numeric(frame["prediction"], errors="coerce")
    return {name: part.drop(columns="method").reset_index(drop=True)
            for name, part in frame.groupby("method", sort=False) if name in succeeded}


def write_study(zoo, out, the_plan: Plan, predictions: dict, protocol: protocols.Protocol,
                names) -> StudyResult:
    """Score ``predictions`` and write the table, curve, predictions, plot and summary."""
    out = Path(out)
    names = list(names)
    if the_plan.status != "ok":
        results = protocols.status_rows(the_plan.target, names, the_plan.status, protocol, the_plan.snapshots,
                                        the_plan.categorical)
        curve = pd.DataFrame(columns=list(protocols.CURVE_COLUMNS))
    else:
        ordered = {name: predictions[name] for name in names}
        results, curve = protocols.score_methods(the_plan.truth, ordered, the_plan.target, protocol,
                                                 the_plan.snapshots)
    results.to_parquet(out / "results.parquet", index=False)
    results.to_csv(out / "results.csv", index=False)
    curve.to_parquet(out / "curve.parquet", index=False)
    curve.to_csv(out / "curve.csv", index=False)
    frames = [frame.assign(method=name, prediction=frame["prediction"].astype(str))
              for name, frame in predictions.items() if isinstance(frame, pd.DataFrame)]
    if frames:
        pd.concat(frames, ignore_index=True).to_parquet(out / "predictions.parquet", index=False)
    n_networks = the_plan.truth["model_id"].nunique()
    zoo_name = f"{zoo.handle.name} {zoo.version}" + (f" (networks where {the_plan.where})" if the_plan.where else "")
    title = f"{the_plan.target} on {zoo_name}: {protocol.text}, snapshots {the_plan.snapshots}"
    plot_comparison(results, curve, out / "compare.png", title=title)
    (out / "summary.md").write_text(summary_markdown(results, target=the_plan.target,
                                                     zoo_name=zoo_name,
                                                     protocol=protocol.text, snapshots=the_plan.snapshots.text,
                                                     n_networks=n_networks))
    records = json_records(results)
    keys = ("method", "metric", "mean", "ci_low", "ci_high", "chance", "n_networks", "status")
    rows = [{key: record[key] for key in keys} for record in records]
    headline = (f"{the_plan.target} ({'classification' if the_plan.categorical else 'regression'}): "
                f"{len(names)} methods, {protocol.text}, snapshots {the_plan.snapshots}, {n_networks} networks"
                + (f" where {the_plan.where}" if the_plan.where else "") + ("" if the_plan.status == "ok" else f" — {the_plan.status}"))
    return StudyResult.of_directory("compare", out, headline=headline, rows=rows, details={
        "target": the_plan.target, "where": the_plan.where, "protocol": protocol.text, "protocol_settings": asdict(protocol),
        "snapshots": the_plan.snapshots.text, "status": the_plan.status, "methods": names,
        "results": str(out / "results.parquet"), "curve": str(out / "curve.parquet"),
        "plot": str(out / "compare.png"), "summary": str(out / "summary.md"), "records": records,
        "curve_records": json_records(curve)})


def parameters_of(target: str, names, protocol: protocols.Protocol, snapshots: SnapshotChoice,
                  options: dict | None, where: str | None = None) -> dict:
    """The cache key's parameters of a comparison (``where`` only when set: the keys of
    comparisons of every network stay what they were)."""
    return {"target": target, "methods": list(names), "protocol": asdict(protocol), "snapshots": snapshots.text,
            "options": {k: v for k, v in sorted((options or {}).items()) if v is not None},
            **({"where": where} if where else {})}


def run_compare_study(zoo, out, target: str, *, methods=None, protocol: protocols.Protocol = protocols.Protocol(),
                      snapshots=None, options: dict | None = None, where: str | None = None,
                      progress=None) -> StudyResult:
    """:func:`plan`, every method group in turn, :func:`write_study` — all in this process."""
    names = list(methods_for(methods or DEFAULT_METHODS, options))
    the_plan = plan(zoo, target, protocol, snapshots, where)
    predictions = {}
    if the_plan.status == "ok":
        predictions = reusable_predictions(zoo, parameters_of(target, names, protocol, the_plan.snapshots,
                                                              options, where), the_plan)
        if predictions and progress:
            progress(f"re-running the methods that failed; reusing the stored predictions of {', '.join(predictions)}")
        for group in groups_of([n for n in names if n not in predictions]):
            predictions.update(predict_group(zoo, group, the_plan, protocol.seed, options, progress))
    return write_study(zoo, out, the_plan, predictions, protocol, names)


def run_compare(zoo, target: str, *, methods=None, protocol: protocols.Protocol = protocols.Protocol(),
                snapshots=None, options: dict | None = None, where: str | None = None,
                progress=None) -> StudyResult:
    """:func:`run_compare_study`, cached under ``analyses/<version>/compare/<key>/``."""
    names = list(methods_for(methods or DEFAULT_METHODS, options))
    choice = protocols.snapshot_choice(zoo, target, snapshots)
    parameters = parameters_of(target, names, protocol, choice, options, where)
    return cached_result(zoo, "compare", parameters, lambda out: run_compare_study(
        zoo, out, target, methods=names, protocol=protocol, snapshots=choice, options=options, where=where,
        progress=progress))
