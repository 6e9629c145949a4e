"""Readers for the standard on-disk formats of a user's local MNIST and CIFAR-10 copies.

They return raw uint8 images [N, C, H, W] and integer labels; scaling and
standardisation happen in :mod:`weightzoo.data.datasets`. A missing file raises
``FileNotFoundError`` and a malformed one ``ValueError``; both name the file.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

MNIST_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UNSIGNED_BYTE = 0x08
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
_CIFAR10_ROW_LENGTH = 3 * 32 * 32


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read an idx file (optionally gzipped) of unsigned bytes with ``expected_ndim`` dims.

    The header is a magic number ``0x0000 <type> <ndim>`` followed by ``ndim`` big-endian
    uint32 sizes; the payload must hold exactly their product in bytes.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UNSIGNED_BYTE or raw[3] != expected_ndim:
        expected = 0x0800 + expected_ndim
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise ValueError(
            f"{path}: bad idx magic number {found!r}, expected {expected:#010x} "
            f"(unsigned bytes, {expected_ndim} dims)"
        )
    header_length = 4 + 4 * expected_ndim
    if len(raw) < header_length:
        raise ValueError(f"{path}: idx header truncated")
    dims = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=expected_ndim, offset=4))
    payload = np.frombuffer(raw, dtype=np.uint8, offset=header_length)
    if payload.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says dims {dims} ({int(np.prod(dims))} bytes) but payload has {payload.size}")
    return payload.reshape(dims)


def read_mnist_idx_directory(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST idx files (plain or ``.gz``) from ``directory``.

    Returns (train images [N, 1, H, W], train labels, test images, test labels).
    """
    train_x = _read_idx_images(_find_file(directory, MNIST_IDX_FILES["train_images"]))
    train_y = _read_idx_labels(_find_file(directory, MNIST_IDX_FILES["train_labels"]), len(train_x))
    test_x = _read_idx_images(_find_file(directory, MNIST_IDX_FILES["test_images"]))
    test_y = _read_idx_labels(_find_file(directory, MNIST_IDX_FILES["test_labels"]), len(test_x))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"{directory}: train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ in size")
    return train_x, train_y, test_x, test_y


def read_cifar10_directory(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10 "python version" batches from ``directory``.

    Uses whichever of ``data_batch_1..5`` are present (at least one) and ``test_batch``.
    Returns (train images [N, 3, 32, 32], train labels, test images, test labels).
    """
    train_paths = [directory / name for name in CIFAR10_TRAIN_BATCHES if (directory / name).is_file()]
    if not train_paths:
        raise FileNotFoundError(f"{directory}: no CIFAR-10 training batch found (expected data_batch_1..5)")
    test_path = directory / CIFAR10_TEST_BATCH
    if not test_path.is_file():
        raise FileNotFoundError(f"{test_path}: CIFAR-10 test batch not found")
    train = [read_cifar10_batch(path) for path in train_paths]
    test_x, test_y = read_cifar10_batch(test_path)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch into (uint8 images [N, 3, 32, 32], int64 labels)."""
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: CIFAR-10 batch must be a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR10_ROW_LENGTH:
        raise ValueError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: b'labels' must hold {len(data)} integers, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), so a plain reshape is right.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays, so a hostile file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python-3 pickles at protocol <= 2 encode bytes objects through codecs.encode.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _find_file(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory / name}: MNIST idx file not found (also looked for {name}.gz)")


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from error


def _read_idx_images(path: Path) -> np.ndarray:
    images = read_idx(path, expected_ndim=3)
    return images[:, None, :, :]


def _read_idx_labels(path: Path, expected_count: int) -> np.ndarray:
    labels = read_idx(path, expected_ndim=1)
    if len(labels) != expected_count:
        raise ValueError(f"{path}: {len(labels)} labels for {expected_count} images")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{path}: labels must lie in 0..9, found {int(labels.max())}")
    return labels.astype(np.int64)
