"""Fixtures that start real servers as subprocesses on 127.0.0.1 (free ports) and always stop them.

Generic on purpose: ``running(argv, log, ready)`` starts any server command and waits for a
readiness check; the Dask cluster fixture is built on it. The Prefect server is the
session-wide ``prefect_api`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from s3_server import s3_server
from weightzoo_flows.server import free_port, stop_process

STARTUP_SECONDS = 60


class ProcessError(RuntimeError):
    """A server subprocess exited or did not become ready; the message carries its log."""


@contextlib.contextmanager
def running(argv: list[str], log_path: Path, ready: Callable[[], bool] | None = None,
            env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``argv`` (its output in ``log_path``) until the block ends; wait until ``ready()``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or dict(os.environ),
                                   start_new_session=True)
    try:
        _wait_ready(process, log_path, ready)
        yield process
    finally:
        stop_process(process)


def _wait_ready(process: subprocess.Popen, log_path: Path, ready: Callable[[], bool] | None) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while ready is not None and not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise ProcessError(f"{process.args[:4]} not ready (exit code {process.poll()}); log {log_path}:\n"
                               + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.3)


def dask_command(*args: str) -> list[str]:
    """The ``dask`` CLI of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask")), *args]


@contextlib.contextmanager
def dask_cluster(log_dir: Path, workers: dict[str, list[str]]) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` process per entry of ``workers`` (name ->
    extra worker arguments), all on 127.0.0.1; yields the scheduler address."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = dask_command("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                             "--dashboard-address", ":0", "--no-show")
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(scheduler, log_dir / "scheduler.log", ready=lambda: _answers(address)))
        client = stack.enter_context(Client(address, timeout=30))
        for name, extra in workers.items():
            argv = dask_command("worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1",
                                "--host", "127.0.0.1", "--dashboard-address", ":0", "--no-nanny", *extra)
            stack.enter_context(running(argv, log_dir / f"worker-{name}.log"))
        client.wait_for_workers(len(workers), timeout=STARTUP_SECONDS)
        yield address


def _answers(address: str) -> bool:
    import socket

    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


@pytest.fixture(scope="module")
def two_worker_cluster(prefect_api, tmp_path_factory) -> Iterator[str]:
    """A scheduler and two single-threaded workers; ``gpu`` advertises ``GPU=1``, ``cpu`` nothing.

    Started after the Prefect server, so the workers inherit its ``PREFECT_API_URL``.
    """
    with dask_cluster(tmp_path_factory.mktemp("dask-logs"),
                      {"cpu": [], "gpu": ["--resources", "GPU=1"]}) as address:
        yield address


@pytest.fixture
def run_process():
    """:func:`running` as a fixture: ``with run_process(argv, log_path, ready=..., env=...):``."""
    return running


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint, traffic) of a local S3 server for this module; staging goes to a temporary folder."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WEIGHTZOO_STAGING_ROOT", str(tmp_path_factory.mktemp("staging-cache")))
        with s3_server(monkeypatch) as server:
            yield server
