"""The NWS meta-classifier learns a label planted in the weights, and its study is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from weightzoo.analysis.meta_classifier import (SliceNet, evaluate, run_meta_classifier_study, target_kind,
                                                train_meta_classifier)
from weightzoo.core.layout import WeightLayout
from zookit import publish_staged

from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model

OPTIMIZERS = ("adam", "sgd")


def _planted_zoo(root, n_models: int = 40, n_snapshots: int = 3):
    """Models whose weights' spread depends on their 'optimizer' (sgd: 3× wider)."""
    layout = WeightLayout.from_module(nn.Sequential(nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 10)))
    fingerprints = []
    for i in range(n_models):
        rng = np.random.default_rng(i)
        optimizer = OPTIMIZERS[i % 2]
        spread = 3.0 if optimizer == "sgd" else 1.0
        weights = (rng.standard_normal((n_snapshots, layout.n_params)) * spread).astype(np.float32)
        snapshots = [{"k": k, "epoch": k, "step": k, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0,
                      "test_acc": 0.5, "gap": 0.0} for k in range(n_snapshots)]
        hyper = {"optimizer": optimizer, "lr": float(10 ** rng.uniform(-4, -1))}
        record = StagedRecord(model_id=f"m{i:03d}", fingerprint=f"fp{i:03d}", status="ok", hyperparameters=hyper,
                              config=hyper, training={}, spec_name="planted", layout_id=layout.layout_id,
                              n_params=layout.n_params, code_version="test")
        stage_model(root / "staging", record, weights=weights, snapshots=snapshots, layout=layout)
        fingerprints.append(f"fp{i:03d}")
    publish_staged(root, fingerprints, split_fractions=(0.6, 0.0, 0.4))
    return open_zoo(root)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _planted_zoo(tmp_path_factory.mktemp("planted") / "zoo")


def test_a_planted_label_is_learned_locally_and_globally(planted):
    torch.manual_seed(0)
    train = planted.select(split="train")
    test = planted.select(split="test")
    assert set(train.models["model_id"]).isdisjoint(test.models["model_id"])
    model = train_meta_classifier(train, "optimizer", slice_length=200, epochs=6, batch_size=16)
    results, confusion, per_class = evaluate(model, test)
    overall = results.set_index("k").loc["all"]
    assert overall["global"] >= 0.95 and overall["local"] >= 0.8, results
    assert confusion.sum() == len(test) and np.trace(confusion) >= 0.95 * len(test)
    assert set(results["k"]) == {"0", "1", "2", "all"}
    # per class: counts are the confusion matrix's rows, recall its diagonal over the rows
    assert set(per_class["class"]) == set(OPTIMIZERS)
    order = [model.classes.index(c) for c in per_class["class"]]
    assert list(per_class["n"]) == [int(confusion[i].sum()) for i in order]
    np.testing.assert_allclose(per_class["global"], [confusion[i, i] / confusion[i].sum() for i in order])
    np.testing.assert_allclose(per_class["predicted_share"].sum(), 1.0)


def test_continuous_labels_are_regressed_and_reported_as_rmse(planted):
    train = planted.select(split="train")
    model = train_meta_classifier(train, "lr", slice_length=200, epochs=1, batch_size=16)
    assert model.task == "regression"
    results, confusion, per_class = evaluate(model, planted.select(split="test"))
    assert set(results["metric"]) == {"rmse"} and confusion.size == 0 and per_class.empty
    assert np.isfinite(results["global"]).all()


def test_study_writes_its_outputs_once_and_loads_them_again(planted):
    first = run_meta_classifier_study(planted, "optimizer", slice_length=200, epochs=2, batch_size=16)
    assert not first.cached and first.study == "meta-classifier"
    assert {"results.parquet", "per_class.parquet", "confusion.png", "meta_classifier.pt", "history.json",
            "summary.json"} <= set(first.files)
    assert "/analyses/v0001/meta-classifier/" in first.path
    stored = pd.read_parquet(Path(first.path) / "results.parquet")
    assert [row["k"] for row in first.details["results"]] == list(stored["k"]) and "all" in set(stored["k"])
    assert {row["class"] for row in first.details["per_class"]} == set(OPTIMIZERS)
    assert first.headline.startswith("optimizer (classification): global accuracy")
    by_k = [row["k"] for row in first.rows if row["class"] == "all"]
    assert by_k == [row["k"] for row in first.details["results"]]
    assert {row["class"] for row in first.rows if row["metric"] == "recall"} == set(OPTIMIZERS)
    again = run_meta_classifier_study(planted, "optimizer", slice_length=200, epochs=2, batch_size=16)
    assert again.cached and again.to_dict() == {**first.to_dict(), "cached": True}
    other = run_meta_classifier_study(planted, "optimizer", slice_length=100, epochs=1, batch_size=16)
    assert other.path != first.path


def test_target_kinds_and_single_class_error(planted):
    assert target_kind(pd.Series(["a", "b"])) == "classification"
    assert target_kind(pd.Series([32, 64, 32])) == "classification"
    assert target_kind(pd.Series([0.1, 0.01])) == "regression"
    only_adam = planted.select(split="train", optimizer="adam")
    with pytest.raises(ValueError, match="single class"):
        train_meta_classifier(only_adam, "optimizer", slice_length=100, epochs=1)


def test_slice_net_accepts_any_slice_length():
    net = SliceNet(3)
    for length in (64, 500, 1999):
        assert net(torch.randn(2, length)).shape == (2, 3)
