"""Training batches of token windows with two augmented views.

The trainer consumes any iterable of batch dicts. :func:`window_batches` makes them from
one in-memory array [n_samples, n_tokens, token_size] (tests, small zoos);
:func:`streamed_window_batches` from a stream of such arrays (blocks read from a zoo one
after the other, so memory holds one block, never the whole train split). A batch dict holds

    tokens [B, W, token_size] float32, mask [B, W, token_size] float32 (1 = real value),
    positions [B, W, 3] int64, and view_a / view_b: dicts with the same three keys.

As in SANE (``WindowCutter`` then ``TwoViewSplit``), each sample gets one random window
start and both views are cut at that start; the augmentation sees the whole token sequence
first, because a permutation of a layer's units moves values across tokens that a window
alone does not contain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

# (tokens [B, T, S], mask [B, T, S], positions [B, T, 3], rng) -> the same three, augmented
AugmentFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator],
                     tuple[np.ndarray, np.ndarray, np.ndarray]]


def per_sample(array, n_samples: int, trailing: int) -> np.ndarray:
    """``array`` shared by all samples ([T, trailing]) or per sample, as [n_samples, T, trailing]."""
    array = np.asarray(array)
    if array.ndim == 2:
        return np.broadcast_to(array, (n_samples, *array.shape))
    if array.ndim != 3 or array.shape[0] != n_samples or array.shape[2] != trailing:
        raise ValueError(f"expected [{n_samples}, n_tokens, {trailing}] or [n_tokens, {trailing}], "
                         f"got shape {array.shape}")
    return array


def window_batches(token_arrays, mask, positions, window: int, batch_size: int,
                   augment_fn: AugmentFn | None = None, seed: int = 0, *, epoch: int = 1,
                   windows_per_sample: int = 1) -> Iterator[dict]:
    """Shuffled batches of random windows for one epoch, deterministic in (seed, epoch).

    ``token_arrays`` is [n_samples, n_tokens, token_size]; ``mask`` and ``positions`` are
    per sample or shared ([n_tokens, ...]). Every sample contributes ``windows_per_sample``
    windows per epoch (SANE's ``MultiWindowCutter``). Without ``augment_fn`` both views are
    the clean window. A last batch of one window is dropped: NT-Xent needs negatives.
    For the trainer: ``lambda epoch: window_batches(..., seed=seed, epoch=epoch)``.
    """
    rng = np.random.default_rng([seed, epoch])
    yield from _windows_of(token_arrays, mask, positions, window, batch_size, augment_fn, rng, windows_per_sample)


def streamed_window_batches(blocks, mask, positions, window: int, batch_size: int,
                            augment_fn: AugmentFn | None = None, seed: int = 0, *, epoch: int = 1,
                            windows_per_sample: int = 1) -> Iterator[dict]:
    """Batches of random windows from a stream of token blocks, each [n, n_tokens, token_size].

    Windows are shuffled within a block (the stream decides the order of samples across
    blocks); block ``b`` draws from ``default_rng([seed, epoch, b])``, so an epoch is
    deterministic when the stream is. ``mask``/``positions`` are shared ([n_tokens, ...]).
    """
    for number, tokens in enumerate(blocks):
        rng = np.random.default_rng([seed, epoch, number])
        yield from _windows_of(tokens, mask, positions, window, batch_size, augment_fn, rng, windows_per_sample)


def _windows_of(token_arrays, mask, positions, window, batch_size, augment_fn, rng, windows_per_sample):
    tokens = np.asarray(token_arrays, dtype=np.float32)
    if tokens.ndim != 3:
        raise ValueError(f"token_arrays must be [n_samples, n_tokens, token_size], got {tokens.shape}")
    n_samples, n_tokens, token_size = tokens.shape
    if not 1 <= window <= n_tokens:
        raise ValueError(f"window {window} must be between 1 and the sequence length {n_tokens}")
    masks = per_sample(mask, n_samples, token_size)
    places = per_sample(positions, n_samples, 3)
    order = rng.permutation(np.repeat(np.arange(n_samples), windows_per_sample))
    starts = rng.integers(0, n_tokens - window + 1, size=len(order))
    for begin in range(0, len(order), batch_size):
        rows, first = order[begin:begin + batch_size], starts[begin:begin + batch_size]
        if len(rows) < 2:
            break
        yield _batch((tokens[rows], masks[rows], places[rows]), first, window, augment_fn, rng)


def _batch(sequences, starts, window, augment_fn, rng) -> dict:
    clean = sequences
    view_a = augment_fn(*clean, rng) if augment_fn else clean
    view_b = augment_fn(*clean, rng) if augment_fn else clean
    batch = _cut(clean, starts, window)
    batch["view_a"], batch["view_b"] = _cut(view_a, starts, window), _cut(view_b, starts, window)
    return batch


def _cut(sequences, starts, window) -> dict:
    tokens, mask, positions = sequences
    index = starts[:, None] + np.arange(window)[None, :]
    rows = np.arange(len(starts))[:, None]
    return {"tokens": torch.as_tensor(np.ascontiguousarray(tokens[rows, index]), dtype=torch.float32),
            "mask": torch.as_tensor(np.ascontiguousarray(mask[rows, index]), dtype=torch.float32),
            "positions": torch.as_tensor(np.ascontiguousarray(positions[rows, index]), dtype=torch.int64)}


def noise_augmentation(sigma: float = 0.1, multiplicative: bool = True) -> AugmentFn:
    """SANE's noise view: w·(1 + σε) (multiplicative, SANE's default) or w + σε, real values only."""
    def augment(tokens, mask, positions, rng):
        noise = sigma * rng.standard_normal(tokens.shape).astype(np.float32)
        noisy = tokens * (1.0 + noise) if multiplicative else tokens + noise
        return np.where(mask > 0, noisy, tokens).astype(np.float32), mask, positions
    return augment
