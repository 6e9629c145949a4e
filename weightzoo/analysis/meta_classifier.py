"""The NWS meta-classifier (Eilertsen et al., ECAI 2020): hyperparameters from weights.

A 1-D convolutional network reads a slice of a network's flat weight vector ("local"
prediction); a "global" prediction per network snapshot averages the local predictions of
the non-overlapping slices that cover its vector. Categorical hyperparameters are
classified; continuous ones (learning rate) are regressed on a log scale.

Training reads random slices with the selection's prefetching torch batches; splits are
the zoo's per-model splits, so no network is on both sides.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
import torch.nn.functional as F

from weightzoo.analysis.cache import cached_result
from weightzoo.analysis.plots import plot_confusion
from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.analysis import scoring
from weightzoo.analysis.scoring import LOG_SCALE  # regressed as log10(value)
from weightzoo.core.labels import is_categorical
from weightzoo.core.snapshots import SnapshotChoice


PROTOCOL = "fixed split (train → test)"  # `weightzoo compare` cross-validates the same model by network


class SliceNet(nn.Module):
    """1-D CNN over a weight slice: conv blocks, global average pooling, two linear layers."""

    def __init__(self, n_outputs: int, width: int = 32, depth: int = 4):
        super().__init__()
        blocks, channels = [], 1
        for _ in range(depth):
            # GroupNorm, not BatchNorm: weight slices are heavy-tailed, and running batch
            # statistics made eval-mode predictions collapse to one class
            blocks += [nn.Conv1d(channels, width, 7, padding=3), nn.GroupNorm(4, width), nn.ReLU(), nn.MaxPool1d(2)]
            channels = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


@dataclass
class MetaClassifier:
    """A trained slice network with what it needs to predict: target kind, classes, scale."""

    net: SliceNet
    label: str
    task: str  # "classification" | "regression"
    classes: list
    slice_length: int
    scale: float  # weights are divided by this (the training samples' standard deviation)
    history: list
    # chance: the training samples' majority class code, or their mean target (log10 for LOG_SCALE)
    baseline: float | int | None = None


def target_kind(values: pd.Series) -> str:
    """Classification for strings, bools and few-valued ints; regression otherwise."""
    return "classification" if is_categorical(values) else "regression"


def train_meta_classifier(train, label: str, *, slice_length: int = 1000, epochs: int = 5, batch_size: int = 64,
                          lr: float = 1e-3, seed: int = 0, progress=None) -> MetaClassifier:
    """Train a SliceNet on random slices of the ``train`` selection to predict ``label``."""
    task = target_kind(train.rows[label])
    classes = train.classes(label) if task == "classification" else []
    if task == "classification" and len(classes) < 2:
        raise ValueError(f"{label}: the training selection has a single class {classes}; nothing to learn")
    torch.manual_seed(seed)
    net = SliceNet(len(classes) if classes else 1)
    scale = _weight_scale(train, slice_length, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    batches = train.torch_batches(batch_size, slice_length=slice_length, label=label, seed=seed)
    history = []
    for epoch in range(1, epochs + 1):
        net.train()
        losses = [_step(net, optimizer, batch, task, label, scale) for batch in batches]
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        if progress:
            progress(f"meta-classifier {label}: epoch {epoch}/{epochs} loss {history[-1]['loss']:.4f}")
    return MetaClassifier(net.eval(), label, task, classes, slice_length, scale, history,
                          _baseline(train, label, task, classes))


def _baseline(train, label: str, task: str, classes: list):
    """The training samples' majority class (its code; ties: the first class) or mean target."""
    if task == "classification":
        index = {c: i for i, c in enumerate(classes)}
        codes = np.array([index[v] for v in train.rows[label] if v in index], dtype=np.int64)
        return int(np.bincount(codes, minlength=len(classes)).argmax())
    y = train.rows[label].to_numpy(np.float64, na_value=np.nan)
    return float(np.nanmean(np.log10(np.clip(y, 1e-12, None)) if label in LOG_SCALE else y))


