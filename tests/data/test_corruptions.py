"""Invariants of the task corruptions and the per-step augmentations."""

import dataclasses

import pytest
import torch

from weightzoo.data import (
    AUGMENTATIONS,
    TaskData,
    augment_batch,
    corrupt_labels,
    load_dataset,
    prepare_task,
    shuffle_pixels,
    subsample_classes,
)


def make_image_task(n_train=20, n_test=8, channels=3, size=6, seed=0):
    """A tiny seeded random image classification task."""
    generator = torch.Generator().manual_seed(seed)
    return TaskData(
        name="tiny",
        task="classification",
        x_train=torch.randn(n_train, channels, size, size, generator=generator),
        y_train=torch.randint(0, 10, (n_train,), generator=generator),
        x_test=torch.randn(n_test, channels, size, size, generator=generator),
        y_test=torch.randint(0, 10, (n_test,), generator=generator),
        n_classes=10,
        input_shape=(channels, size, size),
        output_size=10,
    )


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_corrupt_labels_replaces_exactly_the_requested_number_of_positions():
    # With a single class every chosen position is replaced by 0, so none coincides.
    labels = torch.ones(1001, dtype=torch.int64)
    corrupted = corrupt_labels(labels, 0.3, n_classes=1, seed=4)
    assert int((corrupted != labels).sum()) == round(0.3 * 1001)


def test_corrupt_labels_rate_is_within_tolerance_and_deterministic():
    labels = torch.randint(0, 10, (2000,), generator=seeded(0))
    corrupted = corrupt_labels(labels, 0.3, n_classes=10, seed=1)
    changed = int((corrupted != labels).sum())
    # 600 positions are redrawn; a redraw keeps its label with probability 1/10.
    assert 480 <= changed <= 600
    assert corrupted.dtype == torch.int64 and int(corrupted.min()) >= 0 and int(corrupted.max()) < 10
    assert torch.equal(corrupted, corrupt_labels(labels, 0.3, n_classes=10, seed=1))
    assert not torch.equal(corrupted, corrupt_labels(labels, 0.3, n_classes=10, seed=2))


def test_corrupt_labels_leaves_its_input_alone_and_zero_fraction_is_identity():
    labels = torch.randint(0, 10, (50,), generator=seeded(0))
    original = labels.clone()
    corrupt_labels(labels, 1.0, n_classes=10, seed=0)
    assert torch.equal(labels, original)
    assert torch.equal(corrupt_labels(labels, 0.0, n_classes=10, seed=0), original)
    with pytest.raises(ValueError, match="label_noise"):
        corrupt_labels(labels, 1.5, n_classes=10, seed=0)


def test_subsample_classes_keeps_k_classes_with_original_ids_in_both_splits():
    data = load_dataset("digits")
    subset = subsample_classes(data, 3, seed=2)
    kept = set(subset.y_train.tolist())
    assert len(kept) == 3 and set(subset.y_test.tolist()) <= kept
    assert int(subset.y_train.numel()) == int(torch.isin(data.y_train, torch.tensor(sorted(kept))).sum())
    assert (subset.n_classes, subset.output_size) == (10, 10)
    assert set(subsample_classes(data, 3, seed=2).y_train.tolist()) == kept
    assert subsample_classes(data, 0, seed=2) is data
    assert subsample_classes(data, 10, seed=2) is data


def test_shuffle_pixels_permutes_positions_identically_for_channels_train_and_test():
    data = make_image_task()
    # Test images copy the train images and channel c is (c + 1) times channel 0.
    base = data.x_train[:, :1]
    x = torch.cat([base * (channel + 1) for channel in range(3)], dim=1)
    data = dataclasses.replace(data, x_train=x, x_test=x[:8].clone())
    shuffled = shuffle_pixels(data, seed=3)
    assert shuffled.x_train.shape == x.shape
    assert not torch.equal(shuffled.x_train, x)
    per_image = shuffled.x_train.reshape(20, -1).sort(dim=1).values
    assert torch.equal(per_image, x.reshape(20, -1).sort(dim=1).values)
    torch.testing.assert_close(shuffled.x_train[:, 2], 3 * shuffled.x_train[:, 0])
    assert torch.equal(shuffled.x_test, shuffled.x_train[:8])
    assert torch.equal(shuffle_pixels(data, seed=3).x_train, shuffled.x_train)


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_augment_batch_preserves_shape_and_is_deterministic_per_generator(kind):
    x = torch.randn(4, 5, 3, 8, 8, generator=seeded(0))
    augmented = augment_batch(x, kind, seeded(1))
    assert augmented.shape == x.shape and augmented.dtype == x.dtype
    assert torch.equal(augmented, augment_batch(x, kind, seeded(1)))


