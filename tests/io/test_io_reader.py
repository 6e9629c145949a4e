"""Reader: clear errors, corrupted chunks named by model, runnable models from any snapshot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightzoo.core.layout import WeightLayout
from zookit import flip_inner_chunk_byte, publish_staged, stage_inputs

from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.errors import CorruptChunkError, NotAZooError, VersionNotFound


@pytest.fixture
def zoo(zoo_root, stage):
    """A published v0001 with four conv nets (one diverged) and two MLPs."""
    fingerprints = stage("conv", range(3)) + stage("conv", [3], status="diverged") + stage("mlp", range(2))
    publish_staged(zoo_root, fingerprints)
    return open_zoo(zoo_root)


def test_unknown_version_lists_the_available_ones(zoo, zoo_root):
    with pytest.raises(VersionNotFound, match=r"'v0042'.*available: v0001"):
        open_zoo(zoo_root, "v0042")


def test_a_path_that_is_not_a_zoo_is_named(tmp_path):
    with pytest.raises(NotAZooError, match=str(tmp_path / "nowhere")):
        open_zoo(tmp_path / "nowhere")
    with pytest.raises(NotAZooError):
        list_versions(tmp_path)


def test_untagged_version_directory_is_ignored(zoo, zoo_root):
    stray = zoo_root / "versions" / "v0002"
    stray.mkdir()
    (stray / "manifest.json").write_text("{}")
    assert [v["version"] for v in list_versions(zoo_root)] == ["v0001"]
    assert open_zoo(zoo_root).version == "v0001"


def test_list_versions_describes_each_version(zoo, zoo_root):
    (entry,) = list_versions(zoo_root)
    assert entry["version"] == "v0001" and entry["parent"] is None and entry["n_models"] == 6
    assert entry["snapshot_id"] == zoo.manifest.icechunk_snapshot_id
    assert entry["created_at"] == zoo.manifest.created_at


def test_flipped_byte_in_a_chunk_names_the_model_and_snapshot(zoo, zoo_root):
    chunk = sorted((zoo_root / "repo" / "chunks").iterdir())[0]
    row, k = flip_inner_chunk_byte(zoo, chunk)

    failures = []
    for model in zoo.models.itertuples():
        try:
            zoo.weights(model.model_id)
        except CorruptChunkError as error:
            failures.append((model, str(error)))
    assert len(failures) == 1, "exactly the model whose chunk was changed fails"
    model, message = failures[0]
    assert model.row == row and model.model_id in message and f"weights/{model.layout_id}" in message
    assert f"(row {row}, snapshot k={k})" in message and "crc32c" in message
    other = next(i for i in range(model.n_snapshots) if i != k)
    assert zoo.weights(model.model_id, other).shape == (model.n_params,), "its other snapshots still read"


def test_load_model_reproduces_the_snapshot(zoo, builder):
    model_id = "conv-001"
    module = zoo.load_model(model_id, k=2, builder=builder)
    layout_id = zoo.models.set_index("model_id").loc[model_id, "layout_id"]
    flat = zoo.layout(layout_id).flatten(module.state_dict())
    np.testing.assert_array_equal(flat, zoo.weights(model_id, k=2))
    assert not module.training

    reference = builder({"architecture": "conv"})
    reference.load_state_dict(zoo.layout(layout_id).unflatten(zoo.weights(model_id)[2]))
    batch = torch.randn(5, 1, 6, 6)
    torch.testing.assert_close(module(batch), reference.eval()(batch))


def test_load_model_rejects_a_builder_of_another_architecture(zoo, builder):
    def wrong(config):
        return builder({"architecture": "mlp"})

    with pytest.raises(ValueError, match="does not match layout"):
        zoo.load_model("conv-000", k=0, builder=wrong)


def test_snapshot_and_model_lookups_fail_clearly(zoo):
    with pytest.raises(IndexError, match="0..2"):
        zoo.weights("conv-000", k=3)
    with pytest.raises(KeyError, match="conv-999"):
        zoo.weights("conv-999")
    with pytest.raises(KeyError, match="Lnope"):
        zoo.layout("Lnope")


def test_summary_counts_and_accuracy(zoo, zoo_root):
    summary = zoo.summary()
    assert summary["n_models"] == 6 and summary["n_snapshots"] == 18
    assert summary["by_status"] == {"diverged": 1, "ok": 5}
    assert summary["datasets"] == {"digits": 2, "mnist": 4}
    assert sorted(summary["layouts"].values()) == [2, 4]
    last = zoo.snapshots.sort_values("k").drop_duplicates("model_id", keep="last")["test_acc"].dropna()
    accuracy = summary["test_acc_last"]
    assert accuracy["count"] == 5, "the diverged model has no last accuracy"
    assert math.isclose(accuracy["mean"], last.mean()) and accuracy["min"] <= accuracy["median"] <= accuracy["max"]
    assert summary["repo_bytes"] > 0


def test_load_model_uses_the_package_builder_by_default(zoo_root, make_inputs):
    models = pytest.importorskip("weightzoo.core.models")
    config = {"architecture": "mlp", "dataset": "digits", "hidden_width": 4, "seed": 7}
    trained = models.build_model(config)
    layout = WeightLayout.from_module(trained)
    flat = layout.flatten(trained.state_dict())
    inputs = make_inputs("mlp", 0, n_snapshots=1)
    inputs["record"].update(config=config, layout_id=layout.layout_id, n_params=layout.n_params)
    inputs.update(weights=flat[None, :], layout=layout)
    stage_inputs(zoo_root, inputs)
    publish_staged(zoo_root, [inputs["fingerprint"]])

    module = open_zoo(zoo_root).load_model("mlp-000", k=0)
    batch = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(module(batch), trained.eval()(batch))
