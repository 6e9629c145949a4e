"""Zoos in object storage, against a real local S3 server (moto's server app on 127.0.0.1).

The server counts what it serves, so lazy reads are measured, not assumed: a selection of a
few models and snapshots fetches only their chunks (one per (model, snapshot), inside shards
of many models), and bytes in proportion to what it asks for.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from torch import nn

from s3_server import fresh_url
from zookit import SimulatedCrash, crash_pull_after, inject_crash, publish_staged

from weightzoo.cli import main
from weightzoo.core.layout import WeightLayout
from weightzoo.errors import NotAZooError, VersionNotFound
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model
from weightzoo.io.verify import verify_version
from weightzoo.pipelines.pull import pull_zoo

pytestmark = pytest.mark.integration
N_MODELS, N_SNAPSHOTS = 24, 6


@pytest.fixture(scope="module")
def remote_zoo(s3) -> str:
    """N_MODELS random MLPs published straight to S3 from local staging."""
    url = fresh_url()
    fingerprints = [_stage_random_model(url, i) for i in range(N_MODELS)]
    assert publish_staged(url, fingerprints, staging=ZooHandle.at(url).staging) == "v0001"
    return url


def test_a_local_zoo_pushed_to_s3_reads_back_the_same(smoke_zoo, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named after the URL
    url = fresh_url()
    report = pull_zoo(open_zoo(smoke_zoo), ZooHandle.at(url))
    local, remote = open_zoo(smoke_zoo), open_zoo(url)
    assert report["dest_version"] == remote.version == "v0001"
    pd.testing.assert_frame_equal(remote.models, local.models)
    pd.testing.assert_frame_equal(remote.snapshots, local.snapshots)
    for model_id in local.models["model_id"]:
        np.testing.assert_array_equal(remote.weights(model_id), local.weights(model_id))
    np.testing.assert_array_equal(remote.select(snapshots=[1]).to_numpy(), local.select(snapshots=[1]).to_numpy())
    assert [v["version"] for v in list_versions(url)] == ["v0001"]
    assert remote.summary()["repo_bytes"] == report["dest_repo_bytes"] > 0
    assert list(tmp_path.iterdir()) == []
    assert main(["versions", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n_models"] == len(local.models)


def test_a_crashed_publish_to_s3_shows_no_version_and_resumes(s3, monkeypatch):
    url = fresh_url()
    fingerprints = [_stage_random_model(url, i) for i in range(3)]
    for point in ("before_rename", "before_tag"):
        with monkeypatch.context() as patches:
            inject_crash(patches, point)
            with pytest.raises(SimulatedCrash):
                publish_staged(url, fingerprints)
        assert list_versions(url) == []
        with pytest.raises(VersionNotFound):
            open_zoo(url)
    assert ZooHandle.at(url).location.exists("versions/v0001/manifest.json"), "the leftover the tag does not name"
    assert publish_staged(url, fingerprints) == "v0001"
    zoo = open_zoo(url)
    np.testing.assert_array_equal(zoo.weights("mlp-002"), _random_model(2)["weights"])
    assert zoo.manifest.icechunk_snapshot_id == list_versions(url)[0]["snapshot_id"]


def test_a_missing_zoo_in_s3_is_a_clear_error(s3):
    with pytest.raises(NotAZooError, match=r"s3://zoos/nothing/here is not a weightzoo store"):
        open_zoo("s3://zoos/nothing/here")


def test_a_small_selection_fetches_only_its_chunks(remote_zoo, s3):
    _, traffic = s3
    total = ZooHandle.at(remote_zoo).location.total_bytes("repo/chunks")
    traffic.reset()
    zoo = open_zoo(remote_zoo)
    assert traffic.count(containing=".parquet") == 0, "opening reads the manifest only"
    small = zoo.select(where="model_id in ['mlp-003', 'mlp-017']", snapshots=[0, 5]).to_numpy()
    small_bytes, small_requests = traffic.bytes_sent(containing="/chunks/"), traffic.count(containing="/chunks/")
    traffic.reset()
    everything = zoo.select().to_numpy()
    all_bytes, all_requests = traffic.bytes_sent(containing="/chunks/"), traffic.count(containing="/chunks/")
    print(f"\nselection of 2/{N_MODELS} models, 2/{N_SNAPSHOTS} snapshots: {small_requests} chunk GETs, "
          f"{small_bytes} bytes; whole zoo: {all_requests} GETs, {all_bytes} bytes; stored chunks {total} bytes; "
          f"ratio {small_bytes / all_bytes:.3f}")
    assert small.shape == (4, everything.shape[1])
    assert small_bytes <= 1.5 * small.nbytes, "bytes in proportion to the 4 (model, snapshot) chunks asked for"
    assert all_bytes == total, "reading everything fetches every stored byte once"
    assert all_requests <= 2 * N_SNAPSHOTS + 2, "a few large requests, not one per chunk"


def test_one_snapshot_of_twenty_fetches_its_share(s3, tmp_path):
    """Issue 15, item 5: pulling 1 of 20 snapshots of N networks fetches at most 1.5 × N × one
    snapshot's bytes; so does a selection of that snapshot."""
    _, traffic = s3
    url, n_models, n_snapshots = fresh_url(), 40, 20
    fingerprints = [_stage_random_model(url, i, n_snapshots) for i in range(n_models)]
    publish_staged(url, fingerprints, staging=ZooHandle.at(url).staging)
    zoo = open_zoo(url)
    snapshot_bytes = 4 * int(zoo.models["n_params"].iloc[0])
    traffic.reset()
    values = zoo.select(snapshots=[7]).to_numpy()
    selected = traffic.bytes_sent(containing="/chunks/")
    traffic.reset()
    report = pull_zoo(open_zoo(url), ZooHandle.at(tmp_path / "one"), snapshots=[7])
    pulled = traffic.bytes_sent(containing="/chunks/")
    budget = n_models * snapshot_bytes
    print(f"\n1 of {n_snapshots} snapshots of {n_models} networks: selection {selected / budget:.3f}, "
          f"pull {pulled / budget:.3f} × N × one snapshot's bytes ({budget} bytes)")
    assert values.shape == (n_models, snapshot_bytes // 4) and report["n_copied"] == n_models
    assert selected <= 1.5 * budget and pulled <= 1.5 * budget
    np.testing.assert_array_equal(open_zoo(tmp_path / "one").weights("mlp-003"), zoo.weights("mlp-003", [7]))


def test_a_slice_pulled_from_s3_fetches_a_fraction(remote_zoo, s3, tmp_path):
    _, traffic = s3
    total = ZooHandle.at(remote_zoo).location.total_bytes("repo/chunks")
    traffic.reset()
    report = pull_zoo(open_zoo(remote_zoo), ZooHandle.at(tmp_path / "slice"), where="model_id < 'mlp-004'",
                      snapshots=range(2, 4))
    chunk_bytes, all_bytes = traffic.bytes_sent(containing="/chunks/"), traffic.bytes_sent()
    print(f"\npull of 4/{N_MODELS} models, snapshots 2:4: {traffic.count(containing='/chunks/')} chunk GETs, "
          f"{chunk_bytes} chunk bytes of {total} stored ({chunk_bytes / total:.3f}); {all_bytes} bytes served in "
          f"{traffic.count()} GETs in all; copied {report['bytes_copied']} weight bytes")
    assert (report["n_models"], report["n_copied"]) == (4, 4)
    assert report["bytes_copied"] <= chunk_bytes <= 1.5 * report["bytes_copied"], "only the 2 snapshots asked for"
    copy, source = open_zoo(tmp_path / "slice"), open_zoo(remote_zoo)
    for model_id in copy.models["model_id"]:
        np.testing.assert_array_equal(copy.weights(model_id), source.weights(model_id)[2:4])
    assert copy.manifest.source["location"] == remote_zoo


def test_a_resumed_pull_from_s3_fetches_only_the_models_left(remote_zoo, s3, tmp_path, monkeypatch):
    _, traffic = s3
    model_bytes = 4 * N_SNAPSHOTS * int(open_zoo(remote_zoo).models["n_params"].iloc[0])
    traffic.reset()
    with monkeypatch.context() as patches:
        crash_pull_after(patches, 5)
        with pytest.raises(SimulatedCrash):
            pull_zoo(open_zoo(remote_zoo), ZooHandle.at(tmp_path / "copy"))
    assert 5 * model_bytes <= traffic.bytes_sent(containing="/chunks/") <= 1.5 * 5 * model_bytes
    traffic.reset()
    report = pull_zoo(open_zoo(remote_zoo), ZooHandle.at(tmp_path / "copy"))
    assert (report["n_copied"], report["n_resumed"]) == (N_MODELS - 5, 5)
    left = (N_MODELS - 5) * model_bytes
    assert left <= traffic.bytes_sent(containing="/chunks/") <= 1.5 * left, "staged models are not fetched again"
    source, copy = open_zoo(remote_zoo), open_zoo(tmp_path / "copy")
    for model_id in source.models["model_id"]:
        np.testing.assert_array_equal(copy.weights(model_id), source.weights(model_id))


def _stage_random_model(url: str, index: int, n_snapshots: int = N_SNAPSHOTS) -> str:
    """Stage :func:`_random_model` in the zoo's (local) staging folder; its fingerprint."""
    model = _random_model(index, n_snapshots)
    record = StagedRecord.from_dict(model["record"])
    return stage_model(ZooHandle.at(url).staging, record, weights=model["weights"], snapshots=model["snapshots"],
                       layout=model["layout"]).fingerprint


def _random_model(index: int, n_snapshots: int = N_SNAPSHOTS) -> dict:
    """A seeded random 16-32-10 MLP with ``n_snapshots`` snapshots: record, weights, snapshots, layout."""
    layout = WeightLayout.from_module(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)))
    rng = np.random.default_rng(index)
    model_id, fingerprint = f"mlp-{index:03d}", f"fp-mlp-{index:03d}"
    hyperparameters = {"lr": float(rng.uniform(1e-3, 1e-1)), "seed": index}
    record = {"model_id": model_id, "fingerprint": fingerprint, "status": "ok", "message": "",
              "hyperparameters": hyperparameters, "config": {"architecture": "mlp", **hyperparameters},
              "training": {"epochs": n_snapshots - 1}, "spec_name": "random", "layout_id": layout.layout_id,
              "n_params": layout.n_params, "code_version": "test"}
    snapshots = [{"k": k, "epoch": k, "step": 10 * k, "test_acc": float(rng.uniform())} for k in range(n_snapshots)]
    weights = rng.standard_normal((n_snapshots, layout.n_params)).astype(np.float32)
    return {"fingerprint": fingerprint, "weights": weights, "snapshots": snapshots, "record": record, "layout": layout}


