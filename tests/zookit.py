"""Helpers every test module may import (``import zookit``; tests/ is on sys.path through its
conftest): tiny staged models of two layouts (a conv net and an MLP) with random weights,
the one publish with a test spec, and crash injection into the publish and pull protocols.

The package has no fault hooks of its own: the crashes here wrap its internal steps.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from torch import nn

from weightzoo.core.layout import WeightLayout
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import Receipt, SplitSettings, StagedRecord
from weightzoo.io.staging import stage_model


def conv_net() -> nn.Module:
    """A 1×6×6-input CNN with 3 classes."""
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def mlp() -> nn.Module:
    """A 4-input MLP with 2 outputs."""
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))


def wide_mlp() -> nn.Module:
    """The MLP with 6 hidden units: a second layout beside :func:`mlp`."""
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))


ARCHITECTURES = {"conv": conv_net, "mlp": mlp, "wide": wide_mlp}


def build_from_config(config) -> nn.Module:
    """The builder that load_model gets in these tests."""
    return ARCHITECTURES[config["architecture"]]()


def model_id_of(architecture: str, index: int) -> str:
    """The model_id staged for (architecture, index)."""
    return f"{architecture}-{index:03d}"


def fingerprint_of(architecture: str, index: int, n_snapshots: int) -> str:
    """A fake fingerprint: stable for the same staged content."""
    key = f"{architecture}:{index}:{n_snapshots}"
    return "fp" + hashlib.sha256(key.encode()).hexdigest()[:16]


def staged_inputs(architecture: str, index: int, n_snapshots: int = 3, status: str = "ok") -> dict:
    """Keyword arguments for stage_model: seeded random weights and metrics."""
    layout = WeightLayout.from_module(ARCHITECTURES[architecture]())
    rng = np.random.default_rng([index, len(architecture), n_snapshots])
    weights = rng.standard_normal((n_snapshots, layout.n_params)).astype(np.float32)
    model_id = model_id_of(architecture, index)
    fingerprint = fingerprint_of(architecture, index, n_snapshots)
    hyperparameters = {"lr": float(rng.uniform(1e-3, 1e-1)), "batch_size": int(rng.choice([16, 32])),
                       "augment": bool(index % 2), "optimizer": ["sgd", "adam"][index % 2],
                       "dataset": "mnist" if architecture == "conv" else "digits"}
    if architecture in ("mlp", "wide"):
        hyperparameters["width"] = 5 if architecture == "mlp" else 6  # absent for conv models: a null column
    snapshots = [_snapshot(k, rng, diverged=status == "diverged" and k == n_snapshots - 1)
                 for k in range(n_snapshots)]
    config = {"architecture": architecture, **hyperparameters}
    record = {"model_id": model_id, "fingerprint": fingerprint, "status": status, "message": "",
              "hyperparameters": hyperparameters, "config": config,
              "training": {"epochs": n_snapshots - 1}, "spec_name": "tiny",
              "layout_id": layout.layout_id, "n_params": layout.n_params, "code_version": "test-1"}
    return {"fingerprint": fingerprint, "weights": weights, "snapshots": snapshots,
            "record": record, "layout": layout}


def stage_inputs(zoo_root, inputs: dict, traces=None) -> Receipt:
    """stage_model of ``staged_inputs(...)`` into the zoo's staging folder."""
    return stage_model(zoo_root / "staging", StagedRecord.from_dict(inputs["record"]), weights=inputs["weights"],
                       snapshots=inputs["snapshots"], layout=inputs["layout"], traces=traces)


def publish_staged(zoo_root, fingerprints, *, specs=({"name": "tiny"},), message: str = "", extend: bool = True,
                   split_seed: int | None = None, split_fractions=None, staging=None) -> str:
    """The one publish, with a test spec; the version's name (the parent's when nothing was new)."""
    split = None
    if split_seed is not None or split_fractions is not None:
        split = SplitSettings(split_seed or 0, tuple(split_fractions or (0.7, 0.15, 0.15)))
    return publish_version(ZooHandle.at(zoo_root), PublishRequest(
        tuple(fingerprints), specs=tuple(specs), message=message, split=split, keep_parent=extend,
        staging=staging)).version


