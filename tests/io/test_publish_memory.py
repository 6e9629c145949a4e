"""A publish's memory does not grow with the number of networks it appends.

The same publish (weights, tables, card, manifest) runs in a fresh child process for 300 and
for 3,000 staged networks (8,000 parameters × 4 snapshots: 128 KB each, 384 MB in all at
3,000), and its peak RSS above the child's imports must grow by less than a few MB per
thousand networks. A publish that held a version's staged weights
in memory would need the 384 MB; one that held every row's metadata would grow by tens of MB.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import StageItem, stage_models, sync_staging

pytestmark = pytest.mark.slow

N_PARAMS, N_SNAPSHOTS, GROUP = 8_000, 4, 50
GROWTH_BUDGET_MB = 40  # peak RSS above imports may grow this much from 300 to 3,000 networks

CHILD = """
import json, resource, sys
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

zoo, fingerprints = sys.argv[1], json.loads(open(sys.argv[2]).read())
import matplotlib.pyplot, duckdb, pyarrow.parquet, zarr, icechunk  # what the publish imports
floor = rss_mb()
result = publish_version(ZooHandle.at(zoo), PublishRequest(tuple(fingerprints), specs=({"name": "memory"},)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"floor_mb": floor, "peak_mb": peak, "n_models": result.n_models}))
"""


def stage_synthetic(staging, count: int) -> list[str]:
    """Stage ``count`` networks of one layout in groups; their fingerprints."""
    layout = WeightLayout.from_module(nn.Linear(99, N_PARAMS // 100))
    rng = np.random.default_rng(count)
    fingerprints = []
    for start in range(0, count, GROUP):
        items = []
        for index in range(start, min(count, start + GROUP)):
            hyper = {"lr": float(rng.uniform(1e-3, 1e-1)), "optimizer": ["sgd", "adam"][index % 2], "seed": index}
            record = StagedRecord.from_dict({
                "model_id": f"m{index:07d}", "fingerprint": f"fp{count}-{index:08d}", "status": "ok", "message": "",
                "hyperparameters": hyper, "config": {"architecture": "memory-mlp", **hyper},
                "training": {"epochs": N_SNAPSHOTS - 1}, "spec_name": "memory", "layout_id": layout.layout_id,
                "n_params": layout.n_params, "code_version": "test-1"})
            snapshots = [{"k": k, "epoch": k, "test_acc": float(rng.uniform()), "test_loss": float(rng.uniform())}
                         for k in range(N_SNAPSHOTS)]
            weights = rng.standard_normal((N_SNAPSHOTS, layout.n_params), dtype=np.float32)
            items.append(StageItem(record, weights, snapshots, layout))
        fingerprints += [receipt.fingerprint for receipt in stage_models(staging, items, durable=False)]
    sync_staging(staging)
    return fingerprints


def publish_in_child(tmp_path, count: int) -> dict:
    zoo = tmp_path / f"zoo-{count}"
    listing = tmp_path / f"fingerprints-{count}.json"
    listing.write_text(json.dumps(stage_synthetic(zoo / "staging", count)))
    done = subprocess.run([sys.executable, "-c", CHILD, str(zoo), str(listing)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the publish of {count} networks failed: {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_publish_peak_memory_does_not_grow_with_the_number_of_networks(tmp_path):
    small, large = publish_in_child(tmp_path, 300), publish_in_child(tmp_path, 3_000)
    assert (small["n_models"], large["n_models"]) == (300, 3_000)
    growth = (large["peak_mb"] - large["floor_mb"]) - (small["peak_mb"] - small["floor_mb"])
    assert growth < GROWTH_BUDGET_MB, f"peak RSS above imports grew by {growth:.0f} MB: {small} -> {large}"
    print(f"publish peak RSS above imports: {small['peak_mb'] - small['floor_mb']:.0f} MB at 300 networks, "
          f"{large['peak_mb'] - large['floor_mb']:.0f} MB at 3,000")