def test_augment_none_is_identity_and_unknown_kind_lists_the_kinds():
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(augment_batch(x, "none", seeded(0)), x)
    with pytest.raises(ValueError) as error:
        augment_batch(x, "rotate", seeded(0))
    assert all(kind in str(error.value) for kind in AUGMENTATIONS)


def test_shift_only_moves_values_by_at_most_two_pixels_with_zero_fill():
    # A single positive pixel in the centre of a 9x9 image, stacked [M, B, C, H, W].
    x = torch.zeros(6, 16, 2, 9, 9)
    x[..., 4, 4] = torch.tensor([1.0, 2.0])
    shifted = augment_batch(x, "shift", seeded(0))
    flat = shifted.reshape(-1, 2, 81)
    assert torch.equal((flat > 0).sum(dim=2), torch.ones(96, 2, dtype=torch.int64))
    assert torch.equal(flat.sum(dim=2), x.reshape(-1, 2, 81).sum(dim=2))
    positions = flat[:, 0].argmax(dim=1)
    rows, cols = positions // 9, positions % 9
    assert int((rows - 4).abs().max()) <= 2 and int((cols - 4).abs().max()) <= 2
    assert torch.equal(flat[:, 1].argmax(dim=1), positions), "channels must move together"
    assert len(set(positions.tolist())) > 5, "each sample needs its own shift"


def test_shift_values_come_from_the_image_or_the_zero_fill():
    x = torch.rand(32, 3, 7, 7, generator=seeded(0)) + 1.0
    shifted = augment_batch(x, "shift", seeded(5))
    for original, moved in zip(x, shifted):
        values = set(moved.flatten().tolist())
        assert values <= set(original.flatten().tolist()) | {0.0}
        assert int((moved != 0).sum()) <= original.numel()


def test_noise_has_the_documented_scale_and_flip_mirrors_whole_images():
    x = torch.randn(256, 1, 8, 8, generator=seeded(0))
    noise = augment_batch(x, "noise", seeded(1)) - x
    assert abs(float(noise.std()) - 0.1) < 0.005
    flipped = augment_batch(x, "flip", seeded(2))
    mirrored = (flipped == x.flip(-1)).flatten(1).all(dim=1)
    unchanged = (flipped == x).flatten(1).all(dim=1)
    assert bool((mirrored | unchanged).all())
    assert 80 < int(mirrored.sum()) < 176


def test_prepare_task_shares_class_and_pixel_corruption_and_noises_train_labels_only():
    clean = prepare_task("digits", split_seed=1, classes=4, pixel_shuffle=True)
    first = prepare_task("digits", split_seed=1, classes=4, pixel_shuffle=True, label_noise=0.5, seed=10)
    second = prepare_task("digits", split_seed=1, classes=4, pixel_shuffle=True, label_noise=0.5, seed=11)
    kept = set(clean.y_train.tolist())
    assert len(kept) == 4
    for noisy in (first, second):
        assert torch.equal(noisy.x_train, clean.x_train) and torch.equal(noisy.x_test, clean.x_test)
        assert torch.equal(noisy.y_test, clean.y_test)
        assert set(noisy.y_train.tolist()) <= kept, "noise must not bring back removed classes"
        changed = float((noisy.y_train != clean.y_train).float().mean())
        assert 0.3 < changed <= 0.5
    assert not torch.equal(first.y_train, second.y_train)
    plain = load_dataset("digits", split_seed=1)
    assert torch.equal(prepare_task("digits", split_seed=1).x_train, plain.x_train)


def test_prepare_task_rejects_label_noise_on_regression():
    with pytest.raises(ValueError, match="label_noise"):
        prepare_task("sinusoid", label_noise=0.1)
