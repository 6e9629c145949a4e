"""Permuting hidden units keeps a network's function; token augmentations respect the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model
from weightzoo.core.permutations import (PermutationError, hidden_unit_permutation, permutation_plan,
                                         permute_hidden_units)


CONFIGS = [
    {"dataset": "digits", "architecture": "mlp", "hidden_layers": 2, "hidden_width": 9},
    {"dataset": "digits", "architecture": "mlp", "hidden_layers": 2, "hidden_width": 9, "batch_norm": True},
    {"dataset": "digits", "architecture": "nws-cnn", "conv_width": 6, "fc_width": 7, "fc_layers": 2},
    {"dataset": "digits", "architecture": "nws-cnn", "conv_width": 6, "fc_width": 7, "batch_norm": True},
    {"dataset": "mnist5k", "architecture": "small-cnn"},
    {"dataset": "digits", "architecture": "large-cnn", "batch_norm": True},
]
IDS = ["mlp", "mlp-bn", "nws-cnn", "nws-cnn-bn", "small-cnn", "large-cnn-bn"]
INPUTS = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28)}


def trained_like(config, seed: int = 0):
    """The model in eval mode and a flat vector: its init plus noise, with non-trivial batch norms."""
    model = build_model(config).eval()
    layout = WeightLayout.from_module(model)
    rng = np.random.default_rng(seed)
    flat = layout.flatten(model.state_dict()) + 0.2 * rng.standard_normal(layout.n_params).astype(np.float32)
    var = layout.indices(roles=["bn_var"])
    flat[var] = np.abs(flat[var]) + 0.5
    return model, layout, flat


def outputs(model, layout, flat, x):
    model.load_state_dict(layout.unflatten(flat), strict=False)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_permuting_hidden_units_keeps_the_outputs(config):
    model, layout, flat = trained_like(config)
    permuted = permute_hidden_units(flat, layout, 7, model=model)
    x = torch.randn((32,) + INPUTS[config["dataset"]], generator=torch.Generator().manual_seed(0))
    expected = outputs(model, layout, flat, x)
    torch.testing.assert_close(outputs(model, layout, permuted, x), expected, rtol=1e-5, atol=1e-5)
    assert permuted.shape == flat.shape and not np.array_equal(permuted, flat)
    np.testing.assert_array_equal(np.sort(permuted), np.sort(flat))
    for group, _, _ in permutation_plan(layout):  # every hidden layer moved
        weight = group.weight
        assert not np.array_equal(permuted[weight.offset:weight.offset + weight.length],
                                  flat[weight.offset:weight.offset + weight.length]), weight.name


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_outputs_and_inputs_of_the_network_stay_in_place(config):
    _, layout, flat = trained_like(config)
    permuted = permute_hidden_units(flat, layout, 3)
    last = layout.tensors[-1]  # the output bias: its units are the classes
    np.testing.assert_array_equal(permuted[last.offset:], flat[last.offset:])
    first = layout.tensors[0]  # the first weight's input axis is the data: columns keep their order
    rows = lambda v: {tuple(r) for r in v[first.offset:first.offset + first.length].reshape(first.shape[0], -1)}
    assert rows(permuted) == rows(flat)


def test_conv_to_linear_moves_whole_channel_blocks():
    _, layout, _ = trained_like(CONFIGS[2])
    plan = permutation_plan(layout)
    conv, linear, block = plan[1]
    assert (conv.kind, linear.kind) == ("conv", "linear")
    assert block == linear.weight.shape[1] // conv.n_units == 2 * 2, "8x8 digits pooled twice: 2x2 per channel"
    assert [b for _, _, b in plan] == [1, 4, 1, 1], "two hidden fc layers after the convs"


def test_each_row_of_a_batch_gets_its_own_permutation_and_seeds_repeat():
    model, layout, flat = trained_like(CONFIGS[3])
    batch = np.stack([flat, flat, flat])
    permuted = permute_hidden_units(batch, layout, 11)
    assert not np.array_equal(permuted[0], permuted[1]) and not np.array_equal(permuted[1], permuted[2])
    np.testing.assert_array_equal(permute_hidden_units(batch, layout, 11), permuted)
    x = torch.randn((8,) + INPUTS["digits"])
    for row in permuted:
        torch.testing.assert_close(outputs(model, layout, row, x), outputs(model, layout, flat, x),
                                   rtol=1e-5, atol=1e-5)
    as_torch = permute_hidden_units(torch.from_numpy(batch), layout, 11)
    assert isinstance(as_torch, torch.Tensor) and torch.equal(as_torch, torch.from_numpy(permuted))
    index = hidden_unit_permutation(layout, 5)
    np.testing.assert_array_equal(np.sort(index), np.arange(layout.n_params))


def test_a_frozen_identity_input_stays_an_identity_when_the_model_is_given():
    config = {"dataset": "digits", "architecture": "mlp", "frozen_identity_input": True, "hidden_width": 9}
    model, layout, flat = trained_like(config)
    identity = layout.tensor("1.weight")
    flat[identity.offset:identity.offset + identity.length] = np.eye(64, dtype=np.float32).ravel()
    permuted = permute_hidden_units(flat, layout, 2, model=model)
    np.testing.assert_array_equal(permuted[identity.offset:identity.offset + identity.length],
                                  flat[identity.offset:identity.offset + identity.length])
    x = torch.randn((8,) + INPUTS["digits"])
    torch.testing.assert_close(outputs(model, layout, permuted, x), outputs(model, layout, flat, x))
    assert len(permutation_plan(layout)) == 2 and len(permutation_plan(layout, model)) == 1


@pytest.mark.parametrize("modules, match", [
    ([nn.Linear(4, 6), nn.Unflatten(1, (6, 1, 1)), nn.Conv2d(6, 2, 1)], "cannot match units"),
    ([nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(10, 2)], "cannot match units"),
    ([nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2)], "cannot match units"),
    ([nn.BatchNorm1d(4), nn.Linear(4, 3), nn.Linear(3, 2)], "outside a conv/linear layer"),
    ([nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2)], "outside a conv/linear layer"),
])
def test_layouts_that_cannot_be_permuted_safely_are_rejected(modules, match):
    layout = WeightLayout.from_module(nn.Sequential(*modules))
    with pytest.raises(PermutationError, match=match):
        permute_hidden_units(np.zeros(layout.n_params, np.float32), layout, 0)


@pytest.mark.parametrize("modules, match", [
    ([nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2)], "Softmax"),
    ([nn.Conv2d(1, 4, 3), nn.Flatten(0), nn.Linear(4, 2)], "flattens"),
])
def test_models_with_modules_that_mix_units_are_rejected(modules, match):
    model = nn.Sequential(*modules)
    layout = WeightLayout.from_module(model)
    with pytest.raises(PermutationError, match=match):
        permute_hidden_units(np.zeros(layout.n_params, np.float32), layout, 0, model=model)


def test_a_model_of_another_layout_and_a_wrong_length_are_rejected():
    model, layout, flat = trained_like(CONFIGS[0])
    with pytest.raises(PermutationError, match="is not layout"):
        permute_hidden_units(flat, layout, 0, model=build_model(CONFIGS[1]))
    with pytest.raises(ValueError, match="n_params"):
        permute_hidden_units(flat[:-1], layout, 0)
