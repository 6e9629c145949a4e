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
    # Flatten(0) → Linear(1) → Activation(2) → Linear(3): permute rows of 1, columns of 3
    permuted["1.weight"], permuted["1.bias"] = state["1.weight"][permutation], state["1.bias"][permutation]
    permuted["3.weight"] = state["3.weight"][:, permutation]
    other = build_model(config).eval()
    other.load_state_dict(permuted)
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(other(x), model(x), rtol=1e-5, atol=1e-6)
    assert not torch.equal(other.state_dict()["1.weight"], state["1.weight"])


def test_unflatten_rejects_a_vector_of_the_wrong_length():
    layout = WeightLayout.from_module(build_model(CONFIGS[0]))
    with pytest.raises(ValueError, match=layout.layout_id):
        layout.unflatten(np.zeros(layout.n_params + 1))
