"""Filter projections onto the all-ones direction: known answers by hand, then on a trained zoo."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from torch import nn

from weightzoo.analysis.projections import (distance_from_init, filter_cosines, mass_le0, network_statistics,
                                            projection_table, projection_tensors, run_projection_study)
from weightzoo.core.layout import WeightLayout
from zookit import publish_staged

from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model

# Three nws-cnn models on digits, one per filter size: the 1×1 one has no spatial filter.
CNN_SPEC = {
    "name": "projection-test", "architecture": "nws-cnn", "models": 3,
    "sampling": {"method": "grid", "seeds": 1, "seed": 0},
    "hyperparameters": {"dataset": "digits", "filter_size": [1, 3, 5], "conv_layers": 2, "conv_width": 4,
                        "fc_layers": 1, "fc_width": 8, "optimizer": "adam", "lr": 0.01, "batch_size": 64},
    "training": {"epochs": 1, "snapshots": {"count": 1}},
}
# Conv weight [2 filters, 1, 2, 2] at k = 0 and k = 1 (see test_table_has_the_hand_computed_values).
PLANTED_CONV = np.array([[[1, 1, 1, 1], [1, -1, 1, -1]],
                         [[-1, -1, -1, -1], [2, 2, 2, 2]]], dtype=np.float32)


@pytest.fixture(scope="module")
def cnn_zoo(build_zoo):
    return build_zoo("projections", CNN_SPEC)


@pytest.fixture(scope="module")
def planted_zoo(tmp_path_factory):
    """One model whose conv filters have hand-picked values at k = 0 and k = 1."""
    root = tmp_path_factory.mktemp("planted-projections") / "zoo"
    layout = WeightLayout.from_module(nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(8, 3)))
    weights = np.zeros((2, layout.n_params), dtype=np.float32)
    conv = layout.tensor("0.weight")
    weights[:, conv.offset:conv.offset + conv.length] = PLANTED_CONV.reshape(2, -1)
    snapshots = [{"k": k, "epoch": float(k), "step": k} for k in range(2)]
    record = StagedRecord(model_id="m0", fingerprint="fp0", status="ok",
                          hyperparameters={"activation": "relu", "architecture": "planted"}, config={}, training={},
                          spec_name="planted", layout_id=layout.layout_id, n_params=layout.n_params, code_version="test")
    stage_model(root / "staging", record, weights=weights, snapshots=snapshots, layout=layout)
    publish_staged(root, ["fp0"])
    return open_zoo(root)


def test_cosines_of_constructed_filters():
    d = 3 * 3 * 3
    weight = np.stack([np.full((3, 3, 3), 0.7), np.full((3, 3, 3), -2.0),
                       np.arange(d).reshape(3, 3, 3) - (d - 1) / 2, np.zeros((3, 3, 3))])
    cosines = filter_cosines(weight)
    assert cosines.shape == (4,)
    np.testing.assert_allclose(cosines[:3], [1.0, -1.0, 0.0], atol=1e-12)
    assert math.isnan(cosines[3]), "an all-zero filter has no direction"
    rng = np.random.default_rng(0)
    random = rng.normal(size=(5, 2, 3, 3))
    np.testing.assert_allclose(filter_cosines(3.5 * random), filter_cosines(random))
    np.testing.assert_allclose(filter_cosines(-random), -filter_cosines(random))
    expected = random.reshape(5, -1).sum(1) / (np.linalg.norm(random.reshape(5, -1), axis=1) * math.sqrt(18))
    np.testing.assert_allclose(filter_cosines(random), expected)


def test_linear_rows_are_filters_and_vectors_are_rejected():
    np.testing.assert_allclose(filter_cosines([[1.0, 1.0], [1.0, -1.0], [-3.0, 0.0]]),
                               [1.0, 0.0, -1 / math.sqrt(2)])
    with pytest.raises(ValueError, match="at least 2 dims"):
        filter_cosines(np.ones(4))


def test_mass_at_or_below_zero_counts_finite_cosines():
    assert mass_le0([-1.0, 0.0, 0.5, 1.0, np.nan]) == 0.5
    assert mass_le0([0.1, 0.2]) == 0.0 and mass_le0([-0.3]) == 1.0
    assert math.isnan(mass_le0([np.nan]))


def test_distance_from_init_of_a_hand_made_pair():
    initial = np.array([[3.0, 0.0], [0.0, 4.0]])
    trained = np.array([[3.0, 2.0], [0.0, 4.0]])
    assert distance_from_init(trained, initial) == pytest.approx(
        {"rel_l2_from_init": 2 / 5, "rel_linf_from_init": 2 / 4, "abs_linf_from_init": 2.0})
    assert set(distance_from_init(initial, initial).values()) == {0.0}
    with pytest.raises(ValueError, match="shape"):
        distance_from_init(trained, initial[:1])


def test_distances_and_pooled_entry_follow_gamba_et_al():
    """Contract with compute_projections.py of Gamba et al.: distance_from_init_layer divides
    ||W - W0|| (Frobenius and inf-norm of the tensor) by the same norm of W0, and the "net"
    entry pools the normalised projections of every conv layer into one mean and one ECDF
    mass at 0 (statsmodels' ECDF(x)(0) = share of values <= 0)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    initial = [torch.tensor(rng.normal(size=shape)) for shape in ((4, 1, 3, 3), (6, 4, 3, 3))]
    trained = [w + torch.tensor(rng.normal(scale=0.3, size=w.shape)) for w in initial]
    for w, w0 in zip(trained, initial):
        theirs_l2 = ((w - w0).norm(p="fro") / w0.norm(p="fro")).item()
        theirs_inf = ((w - w0).norm(p=float("inf")) / w0.norm(p=float("inf"))).item()
        mine = distance_from_init(w.numpy(), w0.numpy())
        assert mine["rel_l2_from_init"] == pytest.approx(theirs_l2, rel=1e-12)
        assert mine["rel_linf_from_init"] == pytest.approx(theirs_inf, rel=1e-12)
    layout = WeightLayout.from_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3)))
    flat = np.concatenate([np.concatenate([w.numpy().ravel(), np.zeros(w.shape[0])]) for w in trained])[None]
    projections = []
    for w in trained:  # their kernel_all_positive_proj(conv_w, normalize=True)
        rows = w.reshape(w.shape[0], -1)
        projections += (rows.sum(1) / (torch.sqrt((rows ** 2).sum(1)) * math.sqrt(rows.shape[1]))).tolist()
    conv = [t for t in layout.tensors if t.role == "weight"]
    (row,) = network_statistics(flat.astype(np.float32), conv, [0])
    assert row["n_filters"] == 10 and row["n_tensors"] == 2
    assert row["cos_mean"] == pytest.approx(np.mean(projections), abs=1e-7)
    assert row["mass_le0"] == np.mean(np.asarray(projections) <= 0)


