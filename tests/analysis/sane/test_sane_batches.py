"""Window batches with two augmented views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightzoo.analysis.sane.batches import noise_augmentation, window_batches


def _batches(zoo, **options):
    settings = {"window": 8, "batch_size": 16, "augment_fn": noise_augmentation(0.1), "seed": 3, **options}
    return list(window_batches(zoo["tokens"], zoo["mask"], zoo["positions"], **settings))


def test_batches_have_the_documented_keys_and_shapes(token_zoo):
    batches = _batches(token_zoo)
    assert [b["tokens"].shape[0] for b in batches] == [16, 16, 16]
    for batch in batches:
        for part in (batch, batch["view_a"], batch["view_b"]):
            assert part["tokens"].shape == part["mask"].shape == (16, 8, 6)
            assert part["positions"].shape == (16, 8, 3)
            assert part["tokens"].dtype == torch.float32 and part["positions"].dtype == torch.int64


def test_windows_are_contiguous_and_both_views_share_them(token_zoo):
    batch = _batches(token_zoo)[0]
    global_index = batch["positions"][..., 0]
    assert torch.equal(global_index[:, 1:] - global_index[:, :-1], torch.ones(16, 7, dtype=torch.int64))
    assert torch.equal(batch["view_a"]["positions"], batch["positions"])
    assert torch.equal(batch["view_b"]["mask"], batch["mask"])


def test_noise_touches_real_values_only_and_differs_between_views(token_zoo):
    batch = _batches(token_zoo)[0]
    real = batch["mask"] > 0
    a, b, clean = batch["view_a"]["tokens"], batch["view_b"]["tokens"], batch["tokens"]
    assert not torch.equal(a[real], b[real])
    assert torch.isnan(a[~real]).all() and torch.isnan(clean[~real]).all()
    assert torch.allclose(a[real], clean[real], atol=0.5)


def test_batches_are_deterministic_in_seed_and_epoch(token_zoo):
    first, again = _batches(token_zoo), _batches(token_zoo)
    other_epoch = _batches(token_zoo, epoch=2)
    for x, y in zip(first, again):
        assert torch.equal(x["view_b"]["tokens"].nan_to_num(), y["view_b"]["tokens"].nan_to_num())
        assert torch.equal(x["positions"], y["positions"])
    assert not torch.equal(first[0]["positions"], other_epoch[0]["positions"])


def test_every_sample_gives_windows_per_sample_windows(token_zoo):
    batches = _batches(token_zoo, windows_per_sample=3, batch_size=20, augment_fn=None)
    assert sum(b["tokens"].shape[0] for b in batches) == 3 * 48
    assert torch.equal(batches[0]["view_a"]["tokens"].nan_to_num(), batches[0]["tokens"].nan_to_num())


def test_a_last_batch_of_one_is_dropped(token_zoo):
    batches = _batches(token_zoo, batch_size=47)
    assert [b["tokens"].shape[0] for b in batches] == [47]


def test_per_sample_masks_and_positions_are_accepted(token_zoo):
    n = token_zoo["tokens"].shape[0]
    mask = np.broadcast_to(token_zoo["mask"], (n, *token_zoo["mask"].shape)).copy()
    batches = list(window_batches(token_zoo["tokens"], mask, token_zoo["positions"], 4, 8, seed=0))
    assert batches[0]["mask"].shape == (8, 4, 6)


def test_a_window_longer_than_the_sequence_is_an_error(token_zoo):
    with pytest.raises(ValueError, match="window 30"):
        _batches(token_zoo, window=30)


def test_a_boolean_mask_as_the_tokeniser_gives_it_is_accepted(token_zoo):
    mask = token_zoo["mask"] > 0
    tokens = np.where(mask, token_zoo["tokens"], 0.0)
    batch = next(window_batches(tokens, mask, token_zoo["positions"], 8, 4, noise_augmentation(0.1), seed=0))
    assert batch["mask"].dtype == torch.float32
    assert (batch["view_a"]["tokens"][batch["mask"] == 0] == 0).all()
