"""Write throughput: staging and publishing a version against ``numpy.save`` of the same bytes.

What it measures
    MB/s (float32 weight bytes) of three ways to get N models' weights onto disk:

    S  ``stage_model`` per model as a training task stages its group (one file per model,
       written under a temporary name and renamed; one filesystem sync per group of
       ``--group`` models, as ``pipelines.build.train_group`` does);
    P  ``publish_version`` of the staged models (one Icechunk commit of chunk-aligned rows,
       zstd + crc32c per chunk, then the Parquet tables, manifest and tag);
    N  the baseline: ``numpy.save`` of each model's ``[snapshot, param]`` array to its own
       file (no fsync, no checksum, no compression, no tables).

    ``S+P`` is the whole cost of storing a version; ``N/(S+P)`` is the fraction of the
    plain-file speed that the versioned, checksummed store keeps. ``verify MB/s`` is
    ``weightzoo verify`` of the published version (every chunk decoded, tables hashed).

Method
    Random normal float32 weights (zstd barely compresses them, so bytes on disk ≈ raw
    bytes). One MLP layout of about ``--params`` parameters, ``--snapshots`` snapshots. Each
    size in ``--models`` runs in a fresh temp dir, N first, then S, then P. ``--json FILE``
    also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model, sync_staging
from weightzoo.io.verify import verify_version


def staged_inputs(layout: WeightLayout, index: int, n_snapshots: int, rng) -> dict:
    """stage_model keyword arguments for one synthetic model."""
    record = {"model_id": f"m{index:06d}", "fingerprint": f"fp{index:016d}", "status": "ok", "message": "",
              "hyperparameters": {"optimizer": ["sgd", "adam"][index % 2], "lr": float(rng.uniform(1e-3, 0.1))},
              "config": {}, "training": {}, "spec_name": "bench", "layout_id": layout.layout_id,
              "n_params": layout.n_params, "code_version": "bench"}
    snapshots = [{"k": k, "epoch": k, "step": k, "train_loss": 0.0, "train_acc": 0.0, "test_loss": 0.0,
                  "test_acc": 0.0, "gap": 0.0} for k in range(n_snapshots)]
    weights = rng.standard_normal((n_snapshots, layout.n_params), dtype=np.float32)
    return {"fingerprint": record["fingerprint"], "weights": weights, "snapshots": snapshots,
            "record": record, "layout": layout}


def run_size(n_models: int, n_snapshots: int, n_params: int, group: int = 32) -> dict:
    """Time N, S and P for one zoo size; return seconds, MB and MB/s."""
    layout = WeightLayout.from_module(nn.Linear(100, max(1, n_params // 101)))
    rng = np.random.default_rng(0)
    inputs = [staged_inputs(layout, i, n_snapshots, rng) for i in range(n_models)]
    megabytes = sum(x["weights"].nbytes for x in inputs) / 2**20
    tmp = Path(tempfile.mkdtemp(prefix="wz-write-bench-"))
    try:
        start = time.perf_counter()
        (tmp / "npy").mkdir()
        for x in inputs:
            np.save(tmp / "npy" / f"{x['fingerprint']}.npy", x["weights"])
        numpy_s = time.perf_counter() - start
        start = time.perf_counter()
        zoo = ZooHandle.at(tmp / "zoo")
        fingerprints = []
        for start_group in range(0, len(inputs), group):
            fingerprints += [stage_model(zoo.staging, StagedRecord.from_dict(x["record"]), weights=x["weights"],
                                         snapshots=x["snapshots"], layout=x["layout"], durable=False).fingerprint
                             for x in inputs[start_group:start_group + group]]
            sync_staging(zoo.staging)
        stage_s = time.perf_counter() - start
        start = time.perf_counter()
        publish_version(zoo, PublishRequest(tuple(fingerprints)))
        publish_s = time.perf_counter() - start
        start = time.perf_counter()
        problems = verify_version(zoo, "v0001").problems
        verify_s = time.perf_counter() - start
        assert not problems, problems
        repo_mb = sum(p.stat().st_size for p in (tmp / "zoo" / "repo").rglob("*") if p.is_file()) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"models": n_models, "mb": megabytes, "repo_mb": repo_mb, "numpy_s": numpy_s, "stage_s": stage_s,
            "publish_s": publish_s, "verify_s": verify_s, "ratio": numpy_s / (stage_s + publish_s)}


def main(argv=None) -> list[dict]:
    """Time every size and print the table of rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="10,100,1000", help="comma-separated numbers of models")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--params", type=int, default=2_500)
    parser.add_argument("--group", type=int, default=32, help="models staged per filesystem sync (default: 32)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    print(f"{'models':>7}{'MB':>8}{'repo MB':>9}{'numpy MB/s':>12}{'stage MB/s':>12}{'publish MB/s':>14}"
          f"{'N/(S+P)':>9}{'publish ms/model':>17}{'verify MB/s':>12}")
    rows = []
    for n in (int(x) for x in args.models.split(",")):
        r = run_size(n, args.snapshots, args.params, args.group)
        rows.append(r)
        print(f"{n:>7}{r['mb']:>8.1f}{r['repo_mb']:>9.1f}{r['mb'] / r['numpy_s']:>12.1f}{r['mb'] / r['stage_s']:>12.1f}"
              f"{r['mb'] / r['publish_s']:>14.1f}{r['ratio']:>9.3f}{r['publish_s'] / n * 1e3:>17.2f}"
              f"{r['mb'] / r['verify_s']:>12.1f}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
