"""A tiny synthetic token zoo in the tokeniser's format, made by the tests themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch


LAYER_TOKENS = (8, 8, 6)
TOKEN_SIZE = 6
# the last layer has fewer inputs per unit than the token holds: its tokens end in padding
LAST_LAYER_VALUES = 4


def make_token_zoo(n_samples: int = 48, seed: int = 0, code_size: int = 3) -> dict:
    """Networks whose tokens are a fixed smooth function of a small per-network code.

    tokens [n, T, S] with NaN in the padding (so a leak shows), mask [T, S], positions [T, 3]
    = (global token index, layer index, unit index), codes [n, code_size].
    """
    rng = np.random.default_rng(seed)
    n_tokens = sum(LAYER_TOKENS)
    layers = np.repeat(np.arange(len(LAYER_TOKENS)), LAYER_TOKENS)
    units = np.concatenate([np.arange(count) for count in LAYER_TOKENS])
    positions = np.stack([np.arange(n_tokens), layers, units], axis=1).astype(np.int64)
    mask = np.ones((n_tokens, TOKEN_SIZE), dtype=np.float32)
    mask[layers == len(LAYER_TOKENS) - 1, LAST_LAYER_VALUES:] = 0.0
    codes = rng.standard_normal((n_samples, code_size)).astype(np.float32)
    mixing = rng.standard_normal((n_tokens, TOKEN_SIZE, code_size)).astype(np.float32)
    tokens = np.tanh(np.einsum("tsc,nc->nts", mixing, codes)).astype(np.float32)
    tokens += 0.01 * rng.standard_normal(tokens.shape).astype(np.float32)
    tokens = np.where(mask > 0, tokens, np.nan).astype(np.float32)
    return {"tokens": tokens, "mask": mask, "positions": positions, "codes": codes}


@pytest.fixture(scope="session")
def token_zoo() -> dict:
    """The default synthetic zoo (48 networks of 22 tokens of size 6)."""
    return make_token_zoo()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models run several times faster so on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Twelve tiny nws-cnn digit classifiers with two initialisations: a real zoo for SANE.
CNN_SPEC = {
    "name": "sane-cnn", "architecture": "nws-cnn", "models": 12,
    "sampling": {"method": "random", "seed": 0},
    "hyperparameters": {"dataset": "digits", "init": ["kaiming_uniform", "orthogonal"], "conv_layers": 2,
                        "conv_width": 4, "filter_size": 3, "fc_layers": 1, "fc_width": 8, "optimizer": "adam",
                        "lr": 0.01, "batch_size": 64},
    "training": {"epochs": 1, "snapshots": {"count": 1}},
}


@pytest.fixture(scope="module")
def zoo(build_zoo):
    """A fresh tiny CNN zoo per test module (modules publish into it), at its v0001."""
    return build_zoo("sane-cnn", CNN_SPEC, "v0001")


@pytest.fixture(scope="session")
def tiny() -> dict:
    """SANE options small enough to train in a second or two."""
    return {"epochs": 2, "token_size": 8, "window": 8, "batch_size": 8, "windows_per_sample": 1, "d_model": 16,
            "latent_dim": 4}
