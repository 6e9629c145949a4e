"""Traces in the store: staged, published in the weights' commit, read back row for row;
extending with longer traces keeps old rows and old versions intact."""

from __future__ import annotations

import numpy as np
import pytest

from weightzoo.core.traces import Trace
from zookit import SimulatedCrash, flip_member_byte, inject_crash, publish_staged, stage_inputs

from weightzoo.errors import StagingError, TracesNotFound
from weightzoo.io.reader import open_zoo
from weightzoo.io.staging import load_staged_traces
from weightzoo.io.trace_store import STEPS_ARRAY

MLP_TENSORS = ("0.bias", "2.weight")


def make_trace(layout, names, n_points: int, seed: int, steps_per_epoch: int = 3) -> Trace:
    """Seeded random points of ``names``; lr and loss NaN at the initial point."""
    rng = np.random.default_rng(seed)
    step = np.arange(n_points)
    return Trace(tensors={n: rng.standard_normal((n_points, layout.tensor(n).length)).astype(np.float32)
                          for n in names},
                 step=step, epoch=-(-step // steps_per_epoch), lr=np.r_[np.nan, np.full(n_points - 1, 0.1)],
                 loss=np.r_[np.nan, rng.uniform(size=n_points - 1)], steps_per_epoch=steps_per_epoch)


@pytest.fixture
def stage_traced(zoo_root, make_inputs):
    """stage_traced(architecture, index, n_points, tensors) → (fingerprint, model_id, trace)."""
    def _stage(architecture, index, n_points, tensors=MLP_TENSORS):
        inputs = make_inputs(architecture, index)
        trace = make_trace(inputs["layout"], tensors, n_points, seed=index)
        inputs["record"]["training"]["traces"] = {"tensors": list(tensors), "every": 1}
        stage_inputs(zoo_root, inputs, traces=trace)
        return inputs["fingerprint"], inputs["record"]["model_id"], trace
    return _stage


def publish(zoo_root, fingerprints, **kwargs):
    """The one publish with a test spec."""
    return publish_staged(zoo_root, fingerprints, **kwargs)


def assert_trace_equal(read: dict, trace: Trace):
    """A trace read from a zoo equals the staged one, column for column."""
    assert set(read) == set(trace.tensors) | {"step", "epoch", "lr", "loss"}
    for name, values in trace.tensors.items():
        np.testing.assert_array_equal(read[name], values, err_msg=name)
    np.testing.assert_array_equal(read["step"], trace.step)
    np.testing.assert_array_equal(read["epoch"], trace.epoch)
    np.testing.assert_array_equal(read["lr"], trace.lr)
    np.testing.assert_array_equal(read["loss"], trace.loss)
    assert read["step"].dtype == np.int64 and read["loss"].dtype == np.float64


def test_traces_round_trip_row_for_row(zoo_root, stage, stage_traced):
    fp0, m0, trace0 = stage_traced("mlp", 0, n_points=7)
    fp1, m1, trace1 = stage_traced("mlp", 1, n_points=4, tensors=("0.bias",))
    untraced = stage("mlp", [2]) + stage("conv", [0])
    publish(zoo_root, [fp0, fp1, *untraced])

    zoo = open_zoo(zoo_root)
    models = zoo.models.set_index("model_id")
    assert models.loc[m0, "n_trace_steps"] == 7 and models.loc[m1, "n_trace_steps"] == 4
    assert models.loc[m0, "steps_per_epoch"] == 3
    assert set(models.loc[["mlp-002", "conv-000"], "n_trace_steps"]) == {0}
    assert_trace_equal(zoo.traces(m0), trace0)
    assert_trace_equal(zoo.traces(m1), trace1)

    bias = zoo.trace_array(models.loc[m0, "layout_id"], "0.bias")
    assert bias.chunks[0] == 1 and bias.chunks[2] == bias.shape[2] == 5, "one chunk row per model"
    assert bias.shape[1] == 7
    row1 = bias[models.loc[m1, "row"]]
    assert np.isnan(row1[4:]).all(), "a shorter trace is NaN-padded"
    with pytest.raises(TracesNotFound, match="'mlp-002' has no traces in version v0001 .2 of its models have"):
        zoo.traces("mlp-002")


def test_a_version_without_traces_says_so(zoo_root, stage):
    publish(zoo_root, stage("mlp", range(2)))
    with pytest.raises(TracesNotFound, match="v0001 .* has no traces: no model was trained with training.traces"):
        open_zoo(zoo_root).traces("mlp-000")


def test_extending_with_a_longer_trace_keeps_old_rows_and_versions(zoo_root, stage_traced):
    fp0, m0, trace0 = stage_traced("mlp", 0, n_points=5, tensors=("0.bias",))
    assert publish(zoo_root, [fp0]) == "v0001"
    fp1, m1, trace1 = stage_traced("mlp", 1, n_points=12, tensors=("0.bias", "2.weight"))
    fp2, m2, trace2 = stage_traced("mlp", 2, n_points=3, tensors=("0.bias",))
    assert publish(zoo_root, [fp0, fp1, fp2]) == "v0002"

    new, old = open_zoo(zoo_root), open_zoo(zoo_root, "v0001")
    for model_id, trace in ((m0, trace0), (m1, trace1), (m2, trace2)):
        assert_trace_equal(new.traces(model_id), trace)
    assert_trace_equal(old.traces(m0), trace0)
    layout_id = new.models["layout_id"].iloc[0]
    grown, before = new.trace_array(layout_id, "0.bias"), old.trace_array(layout_id, "0.bias")
    assert grown.shape[:2] == (new.models["row"].max() + 1, 12) and before.shape[:2] == (1, 5)
    assert np.isnan(grown[0, 5:]).all(), "the old row reads NaN past its end after the step axis grew"
    weight = new.trace_array(layout_id, "2.weight")
    rows = new.models.set_index("model_id")["row"]
    assert np.isnan(weight[rows[m0]]).all() and not np.isnan(weight[rows[m1]]).any(), "an untraced tensor reads NaN"
    assert new.trace_array(layout_id, STEPS_ARRAY).attrs["columns"] == ["step", "epoch", "lr", "loss"]
    with pytest.raises(KeyError, match="traced: \\['0.bias'\\]"):
        old.trace_array(layout_id, "2.weight")


def test_a_crashed_publish_leaves_traces_consistent(zoo_root, stage_traced, monkeypatch):
    fp0, m0, trace0 = stage_traced("mlp", 0, n_points=6)
    fp1, m1, trace1 = stage_traced("conv", 1, n_points=9, tensors=("0.bias",))
    with monkeypatch.context() as patches:
        inject_crash(patches, "after_commit")
        with pytest.raises(SimulatedCrash):
            publish(zoo_root, [fp0, fp1])
    assert publish(zoo_root, [fp0, fp1]) == "v0001"
    zoo = open_zoo(zoo_root)
    assert_trace_equal(zoo.traces(m0), trace0)
    assert_trace_equal(zoo.traces(m1), trace1)


def test_staged_traces_are_checked(zoo_root, make_inputs, stage_traced):
    inputs = make_inputs("mlp", 5)
    unknown = Trace(tensors={"9.bias": np.zeros((4, 2), np.float32)}, step=np.arange(4), epoch=np.arange(4),
                    lr=np.ones(4), loss=np.ones(4))
    with pytest.raises(StagingError, match="no tensor '9.bias'"):
        stage_inputs(zoo_root, inputs, traces=unknown)
    short = make_trace(inputs["layout"], ("0.bias",), 4, 0)
    short.loss = short.loss[:2]
    with pytest.raises(StagingError, match="'loss' has 2 rows"):
        stage_inputs(zoo_root, inputs, traces=short)

    fingerprint, _, trace = stage_traced("mlp", 6, n_points=4)
    staged = load_staged_traces(zoo_root / "staging", fingerprint)
    assert staged.steps_per_epoch == 3 and staged.every == 1
    np.testing.assert_array_equal(staged.tensors["2.weight"], trace.tensors["2.weight"])
    path = zoo_root / "staging" / f"{fingerprint}.wzs"
    flip_member_byte(path, "trace.tensor:2.weight")
    with pytest.raises(StagingError, match=f"{path.name} is corrupt: its traces"):
        publish(zoo_root, [fingerprint])
