"""Trajectory measures: known answers on hand-made paths, and a tiny traced zoo studied end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from weightzoo.analysis.trajectories import (loss_scale, run_trajectory_study, trajectory_measures,
                                             trajectory_table)
from weightzoo.analysis.trajectory_plots import varying_hyperparameter
from weightzoo.pipelines.build import build_in_process
from weightzoo.core.spec import load_spec
from weightzoo.io.reader import open_zoo

NAN = float("nan")


def line(n_points: int, start=(1.0, -2.0, 0.5), direction=(3.0, 4.0, 12.0)) -> np.ndarray:
    """Points start + i · direction / (n_points − 1): a straight path of length |direction|."""
    t = np.linspace(0.0, 1.0, n_points)[:, None]
    return np.asarray(start) + t * np.asarray(direction)


def columns(n_points: int, *, lr=0.1, loss=0.25, per_epoch: int = 4):
    """lr, loss, epoch for a trace: NaN at point 0, ``per_epoch`` points per epoch after it."""
    lr = np.r_[NAN, np.full(n_points - 1, lr)]
    loss = np.r_[NAN, np.full(n_points - 1, loss)]
    epoch = np.r_[0, 1 + np.arange(n_points - 1) // per_epoch]
    return lr, loss, epoch


def test_a_straight_path_has_its_chord_as_raw_length():
    points = line(9)
    measures = trajectory_measures(points, *columns(9))
    assert measures["length_raw"] == pytest.approx(13.0)  # |(3, 4, 12)|
    assert measures["distance_final"] == measures["distance_max"] == pytest.approx(13.0)
    # regression: ε = 2√ℓ = 1, so every step is divided by lr = 0.1
    assert measures["length"] == pytest.approx(130.0)
    assert measures["mean_step"] == pytest.approx(130.0 / 8)
    assert measures["n_steps"] == 8 and measures["n_flat_steps"] == 0
    assert list(measures["per_epoch"]["epoch"]) == [1, 2]
    assert measures["per_epoch"]["length_raw"].sum() == pytest.approx(13.0)


def test_a_constant_path_has_no_length_and_no_variance():
    measures = trajectory_measures(np.ones((7, 4)), *columns(7, loss=0.0))
    for name in ("length", "length_raw", "variance", "variance_normalised", "distance_final", "distance_max"):
        assert measures[name] == 0.0, name
    assert measures["n_flat_steps"] == 6 and math.isnan(measures["mean_step"])


def test_variance_is_the_mean_over_epochs_of_the_spread_around_each_epoch_mean():
    # epoch 1: (0,0), (2,0) → mean (1,0), spread 1; epoch 2: (2,0), (2,4) → spread 4
    points = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 4.0]])
    measures = trajectory_measures(points, *columns(5, lr=0.5, per_epoch=2))
    assert measures["variance"] == pytest.approx((1.0 + 4.0) / 2)
    assert measures["variance_normalised"] == pytest.approx((1.0 + 4.0) / 2 / 0.25)
    assert list(measures["per_epoch"]["distance_end"]) == pytest.approx([2.0, math.hypot(2.0, 4.0)])


def test_out_and_back_ends_where_it_started():
    points = np.array([[0.0], [1.0], [2.0], [1.0], [0.0]])
    measures = trajectory_measures(points, *columns(5))
    assert measures["length_raw"] == 4.0
    assert measures["distance_final"] == 0.0 and measures["distance_max"] == 2.0


def test_normalisation_uses_the_step_gap_and_the_loss_derivative():
    points = line(4, direction=(6.0, 0.0, 0.0))  # steps of 2
    lr, loss, epoch = columns(4, loss=0.5)
    step = np.array([0, 3, 6, 9])  # traced every 3 steps
    regression = trajectory_measures(points, lr, loss, epoch, step=step)
    assert regression["length"] == pytest.approx(3 * 2.0 / (0.1 * 2 * math.sqrt(0.5) * 3))
    classification = trajectory_measures(points, lr, loss, epoch, step=step, task="classification")
    assert classification["length"] == pytest.approx(3 * 2.0 / (0.1 * (1 - math.exp(-0.5)) * 3))
    assert loss_scale([0.0, 1e-9], "classification")[1] == pytest.approx(1e-9)
    with pytest.raises(ValueError, match="task"):
        loss_scale([1.0], "ranking")


def test_steps_with_a_vanishing_loss_are_counted_not_divided_by():
    lr, loss, epoch = columns(5)
    loss[2] = 0.0  # a float32 cross-entropy that rounded to 0 while the bias still moved
    measures = trajectory_measures(line(5), lr, loss, epoch, task="classification")
    assert math.isfinite(measures["length"]) and measures["n_flat_steps"] == 1
    assert measures["mean_step"] == pytest.approx(measures["length"] / 3)


def test_bad_traces_are_rejected():
    with pytest.raises(ValueError, match="one lr, loss, epoch and step per point"):
        trajectory_measures(line(5), *columns(4))
    points = line(5)
    points[3, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        trajectory_measures(points, *columns(5))


# --- a tiny traced zoo -------------------------------------------------------------------------

TINY = {"name": "tiny-traces", "architecture": "mlp", "sampling": {"method": "grid", "seed": 0, "seeds": 2},
        "hyperparameters": {"dataset": "sinusoid", "frequency": [0.5, 2.0], "input_dim": 4,
                            "frozen_identity_input": True, "hidden_layers": 1, "hidden_width": 8,
                            "batch_size": 2, "lr": 0.05},
        "dataset_options": {"sinusoid": {"n_samples": 20, "low": -1.0, "high": 1.0}},
        "training": {"epochs": 3, "snapshots": {"count": 1}, "traces": {"tensors": ["1.bias"]}}}


def build(root, spec) -> None:
    build_in_process(root, spec, threads=None)


@pytest.fixture(scope="module")
def traced_zoo(tmp_path_factory):
    """Four traced sinusoid models (v0001), then one untraced model added (v0002)."""
    root = tmp_path_factory.mktemp("zoos") / "traced"
    build(root, load_spec(TINY))
    untraced = {**TINY, "sampling": {"method": "grid", "seed": 1, "seeds": 1},
                "hyperparameters": {**TINY["hyperparameters"], "frequency": 1.0},
                "training": {k: v for k, v in TINY["training"].items() if k != "traces"}}
    build(root, load_spec(untraced))
    return root


def test_the_table_has_a_row_per_model_with_hyperparameters_and_a_result(traced_zoo):
    zoo = open_zoo(traced_zoo)
    table = trajectory_table(zoo)
    assert len(table) == 5 and set(table["model_id"]) == set(zoo.models["model_id"])
    analysed = table[table["result"] == "analysed"]
    assert len(analysed) == 4 and set(analysed["tensor"]) == {"1.bias"}
    # 16 training points (20 × 0.8) in batches of 2: 8 steps per epoch
    assert (analysed["n_steps"] == 3 * 8).all() and (analysed["task"] == "regression").all()
    assert (analysed["length"] > 0).all() and (analysed["length_raw"] > 0).all()
    assert analysed["test_loss"].notna().all() and analysed["test_acc"].isna().all()
    skipped = table[table["result"] == "skipped"].iloc[0]
    assert skipped["frequency"] == 1.0 and "has no traces" in skipped["note"]
    assert varying_hyperparameter(table) == "frequency"

    per_epoch = trajectory_table(zoo, per_epoch=True, where="frequency == 0.5")
    assert sorted(per_epoch["epoch"].unique()) == [1, 2, 3] and len(per_epoch) == 2 * 3
    assert (per_epoch["n_steps"] == 8).all() and set(per_epoch["frequency"]) == {0.5}
    assert trajectory_table(zoo, tensor="3.bias")["note"].str.contains("was not traced").sum() == 4


def test_the_tables_do_not_depend_on_how_many_models_are_held_per_block(traced_zoo, monkeypatch):
    """measure_zoo gathers its rows a block of models at a time (a frame per model would cost
    ~50 KB each at 10,000 networks); blocks of 2 over 5 models, one skipped, change nothing."""
    from weightzoo.analysis import trajectories

    zoo = open_zoo(traced_zoo)
    expected = trajectories.measure_zoo(zoo)
    monkeypatch.setattr(trajectories, "MODELS_PER_BLOCK", 2)
    for got, want in zip(trajectories.measure_zoo(zoo), expected):
        pd.testing.assert_frame_equal(got, want)


def test_measures_of_a_stored_trace_agree_with_its_weights(traced_zoo):
    zoo = open_zoo(traced_zoo)
    model_id = zoo.models.loc[zoo.models["n_trace_steps"] > 0, "model_id"].iloc[0]
    traces, layout = zoo.traces(model_id), zoo.layout(zoo.models.set_index("model_id").loc[model_id, "layout_id"])
    bias = layout.tensor("1.bias")
    weights = zoo.weights(model_id)[:, bias.offset:bias.offset + bias.length]
    np.testing.assert_array_equal(traces["1.bias"][[0, -1]], weights[[0, -1]])
    row = trajectory_table(zoo).set_index("model_id").loc[model_id]
    assert row["distance_final"] == pytest.approx(float(np.linalg.norm(weights[-1] - weights[0])), rel=1e-6)


def test_the_study_writes_tables_plots_and_json_safe_records(traced_zoo, tmp_path):
    zoo = open_zoo(traced_zoo)
    lines = []
    result = run_trajectory_study(zoo, tmp_path / "study", progress=lines.append)
    details = result.details
    assert details["by"] == "frequency" and details["n_models"] == 5 and details["n_analysed"] == 4
    for key in ("table", "per_epoch"):
        assert len(pd.read_parquet(result.details[key])) > 0
    assert set(result.details["plots"]) == {"measures", "per_epoch", "pca"}
    for path in result.details["plots"].values():
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [row["frequency"] for row in result.details["summary"]] == [0.5, 2.0]
    assert all(row["n_models"] == 2 for row in result.details["summary"])
    assert set(result.details["spearman"]) == {"length", "length_raw", "variance_normalised", "distance_final"}
    json.dumps(result.to_dict(), allow_nan=False)
    assert result.rows == result.details["summary"]
    assert result.headline.startswith("4/5 networks measured against frequency")
    assert lines[-1] == "trajectories: 5/5 models"
