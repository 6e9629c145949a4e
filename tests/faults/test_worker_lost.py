"""A Dask worker killed while it trains a group: the scheduler hands the lost task to the
surviving worker, the build finishes and the version holds every model.

Real components: a ``dask scheduler`` and two ``dask worker --no-nanny`` processes (so the
killed process is the worker itself and nothing restarts it), a real Prefect server (the
session's ``prefect_api``) and the real build flow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from weightzoo.io.handle import ZooHandle
from zookit import wait_for
from weightzoo.io.reader import open_zoo
from weightzoo.pipelines.build import plan_build

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.integration]

# Two layouts → two groups, one per worker; enough epochs that a group trains for several seconds.
SPEC = {
    "name": "worker-lost", "architecture": "mlp", "models": 4, "sampling": {"method": "random", "seed": 3},
    "hyperparameters": {"dataset": "digits", "hidden_width": [8, 24], "optimizer": "sgd", "lr": 0.05,
                        "batch_size": 16},
    "training": {"epochs": 20, "snapshots": {"count": 2}},
}


@pytest.fixture
def dask_cluster(prefect_api, tmp_path):
    """(client, {worker address: Popen}) of a scheduler and two single-threaded workers."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}  # inherit PREFECT_API_URL
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    processes = [subprocess.Popen(dask + ["--scheduler-file", str(scheduler_file), "--port", "0",
                                          "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)]
    wait_for(scheduler_file.exists, "the scheduler to start")
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
              "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    processes += [subprocess.Popen(worker + ["--name", f"w{i}"], env=env, stderr=subprocess.DEVNULL)
                  for i in range(2)]
    client = Client(scheduler_file=str(scheduler_file), timeout=60)
    try:
        client.wait_for_workers(2, timeout=60)
        by_pid = {p.pid: p for p in processes[1:]}
        yield client, {address: by_pid[pid] for address, pid in client.run(os.getpid).items()}
    finally:
        client.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def test_worker_killed_during_training_is_retried_and_version_is_complete(dask_cluster, tmp_path):
    from weightzoo_flows.build_zoo import run_build_flow  # after prefect_api: Prefect reads its settings on import

    client, workers = dask_cluster
    zoo_dir = tmp_path / "zoo"
    plan = plan_build(ZooHandle.at(zoo_dir), SPEC, min_groups=2)
    result = {}
    build = threading.Thread(target=lambda: result.update(version=run_build_flow(
        plan, workers=2, dask_address=client.scheduler.address).version))
    build.start()

    busy = wait_for(lambda: [a for a, keys in client.processing().items() if keys], "a train task to run")
    time.sleep(2.0)  # past the task's start-up, inside training
    staged_before = _receipts(zoo_dir)
    assert len(staged_before) < 4, "training finished before the kill"
    os.kill(workers[busy[0]].pid, signal.SIGKILL)
    killed_at = time.time()

    build.join(timeout=240)
    assert not build.is_alive(), "the build did not finish after a worker was lost"
    assert result.get("version") == "v0001"
    zoo = open_zoo(zoo_dir)
    assert len(zoo.models) == 4 and set(zoo.models["status"]) == {"ok"}
    assert len(zoo.snapshots) == 4 * 3
    assert len(client.scheduler_info()["workers"]) == 1, "the killed worker stays dead"
    retrained = [p for p in _receipts(zoo_dir) if p.stat().st_mtime > killed_at]
    assert len(retrained) >= 1, "the lost group was trained again after the kill"


def _receipts(zoo_dir: Path) -> list[Path]:
    return list((zoo_dir / "staging").glob("*.wzs"))
