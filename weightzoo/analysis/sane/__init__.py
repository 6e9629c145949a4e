"""SANE: self-supervised transformer autoencoders over tokenised weights (Issue 5).

Schürholt et al., "Towards scalable and versatile weight space learning" (ICML 2024) and
"Self-supervised representation learning on neural network weights" (NeurIPS 2021).
``model`` holds the autoencoder, ``losses`` the gamma-weighted NT-Xent + masked MSE,
``batches`` windows with two augmented views, ``train`` training with resumable
checkpoints, ``embed`` per-network embeddings and decoding, ``study`` all of it on a zoo
version (tokens from the readers, cached training, probes), ``sampling`` new networks
decoded from the embedding space.
"""

from weightzoo.analysis.sane.batches import noise_augmentation, window_batches
from weightzoo.analysis.sane.embed import decode_latents, embed_networks, token_latents, window_starts
from weightzoo.analysis.sane.losses import masked_mse, nt_xent, sane_loss
from weightzoo.analysis.sane.model import SaneAutoencoder, SaneConfig, max_positions_of
from weightzoo.analysis.sane.train import load_sane, train_sane

__all__ = [
    "SaneAutoencoder", "SaneConfig", "decode_latents", "embed_networks", "load_sane",
    "masked_mse", "max_positions_of", "noise_augmentation", "nt_xent", "sane_loss",
    "token_latents", "train_sane", "window_batches", "window_starts",
]
