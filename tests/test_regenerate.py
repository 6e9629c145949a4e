"""Regeneration checks: retrained members match bit for bit; altered configs are caught.

In-process (no Prefect) except the one slow test that goes through the CLI, the flow and Dask.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from weightzoo.pipelines.build import build_in_process
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo
from weightzoo.pipelines.regenerate import (RegenerationError, choose_members, compare, compare_weights, plan_regeneration,
                                  regenerate_in_process, retrain)

# one fleet of four MLPs with dropout: their masks come from one shared random stream
DROPOUT_SPEC = {
    "name": "regen-dropout", "architecture": "mlp", "models": 4, "sampling": {"method": "random", "seed": 3},
    "hyperparameters": {"dataset": "digits", "hidden_layers": 1, "hidden_width": 16, "optimizer": "sgd",
                        "lr": {"log-uniform": [1.0e-2, 1.0e-1]}, "batch_size": 64, "activation": "relu",
                        "dropout": {"uniform": [0.1, 0.3]}},
    "training": {"epochs": 1, "snapshots": {"count": 1}},
}


@pytest.fixture(scope="module")
def dropout_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("regen") / "dropout"
    build_in_process(root, DROPOUT_SPEC, threads=1)
    return root


def test_every_smoke_member_regenerates_bit_for_bit(smoke_zoo, tmp_path):
    result = regenerate_in_process(smoke_zoo, sample=4, seed=0, scratch=tmp_path / "scratch")
    assert result["n_members"] == 4 and result["all_exact"], result
    assert result["max_abs_diff"] == 0.0 and set(result["metrics_max_abs_diff"].values()) == {0.0}
    assert all(m["fleet_recorded"] and m["config_matches_fingerprint"] for m in result["members"])
    assert not (smoke_zoo / "scratch").exists() and (tmp_path / "scratch").is_dir()


def test_a_member_is_regenerated_with_its_whole_recorded_fleet(dropout_zoo, tmp_path):
    plan = plan_regeneration(ZooHandle.at(dropout_zoo), None, sample=1, seed=0)
    (job,) = plan.jobs
    assert len(job.model_ids) == 4 and job.trainer == "fleet" and job.environment["torch_threads"] == 1
    for attempt in (tmp_path / "fleet", tmp_path / "again"):  # a second run trains again, not from cache
        retrain(attempt, job)
        assert compare(plan, attempt)["all_exact"]
    # the same member trained alone draws other dropout masks: this is why fleets are recorded
    member = plan.members[0]
    index = job.model_ids.index(member)
    alone = dataclasses.replace(job, group=dataclasses.replace(job.group, configs=(job.group.configs[index],)),
                                model_ids=(member,), stored_fingerprints=(job.stored_fingerprints[index],),
                                trainer="single")
    retrain(tmp_path / "alone", alone)
    result = compare(dataclasses.replace(plan, jobs=(alone,)), tmp_path / "alone")
    assert not result["all_exact"] and result["max_abs_diff"] > 1e-4


def test_an_altered_recorded_config_is_reported_with_its_differences(smoke_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(smoke_zoo, zoo)
    models_path = zoo / "versions" / "v0001" / "models.parquet"
    table = pq.read_table(models_path).to_pandas()
    victim = table["model_id"].iloc[0]
    config = json.loads(table.at[0, "config_json"])
    config["lr"] *= 1.5  # someone "fixed" the recorded learning rate afterwards
    table.at[0, "config_json"] = json.dumps(config, sort_keys=True)
    table.at[0, "lr"] = config["lr"]
    table.to_parquet(models_path, index=False)

    result = regenerate_in_process(zoo, sample=4, seed=0)
    by_id = {m["model_id"]: m for m in result["members"]}
    assert not result["all_exact"] and result["n_exact"] == 3
    assert not by_id[victim]["exact"] and not by_id[victim]["config_matches_fingerprint"]
    assert by_id[victim]["max_abs_diff"] > 1e-6 and by_id[victim]["n_values_differing"] > 0
    assert by_id[victim]["metrics_max_abs_diff"]["train_loss"] > 0
    assert result["max_abs_diff"] == by_id[victim]["max_abs_diff"]


def test_zoos_without_recorded_fleets_still_regenerate_members_alone(smoke_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(smoke_zoo, zoo)
    manifest_path = zoo / "versions" / "v0001" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("fleets", "environment", "code"):  # as written before these fields existed
        del manifest[key]
    manifest_path.write_text(json.dumps(manifest))
    assert open_zoo(zoo).summary()["n_models"] == 4
    result = regenerate_in_process(zoo, sample=2, seed=5)
    assert result["n_fleets"] == 2 and result["n_models_trained"] == 2
    assert all(not m["fleet_recorded"] and m["fleet_size"] == 1 for m in result["members"])


def test_models_added_in_a_version_this_zoo_lacks_fall_back_to_its_own_specs(smoke_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(smoke_zoo, zoo)
    models_path = zoo / "versions" / "v0001" / "models.parquet"
    table = pq.read_table(models_path).to_pandas()
    table["version_added"] = "v0042"  # as in a copy whose models came from another zoo's version
    table.to_parquet(models_path, index=False)
    result = regenerate_in_process(zoo, sample=1, seed=0)
    assert result["n_members"] == 1 and not result["members"][0]["fleet_recorded"]
    assert result["members"][0]["config_matches_fingerprint"]


def test_members_are_chosen_by_seed_and_a_sample_too_large_is_refused(smoke_zoo):
    ids = [f"m{i:02d}" for i in range(20)]
    first = choose_members(ids, 5, seed=1)
    assert first == choose_members(list(reversed(ids)), 5, seed=1) and len(set(first)) == 5
    assert first != choose_members(ids, 5, seed=2)
    with pytest.raises(RegenerationError, match="--sample 21: choose between 1 and the version's 20 models"):
        choose_members(ids, 21)
    with pytest.raises(RegenerationError, match="outside the zoo"):
        regenerate_in_process(smoke_zoo, sample=1, scratch=smoke_zoo / "scratch")


def test_weights_compare_by_bits():
    stored = np.array([[0.0, np.nan, 1.0]], dtype=np.float32)
    assert compare_weights(stored, stored.copy())["exact"]
    negative_zero = compare_weights(stored, np.array([[-0.0, np.nan, 1.0]], dtype=np.float32))
    assert not negative_zero["exact"] and negative_zero["max_abs_diff"] == 0.0
    moved = compare_weights(stored, np.array([[0.0, np.nan, 1.5]], dtype=np.float32))
    assert moved["max_abs_diff"] == 0.5 and moved["n_values_differing"] == 1 and moved["nan_mismatch"] == 0
    assert compare_weights(stored, stored[:, :2])["max_abs_diff"] is None


@pytest.mark.slow
def test_regenerate_command_runs_the_flow_on_dask(prefect_api, dropout_zoo, tmp_path):
    done = subprocess.run([sys.executable, "-m", "weightzoo.cli", "regenerate", f"{dropout_zoo}@v0001",
                           "--sample", "2", "--seed", "1", "--workers", "1", "--scratch", str(tmp_path), "--json"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["version"] == "v0001" and result["n_members"] == 2 and result["all_exact"]
    assert result["n_fleets"] == 1 and result["n_models_trained"] == 4
    bad = subprocess.run([sys.executable, "-m", "weightzoo.cli", "regenerate", str(dropout_zoo), "--sample", "9"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert bad.returncode == 2 and "--sample 9" in bad.stderr


def test_a_pulled_slice_regenerates_its_kept_snapshots_bit_for_bit(smoke_zoo, tmp_path):
    """Issue 18 item 11: a slice keeps its k, so its snapshots are compared with the same k of the rerun."""
    from weightzoo.pipelines.pull import pull_zoo

    pull_zoo(open_zoo(smoke_zoo), ZooHandle.at(tmp_path / "slice"), snapshots="1:")
    result = regenerate_in_process(tmp_path / "slice", sample=4, seed=0)
    assert result["n_members"] == 4 and result["all_exact"], result
    assert result["max_abs_diff"] == 0.0 and set(result["metrics_max_abs_diff"].values()) == {0.0}
