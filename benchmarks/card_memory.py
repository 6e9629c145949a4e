"""Dataset card: peak memory and time of writing a version's card, from 1,000 to 100,000 networks.

What it measures
    For each ``--models`` N, a synthetic version of N networks × ``--snapshots`` snapshots
    and its parent (the first 95 % of the networks, 1 in 500 of them in another split) are
    written as Parquet files; then, each in a fresh process:

    card      ``weightzoo.io.card.write_card`` of the version (its parent's tables given as
              files): wall seconds of the call and the process's peak RSS (``VmHWM``);
    baseline  what a card built from DataFrames starts with: ``pd.read_parquet`` of the
              version's and the parent's models and snapshots tables (peak RSS).

    ``card/baseline`` < 1 means the card needs less memory than merely holding its inputs in
    pandas. ``floor`` is the card process's peak RSS after its imports, before the call.

Method
    Tables are generated with NumPy in blocks of 10,000 networks (row groups), with the
    columns of a published version (:mod:`weightzoo.io.tables`): a log-uniform ``lr``, a
    uniform ``dropout``, categorical ``optimizer``/``activation``/``batch_size``, ``seed``,
    two datasets, 2 % of the runs not ``ok`` with NaN metrics after they diverged, and
    JSON config/training columns of a realistic length. ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from weightzoo.io import tables
from weightzoo.io.records import Manifest, SplitSettings

BLOCK = 10_000
SPEC = {"name": "synthetic", "architecture": "nws-cnn", "sampling": {"method": "random", "seed": 0},
        "hyperparameters": {"dataset": {"categorical": ["digits", "mnist5k"]},
                            "optimizer": {"categorical": ["sgd", "momentum", "adam", "rmsprop"]},
                            "lr": {"log-uniform": [3e-4, 3e-2]}, "batch_size": {"categorical": [128, 32]},
                            "activation": {"categorical": ["relu", "tanh", "gelu"]},
                            "dropout": {"uniform": [0.0, 0.3]}, "conv_width": {"fixed": 8}}}
CHILD = """
import json, sys, time
from pathlib import Path
folder, mode = Path(sys.argv[1]), sys.argv[2]
def peak_mb():
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
if mode == "card":
    from weightzoo.io.card import write_card
    from weightzoo.io.records import Manifest
    import matplotlib.figure, duckdb, pandas
    floor = peak_mb()
    manifest = Manifest.from_json((folder / "manifest.json").read_bytes(), "manifest.json")
    start = time.perf_counter()
    write_card(folder / "out", {n: folder / f"{n}.parquet" for n in ("models", "snapshots", "layouts")},
               manifest, {n: folder / f"parent-{n}.parquet" for n in ("models", "snapshots")})
    seconds = time.perf_counter() - start
else:
    import pandas as pd
    floor = peak_mb()
    start = time.perf_counter()
    frames = [pd.read_parquet(folder / f"{p}{n}.parquet") for p in ("", "parent-") for n in ("models", "snapshots")]
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "floor_mb": floor}))
"""


def write_synthetic_version(folder: Path, n_models: int, n_snapshots: int = 20) -> None:
    """Write ``models``, ``snapshots`` and ``layouts.parquet``, the parent's ``parent-models``
    and ``parent-snapshots.parquet`` and ``manifest.json`` of a synthetic version into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    n_parent = n_models * 95 // 100
    writers = {}
    try:
        for start in range(0, n_models, BLOCK):
            models, snapshots = _block(start, min(start + BLOCK, n_models), n_snapshots, n_parent)
            parent = models.slice(0, max(0, min(n_parent - start, models.num_rows)))
            moved = np.arange(start, start + parent.num_rows) % 500 == 7
            parent = parent.set_column(parent.schema.get_field_index("split"), "split",
                                       pa.array(np.where(moved, "val", parent.column("split").to_numpy(False)), pa.string()))
            parent_snapshots = snapshots.slice(0, parent.num_rows * n_snapshots)
            for name, table in (("models", models), ("snapshots", snapshots), ("parent-models", parent),
                                ("parent-snapshots", parent_snapshots)):
                if name not in writers:
                    writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
                writers[name].write_table(table)
    finally:
        for writer in writers.values():
            writer.close()
    layouts = [{"layout_id": layout, "index": i, "name": f"t{i}", "shape": [8, 8], "offset": 64 * i,
                "length": 64, "layer": i, "role": "weight", "kind": "linear"} for layout in ("L0", "L1") for i in range(4)]
    pq.write_table(tables.layouts_table(layouts), folder / "layouts.parquet")
    manifest = Manifest(version="v0002", parent="v0001", icechunk_snapshot_id="SYNTHETIC", created_at="2026-01-01",
                        counts={"models": n_models, "snapshots": n_models * n_snapshots}, split=SplitSettings(),
                        tables={}, specs=[SPEC])
    (folder / "manifest.json").write_bytes(manifest.to_json())


