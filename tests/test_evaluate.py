"""zoo.dataset(model_id) and zoo.evaluate(model_id, k): a model's own data and the accuracy
stored for it (issue 18 item 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from weightzoo.errors import InputError
from weightzoo.io.reader import open_zoo


def test_evaluate_reproduces_every_stored_test_accuracy(smoke_zoo):
    zoo = open_zoo(smoke_zoo)
    for snap in zoo.snapshots.itertuples():
        result = zoo.evaluate(snap.model_id, snap.k)
        assert result["k"] == snap.k and result["n_test"] > 0
        assert abs(result["test_acc"] - snap.test_acc) <= 1e-6, (snap.model_id, snap.k)
        assert result["test_loss"] == pytest.approx(snap.test_loss, rel=1e-5)


def test_dataset_is_the_models_own_split(smoke_zoo):
    from weightzoo.data.datasets import load_dataset

    zoo = open_zoo(smoke_zoo)
    row = zoo.models.iloc[0]
    data = zoo.dataset(row.model_id)
    seed = json.loads(row.training_json)["split_seed"]
    expected = load_dataset("digits", split_seed=seed)
    np.testing.assert_array_equal(data.x_test.numpy(), expected.x_test.numpy())
    np.testing.assert_array_equal(data.y_test.numpy(), expected.y_test.numpy())
    assert len(data.x_train) + len(data.x_test) == len(expected.x_train) + len(expected.x_test)
    other = load_dataset("digits", split_seed=seed + 1)
    assert not np.array_equal(other.y_test.numpy(), data.y_test.numpy()), "the split seed matters"


def test_a_model_without_a_training_config_is_a_clear_error(smoke_zoo, monkeypatch):
    zoo = open_zoo(smoke_zoo)
    models = zoo.models.copy()
    models["config_json"] = "{}"
    monkeypatch.setattr(type(zoo), "models", property(lambda self: models), raising=False)
    with pytest.raises(InputError, match="its own data is not known"):
        zoo.dataset(models["model_id"].iloc[0])
