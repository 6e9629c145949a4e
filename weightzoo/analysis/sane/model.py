"""A SANE-style transformer autoencoder over windows of weight tokens.

After Schürholt et al., "Towards scalable and versatile weight space learning" (SANE, ICML
2024; reference code HSG-AIML/SANE, ``src/SANE/models/def_AE.py``) and the
hyper-representations of NeurIPS 2021. A window of ``W`` tokens of one network snapshot
is embedded (Linear token_size → d_model plus learned position embeddings), encoded by a
transformer, compressed to a small per-token latent, and decoded by a second transformer
back to tokens. A projection head on the pooled latent feeds the contrastive term.

Positions are ``(global token index, layer index, unit index within layer)``. As in SANE the
position embedding is ``concat(E_global + E_layer, E_unit)``, each half of width d_model/2,
so the unit index (the one permutation augmentation shuffles) keeps its own channels.

Sizes default to a CPU-sized model (d_model 64, 2 layers, 4 heads, latent 16): 1.4·10⁵
parameters for a 22-token zoo, about 0.1 s per epoch of 96 windows of 8 tokens on one core.
SANE's own runs use d_model 2048, 8 layers, 16 heads, latent 128.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

POSITION_PARTS = ("global token index", "layer index", "unit index")


@dataclass(frozen=True)
class SaneConfig:
    """Model sizes and training settings of one SANE run (all of it decides a checkpoint).

    ``max_positions`` sizes the three position tables: one more than the largest global
    token index, layer index and unit index the model will see (see :func:`max_positions_of`).
    ``gamma`` weighs the contrastive term: loss = gamma·NT-Xent + (1 − gamma)·masked MSE,
    SANE's convention; 0.05 is the value of SANE's pretraining scripts.
    """

    token_size: int
    max_positions: tuple[int, int, int]
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    feedforward_dim: int = 128
    latent_dim: int = 16
    projection_dim: int = 32
    dropout: float = 0.0
    gamma: float = 0.05
    temperature: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 3e-5

    def __post_init__(self):
        object.__setattr__(self, "max_positions", tuple(int(v) for v in self.max_positions))
        if len(self.max_positions) != 3 or min(self.max_positions) < 1:
            raise ValueError(f"max_positions needs three positive sizes, got {self.max_positions}")
        if self.d_model % 2 or self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be even and divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples become lists), as stored in checkpoints."""
        values = asdict(self)
        values["max_positions"] = list(self.max_positions)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "SaneConfig":
        """The config stored by :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown SaneConfig keys: {sorted(unknown)}")
        return cls(**values)


def max_positions_of(positions) -> tuple[int, int, int]:
    """Table sizes that cover ``positions`` [..., 3]: one more than each part's maximum."""
    array = np.asarray(positions).reshape(-1, 3)
    return tuple(int(v) + 1 for v in array.max(axis=0))


class PositionEmbedding(nn.Module):
    """Learned embeddings of (global index, layer, unit): concat(E_g + E_l, E_u)."""

    def __init__(self, max_positions: tuple[int, int, int], d_model: int):
        super().__init__()
        self.max_positions = tuple(max_positions)
        half = d_model // 2
        self.tables = nn.ModuleList(nn.Embedding(size, half) for size in self.max_positions)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """[B, W, 3] int positions → [B, W, d_model]; positions outside the tables are an error."""
        check_positions(positions, self.max_positions)
        parts = [table(positions[..., i]) for i, table in enumerate(self.tables)]
        return torch.cat([parts[0] + parts[1], parts[2]], dim=-1)


def check_positions(positions: torch.Tensor, max_positions) -> None:
    """Raise a ValueError naming the part whose index does not fit its embedding table."""
    if positions.shape[-1] != 3:
        raise ValueError(f"positions need 3 parts in the last axis, got shape {tuple(positions.shape)}")
    low = positions.reshape(-1, 3).amin(dim=0).tolist()
    high = positions.reshape(-1, 3).amax(dim=0).tolist()
    for name, lo, hi, size in zip(POSITION_PARTS, low, high, max_positions):
        if lo < 0 or hi >= size:
            raise ValueError(f"{name} {hi if hi >= size else lo} is outside the embedding table "
                             f"[0, {size}); build the model with larger max_positions")


def _transformer(config: SaneConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.feedforward_dim,
                                       config.dropout, batch_first=True, norm_first=True)
    # the nested-tensor fast path changes outputs at padded tokens between train and eval
    return nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)


def padding_keys(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Tokens without any real value, as a key padding mask [B, W] (True = ignore).

    A window with no real token at all keeps every key, because attention over no keys is
    NaN; its outputs are excluded from the losses and the pooling anyway.
    """
    if mask is None:
        return None
    empty = ~mask.bool().any(dim=-1)
    return empty & ~empty.all(dim=-1, keepdim=True)


def pool_tokens(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the tokens of each window that hold at least one real value: [B, W, D] → [B, D]."""
    if mask is None:
        return values.mean(dim=1)
    real = mask.bool().any(dim=-1, keepdim=True).to(values.dtype)
    return (values * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)


class SaneAutoencoder(nn.Module):
    """Transformer autoencoder: token windows → per-token latents → token windows."""

    def __init__(self, config: SaneConfig):
        super().__init__()
        self.config = config
        d_model = config.d_model
        self.token_embedding = nn.Linear(config.token_size, d_model)
        self.encoder_positions = PositionEmbedding(config.max_positions, d_model)
        self.encoder = _transformer(config)
        self.to_latent = nn.Linear(d_model, config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, d_model)
        self.decoder_positions = PositionEmbedding(config.max_positions, d_model)
        self.decoder = _transformer(config)
        self.to_tokens = nn.Linear(d_model, config.token_size)
        self.projection = nn.Sequential(
            nn.Linear(config.latent_dim, config.projection_dim), nn.LayerNorm(config.projection_dim),
            nn.ReLU(), nn.Linear(config.projection_dim, config.projection_dim))
        self.dropout = nn.Dropout(config.dropout)
        self.apply(_init_weights)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token latents [B, W, latent_dim] of windows ``tokens`` [B, W, token_size].

        Padded values (mask 0) are zeroed first, so whatever they hold never reaches the model.
        """
        if mask is not None:
            # where() rather than a product: 0 · NaN in padding would still be NaN
            tokens = torch.where(mask > 0, tokens, torch.zeros_like(tokens))
        hidden = self.token_embedding(tokens) + self.encoder_positions(positions)
        hidden = self.encoder(self.dropout(hidden), src_key_padding_mask=padding_keys(mask))
        return self.to_latent(hidden)

    def decode(self, latents: torch.Tensor, positions: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, W, token_size] from per-token latents [B, W, latent_dim]."""
        hidden = self.from_latent(latents) + self.decoder_positions(positions)
        hidden = self.decoder(self.dropout(hidden), src_key_padding_mask=padding_keys(mask))
        return self.to_tokens(hidden)

    def project(self, latents: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The contrastive head on the window's pooled latent: [B, W, latent] → [B, projection_dim]."""
        return self.projection(pool_tokens(latents, mask))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Latents, reconstruction and projection of one batch of windows."""
        latents = self.embed(tokens, positions, mask)
        return {"latents": latents, "reconstruction": self.decode(latents, positions, mask),
                "projection": self.project(latents, mask)}


def _init_weights(module: nn.Module) -> None:
    # SANE (after GPT-2) starts linear and embedding weights at N(0, 0.02); PyTorch's N(0, 1)
    # position tables would otherwise swamp the token embedding at the start
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
