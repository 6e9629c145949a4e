"""The neural functional: invariant to hidden-unit permutations (and only to those), learns a
planted signal through fit_predict, and names what it cannot handle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from weightzoo.analysis.nfn import InvariantNetwork, NetworkStructure, Settings, fit_predict
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model
from weightzoo.core.permutations import permute_hidden_units
from weightzoo.errors import InputError
from weightzoo.io.reader import open_zoo
from zookit import publish_staged, stage_inputs, staged_inputs

CONFIGS = {
    "mlp": {"architecture": "mlp", "dataset": "digits", "hidden_layers": 2, "hidden_width": 12},
    "nws-cnn-bn": {"architecture": "nws-cnn", "dataset": "cifar10", "batch_norm": True, "conv_layers": 2,
                   "conv_width": 6, "fc_width": 10},
    "small-cnn": {"architecture": "small-cnn", "dataset": "mnist5k"},
}
FAST = Settings(epochs=12, batch_size=8, lr=3e-3, width=16, depth=2, hidden=32, dropout=0.0)


def _layout(name: str) -> WeightLayout:
    return WeightLayout.from_module(build_model(CONFIGS[name]))


def _network(layout: WeightLayout, seed: int = 0) -> InvariantNetwork:
    """An untrained network with a non-trivial per-tensor standardisation, in eval mode."""
    torch.manual_seed(seed)
    net = InvariantNetwork(NetworkStructure.of(layout), 3, width=8, depth=2, hidden=16)
    owner = torch.from_numpy(net.structure.tensor_of_position)
    net.shift[:] = 0.1 * torch.randn(len(layout.tensors))[owner]
    net.scale[:] = (0.5 + torch.rand(len(layout.tensors)))[owner]
    return net.eval()


def _weights(layout: WeightLayout, n: int = 4) -> torch.Tensor:
    """``n`` random flat vectors (batch norm running statistics included, all non-trivial)."""
    return torch.randn(n, layout.n_params, generator=torch.Generator().manual_seed(1))


def _input_permutation(structure: NetworkStructure, rng) -> torch.Tensor:
    """A flat index that permutes the first layer's inputs (not a symmetry of the network)."""
    index = np.arange(structure.layout.n_params)
    first = structure.layers[0].weight_index
    index[first.ravel()] = first[:, rng.permutation(first.shape[1])].ravel()
    return torch.from_numpy(index)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_is_unchanged_when_hidden_units_are_permuted(name):
    layout = _layout(name)
    net, flat = _network(layout), _weights(layout)
    permuted = permute_hidden_units(flat, layout, 5)
    assert not torch.equal(permuted, flat)
    with torch.no_grad():
        out, out_permuted = net(flat), net(permuted)
    torch.testing.assert_close(out_permuted, out, rtol=1e-5, atol=1e-5)
    assert (out[0] - out[1]).abs().max() > 1e-3, "the network should still tell different inputs apart"


@pytest.mark.parametrize("name", ["mlp", "nws-cnn-bn"])
def test_permuting_the_first_layers_inputs_changes_the_output(name):
    layout = _layout(name)
    net, flat = _network(layout), _weights(layout)
    assert net.structure.layers[0].n_in > 1
    index = _input_permutation(net.structure, np.random.default_rng(2))
    with torch.no_grad():
        change = (net(flat[:, index]) - net(flat)).abs().max()
    assert change > 1e-3, "inputs are not interchangeable: the network must see their order"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_structure_places_every_flat_value_once(name):
    layout = _layout(name)
    structure = NetworkStructure.of(layout)
    positions = np.concatenate([np.r_[layer.weight_index.ravel(), layer.unit_index.ravel()]
                                for layer in structure.layers])
    np.testing.assert_array_equal(np.sort(positions), np.arange(layout.n_params))
    assert structure.layers[-1].n_out == 10


