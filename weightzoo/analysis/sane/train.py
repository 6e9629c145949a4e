"""Training a SANE autoencoder, with a checkpoint every epoch and exact resumption.

Determinism: the model is initialised from ``seed``; every epoch reseeds torch (dropout)
from (seed, epoch) and asks the batch factory for that epoch's batches, which are
themselves a function of the epoch. An epoch therefore depends only on the state at its
start, which the checkpoint holds (model, AdamW state, history), so a run resumed after a
crash ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from weightzoo.analysis.sane.batches import noise_augmentation, window_batches
from weightzoo.analysis.sane.losses import sane_loss
from weightzoo.analysis.sane.model import SaneAutoencoder, SaneConfig

__all__ = ["train_sane", "load_sane", "window_batches", "noise_augmentation", "build_model",
           "train_epoch", "train_step", "save_checkpoint", "load_latest_checkpoint", "check_same_run"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"^epoch-(\d+)\.pt$")
BatchFactory = Callable[[int], Iterable[dict]]


def train_sane(batches_iterable_factory: BatchFactory, config: SaneConfig, *,
               checkpoint_dir: str | Path | None = None, epochs: int, seed: int = 0,
               progress: Callable[[str], None] | None = None,
               device: str | torch.device = "cpu",
               threads: int | None = None) -> tuple[SaneAutoencoder, list[dict]]:
    """Train (or resume training) a SANE autoencoder for ``epochs`` epochs in total.

    ``batches_iterable_factory(epoch)`` (epoch counts from 1) returns that epoch's batches:
    dicts of ``tokens``, ``mask``, ``positions`` and the views ``view_a``/``view_b`` (see
    :mod:`weightzoo.analysis.sane.batches`); it must return the same batches for the same
    epoch for resumption to be exact. With ``checkpoint_dir``, a checkpoint is written
    atomically after every epoch and training resumes from the latest one found there; that
    checkpoint must have been written with the same config and seed (ValueError otherwise).
    A checkpoint already at or beyond ``epochs`` is returned as it is. ``threads`` limits
    torch's intra-op threads while training (1 is fastest for CPU-sized models on a shared
    machine); the previous setting is restored. Returns the model (in eval mode) and one
    history row per epoch.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        return _train(batches_iterable_factory, config, checkpoint_dir, epochs, seed, progress,
                      torch.device(device))
    finally:
        torch.set_num_threads(previous)


def _train(batches_iterable_factory, config, checkpoint_dir, epochs, seed, progress, device):
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but this torch build sees no CUDA device")
    model, optimizer = build_model(config, seed, device)
    history: list[dict] = []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        state = load_latest_checkpoint(folder, device)
        if state is not None:
            check_same_run(state, config, seed, folder)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history = list(state["history"])
    for epoch in range(len(history) + 1, epochs + 1):
        record = train_epoch(model, optimizer, batches_iterable_factory(epoch), config, seed, epoch)
        history.append(record)
        if folder is not None:
            save_checkpoint(folder, model, optimizer, config, seed, history)
        if progress:
            progress(f"sane: epoch {epoch}/{epochs} loss {record['loss']:.4g} "
                     f"(recon {record['loss_recon']:.4g}, contrast {record['loss_contrast']:.4g})")
    model.eval()
    return model, history


def build_model(config: SaneConfig, seed: int, device: torch.device):
    """A freshly initialised model (from ``seed``) on ``device`` and its AdamW optimizer."""
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        model = SaneAutoencoder(config).to(device)
    # as SANE (after nanoGPT): decay matrices and embeddings, not biases or norms
    decay = [p for p in model.parameters() if p.dim() >= 2]
    keep = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": keep, "weight_decay": 0.0}], lr=config.lr)
    return model, optimizer


