"""Reads proportional to what is asked: one snapshot of N networks from S3, and whole-zoo reads.

What it measures (issue 15, item 5)
    A  Against the local S3 server of the tests (``tests/integration/s3_server.py``: moto's
       server app on 127.0.0.1, counting every byte it serves), a zoo of ``--models``
       networks × ``--snapshots`` snapshots is published to ``s3://zoos/bench``; then one
       snapshot of every network is read two ways, a selection
       (``zoo.select(snapshots=[k]).to_numpy()``) and a pull (``weightzoo pull ... --snapshots
       k`` as ``pull_zoo``), and the chunk bytes served are divided by N × one snapshot's
       bytes (the issue asks for at most 1.5). Reading the whole zoo is measured too (bytes
       served against the bytes stored).
    B  On local disk, the same process reads the whole weights array of a zoo of
       ``--local-models`` networks, alternating ``--repeats`` times:

       weightzoo   ``Selection.iter_models(all_snapshots=True)`` (what studies stream) and
                   ``Selection.to_numpy()`` (blocks of ≈100 samples, as Dask chunks);
       raw zarr    ``zarr.open_array(session.store, path)[:]`` of the same array (the
                   sharded array, through Zarr's own sharding codec), and of the same values
                   stored as one uncompressed chunk per model row (the simplest plain-Zarr
                   layout, written by Zarr into an Icechunk repository like the zoo's).

       MB/s are float32 bytes read per second, best of the repeats for each reader; the
       ratios weightzoo / raw zarr are what the issue asks to keep at least 0.7.

Method
    Random float32 weights of an MLP of about ``--params`` parameters. ``--json FILE``
    writes every figure; the load average is printed with each line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.reader import open_zoo
from weightzoo.io.staging import stage_models, sync_staging

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_100k import layout_of, synthetic_items  # noqa: E402  (benchmarks share their synthetic zoo)


def publish_synthetic(url, n_models: int, n_snapshots: int, n_params: int, staging: Path | None = None) -> str:
    """Stage and publish ``n_models`` synthetic networks at ``url``; the version."""
    zoo, layout, fingerprints = ZooHandle.at(url), layout_of(n_params), []
    staging = staging or zoo.staging
    for first in range(0, n_models, 32):
        items = synthetic_items(layout, first, min(32, n_models - first), n_snapshots)
        fingerprints += [r.fingerprint for r in stage_models(staging, items, durable=False)]
    sync_staging(staging)
    return publish_version(zoo, PublishRequest(tuple(fingerprints), staging=staging)).version


def proportional_reads(args) -> dict:
    """Part A: bytes the S3 server serves for one snapshot of every network, and for everything."""
    from s3_server import s3_server
    from weightzoo.pipelines.pull import pull_zoo

    work = Path(tempfile.mkdtemp(prefix="wz-snapshot-reads-"))
    try:
        with pytest.MonkeyPatch.context() as patches, s3_server(patches) as (_, traffic):
            patches.setenv("WEIGHTZOO_STAGING_ROOT", str(work / "cache"))
            url = "s3://zoos/bench"
            publish_synthetic(url, args.models, args.snapshots, args.params)
            zoo = open_zoo(url)
            snapshot_bytes = 4 * int(zoo.models["n_params"].iloc[0])
            budget = args.models * snapshot_bytes
            stored = ZooHandle.at(url).location.total_bytes("repo/chunks")
            traffic.reset()
            zoo.select(snapshots=[args.k]).to_numpy()
            selected, selected_requests = traffic.bytes_sent(containing="/chunks/"), traffic.count(containing="/chunks/")
            traffic.reset()
            pull_zoo(open_zoo(url), ZooHandle.at(work / "pulled"), snapshots=[args.k])
            pulled, pulled_requests = traffic.bytes_sent(containing="/chunks/"), traffic.count(containing="/chunks/")
            traffic.reset()
            open_zoo(url).select().to_numpy()
            everything = traffic.bytes_sent(containing="/chunks/")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"models": args.models, "snapshots": args.snapshots, "snapshot_bytes": snapshot_bytes,
              "budget_bytes": budget, "selection_bytes": selected, "selection_requests": selected_requests,
              "selection_ratio": selected / budget, "pull_bytes": pulled, "pull_requests": pulled_requests,
              "pull_ratio": pulled / budget, "whole_zoo_bytes": everything, "stored_chunk_bytes": stored,
              "whole_zoo_ratio": everything / stored}
    report(f"A: 1 of {args.snapshots} snapshots of {args.models} networks from S3: selection "
           f"{result['selection_ratio']:.3f} and pull {result['pull_ratio']:.3f} × N × one snapshot's bytes "
           f"({selected_requests} and {pulled_requests} chunk GETs); whole zoo {result['whole_zoo_ratio']:.3f} "
           f"× the stored bytes")
    return result


def sequential_reads(args) -> dict:
    """Part B: whole-zoo reads through weightzoo and through raw zarr, alternating, same process."""
    work = Path(tempfile.mkdtemp(prefix="wz-sequential-reads-"))
    try:
        publish_synthetic(work / "zoo", args.local_models, args.snapshots, args.params, staging=work / "staging")
        zoo = open_zoo(work / "zoo")
        layout_id = zoo.models["layout_id"].iloc[0]
        session = zoo.handle.repository().readonly_session(tag=zoo.version)
        plain = _plain_copy(zoo, work / "plain")
        readers = {
            "weightzoo iter_models": lambda: sum(w.nbytes for _, _, w in
                                                 open_zoo(work / "zoo").select().iter_models(all_snapshots=True)),
            "weightzoo to_numpy": lambda: open_zoo(work / "zoo").select().to_numpy().nbytes,
            "raw zarr, same array": lambda: zarr.open_array(session.store, path=f"weights/{layout_id}", mode="r")[:].nbytes,
            "raw zarr, one chunk per row": lambda: zarr.open_array(plain, path="weights", mode="r")[:].nbytes,
        }
        best = {name: 0.0 for name in readers}
        for _ in range(args.repeats):
            for name, read in readers.items():
                _clear_reader_caches()
                start = time.perf_counter()
                nbytes = read()
                best[name] = max(best[name], nbytes / 2**20 / (time.perf_counter() - start))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"models": args.local_models, "mb_per_s": best,
              "ratios": {f"{ours} / {raw}": best[ours] / best[raw] for ours in list(best)[:2] for raw in list(best)[2:]}}
    for name, rate in best.items():
        report(f"B: {name:<30} {rate:8.1f} MB/s")
    for name, ratio in result["ratios"].items():
        report(f"B: {name:<58} {ratio:6.2f}")
    return result


def _plain_copy(zoo, path: Path):
    """The zoo's weights as one uncompressed chunk per model row, written by Zarr into an
    Icechunk repository configured like a zoo's (every chunk its own object); its store."""
    import icechunk

    from weightzoo.io.version_weights import read_rows

    rows = sorted(int(r) for r in zoo.models["row"])
    values = np.stack(read_rows(zoo.handle, zoo.version, zoo.models["layout_id"].iloc[0], rows))
    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)), config)
    session = repo.writable_session("main")
    array = zarr.create_array(session.store, name="weights", shape=values.shape, chunks=(1,) + values.shape[1:],
                              dtype="float32", compressors=None, fill_value=np.nan)
    array[:] = values
    session.commit("plain copy")
    return repo.readonly_session("main").store


def _clear_reader_caches() -> None:
    from weightzoo.io.version_weights import clear_readers

    clear_readers()  # no warm shard indexes from the previous read


def report(text: str) -> None:
    """Print a line with the load average."""
    print(f"{text}  [load {os.getloadavg()[0]:.1f}]", flush=True)


def main(argv=None) -> dict:
    """Run parts A and B; print the ratios; optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=200, help="networks of the S3 zoo (part A)")
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--params", type=int, default=2_464)
    parser.add_argument("--k", type=int, default=7, help="the snapshot read in part A")
    parser.add_argument("--local-models", type=int, default=1_000, help="networks of the local zoo (part B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    result = {"A": proportional_reads(args), "B": sequential_reads(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
