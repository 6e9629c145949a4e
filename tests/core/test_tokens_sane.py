"""Batch norm arranged as SANE arranges it (``bn="separate"`` and ``bn="ignore"``).

The reference is SANE's ``tokenize_checkpoint`` / ``tokens_to_checkpoint``
(``SANE/datasets/dataset_auxiliaries.py``), restated here from what that code does: walk
the state dict in order; a key holding ``weight`` is one layer whose rows are
``weight.view(out, -1)`` with the key's bias (``weight`` → ``bias``) appended as a column;
``running_mean`` and ``running_var`` are layers of their own; every other key is skipped;
rows are cut into zero-padded tokens of the token size, each token positioned (token
index, layer index, row); ``ignore_bn`` drops keys naming ``bn``, ``downsample.1`` or
``batchnorm``. Decoding selects each layer's tokens by position and cuts the rows back.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model
from weightzoo.core.tokens import Tokenizer, unit_groups

BN_CONFIGS = [
    {"dataset": "digits", "architecture": "nws-cnn", "conv_layers": 2, "conv_width": 3, "batch_norm": True},
    {"dataset": "digits", "architecture": "mlp", "hidden_layers": 2, "hidden_width": 5, "batch_norm": True},
]


def sane_layers(state: dict, ignore_bn: bool) -> list[torch.Tensor]:
    """The rows of each layer in SANE's order."""
    layers = []
    for key, value in state.items():
        if ignore_bn and ("bn" in key or "downsample.1" in key or "batchnorm" in key):
            continue
        if "weight" in key or "running_mean" in key or "running_var" in key:
            rows = value.reshape(value.shape[0], -1)
            if "weight" in key and key.replace("weight", "bias") in state:
                rows = torch.cat([rows, state[key.replace("weight", "bias")].unsqueeze(1)], dim=1)
            layers.append(rows)
    return layers


def sane_tokens(state: dict, token_size: int, ignore_bn: bool = False):
    tokens, masks, positions = [], [], []
    for layer, rows in enumerate(sane_layers(state, ignore_bn)):
        per_row = -(-rows.shape[1] // token_size)
        padded = torch.zeros(rows.shape[0], per_row * token_size)
        padded[:, :rows.shape[1]] = rows
        mask = torch.zeros_like(padded, dtype=torch.bool)
        mask[:, :rows.shape[1]] = True
        tokens.append(padded.view(-1, token_size))
        masks.append(mask.view(-1, token_size))
        positions += [(layer, row) for row in range(rows.shape[0]) for _ in range(per_row)]
    positions = torch.tensor([(n, layer, row) for n, (layer, row) in enumerate(positions)])
    return torch.cat(tokens), torch.cat(masks), positions


def sane_decode(tokens: torch.Tensor, positions: torch.Tensor, reference: dict, ignore_bn: bool = False) -> dict:
    """tokens_to_checkpoint: each layer's tokens by position, cut back to rows."""
    out, layer = OrderedDict((k, v.clone()) for k, v in reference.items()), 0
    for key, value in reference.items():
        if ignore_bn and ("bn" in key or "downsample.1" in key or "batchnorm" in key):
            continue
        if "weight" in key or "running_mean" in key or "running_var" in key:
            rows = tokens[positions[:, 1] == layer].reshape(value.shape[0], -1)
            width = value[0].numel()
            out[key] = rows[:, :width].reshape(value.shape)
            if "weight" in key and key.replace("weight", "bias") in reference:
                out[key.replace("weight", "bias")] = rows[:, width]
            layer += 1
    return out


def randomised_state(model: nn.Module, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.rand(v.shape, generator=generator) if v.is_floating_point() else v)
                       for k, v in model.state_dict().items())


@pytest.mark.parametrize("config", BN_CONFIGS, ids=lambda c: c["architecture"])
@pytest.mark.parametrize("token_size", [4, 13])
def test_separate_gives_sanes_tokens_and_positions_bit_for_bit(config, token_size):
    model = build_model(config)
    layout = WeightLayout.from_module(model)
    state = randomised_state(model, seed=token_size)
    tokenizer = Tokenizer(layout, token_size, bn="separate")
    tokens = tokenizer.tokenize(layout.flatten(state))
    theirs, mask, positions = sane_tokens(state, token_size)
    assert np.array_equal(tokens, theirs.numpy()) and np.array_equal(tokenizer.mask, mask.numpy())
    assert np.array_equal(tokenizer.positions, positions.numpy())
    decoded = sane_decode(torch.from_numpy(tokens), torch.from_numpy(tokenizer.positions.copy()), state)
    assert all(torch.equal(decoded[k], state[k]) for k in state)
    np.testing.assert_array_equal(tokenizer.detokenize(tokens), layout.flatten(state))


def test_append_keeps_batch_norm_in_the_unit_rows_and_differs_from_sane():
    layout = WeightLayout.from_module(build_model(BN_CONFIGS[0]))
    appended, separate = unit_groups(layout), unit_groups(layout, "separate")
    n_batch_norms = len({t.layer for t in layout.tensors if t.kind == "batchnorm"})
    assert n_batch_norms == 3 and len(separate) == len(appended) + 3 * n_batch_norms, \
        "each batch norm: weight+bias, mean and var as layers of their own"
    assert [g.kind for g in separate[:4]] == ["conv", "batchnorm", "batchnorm", "batchnorm"]


def test_ignore_drops_batch_norm_as_sane_does_on_torchvision_names():
    net = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(1, 3, 3)), ("bn1", nn.BatchNorm2d(3)),
                                     ("fc", nn.Flatten()), ("out", nn.Linear(3 * 6 * 6, 4))]))
    layout = WeightLayout.from_module(net)
    state = randomised_state(net, seed=2)
    flat = layout.flatten(state)
    tokenizer = Tokenizer(layout, 5, bn="ignore")
    tokens = tokenizer.tokenize(flat)
    theirs, mask, positions = sane_tokens(state, 5, ignore_bn=True)
    assert np.array_equal(tokens, theirs.numpy()) and np.array_equal(tokenizer.positions, positions.numpy())
    with pytest.raises(ValueError, match="fill="):
        tokenizer.detokenize(tokens)
    np.testing.assert_array_equal(tokenizer.detokenize(tokens, fill=flat), flat)
    assert int((~tokenizer.covered).sum()) == 4 * 3, "the batch norm's four vectors are not tokens"
