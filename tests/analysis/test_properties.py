"""Property prediction: planted signals are found, tiny zoos are reported, not crashed on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from weightzoo.analysis.properties import (default_targets, feature_columns, feature_table,
                                           predict_properties, run_property_study)
from weightzoo.core.statistics import statistic_names, weight_statistics
from weightzoo.io.reader import open_zoo

FEATURES = [f"layer{i}.weight.{s}" for i in range(3) for s in ("mean", "var", "p50")]


def synthetic_table(n_models: int = 90, n_snapshots: int = 3, seed: int = 0) -> pd.DataFrame:
    """Features, a linear target, a categorical target planted in one feature, splits by model."""
    rng = np.random.default_rng(seed)
    n = n_models * n_snapshots
    X = rng.normal(size=(n, len(FEATURES)))
    table = pd.DataFrame(X, columns=FEATURES)
    model = np.repeat(np.arange(n_models), n_snapshots)
    table.insert(0, "model_id", [f"m{i:03d}" for i in model])
    table.insert(1, "k", np.tile(np.arange(n_snapshots), n_models))
    table.insert(2, "split", np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)[model % 10])
    table["test_acc"] = X @ rng.normal(size=len(FEATURES)) + 0.05 * rng.normal(size=n)
    table["optimizer"] = np.where(X[:, 0] > 0, "adam", "sgd")
    table["batch_size"] = np.where(X[:, 4] > 0.3, 64, 32)
    table["seed"] = rng.integers(0, 2**31, size=n)
    return table


def result(results: pd.DataFrame, target: str, model: str) -> pd.Series:
    row = results[(results["target"] == target) & (results["model"] == model)]
    assert len(row) == 1, (target, model)
    return row.iloc[0]


def test_planted_signals_are_recovered():
    table = synthetic_table()
    assert feature_columns(table) == FEATURES
    assert default_targets(table) == ["test_acc", "optimizer", "batch_size"]  # never the seed
    assert default_targets(table.assign(architecture="mlp")) == ["test_acc", "optimizer", "batch_size"]  # constant
    results = predict_properties(table)
    assert list(results["target"]) == ["test_acc", "test_acc", "optimizer", "optimizer",
                                       "batch_size", "batch_size"]
    ridge = result(results, "test_acc", "ridge")
    assert ridge["status"] == "ok" and ridge["metric"] == "r2" and ridge["value"] > 0.9
    assert ridge["param"] == "alpha" and ridge["param_value"] < 100
    assert (ridge["n_train"], ridge["n_val"], ridge["n_test"]) == (162, 54, 54)
    assert result(results, "test_acc", "gbm")["value"] > 0.3
    for target in ("optimizer", "batch_size"):
        for model in ("linear", "gbm"):
            row = result(results, target, model)
            assert row["task"] == "classification" and row["metric"] == "accuracy"
            assert row["status"] == "ok", row["note"]
            assert row["value"] > row["chance"] + 0.1, (target, model, row["value"], row["chance"])
            assert 0.5 <= row["chance"] < 1


def test_empty_val_split_is_reported_not_crashed():
    table = synthetic_table()
    table.loc[table["split"] == "val", "split"] = "train"
    results = predict_properties(table, ["test_acc", "optimizer"])
    for target, linear in (("test_acc", "ridge"), ("optimizer", "linear")):
        row = result(results, target, linear)
        assert row["status"] == "skipped" and np.isnan(row["value"]) and "val split is empty" in row["note"]
        assert result(results, target, "gbm")["status"] == "ok"


def test_empty_test_split_single_class_and_nan_rows():
    table = synthetic_table(n_models=20)
    table["constant"] = "x"
    table.loc[:5, FEATURES] = np.nan  # two diverged models' snapshots
    no_test = table[table["split"] != "test"]
    results = predict_properties(no_test, ["test_acc", "constant"])
    assert len(results) == 4 and (results["status"] == "skipped").all()
    assert results["value"].isna().all()
    assert result(results, "test_acc", "gbm")["note"].endswith("test split is empty")
    assert "left out 6 rows" in result(results, "test_acc", "gbm")["note"]
    assert "single value" in result(results, "constant", "linear")["note"]
    with pytest.raises(KeyError, match="no column"):
        predict_properties(table, ["nope"])


def test_failed_fit_is_a_row_with_the_error(monkeypatch):
    import weightzoo.analysis.properties as properties

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(properties, "_fit_score", broken)
    results = predict_properties(synthetic_table(n_models=20), ["test_acc"])
    assert (results["status"] == "failed").all() and results["note"].str.contains("boom").all()


def test_smoke_zoo_end_to_end(smoke_zoo, tmp_path):
    zoo = open_zoo(smoke_zoo)
    table = feature_table(zoo)
    models = zoo.models[zoo.models["status"] == "ok"]
    assert len(table) == int(models["n_snapshots"].sum())
    assert not table.duplicated(["model_id", "k"]).any()
    layout = zoo.layout(models["layout_id"].iloc[0])
    assert feature_columns(table) == statistic_names(layout)
    first = table.iloc[0]
    expected, _ = weight_statistics(zoo.weights(first["model_id"], int(first["k"])), layout)
    np.testing.assert_allclose(first[feature_columns(table)].to_numpy(float), expected[0], rtol=1e-6)
    assert {"split", "test_acc", "gap", "epoch", "optimizer", "lr"} <= set(table.columns)
    last = feature_table(zoo, snapshots="last")
    assert len(last) == len(models) and (last["k"] == models["n_snapshots"].to_numpy() - 1).all()

    report = run_property_study(zoo, tmp_path / "out")
    results = pd.read_parquet(report.details["results"])
    assert (tmp_path / "out" / "properties.png").stat().st_size > 1000
    assert report.details["n_samples"] == len(table) and len(report.details["records"]) == len(results)
    assert len(report.rows) == len(results) and {"target", "model", "value", "status"} <= set(report.rows[0])
    assert {"test_acc", "gap", "epoch", "optimizer"} <= set(results["target"])
    assert set(results["status"]) <= {"ok", "skipped"}
    ok = results[results["status"] == "ok"]
    assert np.isfinite(ok["value"]).all()
    skipped = results[results["status"] == "skipped"]
    assert skipped["value"].isna().all() and (skipped["note"].str.len() > 0).all()
    json.dumps(report.to_dict(), allow_nan=False)  # JSON-safe: NaN became None


def _two_layout_zoo(root):
    """Two layouts (a 3-layer and a 1-layer MLP), different snapshot counts and a diverged model:
    d0, d1 (deep, 2 snapshots), f0 (flat, 3 snapshots), x0 (flat, diverged: NaN at k=1)."""
    from torch import nn

    from weightzoo.core.layout import WeightLayout
    from weightzoo.io.records import StagedRecord
    from weightzoo.io.staging import stage_model
    from zookit import publish_staged

    layouts = {"deep": WeightLayout.from_module(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 2))),
               "flat": WeightLayout.from_module(nn.Sequential(nn.Linear(3, 2)))}
    members = [("d0", "deep", 2, "ok", "sgd"), ("d1", "deep", 2, "ok", "adam"), ("f0", "flat", 3, "ok", "sgd"),
               ("x0", "flat", 2, "diverged", "adam")]
    rng = np.random.default_rng(0)
    for model_id, kind, n, status, optimizer in members:
        layout = layouts[kind]
        weights = rng.normal(size=(n, layout.n_params)).astype(np.float32)
        if status == "diverged":
            weights[1] = np.nan
        snapshots = [{"k": k, "epoch": float(k), "test_acc": 0.5, "gap": 0.0} for k in range(n)]
        record = StagedRecord(model_id=model_id, fingerprint=f"fp-{model_id}", status=status,
                              hyperparameters={"optimizer": optimizer}, config={}, training={}, spec_name="two",
                              layout_id=layout.layout_id, n_params=layout.n_params, code_version="test")
        stage_model(root / "staging", record, weights=weights, snapshots=snapshots, layout=layout)
    publish_staged(root, [f"fp-{m[0]}" for m in members])
    return open_zoo(root), {kind: layout.layout_id for kind, layout in layouts.items()}


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory):
    return _two_layout_zoo(tmp_path_factory.mktemp("two-layouts") / "zoo")


def test_feature_table_over_two_layouts_and_statuses(two_layouts):
    zoo, ids = two_layouts
    table = feature_table(zoo)
    assert list(table["model_id"]) == ["d0", "d0", "d1", "d1", "f0", "f0", "f0"]
    deep, flat = statistic_names(zoo.layout(ids["deep"])), statistic_names(zoo.layout(ids["flat"]))
    assert set(flat) < set(deep) and feature_columns(table) == deep  # union, layer-major
    assert table.loc[table["layout_id"] == ids["flat"], [c for c in deep if c not in flat]].isna().all().all()
    assert table.loc[table["layout_id"] == ids["flat"], flat].notna().all().all()
    assert list(feature_table(zoo, layout_id=ids["flat"])["model_id"]) == ["f0"] * 3
    assert feature_columns(feature_table(zoo, layout_id=ids["flat"])) == flat
    everything = feature_table(zoo, status=None, snapshots="1:")  # open-ended: each model from k=1 to its last
    assert list(zip(everything["model_id"], everything["k"])) == [("d0", 1), ("d1", 1), ("f0", 1), ("f0", 2), ("x0", 1)]
    assert everything.loc[everything["model_id"] == "x0", flat].isna().all().all()
    assert list(feature_table(zoo, snapshots=slice(0, 1))["k"]) == [0, 0, 0]
    with pytest.raises(ValueError, match=r"ask for k=2 but model 'd0' has n_snapshots=2"):
        feature_table(zoo, status=None, snapshots=[1, 2])  # an exact choice never shrinks silently
    with pytest.raises(ValueError, match="no models"):
        feature_table(zoo, status="missing")


def test_feature_table_filters_are_those_of_zoo_select(two_layouts):
    zoo, ids = two_layouts
    for filters in ({"where": "optimizer == 'adam'", "status": None}, {"split": ["train", "val"]},
                    {"status": "diverged"}, {"model_ids": ["f0", "d1"]}, {"optimizer": "sgd", "snapshots": "last"}):
        selection = zoo.select(**filters)
        assert len(selection), filters
        table = feature_table(zoo, **filters)
        assert list(zip(table["model_id"], table["k"])) == list(zip(selection.rows["model_id"], selection.rows["k"]))


def test_raw_features_are_the_stored_vectors_and_are_fitted_per_layout(two_layouts, tmp_path):
    zoo, ids = two_layouts
    raw = feature_table(zoo, features="raw")
    deep = zoo.layout(ids["deep"]).n_params
    assert feature_columns(raw) == [f"w{i}" for i in range(deep)]  # the longer layout's positions
    first = raw.iloc[0]
    np.testing.assert_array_equal(first[feature_columns(raw)].to_numpy(np.float32), zoo.weights("d0", 0))
    assert raw.loc[raw["layout_id"] == ids["flat"], f"w{deep - 1}"].isna().all()  # flat has fewer positions
    assert list(feature_table(zoo, features="raw", model_ids=["f0"])["model_id"]) == ["f0"] * 3
    with pytest.raises(ValueError, match="features must be one of"):
        feature_table(zoo, features="pixels")
    report = run_property_study(zoo, tmp_path / "raw", features="raw", targets=["test_acc", "optimizer"])
    results = pd.read_parquet(report.details["results"])
    assert set(results["layout_id"]) == set(ids.values()) and set(results["features"]) == {"raw"}
    assert len(results) == 2 * 2 * 2  # layouts × targets × model kinds
    stats = pd.read_parquet(run_property_study(zoo, tmp_path / "stats", targets=["test_acc"]).details["results"])
    assert set(stats["layout_id"]) == {"all"} and set(stats["features"]) == {"stats"}