def test_batch_norm_values_belong_to_their_units():
    structure = NetworkStructure.of(_layout("nws-cnn-bn"))
    first, second, fc, last = structure.layers
    assert first.unit_roles == ("bias", "bn_weight", "bn_bias", "bn_mean", "bn_var")
    assert (first.n_in, first.spatial, second.n_in, second.spatial) == (3, 9, 6, 9)
    assert (fc.n_in, fc.spatial) == (6, 64)  # a channel owns its 8×8 features after Flatten
    assert last.unit_roles == ("bias",)


def test_a_layout_that_is_no_chain_is_refused():
    layout = WeightLayout.from_module(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)))
    with pytest.raises(InputError, match="chain of conv/linear layers"):
        NetworkStructure.of(layout)


def _planted_zoo(root, n_models: int = 48):
    """MLPs whose weights' spread is 3× larger for optimizer 'sgd' than for 'adam'."""
    fingerprints = []
    for i in range(n_models):
        inputs = staged_inputs("mlp", i)
        spread = 3.0 if inputs["record"]["hyperparameters"]["optimizer"] == "sgd" else 1.0
        stage_inputs(root, dict(inputs, weights=inputs["weights"] * np.float32(spread)))
        fingerprints.append(inputs["fingerprint"])
    publish_staged(root, fingerprints)
    return open_zoo(root)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _planted_zoo(tmp_path_factory.mktemp("nfn-planted") / "zoo")


def _split(zoo):
    ids = sorted(zoo.models["model_id"])
    return ids[::3] + ids[1::3], ids[2::3]


def test_a_planted_signal_is_found(planted):
    train, test = _split(planted)
    messages = []
    result = fit_predict(planted, train, test, "optimizer", snapshots="1:", settings=FAST, progress=messages.append)
    assert list(result.columns) == ["model_id", "k", "prediction"]
    expected = planted.select(snapshots="1:", model_ids=test).rows
    assert list(zip(result["model_id"], result["k"])) == list(zip(expected["model_id"], expected["k"]))
    accuracy = (result["prediction"].to_numpy() == expected["optimizer"].to_numpy()).mean()
    assert accuracy >= 0.85, f"accuracy {accuracy:.2f} against chance 0.5"
    assert len(messages) == FAST.epochs and "epoch 12/12" in messages[-1]


def test_fit_predict_is_deterministic_for_a_seed_and_regresses_floats(planted):
    train, test = _split(planted)
    first = fit_predict(planted, train, test, "lr", snapshots=2, settings=Settings(epochs=2, width=4, depth=1))
    again = fit_predict(planted, train, test, "lr", snapshots=2, settings=Settings(epochs=2, width=4, depth=1))
    pd.testing.assert_frame_equal(first, again)
    assert first["prediction"].dtype == np.float64 and (first["prediction"] > 0).all()  # lr: a log scale
    assert len(first) == len(test) and set(first["k"]) == {2}


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("nfn-two-layouts") / "zoo"
    inputs = [staged_inputs(architecture, i) for architecture in ("conv", "mlp") for i in range(4)]
    for one in inputs:
        stage_inputs(root, one)
    publish_staged(root, [one["fingerprint"] for one in inputs])
    return open_zoo(root)


def test_a_selection_spanning_layouts_is_refused_with_both_named(two_layouts):
    models = two_layouts.models.sort_values("model_id")
    layouts = sorted(models["layout_id"].unique())
    with pytest.raises(InputError, match="spans 2") as error:
        fit_predict(two_layouts, ["conv-000", "mlp-000"], ["conv-001"], "optimizer", snapshots="1:")
    assert all(layout_id in str(error.value) for layout_id in layouts)


@pytest.mark.parametrize(("train", "test", "target", "message"), [
    (["mlp-000", "mlp-001"], ["mlp-002"], "no_such_column", "unknown column 'no_such_column'"),
    (["mlp-000", "mlp-002"], ["mlp-001"], "optimizer", "single class"),
    (["mlp-000", "mlp-001"], ["mlp-001"], "optimizer", "both sides"),
])
def test_bad_targets_and_splits_are_refused(two_layouts, train, test, target, message):
    with pytest.raises(InputError, match=message):
        fit_predict(two_layouts, train, test, target, snapshots="1:")
