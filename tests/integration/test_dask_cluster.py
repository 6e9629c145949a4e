"""Building against an existing Dask cluster by address: a real ``dask scheduler`` and two
``dask worker`` processes; the scheduler's task stream says which worker ran each task."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from distributed import Client, get_task_stream

from weightzoo.core.spec import load_spec
from weightzoo.io.reader import open_zoo

pytestmark = pytest.mark.integration

TRAIN_TASK = "train"  # prefect-dask names a task's Dask key after the task function (train_group)


def _build(args: list[str], tmp_path) -> dict:
    """``weightzoo build ... --json`` in a subprocess (it reuses the fixture's Prefect server)."""
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="warning")
    result = subprocess.run([sys.executable, "-m", "weightzoo.cli", "build", *args, "--json"], env=env,
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _train_workers(address: str, run) -> list[str]:
    """Names of the workers that ran the training tasks started by ``run()``."""
    with Client(address, timeout=30) as client:
        names = {address_: info["name"] for address_, info in client.scheduler_info()["workers"].items()}
        with get_task_stream(client) as stream:  # installs the scheduler's task-stream plugin first
            run()
    return [names[t["worker"]] for t in stream.data if str(t["key"]).startswith(TRAIN_TASK)]


def test_smoke_build_spreads_over_both_workers(two_worker_cluster, tmp_path):
    zoo_dir = tmp_path / "zoo"
    # four groups of one model: more tasks than workers, so an idle worker always has work
    workers = _train_workers(two_worker_cluster, lambda: _build(
        ["--preset", "smoke", "--out", str(zoo_dir), "--dask-address", two_worker_cluster, "--max-group", "1"],
        tmp_path))
    assert len(workers) == 4, workers
    assert set(workers) == {"cpu", "gpu"}, f"training ran on {workers}, not on both workers"
    zoo = open_zoo(zoo_dir)
    assert zoo.version == "v0001" and len(zoo.models) == 4 and set(zoo.models["status"]) == {"ok"}


def test_cuda_spec_trains_only_on_the_gpu_worker(two_worker_cluster, tmp_path):
    """No GPU here: training on 'cuda' fails, but only after the scheduler placed it on ``gpu``."""
    spec = load_spec("smoke").to_dict()
    spec["training"]["device"] = "cuda"
    spec_path = tmp_path / "cuda.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="warning")
    # two groups for two idle workers: without the GPU annotation one would go to ``cpu``
    argv = [sys.executable, "-m", "weightzoo.cli", "build", "--spec", str(spec_path), "--out", str(tmp_path / "zoo"),
            "--dask-address", two_worker_cluster, "--workers", "2"]
    runs = []
    workers = _train_workers(two_worker_cluster, lambda: runs.append(subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)))
    assert runs[0].returncode == 1 and "CUDA" in runs[0].stderr, runs[0].stderr[-2000:]
    assert workers and set(workers) == {"gpu"}, f"CUDA training ran on {workers}"


def test_sane_with_device_cuda_runs_only_on_the_gpu_worker(two_worker_cluster, tmp_path):
    """SANE asks for the same ``GPU`` resource as CUDA training (no GPU here: it then fails)."""
    from weightzoo.pipelines.build import build_in_process

    build_in_process(tmp_path / "zoo", "smoke")
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="warning")
    argv = [sys.executable, "-m", "weightzoo.cli", "sane", "train", str(tmp_path / "zoo"), "--device", "cuda",
            "--epochs", "1", "--dask-address", two_worker_cluster]
    runs = []
    with Client(two_worker_cluster, timeout=30) as client:
        names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
        with get_task_stream(client) as stream:
            runs.append(subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path))
    assert runs[0].returncode != 0 and "CUDA" in runs[0].stderr, runs[0].stderr[-2000:]
    workers = [names[t["worker"]] for t in stream.data if "sane" in str(t["key"])]
    assert workers and set(workers) == {"gpu"}, f"SANE ran on {workers}"