CRASH_POINTS = ("after_commit", "before_rename", "before_tag")


class SimulatedCrash(RuntimeError):
    """Raised where :func:`inject_crash` makes a publish die."""


def inject_crash(monkeypatch, point: str) -> None:
    """Make publishes die at ``point`` of the protocol until the test (or ``monkeypatch.undo()``)
    ends: after the Icechunk commit, before the version folder appears (locally the rename; in
    object storage the manifest upload), or before the tag. The package itself has no hooks:
    the crash wraps its internal steps."""
    from weightzoo.io import atomic, location, publish

    def crash(*args, **kwargs):
        raise SimulatedCrash(f"simulated crash at {point}")

    def after(function):
        def wrapped(*args, **kwargs):
            function(*args, **kwargs)
            crash()
        return wrapped

    if point == "after_commit":
        monkeypatch.setattr(publish, "_commit_weights", after(publish._commit_weights))
    elif point == "before_rename":
        monkeypatch.setattr(atomic, "_move_into_place", crash)
        write = location.ZooLocation.write_bytes
        monkeypatch.setattr(location.ZooLocation, "write_bytes", lambda self, relative, data: (
            crash() if relative.endswith("manifest.json") else write(self, relative, data)))
    elif point == "before_tag":
        monkeypatch.setattr(publish, "_tag", crash)
    else:
        raise ValueError(f"unknown crash point {point!r}; known: {CRASH_POINTS}")


def crash_pull_after(monkeypatch, n: int) -> None:
    """Make pulls die (SimulatedCrash) once ``n`` models have been staged by this process."""
    from weightzoo.pipelines import pull

    stage_one, staged = pull._stage_one, []

    def counted(*args, **kwargs):
        digest = stage_one(*args, **kwargs)
        staged.append(digest)
        if len(staged) >= n:
            raise SimulatedCrash(f"simulated crash after staging {len(staged)} pulled models")
        return digest
    monkeypatch.setattr(pull, "_stage_one", counted)


def _snapshot(k: int, rng, diverged: bool) -> dict:
    train_acc, test_acc = float(rng.uniform()), float(rng.uniform())
    return {"k": k, "epoch": k, "step": 10 * k, "train_loss": float("nan") if diverged else float(rng.uniform()),
            "train_acc": train_acc, "test_loss": None if diverged else float(rng.uniform()),
            "test_acc": float("nan") if diverged else test_acc, "gap": train_acc - test_acc}


