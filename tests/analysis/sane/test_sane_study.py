"""SANE on a real zoo: tokens from the readers, augmentations that keep the function,
cached and resumable training, embeddings of every snapshot, probes beside s(W)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from weightzoo.analysis.sane import study
from weightzoo.analysis.token_stats import denormalize_tokens, layer_statistics
from weightzoo.core.models import build_model
from weightzoo.core.tokens import tokenizer_for
from weightzoo.io.selection import Selection


def test_token_blocks_stream_every_sample_once_in_a_per_epoch_order(zoo):
    layout_id = study.choose_layout(zoo, None)
    tokenizer = tokenizer_for(zoo.layout(layout_id), 8)
    stats = layer_statistics(zoo, layout_id)
    selection = zoo.select(layout_id=layout_id)
    whole = study.zoo_tokens(zoo, layout_id, tokenizer, stats)[0]

    def order(epoch):
        blocks = list(study.token_blocks(selection, tokenizer, stats, shuffle_seed=3, epoch=epoch, block=5))
        assert max(len(tokens) for tokens, _ in blocks) <= 5
        for tokens, index in blocks:
            np.testing.assert_array_equal(tokens, whole[index])  # each block is the rows it names
        return np.concatenate([index for _, index in blocks])

    first = order(1)
    assert sorted(first) == list(range(len(selection)))
    np.testing.assert_array_equal(order(1), first)  # the same epoch streams the same order
    assert not np.array_equal(order(2), first)


def test_training_streams_and_never_loads_the_split_at_once(zoo, tiny, monkeypatch):
    def whole_split(self):
        raise AssertionError("SANE training must stream the split, not load it whole")

    monkeypatch.setattr(Selection, "to_numpy", whole_split)
    result = study.run_sane_training(zoo, {**tiny, "seed": 11})
    assert result.details["epochs"] == 2 and result.details["n_embeddings"] == int(zoo.models["n_snapshots"].sum())


def test_augmented_tokens_are_the_same_network(zoo):
    model_id = zoo.models["model_id"].iloc[0]
    layout_id = study.choose_layout(zoo, None)
    layout, tokenizer = zoo.layout(layout_id), tokenizer_for(zoo.layout(layout_id), 8)
    stats = layer_statistics(zoo, layout_id)
    tokens = study.normalize_tokens(tokenizer.tokenize(zoo.weights(model_id, 1)[None]), stats, tokenizer)
    augment = study.augmentation(layout, tokenizer, permute=True, noise=0.0)
    permuted, _, _ = augment(tokens, tokenizer.mask, tokenizer.positions, np.random.default_rng(0))
    assert not np.allclose(permuted, tokens)
    flat = tokenizer.detokenize(denormalize_tokens(permuted, stats, tokenizer))[0]
    config = json.loads(zoo.models.set_index("model_id").loc[model_id, "config_json"])
    rebuilt = build_model(config)
    rebuilt.load_state_dict(layout.unflatten(flat), strict=False)
    x = torch.randn(5, 1, 8, 8)
    np.testing.assert_allclose(rebuilt.eval()(x).detach(), zoo.load_model(model_id, 1)(x).detach(), atol=1e-4)


def test_training_is_cached_and_embeds_every_snapshot(zoo, tiny):
    first = study.run_sane_training(zoo, tiny)
    assert not first.cached and first.details["epochs"] == 2 and np.isfinite(first.details["last_loss"])
    embeddings = pd.read_parquet(first.details["embeddings"])
    assert len(embeddings) == int(zoo.models["n_snapshots"].sum())  # every split, every snapshot
    assert {"model_id", "k", "split", "e0", "e3"} <= set(embeddings.columns)
    assert "/analyses/v0001/sane/" in first.path
    again = study.run_sane_training(zoo, tiny)
    assert again.cached and again.details["last_loss"] == first.details["last_loss"]


def test_an_interrupted_run_resumes_from_its_checkpoints(zoo, monkeypatch, tiny):
    options = {**tiny, "seed": 7}
    real_embed = study.embed_zoo

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(study, "embed_zoo", crash)  # dies after training, before the result exists
    crashed = []
    with pytest.raises(RuntimeError, match="worker lost"):
        study.run_sane_training(zoo, options, progress=crashed.append)
    assert any("epoch 2/2" in line for line in crashed)  # it trained before dying
    monkeypatch.setattr(study, "embed_zoo", real_embed)
    lines = []
    result = study.run_sane_training(zoo, options, progress=lines.append)
    assert not any("epoch 1/" in line or "epoch 2/" in line for line in lines), lines  # nothing retrained
    assert result.details["epochs"] == 2 and not result.cached


def test_probes_sit_next_to_the_weight_statistics_baseline(zoo, tiny):
    result = study.run_sane_probe(zoo, tiny, targets=["init", "test_acc"])
    table = pd.read_parquet(result.details["table"])
    assert set(table["features"]) == {"sane", "stats"} and set(table["target"]) == {"init", "test_acc"}
    assert len(table) == 2 * 2 * 2  # features × targets × (linear, boosted)


def test_bad_options_and_layouts_are_named():
    with pytest.raises(ValueError, match="unknown SANE option"):
        study.options_with_defaults({"epoch": 3})


def test_bn_tokens_option_chooses_sanes_arrangement_and_keeps_old_keys():
    from weightzoo.analysis.sane.study import options_with_defaults, study_tokenizer
    from weightzoo.core.fingerprint import fingerprint
    from weightzoo.core.layout import WeightLayout
    from weightzoo.core.models import build_model

    layout = WeightLayout.from_module(build_model({"dataset": "digits", "architecture": "nws-cnn", "batch_norm": True}))
    assert study_tokenizer(layout, options_with_defaults({})).bn == "append"
    assert study_tokenizer(layout, options_with_defaults({"bn_tokens": "separate"})).bn == "separate"
    with pytest.raises(ValueError, match="bn_tokens"):
        options_with_defaults({"bn_tokens": "ignore"})
    without = {k: v for k, v in options_with_defaults({}).items() if k != "bn_tokens"}
    assert fingerprint(options_with_defaults({})) == fingerprint(without), "runs made before the option keep their key"


def test_layer_pooling_gives_a_mean_per_layer_and_keeps_old_keys(zoo, tiny):
    from weightzoo.core.fingerprint import fingerprint

    assert fingerprint(study.options_with_defaults({"pooling": "mean"})) == fingerprint(study.options_with_defaults({}))
    with pytest.raises(ValueError, match="pooling"):
        study.options_with_defaults({"pooling": "max"})
    result = study.run_sane_training(zoo, {**tiny, "epochs": 1, "pooling": "layers"})
    embeddings = pd.read_parquet(result.details["embeddings"])
    columns = [c for c in embeddings.columns if c.startswith("e") and c[1:].isdigit()]
    layout = zoo.layout(result.details["layout_id"])
    n_layers = len({spec.layer for spec in layout.tensors})
    assert len(columns) == tiny["latent_dim"] * n_layers and n_layers > 1
