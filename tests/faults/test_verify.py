"""A flipped byte in a stored chunk or table is found and named: by the readers (model and
snapshots) and by ``weightzoo verify`` (every chunk, every table checksum)."""

from __future__ import annotations

import json

import pytest

from faultkit import chunk_files, flip_byte, load_io_test_module, publish
from zookit import flip_inner_chunk_byte
from weightzoo.cli import main
from weightzoo.io.reader import open_zoo
from weightzoo.errors import CorruptChunkError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.verify import verify_version

pytestmark = pytest.mark.faults


@pytest.fixture
def zoo(zoo_root, stage):
    """v0001: three conv nets and two MLPs (3 snapshots each); v0002 adds one MLP."""
    publish(zoo_root, stage("conv", range(3)) + stage("mlp", range(2)))
    publish(zoo_root, stage("conv", range(3)) + stage("mlp", range(3)))
    return open_zoo(zoo_root)


def damaged_model(zoo) -> tuple[str, str]:
    """Flip a byte of one inner chunk; return (model_id, layout_id) of the one model that fails to read."""
    row, k = flip_inner_chunk_byte(zoo, chunk_files(zoo.location.local_path())[0])
    assert k == 0, "the first chunk of a shard is snapshot 0 of its first row"
    failing = []
    for model in zoo.models.itertuples():
        try:
            zoo.weights(model.model_id)
        except CorruptChunkError as error:
            failing.append((model.model_id, model.layout_id, str(error)))
    assert len(failing) == 1, f"exactly one model holds the flipped chunk: {failing}"
    model_id, layout_id, message = failing[0]
    assert repr(model_id) in message and "snapshot k=0)" in message and f"weights/{layout_id}" in message
    return model_id, layout_id


def test_a_clean_zoo_verifies_every_chunk_and_table(zoo, zoo_root, capsys):
    report = verify_version(ZooHandle.at(zoo_root), "v0002")
    assert report.problems == [] and report.tables_checked == 3
    assert report.models_checked == len(zoo.models) == 6
    assert report.chunks_checked == zoo.models["n_snapshots"].sum() == 18, "one chunk per (model, snapshot)"
    assert report.bytes_read == sum(zoo.weights(m).nbytes for m in zoo.models["model_id"])

    assert main(["verify", f"{zoo_root}", "--all"]) == 0
    out, err = capsys.readouterr()
    assert f"{zoo_root}@v0001: ok (3 tables, 5 models, 15 chunks" in out and f"{zoo_root}@v0002: ok" in out
    assert "verify v0002: 6/6 rows" in err, "progress goes to stderr"


def test_flipped_chunk_byte_is_named_by_readers_and_verify(zoo, zoo_root, capsys):
    model_id, layout_id = damaged_model(zoo)

    selection = zoo.select(status=None, layout_id=layout_id)
    with pytest.raises(CorruptChunkError, match=rf"model '{model_id}' \(row \d+, snapshot k=0\)"):
        selection.to_numpy()
    assert zoo.select(status=None, layout_id=layout_id, snapshots=[1, 2]).to_numpy().shape[0] > 0, \
        "a selection without the damaged snapshot reads"

    report = verify_version(ZooHandle.at(zoo_root), "v0002")
    (problem,) = report.problems
    assert (problem.kind, problem.model_id, problem.snapshots) == ("chunk", model_id, "snapshot k=0")
    assert problem.file.startswith(f"weights/{layout_id} shard c/") and "crc32c" in problem.message
    assert report.models_checked == 6, "the other chunks are still checked"

    assert main(["verify", f"{zoo_root}@v0002", "--json", "--quiet"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert [p["model_id"] for p in result["versions"][0]["problems"]] == [model_id]


def test_changed_table_fails_its_checksum(zoo, zoo_root, capsys):
    table = zoo_root / "versions" / "v0001" / "snapshots.parquet"
    flip_byte(table, offset=100)  # inside the data pages: still a parquet file, other bytes
    assert main(["verify", f"{zoo_root}@v0001", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "v0001: table versions/v0001/snapshots.parquet: sha256" in out
    assert "1 PROBLEMS" in out
    assert main(["verify", f"{zoo_root}@v0002", "--quiet"]) == 0, "v0002 has its own tables"


def test_missing_manifest_and_tables_are_reported(zoo, zoo_root):
    (zoo_root / "versions" / "v0002" / "layouts.parquet").unlink()
    (problem,) = verify_version(ZooHandle.at(zoo_root), "v0002").problems
    assert (problem.kind, problem.file, problem.message) == ("table", "versions/v0002/layouts.parquet", "missing")
    (zoo_root / "versions" / "v0001" / "manifest.json").write_text("{not json")
    (problem,) = verify_version(ZooHandle.at(zoo_root), "v0001").problems
    assert problem.kind == "manifest" and "unreadable" in problem.message


@pytest.mark.parametrize("argv, message", [
    (["verify", "{root}/nowhere"], "is not a weightzoo store"),
    (["verify", "{root}/zoo@v0042"], "'v0042' is not published"),
    (["verify", "{root}/zoo@v0001", "--all"], "--all verifies every version"),
])
def test_bad_verify_arguments_exit_2_with_one_line(zoo, tmp_path, capsys, argv, message):
    assert main([a.format(root=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_trace_chunks_are_checked_and_named(zoo_root, stage, make_inputs):
    from zookit import stage_inputs

    make_trace = load_io_test_module("test_io_traces.py").make_trace
    traced = []
    for index in range(2):
        inputs = make_inputs("mlp", index)
        inputs["record"]["training"]["traces"] = {"tensors": ["0.bias"], "every": 1}
        stage_inputs(zoo_root, inputs, traces=make_trace(inputs["layout"], ["0.bias"], 5, seed=index))
        traced.append(inputs["record"]["model_id"])
    publish(zoo_root, [make_inputs("mlp", i)["fingerprint"] for i in range(2)] + stage("conv", [0]))
    report = verify_version(ZooHandle.at(zoo_root), "v0001")
    assert report.problems == [] and report.models_checked == 3
    assert report.chunks_checked == 3 * 3 + 2, "3 snapshots of 3 models and 2 trace rows"

    for chunk in chunk_files(zoo_root):
        flip_byte(chunk)
    problems = verify_version(ZooHandle.at(zoo_root), "v0001").problems
    assert sorted(p.model_id for p in problems if p.kind == "trace") == sorted(traced)
    assert {p.model_id for p in problems if p.kind == "chunk"} == set(traced) | {"conv-000"}
    assert all(p.snapshots == "trace points 0..4" for p in problems if p.kind == "trace")
