"""SANE inside the evaluation protocol: an autoencoder per fold, trained on that fold's
training networks only (their layer statistics, their augmented windows), then embeddings of
the fold's training and test snapshots. No test network is ever seen in training, not even
without its label. Everything else is the study's own code (:mod:`.study`): tokenizer,
standardisation, augmentation, streamed batches, training.

The embeddings of the last KEEP_FOLDS (fold, layout) pairs are kept per process (they are
small: 16 numbers per snapshot), so the linear and the boosted probe of one fold share one
trained autoencoder (5 folds of a zoo of 8 layouts are 40 pairs).
"""

from __future__ import annotations

import pandas as pd

from weightzoo.analysis.sane.batches import streamed_window_batches
from weightzoo.analysis.sane.embed import embed_networks
from weightzoo.analysis.sane.model import SaneConfig, max_positions_of
from weightzoo.analysis.sane.study import (MODEL_KEYS, augmentation, options_with_defaults, study_tokenizer,
                                           token_blocks)
from weightzoo.analysis.sane.train import train_sane
from weightzoo.analysis.token_stats import layer_statistics
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.errors import InputError

_KEPT: dict = {}
KEEP_FOLDS = 64


def fold_embeddings(zoo, train_ids, test_ids, *, snapshots, seed: int = 0, epochs: int = 10,
                    options: dict | None = None, progress=None) -> pd.DataFrame:
    """Embeddings (``model_id``, ``k``, ``e0``…) of the selected snapshots of ``train_ids`` and
    ``test_ids`` from an autoencoder trained on ``train_ids`` alone; ``options`` are the SANE
    study's (:data:`weightzoo.analysis.sane.study.DEFAULTS`), ``epochs`` and ``seed`` override
    theirs. InputError when the networks span several layouts."""
    o = options_with_defaults({**(options or {}), "epochs": epochs, "seed": seed,
                               "snapshots": SnapshotChoice.of(snapshots).text})
    key = (str(zoo.handle), zoo.version, tuple(sorted(train_ids)), tuple(sorted(test_ids)),
           tuple(sorted((k, str(v)) for k, v in o.items())))
    if key in _KEPT:
        return _KEPT[key]
    everything = zoo.select(snapshots=o["snapshots"], model_ids=list(train_ids) + list(test_ids))
    layouts = sorted(everything.layouts)
    if len(layouts) != 1:
        raise InputError(f"SANE embeds one layout at a time; these networks span {len(layouts)}: {layouts}")
    layout_id = layouts[0]
    layout = zoo.layout(layout_id)
    tokenizer = study_tokenizer(layout, o)
    stats = layer_statistics(zoo, layout_id, split=None, snapshots=o["snapshots"], model_ids=list(train_ids))
    train = zoo.select(snapshots=o["snapshots"], model_ids=list(train_ids))
    window = min(int(o["window"]), tokenizer.n_tokens)
    config = SaneConfig(token_size=int(o["token_size"]), max_positions=max_positions_of(tokenizer.positions),
                        **{k: o[k] for k in MODEL_KEYS})
    augment = augmentation(layout, tokenizer, permute=bool(o["permute"]), noise=float(o["noise"]))

    def batches(epoch):
        blocks = (tokens for tokens, _ in token_blocks(train, tokenizer, stats, shuffle_seed=int(o["seed"]),
                                                       epoch=epoch))
        return streamed_window_batches(blocks, tokenizer.mask, tokenizer.positions, window, int(o["batch_size"]),
                                       augment, int(o["seed"]), epoch=epoch,
                                       windows_per_sample=int(o["windows_per_sample"]))

    model, _ = train_sane(batches, config, epochs=int(o["epochs"]), seed=int(o["seed"]), progress=progress,
                          device=o["device"], threads=1)
    vectors = []
    for tokens, index in token_blocks(everything, tokenizer, stats):
        frame = pd.DataFrame(embed_networks(model, tokens, tokenizer.mask, tokenizer.positions, window=window))
        vectors.append(frame.set_axis([f"e{i}" for i in range(frame.shape[1])], axis=1).set_axis(index))
    embedded = pd.concat(vectors).sort_index()
    rows = everything.rows[["model_id", "k"]].reset_index(drop=True)
    result = pd.concat([rows.assign(model_id=rows["model_id"].astype(str)), embedded.reset_index(drop=True)],
                       axis=1)
    while len(_KEPT) >= KEEP_FOLDS:
        _KEPT.pop(next(iter(_KEPT)))
    _KEPT[key] = result
    return result
