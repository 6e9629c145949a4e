"""The study result contract and its cache: typed, JSON-safe, validated when read back, atomic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from weightzoo.analysis.cache import cached_result, result_dir
from weightzoo.analysis.results import SUMMARY, StudyResult
from weightzoo.errors import RecordError
from weightzoo.io.atomic import INCOMPLETE
from weightzoo.io.reader import open_zoo
from zookit import publish_staged, stage_inputs, staged_inputs


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "zoo"
    publish_staged(root, [stage_inputs(root, staged_inputs("mlp", i)).fingerprint for i in range(2)])
    return open_zoo(root)


def test_a_result_is_json_safe_on_construction(tmp_path):
    result = StudyResult("demo", tmp_path, headline="h", rows=[{"x": np.float32(0.5), "n": np.int64(3)}],
                         details={"nan": math.nan, "path": tmp_path / "a.png", "pair": (1, 2), "array": np.arange(2)})
    assert result.path == str(tmp_path) and result.rows == [{"x": 0.5, "n": 3}]
    assert result.details == {"nan": None, "path": str(tmp_path / "a.png"), "pair": [1, 2], "array": [0, 1]}
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False)) == result.to_dict()
    with pytest.raises(RecordError, match="rows"):
        StudyResult("demo", tmp_path, rows=["not a row"])
    with pytest.raises(RecordError, match="not JSON"):
        StudyResult("demo", tmp_path, details={"what": object()})


def test_the_cache_runs_once_and_reads_the_same_result_back(zoo):
    calls = []

    def run(out):
        calls.append(out)
        (out / "table.txt").write_text("x")
        return StudyResult.of_directory("demo", out, headline="one row", rows=[{"a": 1}],
                                        details={"table": str(out / "table.txt")})

    first = cached_result(zoo, "demo", {"p": 1}, run)
    target = result_dir(zoo, "demo", {"p": 1})
    assert not first.cached and first.path == str(target) and len(calls) == 1
    assert first.details["table"] == str(target / "table.txt"), "paths point at the final directory"
    assert {"parameters.json", SUMMARY, "table.txt"} == set(first.files)
    again = cached_result(zoo, "demo", {"p": 1}, run)
    assert again.cached and len(calls) == 1 and again.to_dict() == {**first.to_dict(), "cached": True}


def test_a_failed_study_leaves_nothing_and_a_wrong_return_is_refused(zoo):
    def crash(out):
        (out / "half.txt").write_text("x")
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        cached_result(zoo, "demo", {"p": 2}, crash)
    with pytest.raises(TypeError, match="not a StudyResult"):
        cached_result(zoo, "demo", {"p": 3}, lambda out: {"path": str(out)})
    folder = result_dir(zoo, "demo", {"p": 2}).parent
    assert not any(INCOMPLETE in path.name for path in folder.iterdir())
    assert not result_dir(zoo, "demo", {"p": 2}).exists() and not result_dir(zoo, "demo", {"p": 3}).exists()


@pytest.mark.parametrize("summary, message", [
    ("not json", "cannot read a study result"), ("[1]", "expected a JSON object"),
    ('{"study": "demo", "rows": [], "details": {}}', r"lacks \['headline'\]"),
    ('{"study": "demo", "headline": "h", "rows": {}, "details": {}}', "StudyResult.rows: expected list"),
])
def test_a_damaged_summary_is_named_when_read_back(zoo, summary, message):
    parameters = {"damaged": summary}
    cached_result(zoo, "demo", parameters, lambda out: StudyResult.of_directory("demo", out, headline="h", rows=[],
                                                                                details={}))
    target = result_dir(zoo, "demo", parameters)
    (target / SUMMARY).write_text(summary)
    with pytest.raises(RecordError, match=message) as error:
        cached_result(zoo, "demo", parameters, None)
    assert str(target / SUMMARY) in str(error.value)
