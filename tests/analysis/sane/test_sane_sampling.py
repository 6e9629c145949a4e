"""Networks sampled from a trained SANE model: runnable, evaluated beside random and anchor
networks, deterministic, and publishable as a new version that leaves the old one intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from weightzoo.analysis.sane import sampling
from weightzoo.analysis.sane.study import run_sane_training
from weightzoo.core.models import flat_to_module
from weightzoo.io.reader import list_versions, open_zoo

N = 4


@pytest.fixture(scope="module")
def result(zoo, tiny):
    return sampling.run_sane_sampling(zoo, tiny, n=N, seed=3)


def test_samples_have_the_layout_shape_and_are_deterministic(zoo, tiny):
    training = run_sane_training(zoo, tiny)
    layout = zoo.layout(training.details["layout_id"])
    first = sampling.sample_networks(zoo, training, N, seed=5)
    assert first.shape == (N, layout.n_params) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, sampling.sample_networks(zoo, training, N, seed=5))
    assert not np.allclose(first, sampling.sample_networks(zoo, training, N, seed=6))


def test_zero_bandwidth_draws_are_anchor_latents():
    anchors = np.random.default_rng(0).standard_normal((5, 3, 2)).astype(np.float32)
    drawn = sampling.draw_latents(anchors, 7, seed=1, bandwidth=0.0)
    assert drawn.shape == (7, 3, 2)
    assert all(any(np.array_equal(d, a) for a in anchors) for d in drawn)


def test_sampled_networks_load_and_run(zoo, result):
    flats = np.load(result.details["samples"])
    reference = sampling.reference_model(zoo, result.details["layout_id"])
    module = flat_to_module(json.loads(reference["config_json"]), zoo.layout(result.details["layout_id"]), flats[0])
    output = module(torch.randn(3, 1, 8, 8))
    assert output.shape[0] == 3 and torch.isfinite(output).all()


def test_the_table_holds_three_kinds_with_finite_accuracies(zoo, result, tiny):
    table = pd.read_parquet(result.details["table"])
    counts = table["kind"].value_counts()
    n_anchors = len(sampling.anchor_models(zoo, result.details["layout_id"]))
    assert counts["sampled"] == N and counts["random"] == N and counts["anchor"] == n_anchors
    assert np.isfinite(table["test_acc"]).all() and np.isfinite(table["test_loss"]).all()
    assert {"samples.parquet", "samples.png", "samples.npy"} <= {p.name for p in Path(result.path).iterdir()}
    again = sampling.run_sane_sampling(zoo, tiny, n=N, seed=3)
    assert again.cached and again.details["mean_test_acc"] == result.details["mean_test_acc"]


def test_anchor_accuracy_equals_the_recorded_test_accuracy(result):
    anchors = pd.read_parquet(result.details["table"]).query("kind == 'anchor'")
    np.testing.assert_allclose(anchors["test_acc"], anchors["acc_recorded"], atol=1e-6)


def test_publishing_adds_the_samples_as_a_new_version(zoo, result, tiny):
    before = open_zoo(zoo.handle, "v0001")
    models_before, weights_before = before.models.copy(), before.weights(before.models["model_id"].iloc[0])
    published = sampling.run_sane_sampling(zoo, tiny, n=N, seed=3, publish=True)
    assert published.details["published_version"] == "v0002"
    assert [v["version"] for v in list_versions(zoo.handle)][-2:] == ["v0001", "v0002"]
    new = open_zoo(zoo.handle, "v0002")
    generated = new.models[new.models["generated_by"] == "sane"]
    assert len(generated) == N and len(new.models) == len(models_before) + N
    assert (generated["status"] == "ok").all() and set(generated["sane_result"]) == {result.details["training"]}
    table = pd.read_parquet(result.details["table"]).query("kind == 'sampled'").sort_values("index")
    flats = np.load(result.details["samples"])
    recorded = new.snapshots.set_index("model_id").loc[generated["model_id"], "test_acc"]
    assert sorted(recorded) == pytest.approx(sorted(table["test_acc"]))
    stored = np.stack([new.weights(m, 0) for m in generated["model_id"]])
    assert sorted(map(bytes, stored)) == sorted(map(bytes, flats))
    new.load_model(generated["model_id"].iloc[0], 0)  # config and layout agree
    reread = open_zoo(zoo.handle, "v0001")
    pd.testing.assert_frame_equal(reread.models, models_before)
    np.testing.assert_array_equal(reread.weights(models_before["model_id"].iloc[0]), weights_before)
    again = sampling.run_sane_sampling(zoo, tiny, n=N, seed=3, publish=True)
    assert again.details["published_version"] == "v0002"  # nothing new: no further version
    # generated networks never feed a later training run or its normalisation
    from weightzoo.analysis.sane import study
    layout_id = generated["layout_id"].iloc[0]
    trained = study.zoo_tokens(new, layout_id, study.tokenizer_for(new.layout(layout_id), tiny["token_size"]),
                               pd.read_parquet(f"{result.details['training']}/layer_stats.parquet"), split="train",
                               where=study.trained_only(new))[1]
    assert not set(trained["model_id"]) & set(generated["model_id"])
    assert set(sampling.anchor_models(new, layout_id)["model_id"]).isdisjoint(generated["model_id"])
