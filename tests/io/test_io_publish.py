"""Publishing: tables match arrays row for row; versions are supersets; nothing is duplicated."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from zookit import publish_staged, stored_rows

from weightzoo.errors import StagingError
from weightzoo.io.shards import ShardGeometry
from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.io.staging import load_staged
from weightzoo.io.tables import assign_split

SPECS = [{"name": "tiny", "n_models": 10}]


def publish(zoo_root, fingerprints, **kwargs):
    """The one publish with this module's spec."""
    return publish_staged(zoo_root, fingerprints, specs=SPECS, **kwargs)


def assert_zoo_matches_staging(zoo, zoo_root):
    """Every model's weights read back equal to its staged weights (through weightzoo and through
    plain zarr); the arrays hold exactly the models' rows."""
    for model in zoo.models.itertuples():
        staged = load_staged(zoo_root / "staging", model.fingerprint)
        np.testing.assert_array_equal(zoo.weights(model.model_id), staged.weights, err_msg=model.model_id)
        row = zoo.weights_array(model.layout_id)[model.row]
        np.testing.assert_array_equal(row[:model.n_snapshots], staged.weights)
        assert np.isnan(row[model.n_snapshots:]).all(), "padding is NaN"
    for layout_id, group in zoo.models.groupby("layout_id"):
        assert stored_rows(zoo, layout_id) == sorted(group["row"]), layout_id


def test_first_publish_tables_match_arrays(zoo_root, stage):
    fingerprints = stage("conv", range(4)) + stage("mlp", range(3), n_snapshots=2)
    assert publish(zoo_root, fingerprints, message="first") == "v0001"

    zoo = open_zoo(zoo_root)
    assert zoo.version == "v0001" and len(zoo.models) == 7
    assert_zoo_matches_staging(zoo, zoo_root)
    for layout_id, group in zoo.models.groupby("layout_id"):
        array = zoo.weights_array(layout_id)
        n_params = zoo.layout(layout_id).n_params
        assert array.chunks == (1, 1, n_params), "one inner chunk per (model, snapshot)"
        assert array.shards == (ShardGeometry.choose(array.shape[1], n_params).rows, array.shape[1], n_params)
        assert n_params == array.shape[2] == group["n_params"].iloc[0]
        assert sorted(group["row"]) == list(range(len(group))), "a first publish starts at row 0"
        assert zoo.manifest.arrays[f"weights/{layout_id}"] == {**ShardGeometry.of_array(array).to_dict(),
                                                               "shape": list(array.shape)}
    assert len(zoo.snapshots) == 4 * 3 + 3 * 2
    assert set(zoo.models["version_added"]) == {"v0001"}