def _weight_scale(train, slice_length: int, seed: int) -> float:
    batch = next(iter(train.torch_batches(256, slice_length=slice_length, seed=seed + 1, prefetch=0)))
    std = float(batch["weights"].std())
    return std if math.isfinite(std) and std > 0 else 1.0


def _target(batch, task: str, label: str) -> torch.Tensor:
    y = batch["label"]
    if task == "classification":
        return y.long()
    y = y.float()
    return torch.log10(y.clamp_min(1e-12)) if label in LOG_SCALE else y


def _step(net, optimizer, batch, task, label, scale) -> float:
    out = net(batch["weights"] / scale)
    y = _target(batch, task, label)
    loss = F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out.squeeze(1), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def predict_global(model: MetaClassifier, vectors: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per vector: the average of the local predictions over non-overlapping slices.

    Returns (predictions, mean local accuracy proxy inputs): for classification the
    averaged class probabilities [n, classes], for regression the mean prediction [n, 1];
    and the local predictions of every slice [n, n_slices, outputs].
    """
    n, length = vectors.shape
    n_slices = max(1, length // model.slice_length)
    cut = vectors[:, :n_slices * model.slice_length].reshape(n * n_slices, model.slice_length)
    outputs = []
    for start in range(0, len(cut), batch_size):
        chunk = torch.as_tensor(cut[start:start + batch_size], dtype=torch.float32) / model.scale
        out = model.net(chunk)
        outputs.append(F.softmax(out, dim=1) if model.task == "classification" else out)
    local = torch.cat(outputs).reshape(n, n_slices, -1).numpy()
    return local.mean(axis=1), local


def evaluate(model: MetaClassifier, test) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Results per snapshot k and over all k ("all"): local (single-slice) and global
    (per network snapshot) accuracy with balanced accuracy — or RMSE for regression — with 95 %
    intervals from a bootstrap over test networks, next to chance (the training samples'
    majority class, or their mean, predicted for every test sample); the global confusion
    matrix [true, predicted] over every test sample; and a per-class table (empty for
    regression): per true class its sample count, local and global accuracy (recall),
    global precision and share of the predictions."""
    samples = pd.concat([_score_samples(model, part) for part in test.by_layout().values()], ignore_index=True)
    records = [_metrics(model, group, str(k)) for k, group in samples.groupby("k")]
    records.append(_metrics(model, samples, "all"))
    if model.task != "classification":
        return pd.DataFrame(records), np.zeros((0, 0), np.int64), pd.DataFrame(columns=list(PER_CLASS_COLUMNS))
    return pd.DataFrame(records), _confusion(model, samples), _per_class(model, samples)


def fit_predict(zoo, train_ids, test_ids, target: str, *, snapshots, seed: int = 0, epochs: int = 10,
                slice_length: int = 1000, batch_size: int = 64, progress=None) -> pd.DataFrame:
    """The evaluation protocol's entry point: train on the snapshots ``snapshots`` of the
    networks ``train_ids``, return one global prediction per selected snapshot of ``test_ids``
    (``model_id``, ``k``, ``prediction``: a class, or a value on the target's own scale)."""
    train = zoo.select(snapshots=snapshots, model_ids=list(train_ids))
    test = zoo.select(snapshots=snapshots, model_ids=list(test_ids))
    train.require_samples()
    test.require_samples()
    model = train_meta_classifier(train, target, slice_length=slice_length, epochs=epochs, batch_size=batch_size,
                                  seed=seed, progress=progress)
    parts = []
    for part in test.by_layout().values():
        outputs, _ = predict_global(model, part.to_numpy())
        if model.task == "classification":
            values = [model.classes[i] for i in outputs.argmax(1)]
        else:
            values = list(10 ** outputs[:, 0] if target in LOG_SCALE else outputs[:, 0])
        parts.append(pd.DataFrame({"model_id": part.rows["model_id"].astype(str).to_numpy(),
                                   "k": part.rows["k"].to_numpy(), "prediction": values}))
    return pd.concat(parts, ignore_index=True)


PER_CLASS_COLUMNS = ("label", "class", "n", "local", "global", "precision", "predicted_share")


def _per_class(model: MetaClassifier, samples: pd.DataFrame) -> pd.DataFrame:
    predicted = samples["predicted"].to_numpy()
    rows = []
    for index, name in enumerate(model.classes):
        mine = samples["y"].to_numpy() == index
        chosen = predicted == index
        rows.append({"label": model.label, "class": str(name), "n": int(mine.sum()),
                     "local": float(samples.loc[mine, "local_score"].mean()) if mine.any() else float("nan"),
                     "global": float((predicted[mine] == index).mean()) if mine.any() else float("nan"),
                     "precision": float((samples["y"].to_numpy()[chosen] == index).mean()) if chosen.any()
                     else float("nan"),
                     "predicted_share": float(chosen.mean()) if len(chosen) else float("nan")})
    return pd.DataFrame(rows, columns=list(PER_CLASS_COLUMNS))


def _score_samples(model: MetaClassifier, part) -> pd.DataFrame:
    """One row per test sample: its k, true target, global prediction and local score."""
    global_pred, local = predict_global(model, part.to_numpy())
    rows = part.rows.reset_index(drop=True)
    y = _encode(model, rows[model.label])
    if model.task == "classification":
        predicted = global_pred.argmax(1)
        local_score = (local.argmax(2) == y[:, None]).mean(1)  # share of correct slices
    else:
        predicted = global_pred[:, 0]
        local_score = ((local[:, :, 0] - y[:, None]) ** 2).mean(1)  # mean squared error of slices
    return pd.DataFrame({"model_id": rows["model_id"].to_numpy(), "k": rows["k"].to_numpy(), "y": y,
                         "predicted": predicted, "local_score": local_score})


def _encode(model: MetaClassifier, values: pd.Series) -> np.ndarray:
    if model.task == "classification":
        index = {c: i for i, c in enumerate(model.classes)}
        return np.array([index.get(v, -1) for v in values], dtype=np.int64)
    y = values.to_numpy(np.float64)
    return np.log10(np.clip(y, 1e-12, None)) if model.label in LOG_SCALE else y


def _metrics(model: MetaClassifier, samples: pd.DataFrame, k: str) -> dict:
    """Global scores with 95 % intervals over test networks (weightzoo.analysis.scoring), chance
    being the training samples' majority class (or mean) predicted for every test sample."""
    y = samples["y"].to_numpy()
    row = {"label": model.label, "k": k, "n": len(samples), "n_models": samples["model_id"].nunique(),
           "protocol": PROTOCOL}
    categorical = model.task == "classification"
    frame = samples[["model_id"]].assign(truth=y, prediction=samples["predicted"].to_numpy())
    baseline = np.full(len(y), model.baseline if model.baseline is not None else np.nan)
    scores = {r["metric"]: r for r in scoring.score(frame, categorical, seed=0)}
    chance = {r["metric"]: r["mean"] for r in scoring.score(frame.assign(prediction=baseline), categorical)}
    if categorical:
        accuracy, balanced = scores["accuracy"], scores["balanced_accuracy"]
        return {**row, "metric": "accuracy", "local": float(samples["local_score"].mean()),
                "global": accuracy["mean"], "ci_low": accuracy["ci_low"], "ci_high": accuracy["ci_high"],
                "chance": chance["accuracy"], "balanced_accuracy": balanced["mean"],
                "balanced_ci_low": balanced["ci_low"], "balanced_ci_high": balanced["ci_high"],
                "balanced_chance": chance["balanced_accuracy"]}
    rmse = scores["rmse"]
    return {**row, "metric": "rmse", "local": float(np.sqrt(samples["local_score"].mean())),
            "global": rmse["mean"], "ci_low": rmse["ci_low"], "ci_high": rmse["ci_high"], "chance": chance["rmse"]}


def _confusion(model: MetaClassifier, samples: pd.DataFrame) -> np.ndarray:
    n = len(model.classes)
    matrix = np.zeros((n, n), dtype=np.int64)
    known = samples[samples["y"] >= 0]
    np.add.at(matrix, (known["y"].to_numpy(), known["predicted"].to_numpy()), 1)
    return matrix


def run_meta_classifier_study(zoo, label: str, *, snapshots=None, part: str | None = None, slice_length: int = 1000,
                              epochs: int = 30, batch_size: int = 64, seed: int = 0, progress=None) -> StudyResult:
    """Train the NWS meta-classifier on the train split, pick nothing on val, report on test
    (cached on the version and these inputs).

    Writes results.parquet (per snapshot k and "all"), per_class.parquet, confusion.png,
    history.json, parameters.json and meta_classifier.pt. The result's rows are the
    per-k results (class "all") followed by the per-class recalls (k "all"); ``details``
    holds ``label``, ``task``, ``classes`` and the full ``results`` and ``per_class`` records.
    """
    choice = SnapshotChoice.of(snapshots)
    parameters = {"label": label, "snapshots": choice.text, "part": part, "slice_length": slice_length,
                  "epochs": epochs, "batch_size": batch_size, "seed": seed}

    def run(out: Path) -> StudyResult:
        train = zoo.select(snapshots=choice, part=part, split="train")
        test = zoo.select(snapshots=choice, part=part, split="test")
        train.require_samples()
        test.require_samples()
        model = train_meta_classifier(train, label, slice_length=slice_length, epochs=epochs,
                                      batch_size=batch_size, seed=seed, progress=progress)
        results, confusion, per_class = evaluate(model, test)
        results.to_parquet(out / "results.parquet", index=False)
        per_class.to_parquet(out / "per_class.parquet", index=False)
        classes = [str(c) for c in model.classes]
        (out / "parameters.json").write_text(json.dumps({**parameters, "classes": classes, "task": model.task},
                                                        indent=2))
        (out / "history.json").write_text(json.dumps(model.history, indent=2))
        torch.save({"state_dict": model.net.state_dict(), "classes": model.classes, "scale": model.scale,
                    "slice_length": slice_length, "task": model.task, "label": label}, out / "meta_classifier.pt")
        if model.task == "classification":
            plot_confusion(confusion, classes, label, out / "confusion.png")
        return _study_result(out, label, model, json_records(results), json_records(per_class))

    return cached_result(zoo, "meta-classifier", parameters, run)


def _study_result(out: Path, label: str, model: MetaClassifier, results: list[dict],
                  per_class: list[dict]) -> StudyResult:
    overall = next(row for row in results if row["k"] == "all")
    headline = (f"{label} ({model.task}): global {overall['metric']} {_number(overall['global'])} "
                f"[{_number(overall.get('ci_low'))}, {_number(overall.get('ci_high'))}], local "
                f"{_number(overall['local'])}, chance {_number(overall['chance'])} (the train split's "
                f"{'majority' if model.task == 'classification' else 'mean'}) over {overall['n_models']} test "
                f"networks; {PROTOCOL}, 95 % intervals over networks")
    # one table: per snapshot k over every class, then per class (its recall) over every k
    rows = [{"label": row["label"], "k": row["k"], "class": "all", "n": row["n"], "metric": row["metric"],
             "local": row["local"], "global": row["global"], "ci_low": row.get("ci_low"),
             "ci_high": row.get("ci_high"), "chance": row["chance"], "balanced": row.get("balanced_accuracy"),
             "balanced_chance": row.get("balanced_chance")} for row in results]
    rows += [{"label": row["label"], "k": "all", "class": row["class"], "n": row["n"], "metric": "recall",
              "local": row["local"], "global": row["global"], "precision": row["precision"]} for row in per_class]
    return StudyResult.of_directory("meta-classifier", out, headline=headline, rows=rows, details={
        "label": label, "task": model.task, "classes": [str(c) for c in model.classes], "results": results,
        "per_class": per_class})


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
