"""One real Prefect server for a command (or a test session) and everything it starts.

Where ``PREFECT_API_URL`` is not set, Prefect would start a temporary in-process server
in the CLI *and in every Dask worker process*, each with its own database. Instead we
start one ``prefect server`` on 127.0.0.1 and export its URL, so that the flow and every
worker (which inherit the environment) report to the same server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

STARTUP_SECONDS = 90


class ServerError(RuntimeError):
    """The local Prefect server did not come up; the message carries its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: str | Path | None = None, *, quiet: bool = True) -> Iterator[str]:
    """Use ``PREFECT_API_URL`` if set; otherwise run a local server for the duration.

    Yields the API URL. ``home`` sets ``PREFECT_HOME`` (server database, results).
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    if home is not None:
        Path(home).mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")) / f"server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = _start(port, log_path)
    try:
        _wait_healthy(url, process, log_path)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        stop_process(process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _start(port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    env.pop("PREFECT_API_URL", None)
    log = open(log_path, "wb")
    # its own session (a Ctrl-C in the terminal is the CLI's to handle, which stops it in
    # order), and it dies with the CLI even when the CLI is killed outright (SIGKILL)
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"prefect server exited with {process.returncode}; log {log_path}:\n"
                              + log_path.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    stop_process(process)
    raise ServerError(f"prefect server not healthy after {STARTUP_SECONDS}s; log {log_path}")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate ``process``, killing it if it does not exit within 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
