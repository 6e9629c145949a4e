"""The store at 100,000 networks: publish, commit, manifest bytes, open and read one network, verify, query.

What it measures (issue 15, item 4)
    A version of ``--models`` synthetic networks (random float32 weights, ``--params`` ×
    ``--snapshots`` each, with a realistic config and hyperparameters), staged in groups of
    32 and published by the one publish (real tables, a real Icechunk commit), then:

    publish   seconds per step of ``publish_version`` (weights, commit, tables, card, tag) and
              its peak RSS;
    bytes     the repository, Icechunk's manifests and snapshot, the version's manifest.json
              and tables;
    open+read one network: ``open_zoo(zoo)`` then ``zoo.weights(model_id)``, each in a fresh
              Python process (imports excluded), for ``--reads`` random models: median and worst;
    verify    ``verify_version`` (every chunk and shard index checksum, tables hashed);
    query     three ``weightzoo query`` statements (DuckDB over the tables);
    extend    a second version adding ``--extend-by`` networks: the commit of an append to a
              large array.

    ``--refs N`` adds the manifest-splitting experiment that decides the repository's
    configuration: an array of N chunk references (one per row, as networks too large to
    share a shard would have) committed with and without Icechunk's manifest splitting
    along the model-row axis (``--split`` rows per manifest); for each, the manifest bytes,
    the commit time of appending 1 % more rows, and opening plus reading one row in a fresh
    process.

Method
    One process; the phases run one after another, each after an untimed ``os.sync()``.
    The zoo lives in ``--dir`` (default: a temp dir, deleted at the end; about
    2 × models × params × snapshots × 4 bytes of disk while it runs). ``--json FILE`` writes
    every figure; the load average is printed with each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from weightzoo.core.layout import WeightLayout
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.query import run_query
from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import StageItem, stage_models, sync_staging
from weightzoo.io.verify import verify_version

GROUP = 32
QUERIES = {
    "count by optimizer": "select optimizer, count(*) from models group by optimizer",
    "last-snapshot accuracy by optimizer (join)": (
        "select m.optimizer, avg(s.test_acc) from snapshots s join models m using (model_id) "
        "where s.k = m.n_snapshots - 1 group by m.optimizer"),
    "one model's snapshots": "select * from snapshots where model_id = 'm0012345'",
}
READ_ONE = """
import json, sys, time
from weightzoo.io.reader import open_zoo
start = time.perf_counter()
zoo = open_zoo(sys.argv[1])
opened = time.perf_counter()
weights = zoo.weights(sys.argv[2])
print(json.dumps({"open_s": opened - start, "seconds": time.perf_counter() - start, "shape": list(weights.shape)}))
"""


def layout_of(n_params: int) -> WeightLayout:
    """One linear layer of about ``n_params`` parameters."""
    from torch import nn

    return WeightLayout.from_module(nn.Linear(100, max(1, n_params // 101)))


def synthetic_items(layout: WeightLayout, first: int, count: int, n_snapshots: int) -> list[StageItem]:
    """Staging inputs of models ``first`` .. ``first + count - 1`` (seeded by their index)."""
    rng = np.random.default_rng(first)
    items = []
    for index in range(first, first + count):
        hyper = {"optimizer": ["sgd", "adam", "rmsprop"][index % 3], "lr": float(10 ** rng.uniform(-4, -1)),
                 "batch_size": [32, 64, 128][index % 3], "activation": ["relu", "tanh", "gelu"][index % 3 - 1],
                 "init": ["kaiming", "xavier"][index % 2], "dropout": float(index % 4) / 10, "augment": bool(index % 2),
                 "seed": index}
        record = StagedRecord.from_dict({
            "model_id": f"m{index:07d}", "fingerprint": f"fp{index:016d}", "status": "ok", "message": "",
            "hyperparameters": hyper, "config": {"architecture": "bench-mlp", "dataset": "digits", **hyper},
            "training": {"epochs": n_snapshots - 1, "schedule": "linear"}, "spec_name": "bench-100k",
            "layout_id": layout.layout_id, "n_params": layout.n_params, "code_version": "bench"})
        accuracy = np.sort(rng.uniform(0.1, 0.99, n_snapshots))
        snapshots = [{"k": k, "epoch": k, "step": 100 * k, "train_loss": float(1 - a), "train_acc": float(a),
                      "test_loss": float(1 - a), "test_acc": float(a - 0.02), "gap": 0.02}
                     for k, a in enumerate(accuracy)]
        weights = rng.standard_normal((n_snapshots, layout.n_params), dtype=np.float32)
        items.append(StageItem(record, weights, snapshots, layout))
    return items


def stage(zoo: ZooHandle, layout: WeightLayout, first: int, count: int, n_snapshots: int) -> list[str]:
    """Stage ``count`` synthetic models in groups (one file and one sync per group); their fingerprints."""
    fingerprints = []
    for start in range(first, first + count, GROUP):
        items = synthetic_items(layout, start, min(GROUP, first + count - start), n_snapshots)
        fingerprints += [r.fingerprint for r in stage_models(zoo.staging, items, durable=False)]
        sync_staging(zoo.staging)
    return fingerprints


def timed(function):
    """(result, seconds) of ``function()``, after an untimed ``os.sync()``."""
    os.sync()
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read_one_in_fresh_process(zoo_path: Path, model_id: str) -> dict:
    """Open the latest version and read one network in a new interpreter (imports not timed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    output = subprocess.run([sys.executable, "-c", READ_ONE, str(zoo_path), model_id], capture_output=True,
                            text=True, check=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_zoo(root: Path, args) -> dict:
    """Stage, publish, read, verify, query and extend a zoo of ``args.models`` networks."""
    zoo, layout, result = ZooHandle.at(root / "zoo"), layout_of(args.params), {}
    fingerprints, result["stage_s"] = timed(lambda: stage(zoo, layout, 0, args.models, args.snapshots))
    report(f"staged {args.models} models ({args.models * layout.n_params * args.snapshots * 4 / 2**30:.2f} GiB "
           f"of float32) in {result['stage_s']:.1f} s")
    published, result["publish_s"] = timed(lambda: publish_version(zoo, PublishRequest(tuple(fingerprints))))
    result.update(publish_steps=published.seconds, publish_peak_rss_mb=peak_rss_mb())
    report(f"published {published.version} in {result['publish_s']:.1f} s: {published.seconds}; "
           f"peak RSS {result['publish_peak_rss_mb']:.0f} MB")
    repo = root / "zoo" / "repo"
    result["bytes"] = {"repo": folder_bytes(repo), "icechunk_manifests": folder_bytes(repo / "manifests"),
                       "icechunk_snapshots": folder_bytes(repo / "snapshots"),
                       "manifest_json": (root / "zoo" / "versions" / "v0001" / "manifest.json").stat().st_size,
                       **{name: (root / "zoo" / "versions" / "v0001" / name).stat().st_size
                          for name in ("models.parquet", "snapshots.parquet")},
                       "manifest_files": len(list((repo / "manifests").iterdir()))}
    report(f"bytes: {result['bytes']}")
    picks = [f"m{i:07d}" for i in np.random.default_rng(1).choice(args.models, args.reads, replace=False)]
    reads = [read_one_in_fresh_process(root / "zoo", model_id) for model_id in picks]
    seconds = [r["seconds"] for r in reads]
    result["open_read_one_s"] = {"median": statistics.median(seconds), "max": max(seconds), "all": seconds,
                                 "open_only": [r["open_s"] for r in reads]}
    report(f"open + read one network (fresh process, {args.reads} models): median "
           f"{result['open_read_one_s']['median']:.3f} s, worst {result['open_read_one_s']['max']:.3f} s")
    verified, result["verify_s"] = timed(lambda: verify_version(zoo, "v0001"))
    assert not verified.problems, verified.problems[:3]
    report(f"verify: {result['verify_s']:.1f} s for {verified.chunks_checked} chunks, "
           f"{verified.bytes_read / 2**30:.2f} GiB ({verified.bytes_read / 2**20 / result['verify_s']:.0f} MB/s)")
    opened = open_zoo(zoo)
    result["query_s"] = {name: timed(lambda: run_query(opened, sql))[1] for name, sql in QUERIES.items()}
    report("query: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in result["query_s"].items()))
    if args.extend_by:
        more = stage(zoo, layout, args.models, args.extend_by, args.snapshots)
        extended, result["extend_s"] = timed(lambda: publish_version(zoo, PublishRequest(tuple(fingerprints + more))))
        result["extend_steps"] = extended.seconds
        report(f"extend by {args.extend_by}: {extended.version} in {result['extend_s']:.1f} s: {extended.seconds}")
    return result


def measure_refs(root: Path, n_refs: int, split: int | None) -> dict:
    """The manifest-splitting experiment: ``n_refs`` chunk refs, one per row, optionally split."""
    import icechunk
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0
    if split:
        config.manifest = icechunk.ManifestConfig(splitting=icechunk.ManifestSplittingConfig.from_dict(
            {icechunk.ManifestSplitCondition.path_matches("weights/.*"): {icechunk.ManifestSplitDimCondition.Axis(0): split}}))
    path = root / f"refs-{split or 'unsplit'}"
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)), config)

    def write_rows(first: int, count: int) -> float:
        session = repo.writable_session("main")
        if first:
            array = zarr.open_array(session.store, path="weights/L", mode="r+")
        else:
            array = zarr.open_group(session.store, mode="a").create_array(
                "weights/L", shape=(0, 1, 16), chunks=(1, 1, 16), dtype="float32", compressors=None, fill_value=np.nan)
        array.resize((first + count, 1, 16))
        chunk = default_buffer_prototype().buffer.from_bytes(np.arange(16, dtype="<f4").tobytes())

        async def every():
            import asyncio
            for start in range(first, first + count, 4096):
                await asyncio.gather(*(session.store.set(f"weights/L/c/{row}/0/0", chunk)
                                       for row in range(start, min(first + count, start + 4096))))
        sync(every())
        _, seconds = timed(lambda: session.commit(f"{count} rows"))
        return seconds

    first_commit = write_rows(0, n_refs)
    append_commit = write_rows(n_refs, max(1, n_refs // 100))
    code = ("import icechunk, zarr, time, sys; icechunk.set_logs_filter('icechunk=error'); start = time.perf_counter(); "
            "repo = icechunk.Repository.open(icechunk.local_filesystem_storage(sys.argv[1])); "
            "array = zarr.open_array(repo.readonly_session('main').store, path='weights/L', mode='r'); "
            "array[int(sys.argv[2])]; print(time.perf_counter() - start)")
    read = float(subprocess.run([sys.executable, "-c", code, str(path), str(n_refs // 2)], capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1])
    result = {"split": split, "first_commit_s": first_commit, "append_commit_s": append_commit,
              "manifest_bytes": folder_bytes(path / "manifests"), "manifest_files": len(list((path / "manifests").iterdir())),
              "open_read_one_s": read}
    report(f"{n_refs} refs, split {split or 'none'}: {result}")
    return result


def report(text: str) -> None:
    """Print a line with the load average."""
    print(f"{text}  [load {os.getloadavg()[0]:.1f}]", flush=True)


def main(argv=None) -> dict:
    """Run the measurements; print them and optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--params", type=int, default=2_464, help="parameters per network (default: the demo CNN's)")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--reads", type=int, default=5, help="networks opened and read in a fresh process")
    parser.add_argument("--extend-by", type=int, default=1_000, help="networks added by a second version (0: none)")
    parser.add_argument("--refs", type=int, default=0, help="chunk refs of the manifest-splitting experiment (0: skip)")
    parser.add_argument("--split", type=int, default=10_000, help="rows per manifest when splitting")
    parser.add_argument("--skip-zoo", action="store_true", help="only the manifest-splitting experiment")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temp dir, deleted afterwards)")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="wz-store-100k-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {"models": args.models, "params": layout_of(args.params).n_params, "snapshots": args.snapshots,
              "load_average_start": os.getloadavg()[0]}
    try:
        if not args.skip_zoo:
            result["zoo"] = measure_zoo(root, args)
        if args.refs:
            result["manifest_splitting"] = [measure_refs(root, args.refs, split) for split in (None, args.split)]
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    result["load_average_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
