"""Metadata query time: pandas against DuckDB on a version's Parquet tables, up to 100,000 models.

What it measures
    Wall time of three typical questions asked of ``models.parquet`` and
    ``snapshots.parquet``, each answered from the files (reading included) two ways:

    pandas  ``pd.read_parquet`` (only the needed columns) and DataFrame operations;
    DuckDB  one SQL query over the Parquet files (``duckdb.sql``), as in the README.

    Q1 filter: models with optimizer 'adam' and lr < 0.01, counted by activation;
    Q2 join: mean last-snapshot test accuracy by optimizer (snapshots ⋈ models);
    Q3 lookup: every snapshot row of one model_id.

Method
    Tables are generated for the benchmark with weightzoo's own table builders
    (``weightzoo.io.tables``), so column types match a published version: ``--models``
    models (default 10, 1,000 and 100,000) × ``--snapshots`` snapshots each, seeded random
    hyperparameters and metrics. Each query runs once untimed, then ``--repeats`` times;
    the best time is kept. ``pandas/duckdb`` > 1 means DuckDB is faster.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from weightzoo.io import tables


def write_tables(folder: Path, n_models: int, n_snapshots: int) -> dict:
    """Generate and write models.parquet and snapshots.parquet; return their sizes in MB."""
    rng = np.random.default_rng(0)
    optimizers, activations = np.array(["sgd", "adam", "rmsprop"]), np.array(["relu", "tanh", "gelu"])
    models, snapshots = [], []
    for i in range(n_models):
        model_id = f"m{i:07d}"
        record = {"model_id": model_id, "fingerprint": f"fp{i:016d}", "layout_id": f"L{i % 4}", "status": "ok",
                  "hyperparameters": {"optimizer": str(rng.choice(optimizers)), "lr": float(10 ** rng.uniform(-4, -1)),
                                      "activation": str(rng.choice(activations)), "batch_size": int(rng.choice([32, 64])),
                                      "seed": i},
                  "config": {"seed": i}, "training": {"epochs": n_snapshots - 1}, "spec_name": "bench",
                  "n_params": 2464}
        models.append(tables.model_row(record, row=i // 4, split="train", n_snapshots=n_snapshots,
                                       version_added="v0001"))
        accuracy = np.sort(rng.uniform(0.1, 0.99, n_snapshots))
        snapshots += tables.snapshot_rows(model_id, [
            {"k": k, "epoch": k, "step": 100 * k, "train_loss": float(1 - a), "train_acc": float(a),
             "test_loss": float(1 - a), "test_acc": float(a - 0.02), "gap": 0.02} for k, a in enumerate(accuracy)])
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(tables.models_table(models), folder / "models.parquet")
    pq.write_table(tables.snapshots_table(snapshots), folder / "snapshots.parquet")
    return {name: (folder / name).stat().st_size / 2**20 for name in ("models.parquet", "snapshots.parquet")}


def pandas_queries(folder: Path) -> dict:
    """The three queries with pandas; each a callable returning its answer."""
    m, s = folder / "models.parquet", folder / "snapshots.parquet"

    def filter_count():
        models = pd.read_parquet(m, columns=["optimizer", "lr", "activation"])
        return models[(models.optimizer == "adam") & (models.lr < 0.01)].groupby("activation").size()

    def join_mean():
        snaps = pd.read_parquet(s, columns=["model_id", "k", "test_acc"])
        last = snaps[snaps.k == snaps.k.max()]
        models = pd.read_parquet(m, columns=["model_id", "optimizer"])
        return last.merge(models, on="model_id").groupby("optimizer").test_acc.mean()

    def lookup():
        return pd.read_parquet(s, filters=[("model_id", "==", "m0000007")])
    return {"Q1 filter": filter_count, "Q2 join": join_mean, "Q3 lookup": lookup}


def duckdb_queries(folder: Path) -> dict:
    """The same three queries as DuckDB SQL over the files."""
    m, s = f"'{folder / 'models.parquet'}'", f"'{folder / 'snapshots.parquet'}'"
    sql = {
        "Q1 filter": f"select activation, count(*) from {m} where optimizer = 'adam' and lr < 0.01 group by activation",
        "Q2 join": f"select optimizer, avg(test_acc) from {s} s join {m} using (model_id) "
                   f"where k = (select max(k) from {s}) group by optimizer",
        "Q3 lookup": f"select * from {s} where model_id = 'm0000007'",
    }
    return {name: (lambda q=q: duckdb.sql(q).fetchall()) for name, q in sql.items()}


def best_time(query, repeats: int) -> float:
    """Best wall time of ``repeats`` runs after one untimed run."""
    query()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        query()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> list[dict]:
    """Generate tables for each size, time the queries both ways, print times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="10,1000,100000", help="comma-separated numbers of models")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'models':>8}{'query':>11}{'pandas ms':>11}{'duckdb ms':>11}{'pandas/duckdb':>15}")
    for n in (int(x) for x in args.models.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="wz-meta-bench-"))
        try:
            start = time.perf_counter()
            sizes = write_tables(tmp, n, args.snapshots)
            print(f"{n:>8} models: tables generated in {time.perf_counter() - start:.1f} s, "
                  f"models {sizes['models.parquet']:.2f} MB, snapshots {sizes['snapshots.parquet']:.2f} MB")
            duck = duckdb_queries(tmp)
            for name, query in pandas_queries(tmp).items():
                p, d = best_time(query, args.repeats), best_time(duck[name], args.repeats)
                rows.append({"models": n, "query": name, "pandas_s": p, "duckdb_s": d})
                print(f"{n:>8}{name:>11}{p * 1e3:>11.1f}{d * 1e3:>11.1f}{p / d:>14.2f}x", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
