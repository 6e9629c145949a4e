"""SANE on a zoo version: tokens from the readers, training, embeddings, probes.

One layout at a time (tokens of different layouts do not line up): by default the layout
with the most models. Weights are standardised per layer with statistics of the ``train``
split (computed with Dask), tokenised from the layout, and the autoencoder trains on
random windows of two augmented views of the train split — a function-preserving
permutation of hidden units plus multiplicative noise. Training and embedding stream the
weights through the zoo's readers in blocks of ``BLOCK_SAMPLES`` snapshots (a new shuffle
every epoch, deterministic in (seed, epoch)), so memory holds one block and the readers'
bounded cache, never the whole split. Embeddings of every snapshot of
every split are then written as ``embeddings.parquet`` (model_id, k, split, e0…), and the
probes fit the same linear/boosted models as the s(W) baseline on the same splits, side
by side.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from weightzoo.analysis.cache import cached_result, result_dir
from weightzoo.analysis.plots import plot_results
from weightzoo.analysis.properties import (PROTOCOL, default_targets, feature_columns, feature_table,
                                           predict_properties, result_rows)
from weightzoo.analysis.records import json_records
from weightzoo.analysis.results import StudyResult
from weightzoo.analysis.sane.batches import streamed_window_batches
from weightzoo.analysis.sane.embed import POOLINGS, embed_networks
from weightzoo.analysis.sane.model import SaneConfig, max_positions_of
from weightzoo.analysis.sane.train import load_sane, train_sane
from weightzoo.analysis.token_stats import layer_statistics, normalize_tokens, save_layer_statistics
from weightzoo.core.permutations import permute_hidden_units
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.core.tokens import tokenizer_for

DEFAULTS = {"token_size": 16, "window": 16, "epochs": 20, "batch_size": 32, "windows_per_sample": 4,
            "permute": True, "noise": 0.05, "seed": 0, "snapshots": None, "layout_id": None,
            "d_model": 64, "n_layers": 2, "latent_dim": 16, "gamma": 0.05, "lr": 1e-3, "device": "cpu",
            "bn_tokens": None,  # None = "append"; "separate" is SANE's own arrangement (core.tokens)
            "pooling": None}  # None = "mean" (SANE's); "layers": the mean per layer, concatenated (embed.py)
MODEL_KEYS = ("d_model", "n_layers", "latent_dim", "gamma", "lr")
BLOCK_SAMPLES = 256  # snapshots per streamed read block


def options_with_defaults(options: dict | None) -> dict:
    """The full option dict of a run (unknown keys are an error naming them); ``snapshots`` in
    its canonical text (:class:`weightzoo.core.snapshots.SnapshotChoice`)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SANE option(s) {unknown}; known: {sorted(DEFAULTS)}")
    if options.get("bn_tokens") not in (None, "append", "separate"):
        raise ValueError(f"bn_tokens must be 'append' or 'separate' (permutation augmentation needs every value "
                         f"in the tokens), got {options['bn_tokens']!r}")
    if options.get("pooling") not in (None, *POOLINGS):
        raise ValueError(f"pooling must be one of {POOLINGS}, got {options['pooling']!r}")
    result = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if result["pooling"] in (None, "mean"):  # the default: runs made before the option keep their cache keys
        del result["pooling"]
    return {**result, "snapshots": SnapshotChoice.of(result["snapshots"]).text}


def study_tokenizer(layout, options: dict):
    """The tokenizer of a run's options (``bn_tokens`` None keeps the default arrangement,
    and so the cache keys of runs made before the option existed)."""
    return tokenizer_for(layout, int(options["token_size"]), options.get("bn_tokens") or "append")


def choose_layout(zoo, layout_id: str | None) -> str:
    """``layout_id`` if given (checked), else the layout with the most ok trained (not generated) models."""
    counts = zoo.select(trained_only(zoo)).models["layout_id"].value_counts()
    if layout_id is None:
        if counts.empty:
            raise ValueError(f"{zoo.version} has no models with status 'ok'")
        return str(counts.index[0])
    if layout_id not in counts.index:
        raise ValueError(f"layout {layout_id!r} has no ok models in {zoo.version}; layouts: {counts.to_dict()}")
    return layout_id


def trained_only(zoo) -> str | None:
    """A where-query leaving out networks a SANE model generated (published samples): a
    model must never learn from, or be normalised by, its own or another model's output."""
    return "generated_by.isnull()" if "generated_by" in zoo.models.columns else None


