"""Tokenisation: one row per unit, cut into padded tokens, and an exact way back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model
from weightzoo.core.tokens import Tokenizer, detokenize, tokenize, tokenizer_for, unit_groups

CONFIGS = [
    {"dataset": "digits", "architecture": "mlp", "hidden_layers": 2, "hidden_width": 7, "batch_norm": True},
    {"dataset": "digits", "architecture": "nws-cnn", "conv_width": 3, "fc_width": 5, "batch_norm": True},
    {"dataset": "mnist5k", "architecture": "small-cnn"},
    {"dataset": "digits", "architecture": "large-cnn", "batch_norm": True},
    {"dataset": "digits", "architecture": "mlp", "frozen_identity_input": True, "hidden_width": 6},
]
INPUTS = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28)}


class Odd(nn.Module):
    """Parameters that no conv/linear unit owns: unequal leading sizes and a scalar."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(2, 3))
        self.offsets = nn.Parameter(torch.randn(5))
        self.gain = nn.Parameter(torch.tensor(1.5))


def odd_layout() -> WeightLayout:
    # a batch norm with no layer before it, a layer norm (kind "other"), and the Odd module
    return WeightLayout.from_module(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3), nn.LayerNorm(3), Odd()))


def randomised(layout: WeightLayout, seed: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    flat = np.random.default_rng(seed).standard_normal(batch + (layout.n_params,)).astype(np.float32)
    var = layout.indices(roles=["bn_var"])
    flat[..., var] = np.abs(flat[..., var]) + 0.5  # running variances must stay positive
    return flat


@pytest.mark.parametrize("token_size", [1, 5, 16, 1000])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["architecture"])
def test_round_trip_is_bit_exact_for_vectors_and_batches(config, token_size):
    layout = WeightLayout.from_module(build_model(config))
    tokenizer = Tokenizer(layout, token_size)
    flat = randomised(layout, seed=token_size, batch=(3,))
    tokens = tokenizer.tokenize(flat)
    assert tokens.shape == (3, tokenizer.n_tokens, token_size) and tokens.dtype == np.float32
    np.testing.assert_array_equal(tokenizer.detokenize(tokens), flat)
    np.testing.assert_array_equal(tokenizer.detokenize(tokenizer.tokenize(flat[1])), flat[1])
    as_torch = tokenizer.tokenize(torch.from_numpy(flat))
    assert torch.equal(as_torch, torch.from_numpy(tokens))
    assert torch.equal(tokenizer.detokenize(as_torch), torch.from_numpy(flat))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["architecture"])
