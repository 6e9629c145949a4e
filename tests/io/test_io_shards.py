"""The sharded weights layout: plain Zarr reads it, reads fetch what they ask for, checksums
name model and snapshot, and versions of the layout before shards stay readable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from zookit import publish_staged as publish, stored_rows

from weightzoo.errors import CorruptChunkError
from weightzoo.io import shards, store
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo
from weightzoo.io.version_weights import weights_reader
from weightzoo.io.shards import ShardGeometry, decode_chunk, decode_index, encode_shard
from weightzoo.io.staging import load_staged
from weightzoo.io.verify import verify_version
from weightzoo.io.weights import WeightsReader


def test_a_shard_decodes_to_what_was_encoded_and_absent_snapshots_are_absent():
    geometry = ShardGeometry(rows=4, snapshots=3, params=5)
    rows = [np.arange(15, dtype=np.float32).reshape(3, 5) + 100 * r for r in range(2)] + [np.ones((1, 5), np.float32)]
    data = np.frombuffer(encode_shard(geometry, rows, column=0), np.uint8)
    index = decode_index(geometry, data[:geometry.index_bytes]).reshape(4, 3, 2)
    assert data.size == geometry.index_bytes + 7 * geometry.chunk_bytes, "7 stored chunks, none for row 3"
    assert (index[2, 1:] == shards.ABSENT).all() and (index[3] == shards.ABSENT).all()
    offsets = index[:, :, 0][index[:, :, 0] != shards.ABSENT]
    assert list(np.argsort(offsets)) == [0, 3, 6, 1, 4, 2, 5], "snapshot-major: snapshot 0 of every row first"
    for r, weights in enumerate(rows):
        for k, expected in enumerate(weights):
            offset, length = (int(v) for v in index[r, k])
            np.testing.assert_array_equal(decode_chunk(geometry, data[offset:offset + length]), expected)
    damaged = data.copy()
    damaged[int(index[1, 2, 0]) + 3] ^= 1
    with pytest.raises(ValueError, match="crc32c"):
        decode_chunk(geometry, damaged[int(index[1, 2, 0]):int(index[1, 2, 0]) + geometry.chunk_bytes])


def test_geometry_targets_the_shard_size_and_bounds_the_index():
    big = ShardGeometry.choose(20, 2_464)
    assert big.rows * big.snapshots * big.chunk_bytes <= shards.SHARD_BYTES < (big.rows + 1) * 20 * big.chunk_bytes
    tiny = ShardGeometry.choose(3, 10)
    assert tiny.index_bytes <= shards.MAX_INDEX_BYTES + 4 and tiny.rows > 1
    assert ShardGeometry.choose(5, 50_000_000).rows == 1, "a huge network gets a shard of its own"


def test_plain_zarr_reads_the_arrays_that_weightzoo_writes(zoo_root, stage):
    publish(zoo_root, stage("conv", range(5)) + stage("mlp", range(3), n_snapshots=2))
    zoo = open_zoo(zoo_root)
    store_ = ZooHandle.at(zoo_root).repository().readonly_session(tag="v0001").store
    for model in zoo.models.itertuples():
        array = zarr.open_array(store_, path=f"weights/{model.layout_id}", mode="r")
        np.testing.assert_array_equal(array[model.row, :model.n_snapshots], zoo.weights(model.model_id))
        np.testing.assert_array_equal(array[model.row, 1], zoo.weights(model.model_id, 1))
    manifest = json.loads((zoo_root / "versions" / "v0001" / "manifest.json").read_text())
    assert {entry["layout"] for entry in manifest["arrays"].values()} == {shards.LAYOUT}


def test_a_snapshot_read_fetches_that_snapshot_only(zoo_root, stage):
    publish(zoo_root, stage("conv", range(40), n_snapshots=6))
    zoo = open_zoo(zoo_root)
    layout_id = zoo.models["layout_id"].iloc[0]
    reader = WeightsReader(zoo.weights_array(layout_id))
    values = reader.read(range(40), [[4]] * 40)
    chunk = reader.geometry.chunk_bytes
    assert 40 * chunk <= reader.bytes_fetched <= 1.5 * 40 * chunk
    np.testing.assert_array_equal(values[7][0], zoo.weights("conv-007", 4))
    before = reader.bytes_fetched
    reader.read(range(40))
    assert reader.bytes_fetched - before == store.ShardGeometry.of_array(reader.array).index_bytes + 240 * chunk, \
        "a whole shard is one object, fetched once"


def test_each_publish_starts_a_new_shard_and_never_rewrites_one(zoo_root, stage):
    first = stage("mlp", range(3))
    publish(zoo_root, first)
    objects = set((zoo_root / "repo" / "chunks").iterdir())
    publish(zoo_root, first + stage("mlp", range(3, 5)))
    zoo = open_zoo(zoo_root)
    layout_id = zoo.models["layout_id"].iloc[0]
    rows_per_shard = ShardGeometry.of_array(zoo.weights_array(layout_id)).rows
    assert list(zoo.models["row"]) == [0, 1, 2, rows_per_shard, rows_per_shard + 1]
    assert stored_rows(zoo, layout_id) == list(zoo.models["row"])
    assert objects < set((zoo_root / "repo" / "chunks").iterdir()), "v0001's shard is kept as it was"


def test_a_flipped_index_byte_is_found_by_verify_for_every_model_of_the_shard(zoo_root, stage):
    publish(zoo_root, stage("mlp", range(3)))
    (shard,) = (zoo_root / "repo" / "chunks").iterdir()
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x04  # inside the index: entries of rows nobody asks for
    shard.write_bytes(bytes(data))
    problems = verify_version(ZooHandle.at(zoo_root), "v0001").problems
    assert sorted(p.model_id for p in problems) == ["mlp-000", "mlp-001", "mlp-002"]
    assert all("index fails its crc32c" in p.message for p in problems)


def test_a_missing_snapshot_chunk_is_a_verify_problem(zoo_root, stage, monkeypatch):
    real = shards.encode_shard

    def drop_last_snapshot_of_row_1(geometry, rows, column):
        return real(geometry, [w if r != 1 else w[:-1] for r, w in enumerate(rows)], column)

    monkeypatch.setattr(store, "encode_shard", drop_last_snapshot_of_row_1)
    publish(zoo_root, stage("conv", range(3)))
    (problem,) = verify_version(ZooHandle.at(zoo_root), "v0001").problems
    assert (problem.model_id, problem.snapshots, problem.message) == ("conv-001", "snapshot k=2",
                                                                      "no chunk stored for this snapshot")


def test_versions_of_the_row_chunk_layout_stay_readable_and_are_resharded_on_extension(zoo_root, stage, monkeypatch):
    with monkeypatch.context() as patches:
        patches.setattr(store, "prepare_weights_array", _plain_array)
        patches.setattr(store, "RowAppender", _PlainAppender)
        publish(zoo_root, stage("conv", range(3)) + stage("mlp", range(2)))
    _drop_arrays_from_manifest(zoo_root / "versions" / "v0001" / "manifest.json")  # as written before shards
    old = open_zoo(zoo_root, "v0001")
    for model in old.models.itertuples():
        assert ShardGeometry.of_array(old.weights_array(model.layout_id)) is None, "the plain layout"
        np.testing.assert_array_equal(old.weights(model.model_id),
                                      load_staged(zoo_root / "staging", model.fingerprint).weights)
        np.testing.assert_array_equal(old.weights(model.model_id, [2]), old.weights(model.model_id)[2:])
    assert not verify_version(ZooHandle.at(zoo_root), "v0001").problems

    publish(zoo_root, stage("conv", range(5)) + stage("mlp", range(2)))
    new, old = open_zoo(zoo_root, "v0002"), open_zoo(zoo_root, "v0001")
    conv = new.models[new.models["model_id"].str.startswith("conv")]
    assert list(conv["row"]) == [0, 1, 2, *([ShardGeometry.of_array(new.weights_array(conv["layout_id"].iloc[0])).rows
                                             + i for i in range(2)])], "old rows keep their numbers"
    for zoo in (new, old):
        for model in zoo.models.itertuples():
            np.testing.assert_array_equal(zoo.weights(model.model_id),
                                          load_staged(zoo_root / "staging", model.fingerprint).weights)
    assert ShardGeometry.of_array(new.weights_array(conv["layout_id"].iloc[0])) is not None
    assert ShardGeometry.of_array(old.weights_array(conv["layout_id"].iloc[0])) is None, "v0001 keeps its array"
    assert not verify_version(ZooHandle.at(zoo_root), "v0002").problems


def test_a_damaged_row_chunk_of_the_plain_layout_names_every_snapshot(zoo_root, stage, monkeypatch):
    with monkeypatch.context() as patches:
        patches.setattr(store, "prepare_weights_array", _plain_array)
        patches.setattr(store, "RowAppender", _PlainAppender)
        publish(zoo_root, stage("mlp", range(2)))
    chunk = sorted((zoo_root / "repo" / "chunks").iterdir())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    zoo = open_zoo(zoo_root)
    with pytest.raises(CorruptChunkError, match=r"\(row \d, snapshots k=0\.\.2\)"):
        zoo.select(status=None).to_numpy()
    (problem,) = verify_version(ZooHandle.at(zoo_root), "v0001").problems
    assert problem.snapshots == "snapshots k=0..2" and " chunk c/" in problem.file


def test_readers_share_one_bounded_index_cache_per_array(zoo_root, stage, monkeypatch):
    from weightzoo.io import weights

    publish(zoo_root, stage("conv", range(6)))
    zoo = open_zoo(zoo_root)
    reader = weights_reader(zoo.handle, zoo.version, zoo.models["layout_id"].iloc[0])
    assert reader is weights_reader(zoo.handle, zoo.version, zoo.models["layout_id"].iloc[0])
    monkeypatch.setattr(weights, "INDEX_CACHE_BYTES", 1)
    reader.read([0, 1], [[0], [1]])
    reader.read([2], [[2]])
    assert len(reader._indexes) == 1, "at least one index is kept, never more than the bound allows"


def _plain_array(repo, session, base_snapshot, layout_id, n_snapshots, n_params):
    """What a publish created before shards: one chunk per model row, bytes → zstd → crc32c."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    existing = store.open_weights_array(session.store, layout_id, mode="r+")
    if existing is not None:
        return existing
    return zarr.open_group(session.store, mode="a").create_array(
        store.weights_path(layout_id), shape=(0, n_snapshots, n_params), chunks=(1, n_snapshots, n_params),
        dtype="float32", fill_value=np.nan, compressors=[ZstdCodec(level=3), Crc32cCodec()],
        dimension_names=("model_row", "snapshot", "param"), attributes={"layout_id": layout_id})


class _PlainAppender:
    """What a publish appended before shards: NaN-padded whole rows through Zarr, from the array's end."""

    def __init__(self, array, n_rows):
        self.array, self.start = array, array.shape[0]
        array.resize((self.start + n_rows,) + array.shape[1:])
        self._next = self.start

    def add(self, weights):
        padded = np.full(self.array.shape[1:], np.nan, np.float32)
        padded[:weights.shape[0]] = weights
        self.array[self._next] = padded
        self._next += 1
        return self._next - 1

    def __enter__(self):
        return self

    def __exit__(self, *error):
        pass


def _drop_arrays_from_manifest(path):
    manifest = json.loads(path.read_text())
    manifest.pop("arrays")
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
