"""The studies on a research-scale zoo: wall time and every process's peak memory, per study.

What it measures
    Each study command of the README, run as a user runs it (``weightzoo STUDY ZOO --json``,
    its own Prefect server and Dask cluster) on one zoo version, one after another:

    - projections: Gamba et al.'s hyperplane statistics of every conv layer;
    - trajectories: Loukas et al.'s measures of every traced network;
    - predict: s(W) → every varying column (linear and boosted trees, fixed split), on the
      snapshots ``--predict-snapshots`` (default: last; "all" for every snapshot);
    - meta-classify: the NWS meta-classifier on ``--meta-targets`` (default optimizer and
      activation) at the last snapshot;
    - sane probe: a SANE autoencoder on the largest layout's last snapshots, probes beside s(W).

    Per study: wall seconds, the peak RSS of each role of its process tree (the CLI/flow
    process, the Prefect server, the Dask workers; sampled from /proc, as ``scale_build.py``
    does), the machine's load average before it, its exit code and its headline.

Method
    Nothing here is a baseline comparison; the figures are what a user waits and what memory
    the machine needs. ``--only`` runs a subset; ``--json FILE`` writes every row. Each study
    caches its result in the zoo, so a second run of the same command takes seconds: run on a
    zoo without cached results (or pass ``--fresh-cache``, which removes the studies' cache
    folder, the handle's ``analyses``, first) to measure the work itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from scale_build import run_measured  # the same process-tree sampler as the build scaling

from weightzoo.cli.common import split_version
from weightzoo.io.handle import ZooHandle

STUDIES = {
    "projections": lambda zoo, a: ["projections", zoo],
    "trajectories": lambda zoo, a: ["trajectories", zoo],
    "predict": lambda zoo, a: ["predict", zoo] + (["--snapshots", a.predict_snapshots] if a.predict_snapshots else []),
    "meta-classify": lambda zoo, a: ["meta-classify", zoo, "--snapshots", "last", "--epochs", str(a.meta_epochs)]
    + [part for target in a.meta_targets.split(",") for part in ("--target", target)],
    "sane-probe": lambda zoo, a: ["sane", "probe", zoo, "--snapshots", "last", "--epochs", str(a.sane_epochs)],
}


def run_study(name: str, zoo: str, args) -> dict:
    """One study command, measured."""
    argv = [sys.executable, "-m", "weightzoo.cli"] + STUDIES[name](zoo, args) + ["--json"]
    load = os.getloadavg()[0]
    result, wall, peaks = run_measured(argv, args.interval)
    row = {"study": name, "command": " ".join(["weightzoo"] + argv[3:]), "load": load, "wall_s": round(wall, 1),
           "peak_rss_mib": peaks, "exit": result.returncode}
    if result.returncode == 0:
        try:
            summary = json.loads(result.stdout)
        except json.JSONDecodeError:
            summary = {}
        results = summary if isinstance(summary, list) else [summary]
        row["headline"] = [r.get("headline", "") for r in results if isinstance(r, dict)]
        row["rows"] = [r.get("rows", []) for r in results if isinstance(r, dict)]
    else:
        row["error"] = result.stderr[-2000:]
    return row


def main(argv=None) -> list[dict]:
    """Run the studies (see the module docstring) and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("zoo", help="ZOO or ZOO@VERSION")
    parser.add_argument("--only", help=f"comma-separated, of {','.join(STUDIES)} (default: all)")
    parser.add_argument("--predict-snapshots", default="last", help="predict's --snapshots (default: last)")
    parser.add_argument("--meta-targets", default="optimizer,activation")
    parser.add_argument("--meta-epochs", type=int, default=30)
    parser.add_argument("--sane-epochs", type=int, default=10)
    parser.add_argument("--fresh-cache", action="store_true", help="remove the zoo's study cache first")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling interval, seconds")
    parser.add_argument("--json", help="write the rows as JSON to this file")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(STUDIES)
    unknown = sorted(set(names) - set(STUDIES))
    if unknown:
        parser.error(f"--only: unknown {unknown}; known: {list(STUDIES)}")
    if args.fresh_cache:
        shutil.rmtree(ZooHandle.at(split_version(args.zoo)[0]).analyses, ignore_errors=True)
    rows = []
    for name in names:
        rows.append(run_study(name, args.zoo, args))
        row = rows[-1]
        peaks = ", ".join(f"{role} {mib:.0f}" for role, mib in row["peak_rss_mib"].items())
        print(f"{name:>14}: {row['wall_s']:8.1f} s (load {row['load']:.1f}); peak RSS MiB: {peaks}; "
              f"{'; '.join(row.get('headline', [])) or row.get('error', '')[-300:]}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