def token_blocks(selection, tokenizer, stats: pd.DataFrame, *, shuffle_seed: int | None = None, epoch: int = 0,
                 block: int = BLOCK_SAMPLES):
    """Stream standardised tokens [n, T, S] of a selection through its torch reader, block by
    block, with each block's sample indices into ``selection.rows``. With ``shuffle_seed``
    the order is shuffled per (seed, epoch); without, it is the selection's order."""
    batches = selection.torch_batches(block, shuffle=shuffle_seed is not None, seed=shuffle_seed or 0, epoch=epoch)
    for batch in batches:
        tokens = normalize_tokens(tokenizer.tokenize(batch["weights"].numpy()), stats, tokenizer)
        yield tokens.astype(np.float32), batch["index"].numpy()


def zoo_tokens(zoo, layout_id: str, tokenizer, stats: pd.DataFrame, *, split=None, snapshots=None, where=None):
    """Standardised tokens [n, T, S] of the selected snapshots, and their rows (model_id, k, split)."""
    selection = zoo.select(where, snapshots=snapshots, split=split, layout_id=layout_id)
    tokens = np.concatenate([block for block, _ in token_blocks(selection, tokenizer, stats)])
    return tokens, selection.rows[["model_id", "k", "split"]].reset_index(drop=True)


def augmentation(layout, tokenizer, *, permute: bool, noise: float):
    """An augment_fn for window_batches: permute hidden units (the network's function is
    unchanged; per-layer standardisation commutes with it, as units stay in their layer),
    then multiplicative noise on real values."""
    def augment(tokens, mask, positions, rng):
        if permute:
            flat = permute_hidden_units(tokenizer.detokenize(tokens), layout, rng)
            tokens = tokenizer.tokenize(flat)
        if noise:
            tokens = tokens * (1.0 + noise * rng.standard_normal(tokens.shape).astype(np.float32))
        return np.where(mask, tokens, 0.0).astype(np.float32), mask, positions
    return augment


