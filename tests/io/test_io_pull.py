"""Pulling a selection of a zoo into a new zoo: slices, provenance, checksums, resuming."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from zookit import SimulatedCrash, crash_pull_after, flip_member_byte, publish_staged

from weightzoo.cli import main
from weightzoo.core.traces import Trace
from weightzoo.errors import StagingError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model
from weightzoo.pipelines.pull import PLAN_FILE, PullError, pull_zoo

N_SNAPSHOTS = 4
TRACED = ("0.bias",)


def pull(source, dest, **options) -> dict:
    """pull_zoo from the latest version of the zoo at ``source`` into the zoo at ``dest``."""
    return pull_zoo(open_zoo(source), ZooHandle.at(dest), **options)


def staging_dir(zoo) -> object:
    """The staging folder of a local zoo."""
    return ZooHandle.at(zoo).staging


@pytest.fixture
def source(zoo_root, stage, make_inputs):
    """A published zoo: 3 conv nets and 3 MLPs (4 snapshots each), one MLP with dense traces."""
    fingerprints = stage("conv", range(3), n_snapshots=N_SNAPSHOTS) + stage("mlp", range(2), n_snapshots=N_SNAPSHOTS)
    inputs = make_inputs("mlp", 2, n_snapshots=N_SNAPSHOTS)
    layout = inputs["layout"]
    steps = np.arange(5)
    trace = Trace(tensors={"0.bias": np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32)},
                  step=steps, epoch=steps // 2, lr=np.full(5, 0.1), loss=np.linspace(2, 1, 5), steps_per_epoch=2)
    inputs["record"]["training"]["traces"] = {"tensors": list(TRACED), "every": 1}
    assert layout.tensor("0.bias").length == 5
    record = StagedRecord.from_dict(inputs["record"])
    fingerprints.append(stage_model(zoo_root / "staging", record, weights=inputs["weights"],
                                    snapshots=inputs["snapshots"], layout=layout, traces=trace).fingerprint)
    publish_staged(zoo_root, fingerprints, split_seed=3)
    return zoo_root


def test_a_pulled_slice_keeps_ids_splits_and_values(source, tmp_path):
    report = pull(source, tmp_path / "copy", where="dataset == 'digits'", snapshots=range(1, 3))
    original, copy = open_zoo(source), open_zoo(tmp_path / "copy")
    mlps = original.models[original.models["dataset"] == "digits"].reset_index(drop=True)
    assert copy.version == "v0001" and report["n_models"] == report["n_copied"] == 3 == len(copy.models)
    moved = ["row", "n_snapshots", "version_added"]
    # ids, splits and hyperparameters kept; dtypes may differ in pandas only (a column null for
    # the conv nets left out is float64 in the source, int64 in the copy), never in Arrow
    pd.testing.assert_frame_equal(copy.models.drop(columns=moved), mlps.drop(columns=moved), check_dtype=False)
    assert _arrow_schema(copy) == _arrow_schema(original)
    assert (copy.models["n_snapshots"] == 2).all()
    for model_id in mlps["model_id"]:
        np.testing.assert_array_equal(copy.weights(model_id), original.weights(model_id)[1:3])
        before = original.snapshots[original.snapshots["model_id"] == model_id].iloc[1:3].reset_index(drop=True)
        after = copy.snapshots[copy.snapshots["model_id"] == model_id].reset_index(drop=True)
        assert after["k"].tolist() == [1, 2], "a snapshot's k is its identity: kept through the pull"
        assert after.equals(before), "k, epoch, step and metrics kept"
        np.testing.assert_array_equal(copy.weights(model_id, 2), original.weights(model_id, 2))
        np.testing.assert_array_equal(copy.weights(model_id, [1, 2]), original.weights(model_id, [1, 2]))
        assert copy.snapshot_ks(model_id).tolist() == [1, 2]
        with pytest.raises(IndexError, match="has snapshots k = 1,2; asked for k=\\[0\\]"):
            copy.weights(model_id, 0)
    n_params = original.layout(mlps["layout_id"][0]).n_params
    assert report["bytes_copied"] == 3 * 2 * n_params * 4
    assert copy.manifest.source == {
        "location": str(source.resolve()), "version": "v0001", "where": "dataset == 'digits'",
        "snapshots": "1:3", "icechunk_snapshot_id": original.manifest.icechunk_snapshot_id,
        "model_ids": mlps["model_id"].tolist()}
    assert copy.manifest.split == original.manifest.split
    assert not any(staging_dir(tmp_path / "copy").iterdir()), "staged copies are removed once verified"


def test_any_snapshot_choice_keeps_the_original_k(source, tmp_path):
    report = pull(source, tmp_path / "copy", where="dataset == 'digits'", snapshots="last")
    original, copy = open_zoo(source), open_zoo(tmp_path / "copy")
    assert report["snapshots"] == "last" and (copy.models["n_snapshots"] == 1).all()
    last = N_SNAPSHOTS - 1
    for model_id in copy.models["model_id"]:
        np.testing.assert_array_equal(copy.weights(model_id, last), original.weights(model_id, last))
        np.testing.assert_array_equal(copy.weights(model_id), original.weights(model_id, [last]))
    assert copy.snapshots["k"].tolist() == [last] * len(copy.models)


def test_a_slice_with_gaps_reads_by_k_everywhere(source, tmp_path):
    """Issue 18 item 11: selections, arrays, batches and a pull of a pull all index by k."""
    pull(source, tmp_path / "copy", where="dataset == 'digits'", snapshots="0,2,3")
    original, copy = open_zoo(source), open_zoo(tmp_path / "copy")
    assert sorted(set(copy.snapshots["k"])) == [0, 2, 3]
    for choice, ks in (("all", [0, 2, 3]), ("last", [3]), ("2:", [2, 3]), ("2:4", [2, 3]), ("0,3", [0, 3]), (2, [2])):
        selection = copy.select(snapshots=choice)
        assert selection.rows["k"].tolist() == ks * len(copy.models), choice
        expected = original.select(model_ids=list(copy.models["model_id"]), snapshots=ks).to_numpy()
        np.testing.assert_array_equal(selection.to_numpy(), expected, err_msg=str(choice))
        batch = next(iter(selection.torch_batches(len(selection))))
        order = np.argsort(batch["index"].numpy())
        assert batch["k"].numpy()[order].tolist() == selection.rows["k"].tolist()
        np.testing.assert_array_equal(batch["weights"].numpy()[order], expected)
    for bad in ("1", "1:3", "0:2", "1:"):
        with pytest.raises(ValueError, match=r"has snapshots k = 0,2,3"):
            copy.select(snapshots=bad)
    for model, ks, weights in copy.select(snapshots="last").iter_models(all_snapshots=True):
        assert ks.tolist() == [3] and weights.shape[0] == 4 and np.isnan(weights[1]).all()
        np.testing.assert_array_equal(weights[[0, 2, 3]], original.weights(model.model_id, [0, 2, 3]))
    pull(tmp_path / "copy", tmp_path / "again", snapshots="2:")
    again = open_zoo(tmp_path / "again")
    assert sorted(set(again.snapshots["k"])) == [2, 3]
    for model_id in again.models["model_id"]:
        np.testing.assert_array_equal(again.weights(model_id), original.weights(model_id, [2, 3]))


def test_traces_are_copied_whole(source, tmp_path):
    pull(source, tmp_path / "copy", snapshots=range(0, 1))
    original, copy = open_zoo(source), open_zoo(tmp_path / "copy")
    traced = original.models.loc[original.models["n_trace_steps"] > 0, "model_id"].tolist()
    assert len(traced) == 1
    for name, values in original.traces(traced[0]).items():
        np.testing.assert_array_equal(copy.traces(traced[0])[name], values, err_msg=name)


def test_an_interrupted_pull_resumes_without_copying_again(source, tmp_path, monkeypatch):
    dest = tmp_path / "copy"
    with monkeypatch.context() as patches:
        crash_pull_after(patches, 2)
        with pytest.raises(SimulatedCrash):
            pull(source, dest)
    staged = sorted(staging_dir(dest).glob("*.wzs"))
    assert len(staged) == 2 and not (dest / "versions").exists()
    report = pull(source, dest)
    assert (report["n_copied"], report["n_resumed"], report["n_models"]) == (4, 2, 6)
    assert not (dest / PLAN_FILE).exists() and not any(staging_dir(dest).iterdir())
    original, copy = open_zoo(source), open_zoo(dest)
    for model_id in original.models["model_id"]:
        np.testing.assert_array_equal(copy.weights(model_id), original.weights(model_id))
    again = pull(source, dest)
    assert (again["n_copied"], again["n_resumed"]) == (0, 6), "a finished pull re-run is a no-op"
    assert again["checksums"] == report["checksums"]


def test_a_corrupt_staged_model_is_caught_on_resume(source, tmp_path, monkeypatch):
    dest = tmp_path / "copy"
    with monkeypatch.context() as patches:
        crash_pull_after(patches, 1)
        with pytest.raises(SimulatedCrash):
            pull(source, dest)
    (staged,) = staging_dir(dest).glob("*.wzs")
    flip_member_byte(staged, "weights")
    with pytest.raises(StagingError, match=f"{staged.name} is corrupt: the sha256"):
        pull(source, dest)


def test_a_destination_is_new_or_the_same_unfinished_pull(source, tmp_path, monkeypatch):
    with pytest.raises(PullError, match="already holds version"):
        pull(source, source)
    dest = tmp_path / "copy"
    with monkeypatch.context() as patches:
        crash_pull_after(patches, 1)
        with pytest.raises(SimulatedCrash):
            pull(source, dest, snapshots=range(0, 2))
    with pytest.raises(PullError, match=r"unfinished pull .*snapshots='0:2'"):
        pull(source, dest, snapshots=range(0, 3))
    with pytest.raises(PullError, match="selects no model"):
        pull(source, tmp_path / "other", where="lr > 1000")


def test_pull_command(source, tmp_path, capsys):
    dest = tmp_path / "copy"
    assert main(["pull", f"{source}@v0001", str(dest), "--where", "dataset == 'mnist'",
                 "--snapshots", "0:2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n_models"], report["dest_version"], report["snapshots"]) == (3, "v0001", "0:2")
    assert len(report["checksums"]) == 3
    assert main(["pull", str(source), str(tmp_path / "x"), "--where", "nope == 1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["pull", str(source), str(tmp_path / "x"), "--snapshots", "0:9"]) == 2
    assert "ask for k=4 but model" in capsys.readouterr().err  # the one snapshot rule, no silent shrinking
    assert main(["pull", f"{source}@v0009", str(tmp_path / "x")]) == 2
    assert main(["pull", str(source), "gs://bucket/zoo"]) == 2
    assert "unsupported scheme 'gs'" in capsys.readouterr().err


def _arrow_schema(zoo):
    return zoo.location.read_table(f"versions/{zoo.version}/models.parquet").schema


def test_a_pulled_build_keeps_how_its_members_were_trained(smoke_zoo, tmp_path):
    original = open_zoo(smoke_zoo)
    first = original.models["model_id"].iloc[0]
    pull(smoke_zoo, tmp_path / "copy", where=f"model_id == '{first}'")
    copy = open_zoo(tmp_path / "copy")
    (environment,) = original.manifest.environment["training"]  # one machine trained the smoke zoo
    assert copy.manifest.environment["training"] == [dict(environment, n_models=1)]
    (fleet,) = [f for f in original.manifest.fleets if first in f["models"]]
    assert copy.manifest.fleets == [dict(fleet, environment=0)]


def test_a_slice_keeps_its_k_through_export_and_import(source, tmp_path, capsys):
    """Issue 18 item 11: k survives pull, export (bundle) and import."""
    pull(source, tmp_path / "slice", where="dataset == 'digits'", snapshots="1:")
    assert main(["export", str(tmp_path / "slice"), "--format", "bundle", "--out", str(tmp_path / "slice.npz")]) == 0
    assert main(["import", "bundle", str(tmp_path / "slice.npz"), "--out", str(tmp_path / "back"),
                 "--in-process"]) == 0
    capsys.readouterr()
    original, back = open_zoo(source), open_zoo(tmp_path / "back")
    assert sorted(set(back.snapshots["k"])) == list(range(1, N_SNAPSHOTS))
    for row in back.models.itertuples():
        np.testing.assert_array_equal(back.weights(row.model_id, 2), original.weights(row.source_model_id, 2))