def test_detokenized_weights_rebuild_a_model_with_identical_outputs(config):
    model = build_model(config).eval()
    layout = WeightLayout.from_module(model)
    flat = layout.flatten(model.state_dict()) + 0.1 * randomised(layout, seed=3)
    model.load_state_dict(layout.unflatten(flat), strict=False)
    tokens, _, _ = tokenize(flat, layout, 7)
    rebuilt = build_model(config).eval()
    result = rebuilt.load_state_dict(layout.unflatten(detokenize(tokens, layout)), strict=False)
    assert all(key.endswith("num_batches_tracked") for key in result.missing_keys)
    x = torch.randn((6,) + INPUTS[config["dataset"]])
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_a_unit_row_is_its_weights_bias_and_batch_norm_values_in_order():
    model = build_model(CONFIGS[1]).eval()
    layout = WeightLayout.from_module(model)
    state = layout.unflatten(randomised(layout, seed=0))
    tokenizer = Tokenizer(layout, 4)
    tokens = tokenizer.tokenize(layout.flatten(state))
    # group 1 is the second conv (module 5: 3 units, 3*3*3 weights) with its batch norm (module 6)
    unit = 2
    rows = (tokenizer.positions[:, 1] == 1) & (tokenizer.positions[:, 2] == unit)
    row = tokens[rows][tokenizer.mask[rows]]
    batch_norm = [[state[f"6.{leaf}"][unit]] for leaf in ("weight", "bias", "running_mean", "running_var")]
    expected = np.concatenate([state["5.weight"][unit].reshape(-1).numpy(), [state["5.bias"][unit]], *batch_norm])
    np.testing.assert_array_equal(row, expected.astype(np.float32))
    assert rows.sum() == -(-expected.size // 4), "a row longer than a token spans ceil(row / size) tokens"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["architecture"])
def test_token_format_positions_and_mask(config):
    layout = WeightLayout.from_module(build_model(config))
    tokenizer = Tokenizer(layout, 6)
    positions, mask, index = tokenizer.positions, tokenizer.mask, tokenizer.flat_index
    assert positions.dtype == np.int64 and positions.shape == (tokenizer.n_tokens, 3)
    assert mask.dtype == bool and mask.shape == index.shape == (tokenizer.n_tokens, 6)
    np.testing.assert_array_equal(positions[:, 0], np.arange(tokenizer.n_tokens))
    np.testing.assert_array_equal(np.sort(index[mask]), np.arange(layout.n_params))
    assert (index[~mask] == -1).all()
    # (group, unit) pairs never go back: a unit's tokens are consecutive
    pairs = positions[:, 1] * 10**6 + positions[:, 2]
    assert (np.diff(pairs) >= 0).all()
    groups = unit_groups(layout)
    for number, group in enumerate(groups):
        units = positions[positions[:, 1] == number, 2]
        np.testing.assert_array_equal(np.unique(units), np.arange(group.n_units))
    # padding is only ever at the end of a unit's last token
    assert not (mask[:, 1:] & ~mask[:, :-1]).any()
    tokens = tokenizer.tokenize(np.ones(layout.n_params, np.float32))
    np.testing.assert_array_equal(tokens, mask.astype(np.float32))


def test_batch_norm_joins_the_layer_before_it_and_positions_count_groups():
    layout = WeightLayout.from_module(build_model(CONFIGS[1]))
    groups = unit_groups(layout)
    assert [(g.layers, g.kind, g.n_units) for g in groups] == [
        ((0, 1), "conv", 3), ((2, 3), "conv", 3), ((4, 5), "linear", 5), ((6,), "linear", 10)]
    tokenizer = Tokenizer(layout, 1000)
    assert tokenizer.n_tokens == 3 + 3 + 5 + 10, "one token per unit when the token is long enough"
    assert tokenizer.max_row_length == 3 * 3 * 3 + 1 + 4


def test_tensors_outside_any_unit_still_round_trip():
    layout = odd_layout()
    groups = unit_groups(layout)
    assert [(g.kind, g.n_units, len(g.tensors)) for g in groups] == [
        ("batchnorm", 4, 4), ("linear", 3, 2), ("other", 3, 2), ("other", 2, 1), ("other", 5, 1), ("other", 1, 1)]
    tokenizer = Tokenizer(layout, 3)
    flat = randomised(layout, seed=5, batch=(2,))
    np.testing.assert_array_equal(tokenizer.detokenize(tokenizer.tokenize(flat)), flat)
    np.testing.assert_array_equal(np.sort(tokenizer.flat_index[tokenizer.mask]), np.arange(layout.n_params))
    np.testing.assert_array_equal(np.unique(tokenizer.value_layers[tokenizer.mask]), np.arange(layout.n_layers))


def test_value_layers_name_each_values_layout_layer():
    layout = WeightLayout.from_module(build_model(CONFIGS[0]))
    tokenizer = Tokenizer(layout, 5)
    layer_of = np.concatenate([np.full(t.length, t.layer) for t in layout.tensors])
    real = tokenizer.mask
    np.testing.assert_array_equal(tokenizer.value_layers[real], layer_of[tokenizer.flat_index[real]])
    assert (tokenizer.value_layers[~tokenizer.mask] == -1).all()


def test_mask_and_positions_are_computed_once_per_layout_and_size():
    layout = WeightLayout.from_module(build_model(CONFIGS[2]))
    _, mask_a, positions_a = tokenize(randomised(layout, 0), layout, 9)
    _, mask_b, positions_b = tokenize(randomised(layout, 1), layout, 9)
    assert mask_a is mask_b and positions_a is positions_b
    assert tokenizer_for(layout, 9) is tokenizer_for(WeightLayout.from_module(build_model(CONFIGS[2])), 9)
    with pytest.raises(ValueError):
        mask_a[0, 0] = False  # shared tables are read-only


@pytest.mark.parametrize("token_size", [0, -3, 2.5])
def test_a_token_size_below_one_is_rejected(token_size):
    with pytest.raises(ValueError, match="token_size"):
        Tokenizer(odd_layout(), token_size)


def test_wrong_lengths_and_shapes_are_rejected():
    layout = odd_layout()
    tokenizer = Tokenizer(layout, 4)
    with pytest.raises(ValueError, match=f"expected \\[..., {layout.n_params}\\]"):
        tokenizer.tokenize(np.zeros(layout.n_params + 1, np.float32))
    with pytest.raises(ValueError, match="tokens of shape"):
        tokenizer.detokenize(np.zeros((tokenizer.n_tokens, 5), np.float32))
    with pytest.raises(ValueError, match="tokens of shape"):
        tokenizer.detokenize(np.zeros(tokenizer.n_tokens * 4, np.float32))
