"""Seeded task corruptions and per-step data augmentation.

Every function here is deterministic given its seed (or generator) and returns new
tensors; inputs are never modified.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from weightzoo.data.datasets import TaskData, load_dataset

AUGMENTATIONS = ("none", "shift", "noise", "flip")
_MAX_SHIFT = 2
_NOISE_STD = 0.1


def corrupt_labels(y: torch.Tensor, fraction: float, n_classes: int, seed: int) -> torch.Tensor:
    """Replace labels at ``round(fraction * N)`` seeded positions by uniform random classes.

    This is the label corruption of Zhang et al. ("Understanding deep learning requires
    rethinking generalization"): a drawn label may coincide with the original one, so
    the number of labels that actually change is at most the number of chosen positions.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"option 'label_noise' (fraction) must lie in [0, 1], got {fraction!r}")
    if y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"labels must be a 1-D int64 tensor, got {y.dtype} of shape {tuple(y.shape)}")
    n_corrupt = round(fraction * len(y))
    if n_corrupt and n_classes < 1:
        raise ValueError(f"n_classes must be >= 1 to corrupt labels, got {n_classes}")
    rng = np.random.default_rng(seed)
    positions = rng.choice(len(y), size=n_corrupt, replace=False)
    corrupted = y.clone()
    corrupted[torch.from_numpy(positions)] = torch.from_numpy(rng.integers(0, n_classes, size=n_corrupt)).to(y.device)
    return corrupted


def subsample_classes(data: TaskData, n_classes: int, seed: int) -> TaskData:
    """Keep only a seeded random subset of ``n_classes`` classes in train and test.

    Labels keep their original ids and ``n_classes``/``output_size`` stay unchanged, so
    every model of a zoo keeps the same weight layout. ``n_classes`` of 0, or at least
    the dataset's class count, returns ``data`` itself.
    """
    if n_classes < 0:
        raise ValueError(f"option 'classes' must be >= 0, got {n_classes}")
    if n_classes == 0 or n_classes >= data.n_classes:
        return data
    kept = _kept_classes(data.n_classes, n_classes, seed)
    train = torch.isin(data.y_train, kept)
    test = torch.isin(data.y_test, kept)
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=data.y_train[train], x_test=data.x_test[test], y_test=data.y_test[test]
    )


def shuffle_pixels(data: TaskData, seed: int) -> TaskData:
    """Apply one seeded permutation of pixel positions to every train and test image.

    The same permutation moves every channel, so colour stays attached to its pixel.
    Vector inputs [N, D] have their D features permuted instead.
    """
    spatial = data.input_shape[-2:] if len(data.input_shape) == 3 else data.input_shape[-1:]
    n_positions = int(np.prod(spatial))
    permutation = torch.from_numpy(np.random.default_rng(seed).permutation(n_positions))

    def permute(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[: x.dim() - len(spatial)], n_positions)
        return flat[..., permutation.to(x.device)].reshape(x.shape)

    return dataclasses.replace(data, x_train=permute(data.x_train), x_test=permute(data.x_test))


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of images ``[..., C, H, W]`` (any leading dims) with one ``kind``.

    ``"none"`` returns ``x`` itself (no copy: it runs every step); ``"shift"`` translates
    each image independently by up to 2 px per axis with zero fill (zero is the train
    mean after standardisation); ``"noise"`` adds N(0, 0.1²) noise; ``"flip"`` mirrors
    each image horizontally with probability 1/2. All randomness comes from ``generator``.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; known augmentations: {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return x
    if kind == "noise":
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return x + _NOISE_STD * noise.to(x.device)
    if x.dim() < 3:
        raise ValueError(f"augmentation {kind!r} needs images [..., C, H, W], got shape {tuple(x.shape)}")
    if kind == "flip":
        return _flip_batch(x, generator)
    return _shift_batch(x, generator)


def _flip_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[:-3], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device)[..., None, None, None], x.flip(-1), x)


def max_shift(height: int, width: int) -> int:
    """Largest translation of "shift": 2 px on 28×28 or 32×32 images, 1 px on 8×8 digits
    (2 px would move a quarter of an 8×8 image out of the frame)."""
    return max(1, min(_MAX_SHIFT, round(min(height, width) / 14)))


def _shift_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own integer offset via one gather from a padded copy."""
    channels, height, width = x.shape[-3:]
    shift = max_shift(height, width)
    images = x.reshape(-1, channels, height, width)
    n_images = images.shape[0]
    offsets = torch.randint(
        -shift, shift + 1, (n_images, 2), generator=generator, device=generator.device
    ).to(x.device)
    padded = F.pad(images, (shift,) * 4)
    # Output pixel (i, j) reads padded (i + pad - dy, j + pad - dx): a shift by (dy, dx).
    rows = torch.arange(height, device=x.device)[None, :] + shift - offsets[:, :1]
    cols = torch.arange(width, device=x.device)[None, :] + shift - offsets[:, 1:]
    shifted = padded[
        torch.arange(n_images, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return shifted.reshape(x.shape)


def prepare_task(
    name: str,
    *,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    options: Mapping | None = None,
    label_noise: float = 0.0,
    classes: int = 0,
    pixel_shuffle: bool = False,
    seed: int = 0,
) -> TaskData:
    """Load a dataset and apply the requested corruptions in a fixed order.

    Order: class subsampling, then pixel shuffling (both seeded by ``split_seed``, so all
    models of a zoo asking for them see one task), then label noise on the train labels
    only, seeded by the model's ``seed``. Noisy labels are drawn from the kept classes.
    """
    if label_noise < 0 or label_noise > 1:
        raise ValueError(f"option 'label_noise' must lie in [0, 1], got {label_noise!r}")
    data = load_dataset(name, split_seed=split_seed, test_fraction=test_fraction, options=options)
    if label_noise and data.task != "classification":
        raise ValueError(f"option 'label_noise' needs a classification task; {name!r} is {data.task}")
    data = _shared_corruptions(data, int(classes), bool(pixel_shuffle), int(split_seed))
    if not label_noise:
        return data
    noisy = _corrupt_within_classes(data, label_noise, int(classes), int(split_seed), seed)
    return dataclasses.replace(data, y_train=noisy)


# Keyed on the cached TaskData's identity (eq=False), so models sharing a task share memory.
@functools.lru_cache(maxsize=8)
def _shared_corruptions(data: TaskData, classes: int, pixel_shuffle: bool, split_seed: int) -> TaskData:
    data = subsample_classes(data, classes, split_seed)
    return shuffle_pixels(data, split_seed) if pixel_shuffle else data


def _kept_classes(n_total: int, n_kept: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_total, n_kept, replace=False)))


def _corrupt_within_classes(data: TaskData, fraction: float, classes: int, split_seed: int, seed: int) -> torch.Tensor:
    """Corrupt train labels with random classes drawn only from the kept classes.

    Drawing from all classes would re-introduce the classes that subsampling removed.
    """
    if not 0 < classes < data.n_classes:
        return corrupt_labels(data.y_train, fraction, data.n_classes, seed)
    kept = _kept_classes(data.n_classes, classes, split_seed)
    ranks = torch.searchsorted(kept, data.y_train)
    return kept[corrupt_labels(ranks, fraction, len(kept), seed)]
