"""The analysis commands run their flows through the session's Prefect server."""

from __future__ import annotations

import json

import pytest

from weightzoo.cli import main

pytestmark = pytest.mark.slow


def test_meta_classifier_command_runs_and_caches(prefect_api, smoke_zoo, capsys):
    argv = ["meta-classify", str(smoke_zoo), "--target", "optimizer", "--slice-length", "200", "--epochs", "1",
            "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first) == 1 and not first[0]["cached"]
    assert {row["k"] for row in first[0]["results"]} >= {"all"}
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["cached"]


def test_properties_command_reports_every_target(prefect_api, smoke_zoo, capsys):
    assert main(["predict", str(smoke_zoo), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    targets = {row["target"] for row in result["records"]}
    assert {"test_acc", "gap", "epoch", "optimizer"} <= targets
    assert all(row["status"] in ("ok", "skipped", "failed") for row in result["records"])


def test_bad_snapshot_range_is_a_clear_error(smoke_zoo, capsys):
    assert main(["meta-classify", str(smoke_zoo), "--target", "optimizer", "--snapshots", "x:y"]) == 2
    assert "--snapshots" in capsys.readouterr().err


def test_predict_one_target_and_an_unknown_target(prefect_api, smoke_zoo, capsys):
    assert main(["predict", str(smoke_zoo), "--target", "test_acc", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {row["target"] for row in result["records"]} == {"test_acc"}
    assert main(["predict", str(smoke_zoo), "--target", "no_such_column"]) != 0
    assert "no_such_column" in capsys.readouterr().err
