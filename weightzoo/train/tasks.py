"""From a model's hyperparameters to the task data it trains on, and its random streams."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from typing import Iterator, Mapping

import torch

from weightzoo.core.models import ConfigError
from weightzoo.data import TaskData, prepare_task

# offsets that give each model independent random streams for its data order,
# augmentation and dropout, all derived from the model's own seed
ORDER_STREAM, AUGMENT_STREAM, DROPOUT_STREAM = 1, 2, 3


def model_task(params: Mapping, training, dataset_options: Mapping | None = None) -> TaskData:
    """The (possibly corrupted) task of one model, loaded from the in-process cache."""
    options = dict(dataset_options or {})
    if "input_dim" in options:
        # the model's config alone must rebuild it, so a shape-changing option is a hyperparameter
        raise ConfigError("dataset_options: set input_dim as a hyperparameter, not as a dataset option")
    if params.get("frequency") is not None:
        options["frequency"] = params["frequency"]
    if params.get("input_dim") is not None:
        options["input_dim"] = int(params["input_dim"])
    return prepare_task(
        params["dataset"], split_seed=training.split_seed, test_fraction=training.test_fraction,
        options=options or None, label_noise=float(params.get("label_noise") or 0.0),
        classes=int(params.get("classes") or 0), pixel_shuffle=bool(params.get("pixel_shuffle") or False),
        seed=int(params.get("seed", 0)),
    )


def generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one of a model's random streams."""
    return torch.Generator().manual_seed(int(seed) * 7919 + stream)


def snapshot_plan(training) -> dict[int, int]:
    """Epoch → snapshot index k for the scheduled snapshots (k = 0 is the initialisation)."""
    return {epoch: k for k, epoch in enumerate(training.snapshot_epochs, start=1)}


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (one Dask worker per core must not oversubscribe)."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))


# glibc mallopt parameters (malloc.h) and the values a training process uses
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD = 1 << 30
_MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts


def retain_freed_memory() -> None:
    """From now on, let this process keep freed heap memory for reuse (glibc only).

    A fleet step allocates and frees tens of MB of activations. By default glibc hands
    freed memory back to the kernel once a few times the largest recent block lies free,
    so the next step page-faults it in again and the kernel zeroes every page: 32 CNNs of
    the nws-scale preset's largest shape took about 85,000 page faults per epoch and
    1.2x the CPU time. With the trim threshold at 1 GiB and blocks up to 32 MiB served from
    the heap, pages stay mapped; :func:`release_freed_memory` hands them back when a fleet
    is done. This changes no number a trainer computes, and is a no-op without glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel now (glibc's ``malloc_trim``)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """torch's deterministic algorithms and cuDNN's deterministic, non-benchmarking mode on
    (or off) for the block, as a spec's ``training.deterministic`` asks; the previous
    settings are restored. On CPU the kernels used here are deterministic either way; on
    CUDA this is what makes a rerun bit-identical (with ``CUBLAS_WORKSPACE_CONFIG`` set)."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before its first call
    torch.use_deterministic_algorithms(bool(enabled))
    torch.backends.cudnn.deterministic = bool(enabled)
    torch.backends.cudnn.benchmark = previous[3] and not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]
