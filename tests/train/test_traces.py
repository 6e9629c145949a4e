"""Dense traces: the fleet records what the single-model trainer records; a frozen identity
input stays the identity while its bias trains; the paper's sinusoid embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightzoo.core.models import build_model
from weightzoo.core.spec import TrainingSettings
from weightzoo.core.traces import TraceSettings
from weightzoo.data import load_dataset
from weightzoo.train.fleet import train_fleet
from weightzoo.train.single import train_model
from weightzoo.train.tasks import model_task

TRACES = TraceSettings(("1.bias", "1.weight"))
TRAINING = TrainingSettings(epochs=2, snapshot_epochs=(1, 2), traces=TRACES)
SINUSOID = {"dataset": "sinusoid", "architecture": "mlp", "input_dim": 5, "frozen_identity_input": True,
            "hidden_layers": 2, "hidden_width": 8, "batch_size": 1, "optimizer": "sgd", "lr": 0.02}
OPTIONS = {"n_samples": 30, "low": -1.0, "high": 1.0, "embedding_scale": 3.0}
DIGITS = {"dataset": "digits", "architecture": "mlp", "frozen_identity_input": True, "hidden_layers": 1,
          "hidden_width": 16, "batch_size": 64, "optimizer": "sgd", "lr": 0.1}


def assert_traces_match(fleet_trace, single_trace, atol=1e-5):
    """Same points, steps, epochs and learning rates; losses equal up to float rounding."""
    assert fleet_trace.n_points == single_trace.n_points
    np.testing.assert_array_equal(fleet_trace.step, single_trace.step)
    np.testing.assert_array_equal(fleet_trace.epoch, single_trace.epoch)
    np.testing.assert_array_equal(fleet_trace.lr, single_trace.lr)
    np.testing.assert_allclose(fleet_trace.loss, single_trace.loss, rtol=1e-4, atol=1e-6)
    assert fleet_trace.tensors.keys() == single_trace.tensors.keys()
    for name in fleet_trace.tensors:
        np.testing.assert_allclose(fleet_trace.tensors[name], single_trace.tensors[name], rtol=0, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("activations", [("relu",), ("relu", "tanh")], ids=["hand-vectorised", "vmap"])
def test_fleet_traces_equal_single_model_traces(activations):
    # one activation takes the hand-vectorised path; mixed activations fall back to vmap
    jobs = [dict(SINUSOID, seed=s, activation=activations[s % len(activations)]) for s in range(3)]
    for job, result in zip(jobs, train_fleet(jobs, TRAINING, OPTIONS)):
        single = train_model(job, TRAINING, OPTIONS)
        assert_traces_match(result.traces, single.traces)
        np.testing.assert_allclose(result.weights, single.weights, rtol=0, atol=1e-5)


def test_fleet_traces_equal_single_for_classification_with_adam_and_weight_decay():
    jobs = [dict(DIGITS, seed=0), dict(DIGITS, seed=1, optimizer="adam", lr=0.003, weight_decay=0.01)]
    training = TrainingSettings(epochs=1, snapshot_epochs=(1,), traces=TraceSettings(("1.bias", "3.bias")))
    for job, result in zip(jobs, train_fleet(jobs, training)):
        assert_traces_match(result.traces, train_model(job, training).traces, atol=1e-4)


def test_a_trace_starts_at_the_initialisation_and_ends_at_the_last_snapshot():
    job = dict(SINUSOID, seed=4)
    result = train_model(job, TRAINING, OPTIONS)
    trace, layout = result.traces, result.layout
    n_train = len(model_task(job, TRAINING, OPTIONS).x_train)
    assert trace.steps_per_epoch == n_train and trace.n_points == 1 + 2 * n_train
    np.testing.assert_array_equal(trace.step, np.arange(trace.n_points))
    assert list(trace.epoch) == [0] + [1] * n_train + [2] * n_train
    assert math.isnan(trace.lr[0]) and math.isnan(trace.loss[0])
    assert (trace.lr[1:] == 0.02).all() and (trace.loss[1:] >= 0).all()
    bias = layout.tensor("1.bias")
    for point, k in ((0, 0), (n_train, 1), (-1, 2)):
        np.testing.assert_array_equal(trace.tensors["1.bias"][point],
                                      result.weights[k, bias.offset:bias.offset + bias.length])


def test_every_n_steps_records_multiples_of_n():
    training = TrainingSettings(epochs=1, snapshot_epochs=(1,), traces=TraceSettings(("1.bias",), every=7))
    trace = train_model(dict(SINUSOID, seed=0), training, OPTIONS).traces
    assert list(trace.step) == [0, 7, 14, 21] and trace.every == 7
    assert list(trace.tensors) == ["1.bias"]


def test_frozen_identity_stays_identity_while_its_bias_moves():
    jobs = [dict(SINUSOID, seed=s, optimizer=o, weight_decay=0.1) for s, o in enumerate(["sgd", "adam"])]
    for result in train_fleet(jobs, TRAINING, OPTIONS) + [train_model(jobs[1], TRAINING, OPTIONS)]:
        weight = result.layout.tensor("1.weight")
        identity = np.eye(5, dtype=np.float32).reshape(-1)
        for snapshot in result.weights:
            np.testing.assert_array_equal(snapshot[weight.offset:weight.offset + weight.length], identity)
        np.testing.assert_array_equal(result.traces.tensors["1.weight"], np.tile(identity, (result.traces.n_points, 1)))
        moved = np.linalg.norm(result.traces.tensors["1.bias"][-1] - result.traces.tensors["1.bias"][0])
        assert moved > 1e-3, "the first layer's bias trains"


def test_a_diverging_model_is_traced_up_to_its_divergence():
    jobs = [dict(DIGITS, seed=0), dict(DIGITS, seed=1, lr=1e6)]
    training = TrainingSettings(epochs=2, snapshot_epochs=(1, 2), traces=TraceSettings(("1.bias",)))
    fleet = train_fleet(jobs, training)
    single = train_model(jobs[1], training)
    assert fleet[1].status == single.status == "diverged"
    assert fleet[1].traces.n_points == single.traces.n_points < fleet[0].traces.n_points
    assert np.isfinite(fleet[1].traces.loss[1:]).all()


def test_untraced_training_records_nothing():
    training = TrainingSettings(epochs=1, snapshot_epochs=(1,))
    assert train_model(dict(SINUSOID, seed=0), training, OPTIONS).traces is None
    assert train_fleet([dict(SINUSOID, seed=0), dict(SINUSOID, seed=1)], training, OPTIONS)[0].traces is None


# --- the paper's sinusoid ------------------------------------------------------------------------


def test_sinusoid_embedding_keeps_targets_and_scales_distances():
    plain = load_dataset("sinusoid", options={"n_samples": 50, "low": -1.0, "high": 1.0})
    embedded = load_dataset("sinusoid", options={"n_samples": 50, "low": -1.0, "high": 1.0, "input_dim": 10,
                                                 "embedding_scale": 10.0})
    assert plain.input_shape == (2,) and embedded.input_shape == (10,)
    assert float(plain.x_train.min()) >= -1.0 and float(plain.x_train.min()) < -0.5
    torch.testing.assert_close(embedded.y_train, plain.y_train)
    torch.testing.assert_close(torch.cdist(embedded.x_train.double(), embedded.x_train.double()),
                               10.0 * torch.cdist(plain.x_train.double(), plain.x_train.double()), rtol=1e-5, atol=1e-5)


def test_input_dim_is_a_hyperparameter_not_a_dataset_option():
    params = dict(SINUSOID, seed=0)
    assert model_task(params, TRAINING, OPTIONS).input_shape == (5,)
    assert build_model(params)[1].in_features == 5  # the config alone rebuilds the model
    with pytest.raises(ValueError, match="input_dim as a hyperparameter"):
        model_task(params, TRAINING, {**OPTIONS, "input_dim": 5})
    with pytest.raises(ValueError, match="input_dim"):
        load_dataset("sinusoid", options={"input_dim": 1})
