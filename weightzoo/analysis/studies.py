"""Running a study over a zoo version with its results cached under ``analyses/``.

A result lives in ``<zoo>/analyses/<version>/<study>/<key>/`` where ``key`` is the
fingerprint of (version, the version's Icechunk snapshot, the parameters, the analysis
code version). It is written into a ``.incomplete`` directory and renamed, so a result
directory is either complete or absent, and a second run with the same inputs loads it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from weightzoo.analysis.meta_classifier import evaluate, train_meta_classifier
from weightzoo.analysis.records import json_records
from weightzoo.core.fingerprint import fingerprint
from weightzoo.io.location import staging_root

ANALYSIS_CODE_VERSION = "weightzoo-analysis-3"  # bump when a study's results change meaning


def result_dir(zoo, study: str, parameters: dict) -> Path:
    """Where the result of ``study`` with ``parameters`` on this zoo version lives: under the
    zoo's ``analyses/``, or for a zoo in object storage under its local staging root."""
    key = fingerprint(zoo.version, zoo.manifest.get("icechunk_snapshot_id"), study, parameters,
                      ANALYSIS_CODE_VERSION)[:16]
    return staging_root(zoo.root) / "analyses" / zoo.version / study / key


def cached_study(zoo, study: str, parameters: dict, produce, marker: str) -> tuple[Path, bool]:
    """The result directory of ``study`` with ``parameters``, producing it if absent.

    ``produce(tmp_dir)`` writes the result's files into a fresh directory that is renamed
    into place only when it returns, so an interrupted run leaves nothing behind; a result
    is complete when its ``marker`` file exists. Returns ``(path, cached)``.
    """
    target = result_dir(zoo, study, parameters)
    if (target / marker).exists():
        return target, True
    with _incomplete(target) as tmp:
        (tmp / "parameters.json").write_text(json.dumps(parameters, indent=2, default=str))
        produce(tmp)
    return target, False


def cached_result(zoo, study: str, parameters: dict, run) -> dict:
    """``run(out_dir) -> dict`` once per (version, study, parameters, code); later calls
    return the stored dict. The dict is kept as ``summary.json`` with paths pointing at the
    final directory; ``path`` and ``cached`` are added."""
    target = result_dir(zoo, study, parameters)

    def produce(tmp: Path) -> None:
        text = json.dumps(run(tmp), default=str).replace(str(tmp), str(target))
        (tmp / "summary.json").write_text(text)

    _, cached = cached_study(zoo, study, parameters, produce, marker="summary.json")
    return {**json.loads((target / "summary.json").read_text()), "path": str(target), "cached": cached}


def run_meta_classifier_study(zoo, label: str, *, snapshots=None, part: str | None = None, slice_length: int = 1000,
                              epochs: int = 30, batch_size: int = 64, seed: int = 0, progress=None) -> dict:
    """Train the NWS meta-classifier on the train split, pick nothing on val, report on test.

    Writes results.parquet (per snapshot k), per_class.parquet, confusion.png,
    history.json, parameters.json and meta_classifier.pt; returns their paths and the
    results (cached on inputs).
    """
    parameters = {"label": label, "snapshots": _jsonable(snapshots), "part": part, "slice_length": slice_length,
                  "epochs": epochs, "batch_size": batch_size, "seed": seed}

    def produce(tmp: Path) -> None:
        train = zoo.select(snapshots=snapshots, part=part, split="train")
        test = zoo.select(snapshots=snapshots, part=part, split="test")
        model = train_meta_classifier(train, label, slice_length=slice_length, epochs=epochs,
                                      batch_size=batch_size, seed=seed, progress=progress)
        results, confusion, per_class = evaluate(model, test)
        results.to_parquet(tmp / "results.parquet", index=False)
        per_class.to_parquet(tmp / "per_class.parquet", index=False)
        (tmp / "parameters.json").write_text(json.dumps({**parameters, "classes": [str(c) for c in model.classes],
                                                         "task": model.task}, indent=2))
        (tmp / "history.json").write_text(json.dumps(model.history, indent=2))
        torch.save({"state_dict": model.net.state_dict(), "classes": model.classes, "scale": model.scale,
                    "slice_length": slice_length, "task": model.task, "label": label}, tmp / "meta_classifier.pt")
        if model.task == "classification":
            plot_confusion(confusion, [str(c) for c in model.classes], label, tmp / "confusion.png")

    return _summary(*cached_study(zoo, "meta-classifier", parameters, produce, marker="results.parquet"))


def plot_confusion(matrix: np.ndarray, classes: list[str], label: str, path: Path) -> None:
    """A confusion matrix (rows: true class, columns: predicted) as a PNG."""
    figure = Figure(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel(f"predicted {label}")
    axes.set_ylabel(f"true {label}")
    for (i, j), value in np.ndenumerate(matrix):
        dark = value > matrix.max() / 2
        axes.text(j, i, str(value), ha="center", va="center", color="white" if dark else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


class _incomplete:
    """Write into ``<target>.incomplete-<id>`` and rename to ``target`` on success."""

    def __init__(self, target: Path):
        self.target = target
        self.tmp = target.with_name(f"{target.name}.incomplete-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Path:
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            self.tmp.rename(self.target)
        except OSError:  # another run finished the same result first
            shutil.rmtree(self.tmp, ignore_errors=True)


def _summary(target: Path, cached: bool) -> dict:
    results = pd.read_parquet(target / "results.parquet")
    per_class = pd.read_parquet(target / "per_class.parquet")
    return {"path": str(target), "cached": cached, "results": json_records(results),
            "per_class": json_records(per_class), "files": sorted(p.name for p in target.iterdir())}


def study_summary(path: Path, cached: bool, table: str) -> dict:
    """What a study returns: its directory, whether it was cached, its files, and the rows of
    its main ``table`` as JSON-safe records."""
    path = Path(path)
    return {"path": str(path), "cached": cached, "files": sorted(p.name for p in path.iterdir()),
            "table": str(path / table), "records": json_records(pd.read_parquet(path / table))}


def _jsonable(snapshots):
    if snapshots is None or isinstance(snapshots, int):
        return snapshots
    if isinstance(snapshots, slice):
        return [snapshots.start, snapshots.stop, snapshots.step]
    return [int(k) for k in snapshots]


matplotlib.rcParams.setdefault("figure.max_open_warning", 0)
