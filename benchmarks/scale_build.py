"""Build scaling: a real `weightzoo build` at several sizes, where its time goes and how much
memory every process it starts holds.

What it measures
    For each ``--models`` size, ``weightzoo build --preset P --models N --json`` into one zoo
    (each size extends the previous one with ``--extend``, as a user grows a zoo; ``--fresh``
    builds each size into its own zoo instead), then ``weightzoo verify``:

    - the stages the build reports (planning, start-up, training and staging summed over the
      tasks, the training phase, publishing and the card in it) and its wall time;
    - the peak resident memory of every process of the build's tree (the CLI/flow process,
      the Prefect server, the Dask scheduler, each worker), sampled from /proc every
      ``--interval`` seconds: the peak per role is the largest any process of that role had;
    - ``weightzoo verify`` of the new version: seconds and peak RSS.

    The overhead fraction is everything outside the tasks' training and staging: 1 − (tasks'
    training + staging) / (wall × workers).

Method
    Sizes run in increasing order; the machine's load average is recorded before each. The
    figures go to ``--json FILE`` and, with ``--plot FILE``, a plot of seconds and peak RSS
    against the number of models. Nothing here is a baseline comparison: the ratio printed
    is the overhead fraction (the target is at most 0.10 at 10,000 networks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROLES = (("prefect server", "prefect"), ("dask scheduler", "scheduler"), ("dask worker", "worker"),
         ("spawn_main", "worker"))


def process_tree(root: int) -> list[int]:
    """The pids of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_and_role(pid: int) -> tuple[int, str] | None:
    """(resident bytes, role) of a process, or None once it is gone."""
    try:
        status = open(f"/proc/{pid}/status").read()
        command = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    role = next((name for marker, name in ROLES if marker in command), "cli")
    if "resource_tracker" in command:
        role = "helper"
    return rss, role


class PeakMemory:
    """Samples a process tree's RSS in a thread; ``peaks`` holds the largest RSS seen per role."""

    def __init__(self, root: int, interval: float) -> None:
        self.root, self.interval, self.peaks = root, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in process_tree(self.root):
                found = rss_and_role(pid)
                if found:
                    rss, role = found
                    self.peaks[role] = max(self.peaks.get(role, 0), rss)
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        """Stop sampling; the peaks in MiB per role."""
        self._stop.set()
        self._thread.join()
        return {role: round(value / 2**20, 1) for role, value in sorted(self.peaks.items())}


def run_measured(argv: list[str], interval: float) -> tuple[subprocess.CompletedProcess, float, dict]:
    """Run a command, sampling its process tree's memory; (result, wall seconds, peak MiB per role)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(process.pid, interval)
    out, err = process.communicate()
    wall = time.perf_counter() - started
    return subprocess.CompletedProcess(argv, process.returncode, out, err), wall, memory.stop()


def measure_size(zoo: Path, preset: str, models: int, args, extend: bool) -> dict:
    """One build and one verify at ``models``."""
    weightzoo = [sys.executable, "-m", "weightzoo.cli"]
    build = weightzoo + ["build", "--preset", preset, "--models", str(models), "--out", str(zoo), "--json",
                         "--workers", str(args.workers)] + (["--extend"] if extend else [])
    load = os.getloadavg()[0]
    result, wall, peaks = run_measured(build, args.interval)
    if result.returncode:
        raise SystemExit(f"build of {models} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    verify, verify_wall, verify_peaks = run_measured(weightzoo + ["verify", str(zoo), "--json", "--quiet"],
                                                     args.interval)
    stages = report["stages"]
    busy = stages.get("training", 0) + stages.get("staging", 0)
    return {"models": models, "new": report.get("trained", 0) + report.get("reused", 0), "load": load,
            "wall_s": wall, "stages": stages, "peak_rss_mib": peaks,
            "overhead_fraction": 1 - busy / (wall * args.workers),
            "verify_s": verify_wall, "verify_ok": verify.returncode == 0, "verify_peak_rss_mib": verify_peaks}


def plot(rows: list[dict], path: Path) -> None:
    """Seconds per stage and peak RSS per role against the number of models."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    seconds, memory = figure.subplots(1, 2)
    sizes = [row["models"] for row in rows]
    for stage in ("planning", "start_up", "training_phase", "publishing", "card"):
        seconds.plot(sizes, [row["stages"].get(stage, 0) for row in rows], marker="o", label=stage)
    seconds.plot(sizes, [row["verify_s"] for row in rows], marker="o", label="verify")
    roles = sorted({role for row in rows for role in row["peak_rss_mib"]})
    for role in roles:
        memory.plot(sizes, [row["peak_rss_mib"].get(role, 0) for row in rows], marker="o", label=role)
    for axes, label in ((seconds, "seconds"), (memory, "peak RSS (MiB)")):
        axes.set_xscale("log")
        axes.set_xlabel("models in the zoo")
        axes.set_ylabel(label)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv=None) -> list[dict]:
    """Build at every size and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--models", default="1000,4000,10000", help="comma-separated sizes, increasing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--zoo", help="the zoo folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--fresh", action="store_true", help="build each size into its own zoo")
    parser.add_argument("--extend", action="store_true",
                        help="the first size extends the zoo's latest version too (continue a series, e.g. "
                             "--models 10000 on a zoo of 4,000)")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling interval, seconds")
    parser.add_argument("--json", help="write the figures as JSON to this file")
    parser.add_argument("--plot", help="write a plot to this PNG file")
    args = parser.parse_args(argv)
    root = Path(args.zoo) if args.zoo else Path(tempfile.mkdtemp(prefix="wz-scale-")) / "zoo"
    rows = []
    try:
        for index, models in enumerate(int(x) for x in args.models.split(",")):
            zoo = root.with_name(f"{root.name}-{models}") if args.fresh else root
            rows.append(measure_size(zoo, args.preset, models, args, extend=(index > 0 or args.extend) and not args.fresh))
            _print(rows[-1])
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2))
    finally:
        if not args.zoo:
            shutil.rmtree(root.parent, ignore_errors=True)
    if args.plot:
        plot(rows, Path(args.plot))
    return rows


def _print(row: dict) -> None:
    stages = ", ".join(f"{name} {value:.1f}" for name, value in row["stages"].items())
    peaks = ", ".join(f"{role} {mib:.0f}" for role, mib in row["peak_rss_mib"].items())
    print(f"{row['models']:>7} models ({row['new']} new, load {row['load']:.1f}): wall {row['wall_s']:.1f} s; "
          f"{stages}; overhead fraction {row['overhead_fraction']:.3f}\n        peak RSS MiB: {peaks}; verify "
          f"{row['verify_s']:.1f} s ({'ok' if row['verify_ok'] else 'PROBLEMS'})", flush=True)


if __name__ == "__main__":
    main()
