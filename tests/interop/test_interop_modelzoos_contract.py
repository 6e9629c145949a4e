"""Contract with the Model Zoos code (Schürholt et al.: ModelZooDataset, SANE).

Both directions are checked against fixtures that follow their code, not our exporter:
trial folders written as their ``NN_tune_trainable`` under Ray Tune leaves them (conftest
``write_ray_trial``, networks built as ``def_net.CNN``), and our exports read the way
``ModelDatasetBase`` and SANE's datasets read a zoo:

- weights: ``vectorize_checkpoint`` concatenates ``module_list.{i}.weight`` (and ``.bias``)
  for the ``(i, type)`` pairs of ``layer_lst``, an absent key giving an empty tensor;
- properties: ``read_properties_from_path`` takes line ``epoch - idx_offset`` of
  result.json (offset 1 first, asserting ``training_iteration == epoch`` on the first
  sample, else 0) and reads ``res[key]`` and ``res["config"][key]``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interopkit import NONLINEARITIES, ConvNetSmall, write_ray_trial
from weightzoo.pipelines.build import build_in_process
from weightzoo.pipelines.importing import import_in_process
from weightzoo.interop.export import export_modelzoos
from weightzoo.io.reader import open_zoo

SMALL_CNN_SPEC = {
    "name": "modelzoos-contract", "architecture": "small-cnn", "models": 4,
    "sampling": {"method": "grid", "seeds": 1, "seed": 0},
    "hyperparameters": {"dataset": "mnist5k", "dropout": [0.0, 0.5], "activation": ["tanh", "leaky_relu"],
                        "optimizer": "rmsprop", "lr": 1e-3, "batch_size": 128},
    "training": {"epochs": 2, "snapshots": {"epochs": [1, 2]}},
}
DEFAULT_LAYER_LST = [(0, "conv2d"), (3, "conv2d"), (6, "conv2d"), (9, "fc"), (11, "fc")]  # ModelDatasetBase's
DROPOUT_LAYER_LST = [(0, "conv2d"), (4, "conv2d"), (8, "conv2d"), (11, "fc"), (14, "fc")]


def their_vector(checkpoint: dict, layer_lst, use_bias: bool = True) -> torch.Tensor:
    """What vectorize_checkpoint returns for ``layer_lst``."""
    parts = []
    for layer, _ in layer_lst:
        parts.append(checkpoint.get(f"module_list.{layer}.weight", torch.empty(0)).reshape(-1))
        if use_bias:
            parts.append(checkpoint.get(f"module_list.{layer}.bias", torch.empty(0)).reshape(-1))
    return torch.cat(parts)


def their_offset(folder, epoch: int) -> int:
    """The idx_offset their read_properties settles on from the first sample: 1 unless line
    ``epoch - 1`` is not training_iteration ``epoch`` (their assert), then 0."""
    results = [json.loads(line) for line in (folder / "result.json").open()]
    return 1 if int(results[epoch - 1]["training_iteration"]) == epoch else 0


def their_result_line(folder, epoch: int, offset: int) -> dict:
    """read_properties_from_path: line ``epoch - offset`` of result.json."""
    return [json.loads(line) for line in (folder / "result.json").open()][epoch - offset]


@pytest.fixture(scope="module")
def small_cnn_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("mz-contract") / "zoo"
    build_in_process(root, SMALL_CNN_SPEC)
    return open_zoo(root)


def test_their_cnn_zoos_import_as_runnable_small_cnns(tmp_path):
    source = tmp_path / "tune_zoo"
    trials = {"mnist_tanh": dict(nlin="tanh"), "mnist_dropout_relu": dict(nlin="relu", dropout=0.2),
              "cifar10_gelu": dict(nlin="gelu", channels_in=3), "stl10_silu": dict(nlin="silu", channels_in=3),
              "svhn_leakyrelu": dict(nlin="leakyrelu")}
    states = {name: write_ray_trial(source / f"NN_tune_trainable_{name}", seed=i, **options)
              for i, (name, options) in enumerate(trials.items())}
    report = import_in_process(tmp_path / "zoo", "modelzoos", source)
    assert report["n_accepted"] == 5 and all(row["loadable"] for row in report["accepted"]), report["rejected"]
    zoo = open_zoo(tmp_path / "zoo")
    ids = {row["network"].removeprefix("NN_tune_trainable_"): row["model_id"] for row in report["accepted"]}
    for name, options in trials.items():
        reference = ConvNetSmall(NONLINEARITIES[options["nlin"]], options.get("dropout", 0.0),
                                 options.get("channels_in", 1)).eval()
        x = torch.randn(4, options.get("channels_in", 1), 28, 28)
        for k, state in enumerate(states[name]):
            reference.load_state_dict(state)
            with torch.no_grad():
                assert torch.equal(zoo.load_model(ids[name], k)(x), reference(x)), (name, k)
    models = zoo.models.set_index("model_id")
    assert models.loc[ids["svhn_leakyrelu"], "activation"] == "leaky_relu"
    assert set(models["optimizer"]) == {"rmsprop"} and set(models["split"]) <= {"train", "val", "test"}
    snaps = zoo.snapshots[zoo.snapshots["model_id"] == ids["cifar10_gelu"]].sort_values("k")
    assert snaps["epoch"].tolist() == [0, 1, 2] and np.allclose(snaps["test_acc"], [0.25, 0.35, 0.45])


def test_their_loaders_read_every_field_of_an_export_bit_for_bit(small_cnn_zoo, tmp_path):
    zoo = small_cnn_zoo
    assert zoo.models["layout_id"].nunique() == 1, "a dropout grid is one layout"
    export_modelzoos(zoo, tmp_path / "mz")
    first = zoo.models["model_id"].iloc[0]
    offset = their_offset(tmp_path / "mz" / first, int(zoo.snapshots.query("model_id == @first")["epoch"].min()))
    assert offset == 0, "as their own zoos: checkpoint_0 is the evaluation before training"
    for row in zoo.models.itertuples():
        folder = tmp_path / "mz" / row.model_id
        params = json.loads((folder / "params.json").read_text())
        layer_lst = DROPOUT_LAYER_LST if row.dropout > 0 else DEFAULT_LAYER_LST
        assert [tuple(pair) for pair in params["weightzoo::layer_lst"]] == layer_lst
        assert (params["model::type"], params["model::channels_in"], params["model::o_dim"]) == ("CNN", 1, 10)
        assert params["model::nlin"] == {"tanh": "tanh", "leaky_relu": "leakyrelu"}[row.activation]
        assert params["optim::optimizer"] == "rms_prop" and params["weightzoo::split"] == row.split
        epochs = zoo.snapshots[zoo.snapshots["model_id"] == row.model_id].sort_values("k")
        for k, epoch in zip(epochs["k"], epochs["epoch"].astype(int)):
            checkpoint = torch.load(folder / f"checkpoint_{epoch:06d}" / "checkpoints", weights_only=True)
            vector = their_vector(checkpoint, layer_lst).numpy()
            assert np.array_equal(vector, zoo.weights(row.model_id, k)), (row.model_id, k)
            theirs = ConvNetSmall(NONLINEARITIES[params["model::nlin"]], params["model::dropout"]).eval()
            theirs.load_state_dict(checkpoint)  # strict: every key of their CNN, nothing else
            x = torch.randn(3, 1, 28, 28)
            with torch.no_grad():
                assert torch.equal(theirs(x), zoo.load_model(row.model_id, k)(x))
            line = their_result_line(folder, epoch, offset)
            assert line["training_iteration"] == epoch and line["config"] == params
            snap = epochs[epochs["k"] == k].iloc[0]
            assert (line["test_acc"], line["train_acc"], line["ggap"]) == (snap["test_acc"], snap["train_acc"],
                                                                           snap["gap"])
            assert line["config"]["optim::lr"] == row.lr and line["config"]["model::dropout"] == row.dropout


def test_export_then_import_keeps_each_network_split(small_cnn_zoo, tmp_path):
    export_modelzoos(small_cnn_zoo, tmp_path / "mz")
    report = import_in_process(tmp_path / "back", "modelzoos", tmp_path / "mz")
    back = open_zoo(tmp_path / "back")
    splits = small_cnn_zoo.models.set_index("model_id")["split"]
    assert report["n_accepted"] == len(splits) and all(row["loadable"] for row in report["accepted"])
    assert {r.source_model_id: r.split for r in back.models.itertuples()} == splits.to_dict()
    assert json.loads(back.models["training_json"].iloc[0])["source_split"] == back.models["split"].iloc[0]
