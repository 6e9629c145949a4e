"""End to end through a real Prefect server and a Dask LocalCluster of two worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.pipelines.build import plan_build
from weightzoo.train.evaluate import evaluate_model
from weightzoo.train.tasks import model_task

pytestmark = pytest.mark.slow

# Two layouts (hidden widths) → two groups; enough epochs that a group takes a few seconds.
SLOW_SPEC = {
    "name": "resume-test", "architecture": "mlp", "models": 4, "sampling": {"method": "random", "seed": 1},
    "hyperparameters": {"dataset": "digits", "hidden_width": [8, 24], "optimizer": "sgd", "lr": 0.05,
                        "batch_size": 16},
    "training": {"epochs": 40, "snapshots": {"count": 2}},
}


def _run_build(spec, zoo_dir, *, models=None, extend=False, workers=2):
    """Plan as the CLI does, run the build flow on a local cluster; the report."""
    from weightzoo_flows.build_zoo import run_build_flow  # after the server fixture: Prefect reads settings on import

    plan = plan_build(ZooHandle.at(zoo_dir), spec, models, min_groups=workers, extend=extend)
    return run_build_flow(plan, workers=workers)


def test_smoke_build_through_prefect_and_dask(prefect_api, tmp_path):
    zoo_dir = tmp_path / "zoo"
    assert _run_build("smoke", zoo_dir, workers=2).version == "v0001"
    zoo = open_zoo(zoo_dir)
    assert len(zoo.models) == 4 and set(zoo.models["status"]) == {"ok"}
    assert len(zoo.snapshots) == 4 * 3
    for row in zoo.models.itertuples():
        last = zoo.snapshots.query("model_id == @row.model_id").sort_values("k").iloc[-1]
        model = zoo.load_model(row.model_id, int(last.k))
        task = model_task(model_params(row), training_of(zoo))
        _, accuracy = evaluate_model(model, task.x_test, task.y_test, task.task)
        assert accuracy == pytest.approx(last.test_acc, abs=1e-6), row.model_id
    # the same build again finds nothing to run: the plan has no work
    assert plan_build(ZooHandle.at(zoo_dir), "smoke").work == ()


def test_extended_build_adds_a_version_and_old_one_reads_back(prefect_api, tmp_path):
    zoo_dir = str(tmp_path / "zoo")
    _run_build("smoke", zoo_dir, models=2, workers=2)
    old = open_zoo(zoo_dir, "v0001")
    old_weights = {m: old.weights(m) for m in old.models["model_id"]}
    report = _run_build("smoke", zoo_dir, models=4, extend=True, workers=2)
    assert (report.version, report.n_trained, report.n_reused) == ("v0002", 2, 0)
    new = open_zoo(zoo_dir)
    assert new.version == "v0002" and len(new.models) == 4
    assert set(old.models["model_id"]) < set(new.models["model_id"])
    again = open_zoo(zoo_dir, "v0001")
    assert len(again.models) == 2
    for model_id, weights in old_weights.items():
        np.testing.assert_array_equal(again.weights(model_id), weights)
        np.testing.assert_array_equal(new.weights(model_id), weights)
    assert [v["version"] for v in list_versions(zoo_dir)] == ["v0001", "v0002"]


def test_build_killed_half_way_resumes_without_retraining(prefect_api, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SLOW_SPEC))
    zoo_dir = tmp_path / "zoo"
    command = [sys.executable, "-m", "weightzoo.cli", "build", "--spec", str(spec_path), "--out", str(zoo_dir),
               "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=dict(os.environ))
    staged = _wait_for_receipts(zoo_dir, process, at_least=1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not list_versions(zoo_dir) if (zoo_dir / "repo").exists() else True
    before = {p.name: p.stat().st_mtime_ns for p in staged}
    assert 1 <= len(before) < 4, "the kill should land between two groups"

    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after = {p.name: p.stat().st_mtime_ns for p in _staged_receipts(zoo_dir)}
    assert len(after) == 4
    assert all(after[name] == mtime for name, mtime in before.items()), "a finished model was retrained"
    assert len(open_zoo(zoo_dir).models) == 4


def _wait_for_receipts(zoo_dir: Path, process, at_least: int, timeout: float = 300) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipts = _staged_receipts(zoo_dir)
        if len(receipts) >= at_least:
            return receipts
        assert process.poll() is None, "the build ended before it could be killed"
        time.sleep(0.2)
    raise AssertionError("no model was staged in time")


def _staged_receipts(zoo_dir: Path) -> list[Path]:
    """Completely staged models (a kill may leave a file still being written: ``*.wzs.incomplete-*``)."""
    return list((zoo_dir / "staging").glob("*.wzs"))


def model_params(row) -> dict:
    import json

    return json.loads(row.config_json)


def training_of(zoo):
    from weightzoo.core.spec import load_spec

    return load_spec(zoo.manifest.specs[0]).training
