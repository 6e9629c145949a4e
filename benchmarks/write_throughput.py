"""Write throughput: staging and publishing a version against ``numpy.save`` of the same bytes.

What it measures
    MB/s (float32 weight bytes) of three ways to get N models' weights onto disk:

    S  ``stage_models`` per group of ``--group`` models, as ``pipelines.build.train_group``
       stages a trained group: one ``.wzs`` file per group written under a temporary name,
       one name (hard link) per model, one filesystem sync per group;
    P  ``publish_version`` of the staged models: every staged file read once and checked
       (sha256), one Icechunk commit of whole shards (one crc32c per (model, snapshot)
       chunk), the Parquet tables, the manifest and the tag. The dataset card (plots; about a
       second of matplotlib import and drawing per process, whatever the size) is timed
       apart as C, from the publish's own step timings (``PublishResult.seconds``);
    N  the baseline: ``numpy.save`` of each model's ``[snapshot, param]`` array to its own
       file (no fsync, no checksum, no tables).

    ``N/(S+P)`` is the fraction of the plain-file speed that the versioned, checksummed,
    crash-safe store keeps (issue 15 asks for at least 0.5); ``N/(S+P+C)`` counts the card
    too. ``verify MB/s`` is ``weightzoo verify`` of the published version (every chunk and
    index checksum, tables hashed).

Method
    Random normal float32 weights. One MLP layout of about ``--params`` parameters,
    ``--snapshots`` snapshots. Each size in ``--models`` runs ``--repeats`` times, each in a
    fresh temp dir, N then S then P then verify; every phase starts after an untimed
    ``os.sync()`` so that no phase pays for the previous one's dirty pages. The table shows
    the median of each figure over the repeats (the ratios are medians of the per-repeat
    ratios) and the load average. ``--json FILE`` writes every repeat's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import StageItem, stage_models, sync_staging
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


def _timed(phase) -> float:
    os.sync()  # this phase does not pay for the previous one's dirty pages
    start = time.perf_counter()
    phase()
    return time.perf_counter() - start


def run_once(inputs: list[dict], group: int) -> dict:
    """Time N, S, P (and the card) and verify once, in a fresh temp dir; seconds and sizes."""
    tmp = Path(tempfile.mkdtemp(prefix="wz-write-bench-"))
    zoo, fingerprints, result = ZooHandle.at(tmp / "zoo"), [], {}
    try:
        (tmp / "npy").mkdir()
        numpy_s = _timed(lambda: [np.save(tmp / "npy" / f"{x['fingerprint']}.npy", x["weights"]) for x in inputs])

        def stage():
            for first in range(0, len(inputs), group):
                items = [StageItem(StagedRecord.from_dict(x["record"]), x["weights"], x["snapshots"], x["layout"])
                         for x in inputs[first:first + group]]
                fingerprints.extend(r.fingerprint for r in stage_models(zoo.staging, items, durable=False))
                sync_staging(zoo.staging)
        stage_s = _timed(stage)
        publish_s = _timed(lambda: result.update(published=publish_version(zoo, PublishRequest(tuple(fingerprints)))))
        verify_s = _timed(lambda: result.update(problems=verify_version(zoo, "v0001").problems))
        assert not result["problems"], result["problems"]
        repo_mb = sum(p.stat().st_size for p in (tmp / "zoo" / "repo").rglob("*") if p.is_file()) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    card_s = result["published"].seconds["card"]
    return {"numpy_s": numpy_s, "stage_s": stage_s, "publish_s": publish_s - card_s, "card_s": card_s,
            "verify_s": verify_s, "repo_mb": repo_mb, "publish_steps": result["published"].seconds,
            "ratio": numpy_s / (stage_s + publish_s - card_s), "ratio_with_card": numpy_s / (stage_s + publish_s),
            "load_average": os.getloadavg()[0]}


def run_size(n_models: int, n_snapshots: int, n_params: int, group: int = 32, repeats: int = 3) -> dict:
    """Every repeat of one zoo size, and the medians."""
    layout = WeightLayout.from_module(nn.Linear(100, max(1, n_params // 101)))
    rng = np.random.default_rng(0)
    inputs = [staged_inputs(layout, i, n_snapshots, rng) for i in range(n_models)]
    megabytes = sum(x["weights"].nbytes for x in inputs) / 2**20
    runs = [run_once(inputs, group) for _ in range(repeats)]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "publish_steps"}
    return {"models": n_models, "mb": megabytes, "n_params": layout.n_params, "snapshots": n_snapshots,
            "group": group, **median, "runs": runs}


def main(argv=None) -> list[dict]:
    """Time every size and print the table of rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="10,100,1000", help="comma-separated numbers of models")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--params", type=int, default=2_500)
    parser.add_argument("--group", type=int, default=32, help="models staged per filesystem sync (default: 32)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; medians are shown (default: 3)")
    parser.add_argument("--json", help="also write every run's figures as JSON to this file")
    args = parser.parse_args(argv)
    print(f"{'models':>7}{'MB':>7}{'repo MB':>9}{'numpy MB/s':>12}{'stage MB/s':>12}{'publish MB/s':>14}"
          f"{'card s':>8}{'N/(S+P)':>9}{'N/(S+P+C)':>11}{'verify MB/s':>13}{'load':>6}")
    rows = []
    for n in (int(x) for x in args.models.split(",")):
        r = run_size(n, args.snapshots, args.params, args.group, args.repeats)
        rows.append(r)
        print(f"{n:>7}{r['mb']:>7.1f}{r['repo_mb']:>9.1f}{r['mb'] / r['numpy_s']:>12.1f}{r['mb'] / r['stage_s']:>12.1f}"
              f"{r['mb'] / r['publish_s']:>14.1f}{r['card_s']:>8.2f}{r['ratio']:>9.3f}{r['ratio_with_card']:>11.3f}"
              f"{r['mb'] / r['verify_s']:>13.1f}{r['load_average']:>6.1f}", flush=True)
    print(f"(medians of {args.repeats} runs per size; ratios per run: "
          + "; ".join(f"{r['models']}: " + ", ".join(f"{run['ratio']:.2f}" for run in r["runs"]) for r in rows) + ")")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
