"""The Small CNN Zoo (Unterthiner et al. 2020): import it, export to it, and read exports as
the NFN and neural-graphs loaders (``ZooDataset`` / ``NFNZooDataset``) read the zoo.

The fixtures (conftest ``write_small_cnn_zoo``) follow the dataset's README and its
training code, and the reference network (``keras_cnn_forward``) is computed from Keras
semantics alone, never from our importer. The loader restated here does what theirs does:
``np.load(weights.npy)``, ``pd.read_csv(metrics.csv.gz, compression="gzip")``, rows
reordered by the ``idcs_file``, ``layout.csv`` rows sliced ``start_idx:end_idx`` and
reshaped to ``shape``, ``kernel:0`` transposed to torch's order (conv (0, 4, 3, 1, 2),
dense (0, 2, 1)), ``bias:0`` kept, any other varname an error; ``test_accuracy`` the label.
"""

from __future__ import annotations

import ast
import json

import numpy as np
import pandas as pd
import pytest
import torch

from interopkit import SMALL_CNN_ZOO_STEPS, keras_cnn_forward, write_small_cnn_zoo
from weightzoo.pipelines.importing import import_in_process
from weightzoo.interop.smallcnnzoo import export_smallcnnzoo
from weightzoo.io.reader import open_zoo


def nfn_read(folder, idcs_file=None):
    """(weights, biases, metrics) as their loader reads a dataset folder (before its step filter)."""
    data = np.load(folder / "weights.npy")
    metrics = pd.read_csv(folder / "metrics.csv.gz", compression="gzip")
    if idcs_file is not None:
        order = pd.read_csv(idcs_file, header=None).values.flatten()
        data, metrics = data[order], metrics.iloc[order]
    weights, biases = [], []
    for _, row in pd.read_csv(folder / "layout.csv").iterrows():
        array = data[:, row["start_idx"]:row["end_idx"]]
        array = array.reshape((len(array), *ast.literal_eval(row["shape"])))
        if row["varname"].endswith("kernel:0"):
            weights.append(array.transpose(0, 4, 3, 1, 2) if array.ndim == 5 else array.transpose(0, 2, 1))
        elif row["varname"].endswith("bias:0"):
            biases.append(array)
        else:
            raise ValueError(f"varname {row['varname']} not recognized.")
    return weights, biases, metrics


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-cnn-zoo")
    written = {name: write_small_cnn_zoo(root / "source" / name, name, n_networks=3, seed=i)
               for i, name in enumerate(("mnist", "cifar10"))}
    report = import_in_process(root / "zoo", "smallcnnzoo", root / "source")
    return root, written, report, open_zoo(root / "zoo")


def test_every_network_imports_with_its_checkpoints_metrics_and_hyperparameters(imported):
    _, written, report, zoo = imported
    assert report["n_accepted"] == 6 and not report["rejected"] and all(r["loadable"] for r in report["accepted"])
    assert zoo.models["layout_id"].nunique() == 1 and (zoo.models["n_params"] == 4970).all()
    assert (zoo.models["n_snapshots"] == 9).all()
    row = zoo.models[zoo.models["source_modeldir"] == "/tmp/zoo/cifar10/run_00001"].iloc[0]
    assert (row["activation"], row["lr"], row["weight_decay"], row["init"], row["dataset"], row["dropout"]) == (
        "tanh", 0.02, 1e-4, "he_normal", "cifar10", 0.05)
    snaps = zoo.snapshots[zoo.snapshots["model_id"] == row["model_id"]].sort_values("k")
    assert snaps["epoch"].tolist() == list(SMALL_CNN_ZOO_STEPS)
    np.testing.assert_allclose(snaps["test_acc"], [0.1 + s / 100 for s in SMALL_CNN_ZOO_STEPS])
    assert json.loads(row["config_json"])["input_shape"] == [1, 32, 32]


def test_load_model_computes_their_network(imported):
    _, written, report, zoo = imported
    weights, metrics = written["mnist"]
    images = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    for model in zoo.models[zoo.models["dataset"] == "mnist"].itertuples():
        rows = metrics.index[metrics["modeldir"] == model.source_modeldir]
        for k, source_row in enumerate(metrics.loc[rows].sort_values("step").index):
            expected = keras_cnn_forward(weights[source_row], images, model.activation)
            with torch.no_grad():
                mine = zoo.load_model(model.model_id, k)(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
            np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)


