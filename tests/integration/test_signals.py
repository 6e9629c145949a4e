"""A running build listens on 127.0.0.1 only, and every process it started ends when it is
stopped by SIGTERM (timeout, Slurm, CI runners, docker stop), SIGINT or SIGHUP.

The process tree is read from /proc before and after; listening sockets from /proc/net/tcp*
matched to the tree's file descriptors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zookit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children() -> dict[int, list[int]]:
    """Every process's children (from /proc)."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            found.setdefault(parent, []).append(int(entry))
    return found


def tree(root: int) -> dict[int, str]:
    """pid → command line of ``root`` and all its descendants."""
    kids, result, todo = children(), {}, [root]
    while todo:
        pid = todo.pop()
        try:
            result[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        todo += kids.get(pid, [])
    return result


def listening_addresses(pids) -> set[str]:
    """The local addresses (``ip:port``) the given processes listen on (TCP, IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                addresses.add(_address(fields[1]))
    return addresses


def _address(hex_address: str) -> str:
    ip, port = hex_address.split(":")
    if len(ip) == 8:
        ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        ip = "::" if int(ip, 16) == 0 else ("::1" if int(ip, 16) == 1 << 120 else ip)
    return f"{ip}:{int(port, 16)}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_build_leaves_nothing_running_and_listened_on_loopback_only(signum, tmp_path):
    slow = {"name": "slow", "architecture": "mlp", "models": 2, "hyperparameters": {"dataset": "digits"},
            "training": {"epochs": 5000, "snapshots": {"count": 1}}}
    spec = tmp_path / "spec.json"
    spec.write_text(__import__("json").dumps(slow))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the command starts its own server
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    process = subprocess.Popen([sys.executable, "-m", "weightzoo.cli", "build", "--spec", str(spec), "--out",
                                str(tmp_path / "zoo"), "--workers", "1"], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (t := tree(process.pid)) and any("prefect server" in c for c in t.values())
                           and any("spawn_main" in c for c in t.values()) and t, "the server and a Dask worker", timeout=180)
        time.sleep(3)  # the worker picks up its task
        before = tree(process.pid)
        addresses = listening_addresses(before)
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        os.kill(process.pid, signum)
        assert process.wait(timeout=90) == 128 + signum
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in before),
                 "every process the build started to end", timeout=60)
        err = process.stderr.read()
        assert "Traceback" not in err, err[-3000:]
        assert "staged models are kept" in err
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
