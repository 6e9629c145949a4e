"""Sampled networks fine-tuned beside random ones, and published with both snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from weightzoo.analysis.sane import sampling
from weightzoo.io.reader import open_zoo

N = 3


def test_finetuned_samples_are_evaluated_and_published_as_a_second_snapshot(zoo, tiny):
    result = sampling.run_sane_sampling(zoo, tiny, n=N, seed=1, finetune_epochs=2, publish=True)
    table = pd.read_parquet(result.details["table"])
    trained = table[table["kind"].isin(["sampled", "random"])]
    assert (trained["finetune_epochs"] == 2).all() and np.isfinite(trained["test_acc_ft"]).all()
    assert table.loc[table["kind"] == "anchor", "test_acc_ft"].isna().all()
    # two epochs of training on the digits move every network's test loss
    assert not np.allclose(trained["test_loss_ft"], trained["test_loss"])
    assert result.details["mean_test_acc_finetuned"]["random"] > result.details["mean_test_acc"]["random"]
    tuned = np.load(f"{result.path}/samples_finetuned.npy")
    new = open_zoo(zoo.handle, result.details["published_version"])
    generated = new.models[new.models["generated_by"] == "sane"].set_index("model_id")
    assert len(generated) == N and (generated["n_snapshots"] == 2).all()
    stored = sorted(bytes(new.weights(m, 1)) for m in generated.index)
    assert stored == sorted(map(bytes, tuned))
    rows = new.snapshots[new.snapshots["model_id"].isin(generated.index) & (new.snapshots["k"] == 1)]
    assert sorted(rows["test_acc"]) == pytest.approx(sorted(table.query("kind == 'sampled'")["test_acc_ft"]))
    assert (rows["epoch"] == 2).all()


def test_negative_finetuning_is_refused(zoo):
    with pytest.raises(ValueError, match="finetune_epochs"):
        sampling.evaluate_samples(zoo, zoo.models["layout_id"].iloc[0], np.zeros((1, 1), np.float32),
                                  finetune_epochs=-1)
