"""Read throughput: the prefetching torch batch iterator against a plain zarr loop.

What it measures
    Batches/s, samples/s and MB/s (bytes of the delivered float32 weights) of one shuffled
    epoch over every (model, snapshot) sample of a synthetic zoo, two ways, for whole weight
    vectors and for random slices (``--slice-length``, default 5000):

    I  ``Selection.torch_batches``: whole storage chunks (model rows) read once per epoch,
       a bounded cache of rows, a background thread preparing ``prefetch`` batches ahead.
    Z  the obvious baseline: one ``array[row, k]`` (or ``array[row, k, offset:offset+L]``)
       zarr read per sample, in the same shuffled order, stacked into a torch tensor per
       batch. The array is opened once (the read-only Icechunk session of the version),
       which favours the baseline over re-opening per sample.

Method
    ``--models`` models × ``--snapshots`` snapshots × ``--params`` float32 params (random
    normal, so zstd barely compresses them) are staged and published into a temp dir. Each
    way runs once untimed (page cache, imports, thread start-up), then ``--repeats`` timed
    epochs; the best epoch is kept. Z reads every sample's whole chunk (one chunk = one
    model row), so it decompresses each row once per snapshot; I decompresses it once.

Reading the ratio
    ``I/Z`` > 1 means the iterator delivers the same samples faster. Both run back to back
    in one process, so the ratio is less sensitive to machine load than the absolute rates.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model
from weightzoo.io.version_weights import weights_reader

from write_throughput import staged_inputs  # the same synthetic models (this folder is on sys.path)


def build_zoo(root: Path, n_models: int, n_snapshots: int, n_params: int) -> None:
    """Stage and publish ``n_models`` random models of one MLP layout with ~``n_params`` params."""
    hidden = max(1, n_params // 101)  # Linear(100, hidden): 101 * hidden params
    layout = WeightLayout.from_module(nn.Linear(100, hidden))
    rng = np.random.default_rng(0)
    zoo = ZooHandle.at(root)
    fingerprints = []
    for i in range(n_models):
        x = staged_inputs(layout, i, n_snapshots, rng)
        fingerprints.append(stage_model(zoo.staging, StagedRecord.from_dict(x["record"]), weights=x["weights"],
                                        snapshots=x["snapshots"], layout=x["layout"]).fingerprint)
    publish_version(zoo, PublishRequest(tuple(fingerprints)))


def iterator_epoch(selection, batch_size: int, slice_length, epoch: int) -> tuple[int, int]:
    """One epoch of torch_batches: (batches, bytes delivered)."""
    batches = selection.torch_batches(batch_size, slice_length=slice_length, label="optimizer",
                                      seed=0, epoch=epoch, prefetch=2)
    count = size = 0
    for batch in batches:
        count += 1
        size += batch["weights"].numel() * 4
    return count, size


def zarr_epoch(selection, batch_size: int, slice_length, epoch: int) -> tuple[int, int]:
    """The baseline: one zarr read per sample in a shuffled order, stacked per batch."""
    rows = selection.rows
    arrays = {lid: weights_reader(selection.handle, selection.version, lid).array for lid in rows.layout_id.unique()}
    lengths = rows.layout_id.map(selection.feature_lengths).to_numpy()
    rng = np.random.default_rng([0, epoch])
    order = rng.permutation(len(rows))
    labels = torch.from_numpy(selection.label_values("optimizer"))
    layout_ids, model_rows, ks = rows.layout_id.to_numpy(), rows.row.to_numpy(), rows.k.to_numpy()
    count = size = 0
    for start in range(0, len(order), batch_size):
        vectors = []
        for i in order[start:start + batch_size]:
            array = arrays[layout_ids[i]]
            if slice_length is None:
                vectors.append(array[int(model_rows[i]), int(ks[i])])
            else:
                offset = int(rng.integers(0, lengths[i] - slice_length + 1))
                vectors.append(array[int(model_rows[i]), int(ks[i]), offset:offset + slice_length])
        weights = torch.from_numpy(np.stack(vectors))
        _ = labels[torch.from_numpy(order[start:start + batch_size])]
        count += 1
        size += weights.numel() * 4
    return count, size


def measure(run, selection, batch_size, slice_length, repeats: int) -> dict:
    """Best of ``repeats`` timed epochs after one untimed one."""
    run(selection, batch_size, slice_length, 0)
    best = None
    for epoch in range(1, repeats + 1):
        start = time.perf_counter()
        count, size = run(selection, batch_size, slice_length, epoch)
        seconds = time.perf_counter() - start
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "batches": count, "bytes": size}
    best.update(batches_per_s=best["batches"] / best["seconds"], mb_per_s=best["bytes"] / best["seconds"] / 2**20,
                samples_per_s=len(selection) / best["seconds"])
    return best


def main(argv=None) -> None:
    """Build the synthetic zoo, time both readers for whole vectors and slices, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--params", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--slice-length", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="wz-read-bench-"))
    try:
        start = time.perf_counter()
        build_zoo(tmp / "zoo", args.models, args.snapshots, args.params)
        selection = open_zoo(tmp / "zoo").select()
        size = len(selection) * selection.n_features * 4 / 2**20
        print(f"zoo: {args.models} models x {args.snapshots} snapshots x {selection.n_features} params "
              f"= {len(selection)} samples, {size:.0f} MB float32 (built in {time.perf_counter() - start:.1f} s)")
        print(f"batch size {args.batch_size}, best of {args.repeats} epochs after one warm-up\n")
        print(f"{'mode':<14}{'reader':<10}{'batches/s':>10}{'samples/s':>11}{'MB/s':>9}{'epoch s':>9}")
        for mode, length in (("whole", None), (f"slice {args.slice_length}", args.slice_length)):
            results = {name: measure(run, selection, args.batch_size, length, args.repeats)
                       for name, run in (("iterator", iterator_epoch), ("zarr loop", zarr_epoch))}
            for name, r in results.items():
                print(f"{mode:<14}{name:<10}{r['batches_per_s']:>10.1f}{r['samples_per_s']:>11.0f}"
                      f"{r['mb_per_s']:>9.1f}{r['seconds']:>9.2f}")
            ratio = results["iterator"]["batches_per_s"] / results["zarr loop"]["batches_per_s"]
            print(f"{mode:<14}{'I/Z':<10}{ratio:>10.1f}x\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
