"""Exports read back equal: Model Zoos folders re-imported, and the flat bundle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from weightzoo.interop.common import SourceError
from weightzoo.pipelines.importing import import_in_process
from weightzoo.interop.export import export_bundle, export_modelzoos, read_bundle
from weightzoo.io.reader import open_zoo

METRICS = ["epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "gap"]


def test_modelzoos_export_then_import_gives_the_same_weights_and_metrics(smoke_zoo, tmp_path):
    zoo = open_zoo(smoke_zoo)
    result = export_modelzoos(zoo, tmp_path / "mz")
    assert result["n_models"] == len(zoo.models)
    model_id = zoo.models["model_id"].iloc[0]
    params = json.loads((tmp_path / "mz" / model_id / "params.json").read_text())
    assert params["model::nlin"] == zoo.models["activation"].iloc[0] and params["weightzoo::model_id"] == model_id
    report = import_in_process(tmp_path / "back", "modelzoos", tmp_path / "mz")
    assert report["n_accepted"] == len(zoo.models) and not report["rejected"]
    back = open_zoo(tmp_path / "back")
    original = zoo.models.set_index("model_id")
    for row in back.models.to_dict("records"):
        source_id = row["source_model_id"]
        assert np.array_equal(back.weights(row["model_id"]), zoo.weights(source_id))  # bit for bit
        for column in ("optimizer", "lr", "activation", "batch_size", "hidden_width", "dataset"):
            assert row[column] == original.loc[source_id, column], column
        mine = back.snapshots[back.snapshots["model_id"] == row["model_id"]].sort_values("k")
        theirs = zoo.snapshots[zoo.snapshots["model_id"] == source_id].sort_values("k")
        pd.testing.assert_frame_equal(mine[METRICS].reset_index(drop=True), theirs[METRICS].reset_index(drop=True),
                                      check_dtype=False)
        inputs = torch.randn(3, 1, 8, 8)
        with torch.no_grad():
            assert torch.equal(back.load_model(row["model_id"], 1)(inputs), zoo.load_model(source_id, 1)(inputs))


def test_bundle_holds_every_weight_and_table(smoke_zoo, tmp_path):
    zoo = open_zoo(smoke_zoo)
    result = export_bundle(zoo, tmp_path / "smoke.npz")
    assert result["bytes"] == (tmp_path / "smoke.npz").stat().st_size
    bundle = read_bundle(tmp_path / "smoke.npz")
    assert bundle["manifest"]["version"] == zoo.version
    pd.testing.assert_frame_equal(bundle["snapshots"], zoo.snapshots)
    pd.testing.assert_frame_equal(bundle["layouts"], zoo.layouts)
    for row in bundle["models"].to_dict("records"):
        stored = zoo.weights(row["model_id"])
        assert np.array_equal(bundle["weights"][row["layout_id"]][row["row"], :len(stored)], stored)
    assert bundle["models"].drop(columns="row").equals(zoo.models.drop(columns="row"))


def test_a_file_that_is_not_a_bundle_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(SourceError, match="other.npz: not a weightzoo bundle"):
        import_in_process(tmp_path / "zoo", "bundle", tmp_path / "other.npz")


def test_exports_never_overwrite(smoke_zoo, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="exists already"):
        export_modelzoos(open_zoo(smoke_zoo), tmp_path / "taken")
    with pytest.raises(FileExistsError, match="exists already"):
        export_bundle(open_zoo(smoke_zoo), tmp_path / "taken")


def test_bundle_import_restores_weights_metrics_and_loadability(smoke_zoo, tmp_path):
    zoo = open_zoo(smoke_zoo)
    export_bundle(zoo, tmp_path / "smoke.npz")
    report = import_in_process(tmp_path / "back", "bundle", tmp_path / "smoke.npz")
    assert report["n_accepted"] == len(zoo.models) and all(row["loadable"] for row in report["accepted"])
    back = open_zoo(tmp_path / "back")
    for row in back.models.to_dict("records"):
        source_id = row["source_model_id"]
        assert np.array_equal(back.weights(row["model_id"]), zoo.weights(source_id))
        assert json.loads(row["training_json"])["source_training"] == json.loads(
            zoo.models.set_index("model_id").loc[source_id, "training_json"])
        mine = back.snapshots[back.snapshots["model_id"] == row["model_id"]].sort_values("k")
        theirs = zoo.snapshots[zoo.snapshots["model_id"] == source_id].sort_values("k")
        pd.testing.assert_frame_equal(mine[METRICS].reset_index(drop=True), theirs[METRICS].reset_index(drop=True))
    assert import_in_process(tmp_path / "back", "bundle", tmp_path / "smoke.npz")["version"] == "v0001"
