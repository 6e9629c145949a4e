"""The Model Zoos and torch-folder importers: mapping to weightzoo builders, metrics, bad files."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from interopkit import MLP_CONFIG, ConvNetSmall, write_modelzoos_network, write_torch_network
from weightzoo.core.models import ConfigError
from weightzoo.interop.common import SourceError
from weightzoo.pipelines.importing import import_in_process
from weightzoo.io.reader import open_zoo


def test_modelzoos_cnn_maps_onto_small_cnn_and_reproduces_outputs(tmp_path):
    source = tmp_path / "zoo_src"
    states = write_modelzoos_network(source / "NN_tune_trainable_0", seed=0)
    report = import_in_process(tmp_path / "zoo", "modelzoos", source)
    assert report["n_accepted"] == 1 and report["accepted"][0]["loadable"]
    zoo = open_zoo(tmp_path / "zoo")
    row = zoo.models.iloc[0]
    assert (row["activation"], row["init"], row["optimizer"], row["lr"], row["batch_size"], row["model_type"]) == (
        "tanh", "kaiming_uniform", "adam", 1e-3, 64, "CNN")
    assert row["n_params"] == 2464 and row["n_snapshots"] == 3
    original = ConvNetSmall()
    inputs = torch.randn(5, 1, 28, 28)
    for k, state in enumerate(states):
        original.load_state_dict(state)
        with torch.no_grad():
            assert torch.equal(zoo.load_model(row["model_id"], k)(inputs), original.eval()(inputs))
    snaps = zoo.snapshots.sort_values("k")
    assert snaps["epoch"].tolist() == [0, 1, 2] and np.allclose(snaps["test_acc"], [0.4, 0.5, 0.6])
    assert np.allclose(snaps["gap"], 0.1) and snaps["step"].isna().all()


def test_modelzoos_bad_networks_are_reported_by_file(tmp_path):
    source = tmp_path / "zoo_src"
    write_modelzoos_network(source / "good", seed=1, nlin="relu")
    write_modelzoos_network(source / "bad_params", seed=2)
    (source / "bad_params" / "params.json").write_text("{not json")
    write_modelzoos_network(source / "no_checkpoint", seed=3)
    (source / "no_checkpoint" / "checkpoint_000001" / "checkpoints").unlink()
    write_modelzoos_network(source / "wrong_shape", seed=4)
    state = torch.load(source / "wrong_shape" / "checkpoint_000002" / "checkpoints")
    state["module_list.9.weight"] = torch.zeros(20, 35)
    torch.save(state, source / "wrong_shape" / "checkpoint_000002" / "checkpoints")
    write_modelzoos_network(source / "bad_result", seed=5)
    with open(source / "bad_result" / "result.json", "a") as handle:
        handle.write("{\"epoch\": 3,\n")
    write_modelzoos_network(source / "text_metric", seed=7)
    with open(source / "text_metric" / "result.json", "a") as handle:
        handle.write(json.dumps({"epoch": 2, "test_acc": "high"}) + "\n")
    truncated = source / "good_but_truncated" / "checkpoint_000000" / "checkpoints"
    write_modelzoos_network(source / "good_but_truncated", seed=6)
    truncated.write_bytes(truncated.read_bytes()[:100])
    report = import_in_process(tmp_path / "zoo", "modelzoos", source)
    assert [row["network"] for row in report["accepted"]] == ["good"]
    reasons = {row["network"]: row for row in report["rejected"]}
    assert reasons["bad_params"]["file"].endswith("bad_params/params.json")
    assert reasons["bad_params"]["reason"].startswith("bad JSON")
    assert reasons["no_checkpoint"]["file"].endswith("checkpoint_000001/checkpoints")
    assert reasons["no_checkpoint"]["reason"] == "missing file"
    assert reasons["wrong_shape"]["file"].endswith("checkpoint_000002/checkpoints")
    assert "(20, 35)" in reasons["wrong_shape"]["reason"]
    assert reasons["bad_result"]["file"].endswith("result.json") and "line 4" in reasons["bad_result"]["reason"]
    assert "not a readable torch file" in reasons["good_but_truncated"]["reason"]
    assert reasons["text_metric"]["reason"].startswith("a metric is not a number")
    assert open_zoo(tmp_path / "zoo").models["activation"].tolist() == ["relu"]


def test_torch_folder_with_a_matching_config_is_loadable(tmp_path):
    source = tmp_path / "runs"
    states = write_torch_network(source / "run_a", seed=0, config=MLP_CONFIG)
    write_torch_network(source / "run_b", seed=1, config=None, wrapped=True)
    report = import_in_process(tmp_path / "zoo", "torch", source)
    assert report["n_accepted"] == 2 and not report["rejected"]
    loadable = {row["network"]: row["loadable"] for row in report["accepted"]}
    assert loadable == {"run_a": True, "run_b": False}
    zoo = open_zoo(tmp_path / "zoo")
    ids = {row["network"]: row["model_id"] for row in report["accepted"]}
    model = zoo.load_model(ids["run_a"], 2)
    reference = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 10))
    reference.load_state_dict(states[2])
    inputs = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(inputs), reference(inputs))
    with pytest.raises(ConfigError, match="imported:torch"):
        zoo.load_model(ids["run_b"], 0)
    layout = zoo.layout(zoo.models.set_index("model_id").loc[ids["run_b"], "layout_id"])
    assert [(t.name, t.kind) for t in layout.tensors][:2] == [("1.weight", "linear"), ("1.bias", "linear")]
    snaps = zoo.snapshots[zoo.snapshots["model_id"] == ids["run_b"]].sort_values("k")
    assert snaps["epoch"].tolist() == [0, 5, 10] and snaps["step"].tolist()[1:] == [50, 100]
    assert np.isnan(snaps["test_acc"].iloc[0]) and snaps["test_acc"].iloc[2] == pytest.approx(0.8)


def test_torch_folder_bad_files_are_reported(tmp_path):
    source = tmp_path / "runs"
    write_torch_network(source / "good", seed=0, config=MLP_CONFIG)
    write_torch_network(source / "no_metadata", seed=1, config=None)
    (source / "no_metadata" / "metadata.json").unlink()
    write_torch_network(source / "bad_metadata", seed=2, config=None)
    (source / "bad_metadata" / "metadata.json").write_text("[1, 2")
    write_torch_network(source / "no_epoch", seed=3, config=None)
    (source / "no_epoch" / "epoch_5.pt").rename(source / "no_epoch" / "final.pt")
    write_torch_network(source / "not_torch", seed=4, config=None)
    (source / "not_torch" / "epoch_10.pt").write_text("hello")
    states = write_torch_network(source / "nan_run", seed=5, config=MLP_CONFIG)
    torch.save({name: value * float("nan") for name, value in states[2].items()}, source / "nan_run" / "epoch_10.pt")
    report = import_in_process(tmp_path / "zoo", "torch", source)
    assert [(row["network"], row["status"]) for row in report["accepted"]] == [("good", "ok"), ("nan_run", "diverged")]
    assert open_zoo(tmp_path / "zoo").models.set_index("status").loc["diverged", "message"] == \
        "non-finite weights from snapshot 2 on"
    reasons = {row["network"]: (row["file"].rsplit("/", 2)[-2:], row["reason"]) for row in report["rejected"]}
    assert reasons["no_metadata"] == (["no_metadata", "metadata.json"], "missing file")
    assert reasons["bad_metadata"][0] == ["bad_metadata", "metadata.json"]
    assert reasons["no_epoch"] == (["no_epoch", "final.pt"], "no epoch number in the file name")
    assert reasons["not_torch"][0] == ["not_torch", "epoch_10.pt"]
    assert reasons["not_torch"][1].startswith("not a readable torch file")
    with pytest.raises(SourceError, match="expected a folder"):
        import_in_process(tmp_path / "zoo", "torch", source / "good" / "epoch_0.pt")


def test_torch_folder_metadata_may_give_the_split(tmp_path):
    source = tmp_path / "runs"
    for name, split in (("a", "test"), ("b", None), ("c", "holdout")):
        write_torch_network(source / name, seed=ord(name), config=MLP_CONFIG)
        metadata = json.loads((source / name / "metadata.json").read_text())
        (source / name / "metadata.json").write_text(json.dumps({**metadata, "split": split}))
    report = import_in_process(tmp_path / "zoo", "torch", source)
    splits = dict(zip(open_zoo(tmp_path / "zoo").models["model_id"], open_zoo(tmp_path / "zoo").models["split"]))
    accepted = {row["network"]: splits[row["model_id"]] for row in report["accepted"]}
    assert accepted["a"] == "test" and accepted["b"] in ("train", "val", "test")
    assert report["rejected"][0]["network"] == "c" and "holdout" in report["rejected"][0]["reason"]
