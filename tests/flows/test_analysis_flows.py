"""The analysis commands run their flows through the session's Prefect server.

The commands run in a subprocess: Prefect binds its console log handler to the
``sys.stderr`` of the first flow run in a process, and pytest's per-test capture streams
are closed after each test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from weightzoo.cli import main
from weightzoo.io.reader import open_zoo

pytestmark = pytest.mark.slow


def _weightzoo(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightzoo.cli", *argv], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_meta_classify_command_runs_and_caches(prefect_api, smoke_zoo):
    argv = ["meta-classify", str(smoke_zoo), "--target", "optimizer", "--slice-length", "200", "--epochs", "1",
            "--json"]
    first = _weightzoo(*argv)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads(first.stdout)
    assert len(results) == 1 and not results[0]["cached"]
    assert {row["k"] for row in results[0]["details"]["results"]} >= {"all"}
    assert {row["class"] for row in results[0]["details"]["per_class"]} == {"adam", "sgd"}
    assert results[0]["study"] == "meta-classifier" and results[0]["headline"].startswith("optimizer")
    again = _weightzoo(*argv)
    assert again.returncode == 0 and json.loads(again.stdout)[0]["cached"]


def test_predict_reports_every_target_or_the_one_asked_for(prefect_api, smoke_zoo):
    everything = _weightzoo("predict", str(smoke_zoo), "--json")
    assert everything.returncode == 0, everything.stderr[-2000:]
    records = json.loads(everything.stdout)["details"]["records"]
    assert {"test_acc", "gap", "epoch", "optimizer"} <= {row["target"] for row in records}
    assert all(row["status"] in ("ok", "skipped", "failed") for row in records)
    one = _weightzoo("predict", str(smoke_zoo), "--target", "test_acc", "--json")
    assert {row["target"] for row in json.loads(one.stdout)["details"]["records"]} == {"test_acc"}
    unknown = _weightzoo("predict", str(smoke_zoo), "--target", "no_such_column")
    assert unknown.returncode == 2 and "no_such_column" in unknown.stderr
    raw = _weightzoo("predict", str(smoke_zoo), "--target", "test_acc", "--features", "raw", "--workers", "1",
                     "--json")
    assert raw.returncode == 0, raw.stderr[-2000:]
    result = json.loads(raw.stdout)
    assert {row["features"] for row in result["details"]["records"]} == {"raw"}
    assert {row["layout_id"] for row in result["details"]["records"]} == set(open_zoo(smoke_zoo).models["layout_id"])
    assert json.loads(_weightzoo("predict", str(smoke_zoo), "--target", "test_acc", "--features", "raw",
                                 "--json").stdout)["cached"]


def test_bad_snapshot_range_is_a_clear_error(smoke_zoo, capsys):
    for text, message in (("x:y", "--snapshots"), ("3:1", "0 <= A < B")):
        with pytest.raises(SystemExit) as exit_info:  # the parser's --snapshots type refuses it
            main(["meta-classify", str(smoke_zoo), "--target", "optimizer", "--snapshots", text])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert main(["meta-classify", str(smoke_zoo), "--target", "optimizer", "--snapshots", "0:99"]) == 2
    assert "ask for k=3" in capsys.readouterr().err
    assert main(["meta-classify", str(smoke_zoo), "--target", "no_such_column"]) == 2
    assert "no_such_column" in capsys.readouterr().err