def train_on_zoo(zoo, out_dir, checkpoint_dir, options: dict | None = None, progress=None) -> StudyResult:
    """Train (resuming from ``checkpoint_dir``) and write ``sane.pt``, ``history.json``,
    ``layer_stats.parquet``, ``embeddings.parquet`` and ``loss.png`` into ``out_dir``.

    The result's rows are the loss history (one per epoch); ``details`` holds ``layout_id``,
    the counts and losses, and the ``embeddings`` and ``model`` paths."""
    o = options_with_defaults(options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout_id = choose_layout(zoo, o["layout_id"])
    layout = zoo.layout(layout_id)
    tokenizer = study_tokenizer(layout, o)
    stats = layer_statistics(zoo, layout_id, split="train", snapshots=o["snapshots"], where=trained_only(zoo))
    save_layer_statistics(stats, out / "layer_stats.parquet")
    train = zoo.select(trained_only(zoo), snapshots=o["snapshots"], split="train", layout_id=layout_id)
    window = min(int(o["window"]), tokenizer.n_tokens)
    config = SaneConfig(token_size=int(o["token_size"]), max_positions=max_positions_of(tokenizer.positions),
                        **{k: o[k] for k in MODEL_KEYS})
    augment = augmentation(layout, tokenizer, permute=bool(o["permute"]), noise=float(o["noise"]))

    def batches(epoch):
        blocks = (tokens for tokens, _ in token_blocks(train, tokenizer, stats, shuffle_seed=int(o["seed"]), epoch=epoch))
        return streamed_window_batches(blocks, tokenizer.mask, tokenizer.positions, window, int(o["batch_size"]),
                                       augment, int(o["seed"]), epoch=epoch,
                                       windows_per_sample=int(o["windows_per_sample"]))

    if progress:
        progress(f"SANE on layout {layout_id}: {len(train)} train samples of {tokenizer.n_tokens} tokens")
    model, history = train_sane(batches, config, checkpoint_dir=checkpoint_dir, epochs=int(o["epochs"]),
                                seed=int(o["seed"]), progress=progress, device=o["device"], threads=1)
    latest = sorted(Path(checkpoint_dir).glob("epoch-*.pt"))[-1]
    shutil.copyfile(latest, out / "sane.pt")
    (out / "history.json").write_text(json.dumps(history, indent=2))
    embeddings = embed_zoo(zoo, model, layout_id, tokenizer, stats, window=window, snapshots=o["snapshots"],
                           pooling=o.get("pooling", "mean"))
    embeddings.to_parquet(out / "embeddings.parquet", index=False)
    plot_history(history, out / "loss.png")
    last = history[-1]
    headline = (f"layout {layout_id}: {len(train)} train samples of {tokenizer.n_tokens} tokens; loss "
                f"{history[0]['loss']:.4f} -> {last['loss']:.4f} in {len(history)} epochs; "
                f"{len(embeddings)} snapshots embedded")
    return StudyResult.of_directory("sane", out, headline=headline, rows=history, details={
        "layout_id": layout_id, "n_train_samples": len(train), "n_tokens": tokenizer.n_tokens,
        "epochs": len(history), "first_loss": history[0]["loss"], "last_loss": last["loss"],
        "last_loss_recon": last["loss_recon"], "last_loss_contrast": last["loss_contrast"],
        "n_embeddings": len(embeddings), "embeddings": str(out / "embeddings.parquet"), "model": str(out / "sane.pt")})


def embed_zoo(zoo, model, layout_id: str, tokenizer, stats, *, window: int, snapshots=None,
              pooling: str = "mean") -> pd.DataFrame:
    """Embeddings of every (model, snapshot) of the layout, all splits: model_id, k, split, e0…
    (streamed block by block through the readers; see embed_networks for ``pooling``)."""
    selection = zoo.select(snapshots=snapshots, layout_id=layout_id)
    n_layers = len(np.unique(tokenizer.positions[:, 1])) if pooling == "layers" else 1
    vectors = np.zeros((len(selection), model.config.latent_dim * n_layers), np.float32)
    for tokens, index in token_blocks(selection, tokenizer, stats):
        vectors[index] = embed_networks(model, tokens, tokenizer.mask, tokenizer.positions, window=window,
                                        pooling=pooling)
    frame = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    return pd.concat([selection.rows[["model_id", "k", "split"]].reset_index(drop=True), frame], axis=1)


def probe(zoo, embeddings: pd.DataFrame, targets=None, *, seed: int = 0, snapshots=None) -> pd.DataFrame:
    """Linear and boosted probes on the embeddings next to the s(W) baseline, on the same
    samples and splits; a ``features`` column says which ("sane" or "stats"). ``snapshots`` is
    the choice the embeddings were made with."""
    layout_id = zoo.models.set_index("model_id").loc[embeddings["model_id"].iloc[0], "layout_id"]
    stats = feature_table(zoo, snapshots=snapshots, layout_id=layout_id)
    table = stats.merge(embeddings.drop(columns=["split"]), on=["model_id", "k"], how="inner")
    embedding_columns = [c for c in embeddings.columns if c.startswith("e") and c[1:].isdigit()]
    names = list(targets) if targets else default_targets(table.drop(columns=embedding_columns))
    sane = predict_properties(table, names, seed=seed, features=embedding_columns).assign(features="sane")
    baseline = predict_properties(table, names, seed=seed, features=feature_columns(stats)).assign(features="stats")
    return pd.concat([sane, baseline], ignore_index=True)


def run_sane_training(zoo, options: dict | None = None, progress=None) -> StudyResult:
    """Train once per (version, options, code) and cache the result under
    ``analyses/<v>/sane/<key>/``; checkpoints live beside it in ``<key>.checkpoints/`` so an
    interrupted or retried run resumes from its last epoch (removed once the result exists)."""
    o = options_with_defaults(options)
    target = result_dir(zoo, "sane", o)
    checkpoints = target.with_name(f"{target.name}.checkpoints")
    result = cached_result(zoo, "sane", o, lambda out: train_on_zoo(zoo, out, checkpoints, o, progress))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def run_sane_probe(zoo, options: dict | None = None, targets=None, progress=None) -> StudyResult:
    """Probes on the embeddings of a (cached) training run next to the s(W) baseline:
    ``probes.parquet`` and ``probes.png`` under ``analyses/<v>/sane-probe/<key>/``. The
    result's rows are one per (target, features, model kind); ``details`` holds the
    ``training`` result's path, the ``table`` and ``plot`` paths and the full ``records``."""
    o = options_with_defaults(options)

    def run(out):
        training = run_sane_training(zoo, o, progress)
        results = probe(zoo, pd.read_parquet(training.details["embeddings"]), targets, seed=int(o["seed"]),
                        snapshots=o["snapshots"])
        results.to_parquet(out / "probes.parquet", index=False)
        shown = results.assign(model=results["model"] + " · " + results["features"])
        plot_results(shown, out / "probes.png", title=f"SANE embeddings vs s(W), {zoo.handle.name} {zoo.version}")
        records = json_records(results)
        headline = (f"probes of {results['target'].nunique()} targets on SANE embeddings and s(W), same splits: "
                    f"{PROTOCOL}, 95 % intervals over test networks, chance from the train split")
        return StudyResult.of_directory("sane-probe", out, headline=headline, rows=result_rows(records), details={
            "training": training.path, "table": str(out / "probes.parquet"), "plot": str(out / "probes.png"),
            "records": records})

    return cached_result(zoo, "sane-probe", {**o, "targets": list(targets) if targets else None}, run)


def load_trained(out_dir):
    """The trained autoencoder and its history from a training result directory."""
    return load_sane(Path(out_dir) / "sane.pt")


def plot_history(history: list[dict], path) -> None:
    """Training loss per epoch: total, reconstruction and contrastive terms."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    for key, label in (("loss", "total"), ("loss_recon", "reconstruction"), ("loss_contrast", "NT-Xent")):
        ax.plot(epochs, [row[key] for row in history], marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
