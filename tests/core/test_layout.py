"""WeightLayout invariants: the flat order is fixed and flatten/unflatten round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model

CONFIGS = [
    {"dataset": "digits", "architecture": "mlp", "hidden_layers": 2, "hidden_width": 7, "batch_norm": True},
    {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 2, "conv_width": 3, "batch_norm": True},
    {"dataset": "mnist5k", "architecture": "small-cnn"},
    {"dataset": "digits", "architecture": "large-cnn"},
]


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.dtype.is_floating_point:
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    return model


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["architecture"])
def test_flatten_unflatten_is_identity_and_reproduces_outputs(config):
    model = _randomised(build_model(config), seed=1).eval()
    layout = WeightLayout.from_module(model)
    flat = layout.flatten(model.state_dict())
    assert flat.shape == (layout.n_params,) and flat.dtype == np.float32
    np.testing.assert_array_equal(layout.flatten(layout.unflatten(flat)), flat)
    rebuilt = build_model(config).eval()
    rebuilt.load_state_dict(layout.unflatten(flat), strict=False)
    x = torch.randn((5,) + tuple({"digits": (1, 8, 8), "mnist5k": (1, 28, 28)}[config["dataset"]]))
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_small_cnn_has_the_model_zoo_parameter_count():
    layout = WeightLayout.from_module(build_model({"dataset": "mnist5k", "architecture": "small-cnn"}))
    assert layout.n_params == 2464
    assert [t.kind for t in layout.tensors][:2] == ["conv", "conv"]


def test_layout_id_depends_on_structure_not_values():
    a = WeightLayout.from_module(build_model({"dataset": "digits", "architecture": "mlp", "seed": 1}))
    b = WeightLayout.from_module(build_model({"dataset": "digits", "architecture": "mlp", "seed": 2}))
    c = WeightLayout.from_module(build_model({"dataset": "digits", "architecture": "mlp", "hidden_width": 9}))
    assert a.layout_id == b.layout_id != c.layout_id


def test_records_round_trip_and_shapes_are_int_lists():
    layout = WeightLayout.from_module(build_model(CONFIGS[1]))
    records = layout.to_records()
    assert all(isinstance(s, int) for r in records for s in r["shape"])
    assert WeightLayout.from_records(reversed(records)) == layout


def test_indices_select_by_kind_layer_and_role():
    layout = WeightLayout.from_module(build_model(CONFIGS[1]))
    conv = layout.indices(kinds=["conv"])
    assert len(conv) == sum(t.length for t in layout.tensors if t.kind == "conv")
    biases = layout.indices(roles=["bias"], layers=[0])
    assert len(biases) == 3  # conv_width biases of the first layer
    assert layout.indices(names=["nothing"]).size == 0


def test_permuting_hidden_units_leaves_outputs_unchanged():
    config = {"dataset": "digits", "architecture": "mlp", "hidden_layers": 1, "hidden_width": 12, "activation": "tanh"}
    model = build_model(config).eval()
    state = model.state_dict()
    permutation = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    permuted = dict(state)
    # Flatten(0), Linear(1), Activation(2), Dropout(3), Linear(4): permute rows of 1, columns of 4
    permuted["1.weight"], permuted["1.bias"] = state["1.weight"][permutation], state["1.bias"][permutation]
    permuted["4.weight"] = state["4.weight"][:, permutation]
    other = build_model(config).eval()
    other.load_state_dict(permuted)
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(other(x), model(x), rtol=1e-5, atol=1e-6)
    assert not torch.equal(other.state_dict()["1.weight"], state["1.weight"])


def test_unflatten_rejects_a_vector_of_the_wrong_length():
    layout = WeightLayout.from_module(build_model(CONFIGS[0]))
    with pytest.raises(ValueError, match=layout.layout_id):
        layout.unflatten(np.zeros(layout.n_params + 1))


@pytest.mark.parametrize("config", CONFIGS + [{"dataset": "mnist5k", "architecture": "unterthiner-cnn"}],
                         ids=lambda c: c["architecture"])
def test_a_dropout_grid_is_one_layout(config):
    """Every block has its Dropout module whatever the rate, so tensor names and the layout
    depend on the parameter tensors alone."""
    layouts = {WeightLayout.from_module(build_model({**config, "dropout": rate})).layout_id for rate in (0.0, 0.3)}
    assert len(layouts) == 1


def test_a_rate_of_zero_is_an_identity_that_draws_no_random_numbers():
    model = build_model({"dataset": "digits", "architecture": "mlp", "dropout": 0.0}).train()
    x = torch.randn(4, 1, 8, 8)
    before = torch.random.get_rng_state()
    out = model(x)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.testing.assert_close(out, model.eval()(x), rtol=0, atol=0)


def test_small_cnn_tensors_sit_at_the_module_indices_of_the_model_zoo_cnn():
    """Schürholt et al.'s CNN (def_net.py) with dropout: conv at module_list 0, 4, 8 and
    linear at 11, 14; no dropout after the third conv."""
    for rate in (0.0, 0.5):
        model = build_model({"dataset": "mnist5k", "architecture": "small-cnn", "dropout": rate})
        owners = [t.name.rpartition(".")[0] for t in WeightLayout.from_module(model).tensors]
        assert list(dict.fromkeys(owners)) == ["0", "4", "8", "11", "14"]
        assert [type(m).__name__ for m in model][8:11] == ["Conv2d", "Activation", "Flatten"]


def test_a_layout_stored_under_older_names_loads_by_position():
    """Layouts published before every block had its Dropout module named tensors by the
    indices of a network without them (mlp: 1 and 3); they still load into today's module."""
    old = WeightLayout.from_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
                                                       torch.nn.Tanh(), torch.nn.Linear(32, 10)))
    module = build_model({"dataset": "digits", "architecture": "mlp", "activation": "tanh"})
    named = old.named_as(module)
    assert [t.name for t in named.tensors] == ["1.weight", "1.bias", "4.weight", "4.bias"]
    assert [t.name for t in old.tensors][2:] == ["3.weight", "3.bias"] and old.same_tensors(named)
    assert WeightLayout.from_module(module).named_as(module) == WeightLayout.from_module(module)
    other = build_model({"dataset": "digits", "architecture": "mlp", "hidden_width": 16})
    with pytest.raises(ValueError, match="are not those of layout"):
        old.named_as(other)
