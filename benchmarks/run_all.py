"""Run every benchmark, one after another, each in its own process; print and save the output.

    python benchmarks/run_all.py [--quick] [--only NAME[,NAME]] [--log FILE]

``--quick`` uses small sizes (a few minutes on 2 cores); the default sizes are the ones
reported in docs/benchmarks.md. Each benchmark prints its own ratios against its baseline;
this script adds the machine's load before and after each and the wall time it took.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name → (full arguments, quick arguments)
BENCHMARKS = {
    "train_throughput": (["--arch", "mlp", "--dataset", "digits", "--models", "8,16,32", "--epochs", "2"],
                         ["--arch", "mlp", "--dataset", "digits", "--models", "4,16", "--epochs", "1"]),
    "read_throughput": ([], ["--models", "16", "--snapshots", "5", "--params", "5000", "--repeats", "1"]),
    "write_throughput": (["--models", "10,100,1000"], ["--models", "10,100"]),
    "metadata_query": (["--models", "10,1000,100000"], ["--models", "10,1000,10000", "--repeats", "2"]),
    "orchestration_overhead": (["--models", "32"], ["--models", "8", "--max-group", "2"]),
}


def run(name: str, arguments: list[str], log) -> int:
    """Run one benchmark script, streaming its output to stdout and the log; return its exit code."""
    header = (f"\n=== {name} {' '.join(arguments)} (load average {os.getloadavg()[0]:.1f}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})")
    print(header, flush=True)
    log.write(header + "\n")
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        print(line, end="", flush=True)
        log.write(line)
    code = process.wait()
    footer = f"--- {name}: exit {code}, {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}"
    print(footer, flush=True)
    log.write(footer + "\n")
    return code


def main(argv=None) -> int:
    """Run the chosen benchmarks; exit non-zero if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--log", type=Path, default=Path("benchmarks-latest.log"))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    failed = []
    with open(args.log, "w") as log:
        for name in names:
            if run(name, BENCHMARKS[name][1 if args.quick else 0], log):
                failed.append(name)
    print(f"\n{len(names) - len(failed)}/{len(names)} benchmarks ran; output saved to {args.log}"
          + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