def test_tensors_come_from_the_layout_and_skip_1x1_kernels():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3),
                        nn.Flatten(), nn.Linear(8, 5), nn.Linear(5, 3))
    layout = WeightLayout.from_module(net)
    chosen, skipped = projection_tensors(layout)
    assert [(spec.name, index) for spec, index in chosen] == [("0.weight", 0), ("3.weight", 1)]
    reasons = {record["tensor"]: record["reason"] for record in skipped}
    assert set(reasons) == {"1.weight", "5.weight", "6.weight"}
    assert "1x1" in reasons["1.weight"] and "include_linear" in reasons["5.weight"]
    chosen, skipped = projection_tensors(layout, include_linear=True)
    assert [(spec.name, spec.kind, index) for spec, index in chosen] == [
        ("0.weight", "conv", 0), ("3.weight", "conv", 1), ("5.weight", "linear", 0), ("6.weight", "linear", 1)]
    assert [record["tensor"] for record in skipped] == ["1.weight"]


def test_table_has_the_hand_computed_values(planted_zoo):
    table = projection_table(planted_zoo).set_index("k")
    assert list(table.index) == [0, 1] and set(table["tensor"]) == {"0.weight"}
    first, second = table.loc[0], table.loc[1]
    assert (first["n_filters"], first["filter_dim"], first["n_zero"]) == (2, 4, 0)
    # k=0: cosines 1 and 0; k=1: cosines -1 and 1
    assert first["cos_mean"] == pytest.approx(0.5) and first["mass_le0"] == 0.5
    assert first["cos_std"] == pytest.approx(0.5)
    assert second["cos_mean"] == pytest.approx(0.0) and second["mass_le0"] == 0.5
    assert (first["rel_l2_from_init"], first["rel_linf_from_init"], first["abs_linf_from_init"]) == (0.0, 0.0, 0.0)
    # delta: filter 0 moves by -2 four times, filter 1 by [1, 3, 1, 3]: ||delta|| = 6, ||W0|| = sqrt(8)
    assert second["rel_l2_from_init"] == pytest.approx(6 / math.sqrt(8))
    assert second["abs_linf_from_init"] == pytest.approx(3.0) and second["rel_linf_from_init"] == pytest.approx(3.0)
    assert second["epoch"] == 1.0 and second["activation"] == "relu" and second["split"] in ("train", "val", "test")


