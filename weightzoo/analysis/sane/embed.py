"""Embeddings of whole networks with a trained SANE model, and decoding back to tokens.

A network's token sequence is covered by non-overlapping windows; when the window does not
divide the sequence, the last window is moved back to end at the last token, so every
window is full and every token is encoded once (a token covered twice keeps the latent of
the last window). The network's embedding is the mean of its tokens' latents over tokens
holding at least one real value — SANE's ``forward_embeddings`` averages the same way — or,
with ``pooling="layers"``, that mean taken per layer and concatenated in layer order
(``n_layers × latent_dim`` values: a whole-network mean averages the layers' statistics
together, which a probe of test accuracy then cannot separate).

Decoding works on per-token latents [n_samples, n_tokens, latent_dim], which is what SANE
samples from; a per-network mean has lost the per-token information and is not decodable.
Inputs go to ``device``, by default the device the model is on.
"""

from __future__ import annotations

import numpy as np
import torch

from weightzoo.analysis.sane.batches import per_sample
from weightzoo.analysis.sane.model import SaneAutoencoder


def window_starts(n_tokens: int, window: int) -> list[int]:
    """Starts of the windows covering ``n_tokens``: non-overlapping, the last one shifted to the end."""
    window = min(window, n_tokens)
    starts = list(range(0, n_tokens - window + 1, window))
    if starts[-1] + window < n_tokens:
        starts.append(n_tokens - window)
    return starts


def token_latents(model: SaneAutoencoder, token_arrays, mask, positions, *, window: int,
                  batch_size: int = 256, device=None) -> np.ndarray:
    """Per-token latents [n_samples, n_tokens, latent_dim] of every network in ``token_arrays``."""
    tokens = np.asarray(token_arrays, dtype=np.float32)
    n_samples, n_tokens, token_size = tokens.shape
    masks = per_sample(np.asarray(mask, dtype=np.float32), n_samples, token_size)
    inputs = (tokens, masks, per_sample(positions, n_samples, 3))
    return _windowed(lambda x, m, p: model.embed(x, p, m), model, inputs, window, batch_size, device,
                     model.config.latent_dim)


POOLINGS = ("mean", "layers")


def embed_networks(model: SaneAutoencoder, token_arrays, mask, positions, *, window: int,
                   batch_size: int = 256, device=None, pooling: str = "mean") -> np.ndarray:
    """One embedding per network: ``pooling`` "mean", the mean latent over its real tokens
    [n_samples, latent_dim]; "layers", that mean per layer (``positions[:, 1]``), concatenated
    in layer order [n_samples, n_layers * latent_dim]."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    latents = token_latents(model, token_arrays, mask, positions, window=window,
                            batch_size=batch_size, device=device)
    tokens = np.asarray(token_arrays)
    real = per_sample(mask, tokens.shape[0], tokens.shape[2]).any(axis=-1)[..., None]
    if pooling == "mean":
        return _mean(latents, real)
    layers = np.asarray(positions)[..., 1]
    layers = layers if layers.ndim == 1 else layers[0]  # the same positions for every sample
    return np.concatenate([_mean(latents[:, layers == layer], real[:, layers == layer])
                           for layer in np.unique(layers)], axis=1)


def _mean(latents: np.ndarray, real: np.ndarray) -> np.ndarray:
    return ((latents * real).sum(axis=1) / np.maximum(real.sum(axis=1), 1)).astype(np.float32)


def decode_latents(model: SaneAutoencoder, latents, positions, *, window: int, mask=None,
                   batch_size: int = 256, device=None) -> np.ndarray:
    """Tokens [n_samples, n_tokens, token_size] decoded from per-token latents.

    ``window`` should be the one the latents were made with, since the decoder attends
    within a window. With ``mask``, padded values are set to 0 and padded tokens are not
    attended to, as in training.
    """
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 3:
        raise ValueError(f"latents must be per token, [n_samples, n_tokens, latent_dim], got {latents.shape}")
    n_samples, n_tokens, _ = latents.shape
    token_size = model.config.token_size
    masks = per_sample(np.asarray(mask if mask is not None else np.ones((n_tokens, token_size)),
                                  dtype=np.float32), n_samples, token_size)
    inputs = (latents, masks, per_sample(positions, n_samples, 3))
    decoded = _windowed(lambda z, m, p: model.decode(z, p, m if mask is not None else None), model,
                        inputs, window, batch_size, device, token_size)
    return decoded * masks if mask is not None else decoded


def _windowed(function, model, inputs, window, batch_size, device, width) -> np.ndarray:
    """Apply ``function`` to every covering window of every sample; stitch the outputs."""
    # by default the inputs go where the model is (cpu or cuda)
    device = device if device is not None else next(model.parameters()).device
    values, masks, positions = inputs
    n_samples, n_tokens = values.shape[:2]
    starts = window_starts(n_tokens, window)
    size = min(window, n_tokens)
    jobs = [(row, start) for row in range(n_samples) for start in starts]
    out = np.zeros((n_samples, n_tokens, width), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for begin in range(0, len(jobs), batch_size):
            chunk = jobs[begin:begin + batch_size]
            rows = np.array([row for row, _ in chunk])[:, None]
            index = np.array([start for _, start in chunk])[:, None] + np.arange(size)[None, :]
            result = function(*(_tensor(array[rows, index], device) for array in inputs))
            out[rows, index] = result.float().cpu().numpy()
    return out


def _tensor(array: np.ndarray, device) -> torch.Tensor:
    dtype = torch.int64 if np.issubdtype(array.dtype, np.integer) else torch.float32
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)
