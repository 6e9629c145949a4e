"""Layer re-initialisation: resets that must cost nothing, resets that must reproduce a snapshot."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from torch import nn

import weightzoo.analysis.reinit as reinit
from weightzoo.analysis.reinit import layer_groups, random_reinit, reinit_table, run_reinit_study
from weightzoo.core.layout import WeightLayout

# Two nws-cnn models on digits, with and without batch norm (two layouts), snapshots k = 0, 1, 2.
CNN_SPEC = {
    "name": "reinit-test", "architecture": "nws-cnn", "models": 2,
    "sampling": {"method": "grid", "seeds": 1, "seed": 0},
    "hyperparameters": {"dataset": "digits", "batch_norm": [False, True], "conv_layers": 2, "conv_width": 4,
                        "filter_size": 3, "fc_layers": 1, "fc_width": 8, "init": "kaiming_normal",
                        "optimizer": "adam", "lr": 0.01, "batch_size": 64},
    "training": {"epochs": 2, "snapshots": {"count": 2}},
}


@pytest.fixture(scope="module")
def cnn_zoo(build_zoo):
    """Trained and published in-process with the package's build steps."""
    return build_zoo("reinit", CNN_SPEC)


@pytest.fixture(scope="module")
def table(cnn_zoo):
    """Every layer and the whole network reset to each stored snapshot and to a random draw."""
    return reinit_table(cnn_zoo, resets=(0, 1, 2, "random"), whole_network=True)


def recorded(zoo, column: str) -> pd.Series:
    return zoo.snapshots.set_index(["model_id", "k"])[column]


def test_a_batch_norm_joins_the_layer_before_it():
    layout = WeightLayout.from_module(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                                                    nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 3)))
    groups = layer_groups(layout)
    assert [(g.layer, g.kind) for g in groups] == [(0, "conv"), (2, "linear"), (3, "linear")]
    assert groups[0].names == "0.weight,0.bias,1.weight,1.bias,1.running_mean,1.running_var"
    positions = np.concatenate([g.positions for g in groups])
    np.testing.assert_array_equal(positions, np.arange(layout.n_params))


def test_resetting_to_the_trained_snapshot_loses_nothing(cnn_zoo, table):
    trained = table[table["reset"] == "2"]
    assert len(trained) == 2 * (4 + 1), "4 layers + the whole network per model"
    assert (trained["drop"] == 0).all() and (trained["acc_reset"] == trained["acc_trained"]).all()
    assert (trained["loss_reset"] == trained["loss_trained"]).all()
    assert set(table["trained_k"]) == {2}
    np.testing.assert_allclose(table["acc_trained"], table["acc_recorded"], atol=1e-6)


def test_any_stored_snapshot_can_be_the_trained_one(cnn_zoo):
    middle = reinit_table(cnn_zoo, resets=(1,), trained_k=1)
    assert (middle["drop"] == 0).all()
    expected = recorded(cnn_zoo, "test_acc").loc[list(zip(middle["model_id"], middle["trained_k"]))]
    np.testing.assert_allclose(middle["acc_trained"], expected.to_numpy(), atol=1e-6)