def test_manifest_records_counts_packages_and_table_hashes(zoo_root, stage):
    publish(zoo_root, stage("conv", range(2), status="diverged") + stage("mlp", range(1)), message="m")
    folder = zoo_root / "versions" / "v0001"
    manifest = json.loads((folder / "manifest.json").read_text())

    assert manifest["parent"] is None and manifest["specs"] == SPECS and manifest["message"] == "m"
    assert manifest["code_version"] == "weightzoo 0.1.0 / test-1" and manifest["created_at"].endswith("+00:00")
    assert manifest["counts"]["models"] == 3 and manifest["counts"]["snapshots"] == 9
    assert manifest["counts"]["by_status"] == {"diverged": 2, "ok": 1}
    assert sorted(manifest["counts"]["by_layout"].values()) == [1, 2]
    assert {"python", "torch", "numpy", "zarr", "icechunk", "pyarrow"} <= set(manifest["packages"])
    for name, digest in manifest["tables"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert list_versions(zoo_root)[0]["snapshot_id"] == manifest["icechunk_snapshot_id"]


def test_tables_have_typed_columns_for_plain_pandas(zoo_root, stage):
    publish(zoo_root, stage("conv", range(3)) + stage("mlp", range(2)))
    folder = zoo_root / "versions" / "v0001"
    models = pd.read_parquet(folder / "models.parquet")

    assert models["lr"].dtype == np.float64
    assert models["batch_size"].dtype == np.int64
    assert models["row"].dtype == np.int64 and models["n_params"].dtype == np.int64
    assert models["augment"].dtype == bool
    assert set(models["optimizer"]) == {"sgd", "adam"}
    schema = pq.read_schema(folder / "models.parquet")
    assert str(schema.field("width").type) == "int64", "nullable ints stay int64 in the file"
    assert models.loc[models["model_id"].str.startswith("conv"), "width"].isna().all()
    assert json.loads(models["config_json"].iloc[0])["architecture"] in {"conv", "mlp"}

    snapshots = pd.read_parquet(folder / "snapshots.parquet")
    assert snapshots["k"].dtype == np.int64 and snapshots["test_acc"].dtype == np.float64
    layouts = pd.read_parquet(folder / "layouts.parquet")
    conv_weight = layouts[(layouts["name"] == "0.weight") & (layouts["kind"] == "conv")].iloc[0]
    assert list(conv_weight["shape"]) == [2, 1, 3, 3]


def test_extend_publishes_a_superset_and_old_versions_stay_put(zoo_root, stage):
    first = stage("conv", range(3)) + stage("mlp", range(2))
    publish(zoo_root, first)
    old = open_zoo(zoo_root, "v0001")
    old_models = old.models.copy()
    old_shapes = {lid: old.weights_array(lid).shape for lid in old_models["layout_id"].unique()}

    second = stage("conv", range(3, 6)) + stage("mlp", range(2, 4))
    assert publish(zoo_root, first + second) == "v0002"

    new = open_zoo(zoo_root)
    assert new.version == "v0002" and new.manifest.parent == "v0001"
    assert len(new.models) == 10
    pd.testing.assert_frame_equal(new.models.iloc[:5].reset_index(drop=True), old_models)
    assert set(new.models["version_added"].iloc[5:]) == {"v0002"}
    assert_zoo_matches_staging(new, zoo_root)

    again = open_zoo(zoo_root, "v0001")
    pd.testing.assert_frame_equal(again.models, old_models)
    assert {lid: again.weights_array(lid).shape for lid in old_shapes} == old_shapes
    assert_zoo_matches_staging(again, zoo_root)
    assert [v["version"] for v in list_versions(zoo_root)] == ["v0001", "v0002"]


def test_republishing_the_same_models_adds_nothing(zoo_root, stage):
    fingerprints = stage("conv", range(3))
    publish(zoo_root, fingerprints)
    assert publish(zoo_root, fingerprints) == "v0001"
    assert publish(zoo_root, fingerprints[:1] + fingerprints) == "v0001"
    assert len(list_versions(zoo_root)) == 1
    assert len(open_zoo(zoo_root).models) == 3


def test_more_snapshots_regrow_the_array_without_touching_old_versions(zoo_root, stage):
    short = stage("mlp", range(2), n_snapshots=2)
    publish(zoo_root, short)
    long = stage("mlp", range(2, 4), n_snapshots=5)
    publish(zoo_root, short + long)

    new, old = open_zoo(zoo_root, "v0002"), open_zoo(zoo_root, "v0001")
    layout_id = new.models["layout_id"].iloc[0]
    array = new.weights_array(layout_id)
    assert array.shape[1] == 5 and array.shards[1] == 2, "a second shard column along the snapshot axis"
    assert old.weights_array(layout_id).shape[:2] == (2, 2)
    assert list(new.models["row"]) == [0, 1, array.shards[0], array.shards[0] + 1], "v0002 starts a new shard"
    assert_zoo_matches_staging(new, zoo_root)
    assert_zoo_matches_staging(old, zoo_root)


def test_fewer_snapshots_are_padded_and_trimmed(zoo_root, stage):
    publish(zoo_root, stage("conv", [0], n_snapshots=4) + stage("conv", [1], n_snapshots=2))
    zoo = open_zoo(zoo_root)
    assert zoo.weights("conv-001").shape[0] == 2
    assert zoo.weights("conv-001", k=1).shape == (zoo.models["n_params"].iloc[0],)
    assert_zoo_matches_staging(zoo, zoo_root)


def test_splits_are_deterministic_and_stable_under_extension(zoo_root, stage):
    first = stage("conv", range(8))
    publish(zoo_root, first, split_seed=3)
    publish(zoo_root, first + stage("conv", range(8, 16)), split_seed=3)
    old, new = open_zoo(zoo_root, "v0001").models, open_zoo(zoo_root, "v0002").models

    expected = [assign_split(m, 3, (0.7, 0.15, 0.15)) for m in new["model_id"]]
    assert list(new["split"]) == expected
    assert list(new["split"].iloc[:8]) == list(old["split"])
    with pytest.raises(ValueError, match="seed 3"):
        publish(zoo_root, first + stage("conv", [99]), split_seed=4)


def test_retraction_keeps_rows_and_appends_nothing(zoo_root, stage):
    fingerprints = stage("conv", range(4))
    publish(zoo_root, fingerprints)
    assert publish(zoo_root, fingerprints[1:3], extend=False) == "v0002"

    zoo = open_zoo(zoo_root)
    old = open_zoo(zoo_root, "v0001").models.set_index("model_id")
    assert list(zoo.models["model_id"]) == ["conv-001", "conv-002"]
    assert list(zoo.models["row"]) == list(old.loc[["conv-001", "conv-002"], "row"])
    assert zoo.manifest.parent is None
    assert zoo.weights_array(zoo.models["layout_id"].iloc[0]).shape[0] == 4
    assert set(zoo.snapshots["model_id"]) == {"conv-001", "conv-002"}


def test_unstaged_fingerprints_are_reported(zoo_root, stage):
    with pytest.raises(StagingError, match="fp-missing"):
        publish(zoo_root, stage("conv", [0]) + ["fp-missing"])