def test_study_on_a_trained_zoo(cnn_zoo, tmp_path):
    lines = []
    result = run_projection_study(cnn_zoo, tmp_path / "out", progress=lines.append)
    assert len(lines) == 3, "one progress line per model in small runs (about ten in large ones)"
    table = pd.read_parquet(result.details["table"])
    analysed = cnn_zoo.models[cnn_zoo.models["filter_size"] != 1]
    assert result.details["n_models"] == 2 and set(table["model_id"]) == set(analysed["model_id"])
    assert len(table) == 2 * 2 * 2, "2 models x 2 conv layers x 2 snapshots"
    assert set(table["kind"]) == {"conv"} and set(table["filter_size"]) == {3, 5}
    assert {"architecture", "optimizer", "lr", "dataset", "split", "test_acc"} <= set(table.columns)
    skipped = {(r["layout_id"], r["tensor"]): r["reason"] for r in result.details["skipped"]}
    one_by_one = cnn_zoo.models.loc[cnn_zoo.models["filter_size"] == 1, "layout_id"].item()
    assert sum("1x1" in reason and lid == one_by_one for (lid, _), reason in skipped.items()) == 2
    at_init = table[table["k"] == 0]
    assert (at_init["rel_l2_from_init"] == 0).all() and (at_init["rel_linf_from_init"] == 0).all()
    assert (table.loc[table["k"] == 1, "rel_l2_from_init"] > 0).all(), "training moves every conv layer"
    for path in result.details["plots"]:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(json.dumps(result.details["summary"]))
    assert result.rows == summary and result.headline.startswith("2 networks, 3 layers analysed; left out: 0.weight")
    assert result.headline.count("1x1 kernel") == 1 and result.headline.count("--include-linear") == 1, \
        "the tensors left out for one reason are listed together, the reason once"
    assert [(s["label"], s["n_models"]) for s in summary] == [("conv 0", 2), ("conv 1", 2), ("net (conv pooled)", 2)]
    networks = pd.read_parquet(result.details["networks"])
    assert len(networks) == 2 * 2 and (networks["n_tensors"] == 2).all()
    assert (networks["n_filters"] == 2 * cnn_zoo.models["conv_width"].iloc[0]).all()
    assert all(-1 <= s["cos_mean_init"] <= 1 and 0 <= s["mass_le0_trained"] <= 1 for s in summary)


def test_table_matches_the_cosines_of_the_stored_weights(cnn_zoo):
    table = projection_table(cnn_zoo, where="filter_size == 5", snapshots=[1])
    assert set(table["k"]) == {1} and len(table) == 2
    for row in table.itertuples():
        spec = cnn_zoo.layout(row.layout_id).tensor(row.tensor)
        flat = cnn_zoo.weights(row.model_id, 1)[spec.offset:spec.offset + spec.length].reshape(spec.shape)
        cosines = filter_cosines(flat)
        assert row.n_filters == 4 and row.filter_dim == math.prod(spec.shape[1:])
        assert row.cos_mean == pytest.approx(cosines.mean()) and row.mass_le0 == mass_le0(cosines)


def test_a_selection_without_spatial_filters_is_an_error_naming_the_tensors(cnn_zoo):
    with pytest.raises(ValueError, match=r"include_linear=True.*0\.weight \(conv weight \[4, 1, 1, 1\]\)"):
        projection_table(cnn_zoo, where="filter_size == 1")
    linear = projection_table(cnn_zoo, where="filter_size == 1", include_linear=True)
    assert set(linear["kind"]) == {"linear"} and set(linear["kind_index"]) == {0, 1}
    with pytest.raises(ValueError, match="no models match"):
        projection_table(cnn_zoo, where="filter_size == 7")