def test_resetting_every_layer_reproduces_the_stored_snapshot(cnn_zoo, table):
    whole = table[(table["layer"] == reinit.WHOLE_NETWORK) & (table["reset"] != "random")]
    assert set(whole["kind"]) == {"all"} and len(whole) == 2 * 3
    keys = list(zip(whole["model_id"], whole["reset"].astype(int)))
    np.testing.assert_allclose(whole["acc_reset"], recorded(cnn_zoo, "test_acc").loc[keys].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(whole["loss_reset"], recorded(cnn_zoo, "test_loss").loc[keys].to_numpy(), rtol=1e-5)


def test_rows_cover_every_layer_and_carry_hyperparameters(cnn_zoo, table):
    with_bn = cnn_zoo.models.loc[cnn_zoo.models["batch_norm"], "model_id"].item()
    rows = table[(table["model_id"] == with_bn) & (table["reset"] == "0")]
    assert list(rows["kind"]) == ["conv", "conv", "linear", "linear", "all"]
    assert all("running_var" in names for names in rows["tensors"].iloc[:3]), "batch norms reset with their layer"
    assert {"dataset", "architecture", "batch_norm", "split", "optimizer"} <= set(table.columns)
    random = table[(table["reset"] == "random") & (table["layer"] != reinit.WHOLE_NETWORK)]
    assert (random["drop"] > 0).all(), "a freshly drawn layer breaks a trained network"


def test_random_draw_uses_the_model_init_and_another_seed(cnn_zoo):
    model = cnn_zoo.models.iloc[0]
    config, layout = json.loads(model["config_json"]), cnn_zoo.layout(model["layout_id"])
    draw = random_reinit(config, layout, seed=0, model_id=model["model_id"])
    np.testing.assert_array_equal(draw, random_reinit(config, layout, seed=0, model_id=model["model_id"]))
    assert not np.array_equal(draw, random_reinit(config, layout, seed=1, model_id=model["model_id"]))
    initial = cnn_zoo.weights(model["model_id"], 0)
    assert not np.array_equal(draw, initial)
    conv = layout.tensor("0.weight")
    part = slice(conv.offset, conv.offset + conv.length)
    # kaiming_normal (fan_in 9, relu gain): the same spread as the stored initialisation
    assert np.std(draw[part]) == pytest.approx(np.std(initial[part]), rel=0.5)
    bias = layout.tensor("0.bias")
    assert not draw[bias.offset:bias.offset + bias.length].any(), "non-default inits zero the biases"


def test_study_writes_table_heatmap_and_summary(cnn_zoo, tmp_path, monkeypatch):
    loads, lines = [], []
    real = reinit.model_task
    monkeypatch.setattr(reinit, "model_task", lambda *args: loads.append(args) or real(*args))
    result = run_reinit_study(cnn_zoo, tmp_path / "out", resets=(0, "random"), progress=lines.append)
    assert len(loads) == 1, "both models test on digits: the data is prepared once"
    assert len(lines) == 2 and result.details["n_models"] == 2 and result.study == "reinit"
    assert open(result.details["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = pd.read_parquet(result.details["table"])
    assert len(saved) == 2 * 4 * 2
    summary = json.loads(json.dumps(result.details["summary"]))
    assert result.rows == summary and result.headline.startswith("2 networks, resets to 0, random")
    assert len(summary) == len(saved), "one record per (layout, layer, reset); one model per layout"
    assert {r["reset"] for r in summary} == {"0", "random"} and all(r["n_models"] == 1 for r in summary)


def test_bad_inputs_are_named(cnn_zoo):
    model_id = cnn_zoo.models["model_id"].iloc[0]
    with pytest.raises(ValueError, match="'m-nope'"):
        reinit_table(cnn_zoo, model_ids=[model_id, "m-nope"])
    with pytest.raises(ValueError, match=rf"{model_id}.*0\.\.2.*\[5\]"):
        reinit_table(cnn_zoo, model_ids=[model_id], resets=(0, 5))
    with pytest.raises(ValueError, match=r"snapshots '3' ask for k=3 but model .* has n_snapshots=3 \(k = 0\.\.2\)"):
        reinit_table(cnn_zoo, trained_k=3)  # the one snapshot rule of every reader
    for resets in (("zero",), (-1,), ()):
        with pytest.raises(ValueError, match="resets must be"):
            reinit_table(cnn_zoo, resets=resets)
    with pytest.raises(ValueError, match="no models match"):
        reinit_table(cnn_zoo, where="dataset == 'mnist5k'")


def test_networks_are_those_zoo_select_chooses(cnn_zoo):
    """reinit reads through the selection: the same filters give the same models."""
    for filters in ({"where": "batch_norm"}, {"max_models": 1}, {"status": None, "where": "not batch_norm"},
                    {"model_ids": list(cnn_zoo.models["model_id"])}):
        expected = list(cnn_zoo.select(filters.get("where"), **{k: v for k, v in filters.items() if k != "where"})
                        .models["model_id"])
        chosen = reinit_table(cnn_zoo, resets=(0,), **filters)
        assert list(dict.fromkeys(chosen["model_id"])) == expected, filters


def test_resets_to_init_refuse_a_slice_without_it(cnn_zoo, tmp_path, capsys):
    """Issue 18 item 11: --resets 0 needs k = 0 at epoch 0; other resets use the original k."""
    from weightzoo.cli import main
    from weightzoo.io.handle import ZooHandle
    from weightzoo.io.reader import open_zoo
    from weightzoo.pipelines.pull import pull_zoo

    model_id = cnn_zoo.models["model_id"].iloc[0]
    pull_zoo(cnn_zoo, ZooHandle.at(tmp_path / "slice"), snapshots="1:", where=f"model_id == '{model_id}'")
    sliced = open_zoo(tmp_path / "slice")
    with pytest.raises(ValueError, match=r"reinit --resets 0 needs each model's initialisation"):
        reinit_table(sliced, resets=(0,))
    assert main(["reinit", str(tmp_path / "slice"), "--resets", "0"]) == 2
    assert "needs each model's initialisation" in capsys.readouterr().err
    last = int(cnn_zoo.snapshots["k"].max())
    table = reinit_table(sliced, resets=(last,))  # the trained snapshot: nothing lost, k kept
    assert set(table["trained_k"]) == {last} and (table["drop"] == 0).all()
    whole = reinit_table(cnn_zoo, model_ids=[model_id], resets=(last,))
    np.testing.assert_allclose(table["acc_trained"], whole["acc_trained"])
