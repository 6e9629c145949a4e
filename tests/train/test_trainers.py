"""The fleet reproduces the reference trainer; snapshots and divergence are recorded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightzoo.core.models import build_model
from weightzoo.core.spec import TrainingSettings
from weightzoo.train.evaluate import evaluate_model
from weightzoo.train.fleet import FleetError, train_fleet
from weightzoo.train.single import finetune_model, train_model
from weightzoo.train.tasks import model_task

TRAINING = TrainingSettings(epochs=2, snapshot_epochs=(1, 2))
MLP = {"dataset": "digits", "architecture": "mlp", "hidden_layers": 1, "hidden_width": 16, "batch_size": 64}
OPTIMIZERS = [("sgd", 0.1), ("momentum", 0.02), ("adam", 0.003), ("rmsprop", 0.001)]


def _jobs(base, activations=("relu",)):
    return [dict(base, seed=i, optimizer=o, lr=lr, activation=activations[i % len(activations)])
            for i, (o, lr) in enumerate(OPTIMIZERS)]


def test_fleet_matches_single_model_trainer_for_the_same_seeds():
    jobs = _jobs(MLP, activations=("relu", "tanh", "gelu"))
    fleet = train_fleet(jobs, TRAINING)
    for job, result in zip(jobs, fleet):
        single = train_model(job, TRAINING)
        assert result.status == single.status == "ok"
        np.testing.assert_allclose(result.weights, single.weights, rtol=0, atol=1e-4,
                                   err_msg=f"optimizer {job['optimizer']}")
        for a, b in zip(result.snapshots, single.snapshots):
            assert a["k"] == b["k"] and a["step"] == b["step"]
            assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2e-3)


def test_fleet_with_batch_norm_matches_single_for_sgd():
    base = {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 1, "conv_width": 3, "fc_layers": 0,
            "batch_norm": True, "batch_size": 64}
    jobs = [dict(base, seed=s, optimizer="sgd", lr=0.05) for s in range(3)]
    for result, job in zip(train_fleet(jobs, TRAINING), jobs):
        np.testing.assert_allclose(result.weights, train_model(job, TRAINING).weights, atol=1e-4)


def test_snapshot_zero_is_the_initialisation_and_rows_follow_the_schedule():
    job = dict(MLP, seed=5, optimizer="sgd", lr=0.1)
    result = train_model(job, TRAINING)
    initial = build_model(job)
    np.testing.assert_array_equal(result.weights[0], result.layout.flatten(initial.state_dict()))
    assert [(r["k"], r["epoch"]) for r in result.snapshots] == [(0, 0), (1, 1), (2, 2)]
    steps_per_epoch = math.ceil(len(model_task(job, TRAINING).x_train) / 64)
    assert [r["step"] for r in result.snapshots] == [0, steps_per_epoch, 2 * steps_per_epoch]


CNN = {"dataset": "digits", "architecture": "nws-cnn", "conv_width": 4, "fc_width": 16, "batch_size": 64,
       "activation": "relu"}


@pytest.mark.parametrize("base", [MLP, CNN], ids=["mlp", "cnn"])
def test_stored_snapshot_reproduces_recorded_test_accuracy(base):
    # the fleet evaluates all models at once on one shared input, in chunks sized to the
    # fleet; a rebuilt module evaluated alone must agree
    job = dict(base, seed=2, optimizer="adam", lr=0.01)
    result = train_fleet([job, dict(job, seed=3)], TRAINING)[0]
    task = model_task(job, TRAINING)
    model = build_model(job).eval()
    model.load_state_dict(result.layout.unflatten(result.weights[-1]), strict=False)
    loss, accuracy = evaluate_model(model, task.x_test, task.y_test, task.task)
    assert accuracy == pytest.approx(result.snapshots[-1]["test_acc"], abs=1e-6)
    assert loss == pytest.approx(result.snapshots[-1]["test_loss"], rel=1e-5)
    assert accuracy > 0.5


def test_a_diverging_model_is_recorded_without_harming_its_group():
    jobs = [dict(MLP, seed=0, optimizer="sgd", lr=0.05), dict(MLP, seed=1, optimizer="sgd", lr=1e6),
            dict(MLP, seed=2, optimizer="adam", lr=0.003)]
    results = train_fleet(jobs, TRAINING)
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    assert "loss became" in results[1].message
    assert len(results[1].snapshots) == 3 and math.isnan(results[1].snapshots[-1]["test_acc"])
    assert np.isfinite(results[0].weights).all() and results[0].snapshots[-1]["test_acc"] > 0.5
    single = train_model(jobs[1], TRAINING)
    assert single.status == "diverged" and len(single.snapshots) == 3


def test_fleet_refuses_models_with_different_architectures():
    with pytest.raises(FleetError, match="architecture"):
        train_fleet([dict(MLP, seed=0), dict(MLP, seed=1, hidden_width=8)], TRAINING)


def test_regression_task_records_nan_accuracy_and_loss_gap():
    job = {"dataset": "sinusoid", "architecture": "mlp", "hidden_width": 16, "batch_size": 16, "optimizer": "adam",
           "lr": 0.01, "frequency": 1.0}
    result = train_fleet([job, dict(job, seed=1)], TRAINING)[0]
    last = result.snapshots[-1]
    assert math.isnan(last["test_acc"]) and last["gap"] == pytest.approx(last["test_loss"] - last["train_loss"])
    assert last["test_loss"] < result.snapshots[0]["test_loss"]


def test_mixed_dropout_and_augmentation_train_and_stay_finite():
    base = {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 1, "conv_width": 4, "fc_layers": 1,
            "fc_width": 16, "batch_size": 64}
    jobs = [dict(base, seed=i, optimizer="adam", lr=0.003, dropout=d, augmentation=a)
            for i, (d, a) in enumerate([(0.1, "none"), (0.3, "shift"), (0.2, "noise")])]
    results = train_fleet(jobs, TRAINING)
    assert all(r.status == "ok" and np.isfinite(r.weights).all() for r in results)
    assert all(r.snapshots[-1]["test_acc"] > 0.2 for r in results)  # chance is 0.1


@pytest.mark.parametrize("kinds", [["sgd", "momentum", "adam", "rmsprop"], ["adam"] * 4, ["rmsprop"] * 4],
                         ids=["mixed", "adam", "rmsprop"])
def test_optimizers_match_torch_optim_on_a_quadratic(kinds):
    from weightzoo.train.optim import StackedOptimizer, make_torch_optimizer

    target = torch.tensor([1.0, -2.0, 3.0])
    stacked = torch.zeros(4, 3, requires_grad=True)  # one row of parameters per model
    optimizer = StackedOptimizer(stacked, kinds, [0.1, 0.05, 0.2, 0.01], [0.0, 0.01, 0.1, 0.0])
    singles = [torch.zeros(3, requires_grad=True) for _ in kinds]
    torch_optimizers = [make_torch_optimizer(k, [w], lr, wd)
                        for k, w, lr, wd in zip(kinds, singles, [0.1, 0.05, 0.2, 0.01], [0.0, 0.01, 0.1, 0.0])]
    for _ in range(20):
        loss = ((stacked - target) ** 2).sum()
        grad, = torch.autograd.grad(loss, [stacked])
        optimizer.step(grad)
        for w, opt in zip(singles, torch_optimizers):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([w.detach() for w in singles]),
                               rtol=1e-5, atol=1e-6)


def test_single_activation_fleets_take_the_hand_vectorised_path_and_mixed_ones_vmap():
    from weightzoo.train.fleet import _Fleet

    cnn = {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 1, "conv_width": 3, "fc_layers": 1,
           "fc_width": 8, "batch_norm": True, "dropout": 0.1, "batch_size": 64}
    assert _Fleet(_jobs(cnn), TRAINING, None).hand_vectorised
    assert not _Fleet(_jobs(cnn, activations=("relu", "tanh")), TRAINING, None).hand_vectorised


def test_hand_vectorised_and_vmap_paths_agree():
    from weightzoo.train.fleet import _Fleet

    cnn = {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 2, "conv_width": 3, "fc_layers": 1,
           "fc_width": 8, "batch_norm": True, "batch_size": 64}
    hand, mapped = _Fleet(_jobs(cnn), TRAINING, None), _Fleet(_jobs(cnn), TRAINING, None)
    mapped.hand_vectorised = False
    x = hand.x_train[:64].unsqueeze(0).expand(4, -1, -1, -1, -1)
    torch.testing.assert_close(hand.run(x), mapped.run(x), rtol=1e-5, atol=1e-5)
    hand.train_epoch(1)
    mapped.train_epoch(1)
    np.testing.assert_allclose(hand._flat_weights()[:2], mapped._flat_weights()[:2], atol=1e-4)


def test_relu_runs_after_the_max_pool_with_identical_outputs_and_gradients(monkeypatch):
    from weightzoo.train import stacked
    from weightzoo.train.fleet import _Fleet

    fleet = _Fleet(_jobs(CNN), TRAINING, None)
    x = fleet.x_train[:64].unsqueeze(0).expand(4, -1, -1, -1, -1)
    tensors = {"2": {"p": torch.zeros(4)}}  # the first block's dropout, rate 0 for every model
    swapped = [type(layer).__name__ for _, layer in stacked._pool_before_relu(fleet.base, tensors)]
    assert swapped[:4] == ["Conv2d", "MaxPool2d", "Activation", "Dropout"], "an idle dropout does not stop the move"
    active = {"2": {"p": torch.tensor([0.0, 0.1, 0.0, 0.0])}}
    assert [type(layer).__name__ for _, layer in stacked._pool_before_relu(fleet.base, active)][:4] == [
        "Conv2d", "Activation", "Dropout", "MaxPool2d"], "masks do not commute with the pool"

    def outputs_and_gradients():
        out = fleet.run(x)
        return [out, *torch.autograd.grad(out.square().sum(), list(fleet.trainable.values()))]

    reordered = outputs_and_gradients()
    monkeypatch.setattr(stacked, "_pool_before_relu", lambda model, *args: list(enumerate(model)))
    for a, b in zip(reordered, outputs_and_gradients()):
        assert torch.equal(a, b)


def test_fleets_with_dropout_and_augmentation_are_reproducible():
    base = {"dataset": "digits", "architecture": "mlp", "hidden_width": 16, "batch_size": 64, "dropout": 0.3,
            "augmentation": "shift", "optimizer": "adam", "lr": 0.003}
    jobs = [dict(base, seed=s) for s in range(3)]
    first, second = train_fleet(jobs, TRAINING), train_fleet(jobs, TRAINING)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.weights, b.weights)


def test_finetuning_the_initialisation_with_the_model_seed_reproduces_training():
    job = dict(MLP, seed=4, optimizer="momentum", lr=0.02, augmentation="noise", dropout=0.2)
    trained = train_model(job, TRAINING)
    model = build_model(job)
    model.load_state_dict(trained.layout.unflatten(trained.weights[0]), strict=False)
    assert finetune_model(model, job, model_task(job, TRAINING), 2, seed=4) is None
    np.testing.assert_array_equal(trained.layout.flatten(model.state_dict()), trained.weights[2])
    assert not model.training


def test_finetuning_reports_divergence():
    job = dict(MLP, seed=1, optimizer="sgd", lr=1e6)
    model = build_model(job)
    failure = finetune_model(model, job, model_task(job, TRAINING), 3, seed=1)
    assert failure is not None and "fine-tuning epoch" in failure