def test_export_is_read_by_their_loader_bit_for_bit(imported, tmp_path):
    _, _, _, zoo = imported
    result = export_smallcnnzoo(zoo, tmp_path / "export")
    assert result["skipped"] == [] and result["folders"] == {zoo.models["layout_id"].iloc[0]: str(tmp_path / "export")}
    weights, biases, metrics = nfn_read(tmp_path / "export", tmp_path / "export" / "shuffled_idcs.csv")
    assert [w.shape[1:] for w in weights] == [(16, 1, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (10, 16)]
    assert len(metrics) == 6 * 9 and (metrics["step"] == 86).sum() == 6, "their filter step == 86 keeps the last"
    for i, row in enumerate(metrics.itertuples()):
        layout = zoo.layout(zoo.models.set_index("model_id").loc[row.model_id, "layout_id"])
        flat = zoo.weights(row.model_id, row.k)
        mine = [flat[t.offset:t.offset + t.length].reshape(t.shape) for t in layout.tensors]
        assert all(np.array_equal(a, b[i]) for a, b in zip(mine[0::2], weights))
        assert all(np.array_equal(a, b[i]) for a, b in zip(mine[1::2], biases))
        snap = zoo.snapshots.set_index(["model_id", "k"]).loc[(row.model_id, row.k)]
        assert row.test_accuracy == snap["test_acc"] and row.step == snap["epoch"]
    assert set(metrics["config.learning_rate"]) == set(zoo.models["lr"]) and set(metrics["split"]) <= {
        "train", "val", "test"}


def test_export_then_import_restores_weights_metrics_splits_and_loadability(imported, tmp_path):
    _, _, _, zoo = imported
    export_smallcnnzoo(zoo, tmp_path / "export")
    report = import_in_process(tmp_path / "back", "smallcnnzoo", tmp_path / "export")
    back = open_zoo(tmp_path / "back")
    assert report["n_accepted"] == 6 and all(r["loadable"] for r in report["accepted"])
    original = zoo.models.set_index("model_id")
    for row in back.models.itertuples():
        source = row.source_modeldir
        assert np.array_equal(back.weights(row.model_id), zoo.weights(source))
        assert row.split == original.loc[source, "split"] and row.lr == original.loc[source, "lr"]
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            assert torch.equal(back.load_model(row.model_id, 8)(x), zoo.load_model(source, 8)(x))


def test_any_weightzoo_zoo_exports_and_comes_back_loadable(smoke_zoo, tmp_path):
    zoo = open_zoo(smoke_zoo)
    result = export_smallcnnzoo(zoo, tmp_path / "smoke")
    assert list(result["folders"].values()) == [str(tmp_path / "smoke")], "one layout: the folder itself"
    weights, biases, metrics = nfn_read(tmp_path / "smoke")
    assert [w.shape[1:] for w in weights] == [(16, 64), (10, 16)] and len(metrics) == 4 * 3
    back = import_in_process(tmp_path / "back", "smallcnnzoo", tmp_path / "smoke")
    assert back["n_accepted"] == 4 and all(r["loadable"] for r in back["accepted"])


def test_bad_folders_are_rejected_with_the_file_and_reason(tmp_path):
    write_small_cnn_zoo(tmp_path / "src" / "good", "mnist", n_networks=1)
    write_small_cnn_zoo(tmp_path / "src" / "short", "mnist", n_networks=1)
    np.save(tmp_path / "src" / "short" / "weights.npy", np.zeros((9, 4000), dtype=np.float32))
    write_small_cnn_zoo(tmp_path / "src" / "bad_shape", "mnist", n_networks=1)
    layout = pd.read_csv(tmp_path / "src" / "bad_shape" / "layout.csv", index_col=0)
    layout.loc[0, "shape"] = "__import__('os').getcwd()"
    layout.to_csv(tmp_path / "src" / "bad_shape" / "layout.csv")
    write_small_cnn_zoo(tmp_path / "src" / "few_metrics", "mnist", n_networks=1)
    pd.read_csv(tmp_path / "src" / "few_metrics" / "metrics.csv.gz").iloc[:5].to_csv(
        tmp_path / "src" / "few_metrics" / "metrics.csv.gz", index=False, compression="gzip")
    report = import_in_process(tmp_path / "zoo", "smallcnnzoo", tmp_path / "src")
    assert [r["network"] for r in report["accepted"]] == ["good#/tmp/zoo/mnist/run_00000"]
    reasons = {r["network"]: (r["file"].rsplit("/", 2)[-2:], r["reason"]) for r in report["rejected"]}
    assert reasons["short#"][0] == ["short", "weights.npy"] and "[rows, 4970]" in reasons["short#"][1]
    assert reasons["bad_shape#"][0] == ["bad_shape", "layout.csv"] and "not a tuple" in reasons["bad_shape#"][1]
    assert reasons["few_metrics#"][0] == ["few_metrics", "metrics.csv.gz"]
    assert "has 5 rows; weights.npy has 9" in reasons["few_metrics#"][1]


def test_several_layouts_go_to_one_folder_each(build_zoo, tmp_path):
    zoo = build_zoo("two-layouts", {"name": "two", "architecture": "mlp", "models": 2,
                                    "sampling": {"method": "grid", "seeds": 1, "seed": 0},
                                    "hyperparameters": {"dataset": "digits", "hidden_width": [4, 6]},
                                    "training": {"epochs": 1, "snapshots": {"count": 1}}})
    result = export_smallcnnzoo(zoo, tmp_path / "out")
    assert set(result["folders"]) == set(zoo.models["layout_id"])
    for layout_id, folder in result["folders"].items():
        weights, _, metrics = nfn_read(tmp_path / "out" / layout_id)
        assert folder == str(tmp_path / "out" / layout_id) and len(metrics) == 2
    assert import_in_process(tmp_path / "back", "smallcnnzoo", tmp_path / "out")["n_accepted"] == 2


def test_snapshots_with_non_finite_weights_are_left_out_and_listed(tmp_path):
    from interopkit import MLP_CONFIG, write_torch_network

    states = write_torch_network(tmp_path / "runs" / "nan_run", seed=0, config=MLP_CONFIG)
    torch.save({k: v * float("nan") for k, v in states[2].items()}, tmp_path / "runs" / "nan_run" / "epoch_10.pt")
    import_in_process(tmp_path / "zoo", "torch", tmp_path / "runs")
    zoo = open_zoo(tmp_path / "zoo")
    result = export_smallcnnzoo(zoo, tmp_path / "out")
    assert result["skipped"] == [{"model_id": zoo.models["model_id"].item(), "k": 2, "reason": "non-finite weights"}]
    weights, _, metrics = nfn_read(tmp_path / "out")
    assert metrics["step"].tolist() == [0, 5] and all(np.isfinite(w).all() for w in weights)