def train_epoch(model, optimizer, batches: Iterable[dict], config: SaneConfig, seed: int,
                epoch: int) -> dict:
    """One pass over ``batches``; the history row: mean losses per window, timing."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    totals = {"loss": 0.0, "loss_recon": 0.0, "loss_contrast": 0.0}
    n_windows = n_batches = 0
    model.train()
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(epoch_seed(seed, epoch))
        for batch in batches:
            parts = train_step(model, optimizer, batch_to(batch, device), config)
            if not np.isfinite(parts["loss"]):
                raise FloatingPointError(f"SANE loss became {parts['loss']} in epoch {epoch}, batch {n_batches + 1}")
            size = batch["tokens"].shape[0]
            for key in totals:
                totals[key] += parts[key] * size
            n_windows, n_batches = n_windows + size, n_batches + 1
    if n_batches == 0:
        raise ValueError(f"the batch factory gave no batches for epoch {epoch}")
    means = {key: value / n_windows for key, value in totals.items()}
    return {"epoch": epoch, **means, "n_windows": n_windows, "n_batches": n_batches,
            "seconds": time.perf_counter() - started}


def train_step(model, optimizer, batch: dict, config: SaneConfig) -> dict[str, float]:
    """One AdamW step on both views of ``batch``; the loss and its parts as floats."""
    view_a, view_b = batch["view_a"], batch["view_b"]
    # one forward pass over both views: half the kernel launches of two passes
    joined = {key: torch.cat([view_a[key], view_b[key]]) for key in ("tokens", "positions", "mask")}
    out = model(joined["tokens"], joined["positions"], joined["mask"])
    size = view_a["tokens"].shape[0]
    out_a = {key: value[:size] for key, value in out.items()}
    out_b = {key: value[size:] for key, value in out.items()}
    parts = sane_loss(out_a, out_b, batch, config.gamma, config.temperature)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimizer.step()
    return {key: float(value.detach()) for key, value in parts.items()}


def batch_to(batch: dict, device: torch.device) -> dict:
    """``batch`` on ``device``; a batch without views uses its clean window for both."""
    clean = {key: torch.as_tensor(batch[key]).to(device) for key in ("tokens", "mask", "positions")}
    views = {name: {key: torch.as_tensor(batch[name][key]).to(device) for key in clean}
             if name in batch else clean for name in ("view_a", "view_b")}
    return {**clean, **views}


def epoch_seed(seed: int, epoch: int) -> int:
    """A torch seed for one epoch that does not collide across (seed, epoch) pairs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _rng_devices(device: torch.device) -> list:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def checkpoint_path(folder: Path, epoch: int) -> Path:
    """Where the checkpoint after ``epoch`` lives."""
    return Path(folder) / f"epoch-{epoch:04d}.pt"


def save_checkpoint(folder: Path, model, optimizer, config: SaneConfig, seed: int,
                    history: list[dict]) -> Path:
    """Write the state after the last epoch of ``history`` atomically (temporary file, rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(folder, len(history))
    state = {"format": CHECKPOINT_FORMAT, "epoch": len(history), "config": config.to_dict(),
             "seed": seed, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "history": history}
    partial = target.with_name(target.name + ".tmp")
    with open(partial, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    # a crash before this rename leaves only a .tmp file, which loading ignores
    os.replace(partial, target)
    return target


def load_latest_checkpoint(folder: Path, device="cpu") -> dict | None:
    """The newest complete checkpoint in ``folder``, or None when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), path) for path in folder.iterdir()
             if (m := CHECKPOINT_PATTERN.match(path.name))]
    if not found:
        return None
    return torch.load(max(found)[1], map_location=device, weights_only=True)


def check_same_run(state: dict, config: SaneConfig, seed: int, folder: Path) -> None:
    """Raise ValueError when a checkpoint was written by a run with another config or seed."""
    stored = {**state["config"], "seed": state["seed"]}
    given = {**config.to_dict(), "seed": seed}
    changed = sorted(key for key in stored.keys() | given.keys() if stored.get(key) != given.get(key))
    if changed:
        details = ", ".join(f"{key}: checkpoint {stored.get(key)!r} vs given {given.get(key)!r}" for key in changed)
        raise ValueError(f"checkpoint in {folder} was written with a different SANE config ({details}); "
                         "use another checkpoint_dir or the same settings")


def load_sane(checkpoint: str | Path, device="cpu") -> tuple[SaneAutoencoder, list[dict]]:
    """A trained model (eval mode) and its history from a checkpoint file or the latest in a folder."""
    checkpoint = Path(checkpoint)
    state = (load_latest_checkpoint(checkpoint, device) if checkpoint.is_dir()
             else torch.load(checkpoint, map_location=device, weights_only=True))
    if state is None:
        raise FileNotFoundError(f"no SANE checkpoint in {checkpoint}")
    model = SaneAutoencoder(SaneConfig.from_dict(state["config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, list(state["history"])