def flip_member_byte(path, member: str) -> None:
    """Flip one byte in the middle of array ``member`` of the model staged as ``path`` (the
    ``.wzs`` format of weightzoo.io.staged_file: directory, then one section per model)."""
    import json
    import struct

    from weightzoo.io.staged_file import aligned

    data = bytearray(path.read_bytes())
    (length,) = struct.unpack_from("<I", data, 8)
    directory = json.loads(bytes(data[16:16 + length]))
    offset, head_length, meta_length, _ = directory["models"][path.name.removesuffix(".wzs")]
    section = aligned(16 + length) + offset
    head = json.loads(bytes(data[section:section + head_length]))
    dtype, shape, array_offset = head["arrays"][member]
    start = section + aligned(head_length + meta_length) + array_offset
    data[start + int(np.prod(shape)) * np.dtype(dtype).itemsize // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def stored_rows(zoo, layout_id: str) -> list[int]:
    """Rows of ``weights/<layout_id>`` at ``zoo``'s version that hold at least one stored chunk
    (read from every shard's index: rows a publish skipped to start at a shard boundary hold none)."""
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from weightzoo.io.shards import ABSENT, ShardGeometry, decode_index

    array = zoo.weights_array(layout_id)
    geometry = ShardGeometry.of_array(array)
    assert geometry is not None, f"weights/{layout_id} is not sharded"
    rows = set()
    for i in range(-(-array.shape[0] // geometry.rows)):
        for j in range(-(-array.shape[1] // geometry.snapshots)):
            key = f"{array.store_path.path}/{array.metadata.encode_chunk_key((i, j, 0))}"
            data = sync(array.store_path.store.get(key, default_buffer_prototype(),
                                                   RangeByteRequest(0, geometry.index_bytes)))
            if data is not None:
                index = decode_index(geometry, data.as_numpy_array()).reshape(geometry.rows, geometry.snapshots, 2)
                rows.update(i * geometry.rows + r for r in np.flatnonzero((index[:, :, 0] != ABSENT).any(axis=1)))
    return sorted(int(r) for r in rows)


def flip_inner_chunk_byte(zoo, path) -> tuple[int, int]:
    """Flip the middle byte of the first stored inner chunk in shard file ``path`` of ``zoo``'s
    repository; return the (model row, snapshot k) it holds."""
    from weightzoo.io.shards import ABSENT, ShardGeometry, decode_index

    data = bytearray(path.read_bytes())
    for layout_id in zoo.models["layout_id"].unique():
        geometry = ShardGeometry.of_array(zoo.weights_array(layout_id))
        try:
            index = decode_index(geometry, np.frombuffer(bytes(data[:geometry.index_bytes]), np.uint8))
        except ValueError:
            continue  # a shard of another layout
        position = int(np.flatnonzero(index[:, 0] != ABSENT)[np.argmin(index[index[:, 0] != ABSENT, 0])])
        offset, length = (int(v) for v in index[position])
        data[offset + length // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return position // geometry.snapshots, position % geometry.snapshots
    raise AssertionError(f"{path} is not a weights shard of {zoo}")


PLANTED_SPREAD = {"low": 1.0, "high": 3.0}


def planted_zoo(root, n_models: int = 40, n_snapshots: int = 3, architectures=("mlp",)):
    """Publish ``n_models`` MLPs with known answers and open the zoo; with
    ``architectures=("mlp", "wide")`` the first half has one layout and the second half
    another (``planted`` alternates within each half). Hyperparameters:
    ``planted`` (low/high: the first layer's weights are 3x larger for high — a deterministic
    function of the weights), ``scale`` (a float multiplying the second layer's weights),
    ``shuffled`` (x/y, balanced, drawn independently of the weights) and ``rare`` (a/b, and one
    network of class c)."""
    from weightzoo.io.reader import open_zoo

    shuffled = np.random.default_rng(123).permutation(["x", "y"] * (n_models // 2) + ["x"] * (n_models % 2))
    fingerprints = []
    for i in range(n_models):
        architecture = architectures[i * len(architectures) // n_models]
        layout = WeightLayout.from_module(ARCHITECTURES[architecture]())
        first, second = layout.indices(layers=[0]), layout.indices(layers=[1])
        inputs = staged_inputs(architecture, i, n_snapshots)
        planted = ["low", "high"][i % 2]
        scale = float(np.random.default_rng([7, i]).uniform(0.5, 3.0))
        weights = inputs["weights"].copy()
        weights[:, first] *= np.float32(PLANTED_SPREAD[planted])
        weights[:, second] *= np.float32(scale)
        record = dict(inputs["record"])
        record["hyperparameters"] = dict(record["hyperparameters"], planted=planted, scale=scale,
                                         shuffled=str(shuffled[i]), rare="c" if i == 0 else ["a", "b"][i % 2])
        stage_inputs(root, dict(inputs, weights=weights, record=record))
        fingerprints.append(inputs["fingerprint"])
    publish_staged(root, fingerprints)
    return open_zoo(root)


def wait_for(condition, what: str, timeout: float = 90, interval: float = 0.1):
    """``condition()``'s first truthy value, polled every ``interval`` seconds; AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