# Issue 18 item 11: the distance from init needs the initialisation itself, never a slice's first snapshot.
def test_a_slice_without_its_initialisation_is_refused(cnn_zoo, tmp_path, capsys):
    from weightzoo.cli import main
    from weightzoo.errors import InputError
    from weightzoo.io.handle import ZooHandle
    from weightzoo.pipelines.pull import pull_zoo

    pull_zoo(cnn_zoo, ZooHandle.at(tmp_path / "slice"), snapshots="1:")
    sliced = open_zoo(tmp_path / "slice")
    assert sorted(set(sliced.snapshots["k"])) == [1]
    with pytest.raises(InputError, match=r"projections \(distance from init\) needs each model's initialisation "
                                         r"\(snapshot k = 0 at epoch 0\).*first stored snapshot is k = 1, epoch 1"):
        projection_table(sliced, where="filter_size == 3")
    assert main(["projections", str(tmp_path / "slice"), "--where", "filter_size == 3"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "needs each model's initialisation" in error
    # a slice that keeps k = 0 still works, with the original k in its rows
    pull_zoo(cnn_zoo, ZooHandle.at(tmp_path / "with-init"), snapshots="0,1")
    table = projection_table(open_zoo(tmp_path / "with-init"), where="filter_size == 3")
    assert set(table["k"]) == {0, 1}


def test_an_older_renumbered_slice_is_refused_by_its_epoch(tmp_path):
    """Pulls before issue 18 renumbered a slice from k = 0 but kept the epochs: k = 0 at epoch 1 is no init."""
    from weightzoo.errors import InputError

    root = tmp_path / "old-slice"
    layout = WeightLayout.from_module(nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(8, 3)))
    weights = np.random.default_rng(0).standard_normal((2, layout.n_params)).astype(np.float32)
    snapshots = [{"k": k, "epoch": float(k + 1), "step": k + 1} for k in range(2)]
    record = StagedRecord(model_id="m0", fingerprint="fp0", status="ok",
                          hyperparameters={"activation": "relu", "architecture": "planted"}, config={}, training={},
                          spec_name="planted", layout_id=layout.layout_id, n_params=layout.n_params, code_version="test")
    stage_model(root / "staging", record, weights=weights, snapshots=snapshots, layout=layout)
    publish_staged(root, ["fp0"])
    with pytest.raises(InputError, match="first stored snapshot is k = 0, epoch 1"):
        projection_table(open_zoo(root))


def test_the_streamed_study_agrees_with_the_table_whatever_the_batch_size(cnn_zoo, tmp_path, monkeypatch):
    """The study writes its tables a batch of models at a time and keeps only per-layer sums:
    one model per batch (a batch of the 1x1 model has no rows at all) gives the in-memory
    table, and the summary equals the means recomputed from that table."""
    from weightzoo.analysis import projections

    expected = projection_table(cnn_zoo).sort_values(["model_id", "k", "tensor"], ignore_index=True)
    monkeypatch.setattr(projections, "MODELS_PER_BATCH", 1)
    result = run_projection_study(cnn_zoo, tmp_path / "out")
    table = pd.read_parquet(result.details["table"]).sort_values(["model_id", "k", "tensor"], ignore_index=True)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    last = table[table["k"] == table.groupby("model_id")["k"].transform("max")]
    for record in result.rows[:-1]:
        layer = (table["kind"] == record["kind"]) & (table["kind_index"] == record["kind_index"])
        at_init, trained = table[layer & (table["k"] == 0)], last[layer[last.index]]
        assert record["cos_mean_init"] == pytest.approx(at_init["cos_mean"].mean())
        assert record["mass_le0_trained"] == pytest.approx(trained["mass_le0"].mean())
        assert record["rel_l2_from_init"] == pytest.approx(trained["rel_l2_from_init"].mean())
        assert record["n_models"] == trained["model_id"].nunique() == 2
    networks = pd.read_parquet(result.details["networks"])
    net = result.rows[-1]
    assert net["label"] == "net (conv pooled)" and net["n_models"] == 2
    assert net["cos_mean_init"] == pytest.approx(networks.loc[networks["k"] == 0, "cos_mean"].mean())


def test_a_study_of_linear_layers_only_writes_an_empty_networks_table(cnn_zoo, tmp_path):
    result = run_projection_study(cnn_zoo, tmp_path / "out", where="filter_size == 1", include_linear=True)
    assert pd.read_parquet(result.details["networks"]).empty
    assert [r["kind"] for r in result.rows] == ["linear", "linear"]