def _block(start: int, stop: int, n_snapshots: int, n_parent: int) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(start)
    n = stop - start
    ids = np.array([f"m{i:07d}" for i in range(start, stop)], dtype=object)
    status = rng.choice(["ok", "diverged", "failed"], n, p=[0.98, 0.015, 0.005])
    hyper = {"dataset": rng.choice(["digits", "mnist5k"], n), "optimizer": rng.choice(SPEC["hyperparameters"][
        "optimizer"]["categorical"], n), "lr": 10 ** rng.uniform(np.log10(3e-4), np.log10(3e-2), n),
        "batch_size": rng.choice([32, 128], n), "activation": rng.choice(["relu", "tanh", "gelu"], n),
        "dropout": rng.uniform(0.0, 0.3, n), "conv_width": np.full(n, 8), "seed": rng.integers(0, 2**31, n)}
    config = [json.dumps({"architecture": "nws-cnn", "conv_layers": 2, "conv_width": 8, "filter_size": 3, "seed": int(s),
                          "lr": float(lr), "fc_width": 32}, sort_keys=True) for s, lr in zip(hyper["seed"], hyper["lr"])]
    models = {"model_id": ids, "fingerprint": [f"{i:064x}" for i in range(start, stop)],
              "layout_id": np.where(np.arange(n) % 2, "L1", "L0"), "row": np.arange(start, stop) // 2, **hyper,
              "split": rng.choice(tables.SPLITS, n, p=[0.7, 0.15, 0.15]), "status": status,
              "message": np.where(status == "ok", "", "loss is nan"), "n_params": np.full(n, 2464),
              "n_snapshots": np.full(n, n_snapshots), "n_trace_steps": np.zeros(n, dtype=np.int64),
              "steps_per_epoch": pa.nulls(n, pa.int64()), "spec_name": np.full(n, "synthetic"),
              "config_json": config, "training_json": np.full(n, json.dumps({"epochs": n_snapshots - 1, "device": "cpu",
                                                                              "deterministic": True, "split_seed": 0})),
              "version_added": np.where(np.arange(start, stop) < n_parent, "v0001", "v0002")}
    k = np.tile(np.arange(n_snapshots), n)
    accuracy = np.clip(0.1 + 0.8 * (1 - np.exp(-k / 5)) + rng.normal(0, 0.05, k.size), 0, 1)
    accuracy[(np.repeat(status != "ok", n_snapshots)) & (k > n_snapshots // 2)] = np.nan
    snapshots = {"model_id": np.repeat(ids, n_snapshots), "k": k, "epoch": k.astype(float), "step": 100 * k,
                 "train_loss": 1 - accuracy, "train_acc": accuracy, "test_loss": 1.1 - accuracy,
                 "test_acc": accuracy - 0.02, "gap": np.full(k.size, 0.02)}
    return pa.table(models), pa.Table.from_pydict(snapshots, schema=tables.SNAPSHOT_SCHEMA)


def measure(folder: Path, mode: str) -> dict:
    """Run the card (``mode="card"``) or the baseline in a fresh process: seconds and peak RSS in MB."""
    # run in the version's folder: ``-c`` puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode], capture_output=True, text=True,
                            check=True, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    """Generate each size, measure the card and the baseline, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="1000,10000,100000", help="comma-separated numbers of networks")
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--no-baseline", action="store_true", help="measure the card only")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it (one size only)")
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'models':>8}{'snapshots':>10}{'card s':>8}{'card MB':>9}{'floor MB':>10}{'baseline MB':>13}{'card/baseline':>15}")
    for n in (int(x) for x in args.models.split(",")):
        folder = args.keep or Path(tempfile.mkdtemp(prefix="wz-card-bench-"))
        try:
            write_synthetic_version(folder, n, args.snapshots)
            card = measure(folder, "card")
            base = None if args.no_baseline else measure(folder, "baseline")
            row = {"models": n, "snapshots": n * args.snapshots, "card_seconds": card["seconds"],
                   "card_peak_mb": card["peak_mb"], "floor_mb": card["floor_mb"],
                   "baseline_peak_mb": base and base["peak_mb"], "load_average": os.getloadavg()[0]}
            rows.append(row)
            ratio = f"{card['peak_mb'] / base['peak_mb']:>14.2f}x" if base else f"{'-':>15}"
            print(f"{n:>8}{n * args.snapshots:>10}{card['seconds']:>8.2f}{card['peak_mb']:>9.0f}{card['floor_mb']:>10.0f}"
                  f"{(base or {}).get('peak_mb', float('nan')):>13.0f}{ratio}", flush=True)
        finally:
            if args.keep is None:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