def test_a_study_of_an_s3_zoo_keeps_its_results_in_the_local_staging_root(remote_zoo, s3, tmp_path, monkeypatch):
    from weightzoo.analysis.projections import run_projection_study
    from weightzoo.analysis.cache import cached_result

    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named after the URL
    zoo = open_zoo(remote_zoo)
    result = cached_result(zoo, "projections", {"include_linear": True},
                           lambda out: run_projection_study(zoo, out, include_linear=True))
    local = ZooHandle.at(remote_zoo).analyses / "v0001" / "projections"
    assert result.path.startswith(str(local)) and (local / result.path.rsplit("/", 1)[-1]).is_dir()
    assert not any(tmp_path.iterdir())
    assert cached_result(zoo, "projections", {"include_linear": True}, None).cached


def test_verify_checks_a_zoo_in_s3_and_finds_a_changed_table(remote_zoo, s3):
    report = verify_version(ZooHandle.at(remote_zoo), "v0001")
    assert not report.problems and report.tables_checked == 3 and report.models_checked == N_MODELS
    assert report.chunks_checked == N_MODELS * N_SNAPSHOTS
    location = ZooHandle.at(remote_zoo).location
    original = location.read_bytes("versions/v0001/layouts.parquet")
    try:
        location.write_bytes("versions/v0001/layouts.parquet", original + b"\0")
        (problem,) = verify_version(ZooHandle.at(remote_zoo), "v0001").problems
        assert problem.file == "versions/v0001/layouts.parquet" and "sha256" in problem.message
    finally:
        location.write_bytes("versions/v0001/layouts.parquet", original)


def test_query_reads_a_zoo_in_s3_and_stays_sandboxed(remote_zoo, capsys, tmp_path, monkeypatch):
    """Issue 18 item 3: the tables of an S3 zoo are fetched by the reader, the locked connection
    still answers over them, and no other file or URL can be read."""
    monkeypatch.setenv("HOME", str(tmp_path))
    sql = "select count(*) as n, count(distinct k) as k from models join snapshots using (model_id)"
    assert main(["query", remote_zoo, sql, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": N_MODELS * N_SNAPSHOTS, "k": N_SNAPSHOTS}]
    assert main(["query", remote_zoo, "select * from read_text('/etc/passwd')"]) == 2
    assert "refused: a query reads only this version's tables" in capsys.readouterr().err
    assert main(["query", remote_zoo, f"select * from read_parquet('{remote_zoo}/versions/v0001/models.parquet')"]) == 2
    assert "refused" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
