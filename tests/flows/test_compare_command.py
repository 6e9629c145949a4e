"""``weightzoo compare`` runs its flow through the session's Prefect server on a tiny zoo with
a planted signal, writes its table, curve, plot and summary, and caches its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from weightzoo.analysis.compare import run_compare
from weightzoo.analysis.protocol import Protocol
from weightzoo.cli import main
from weightzoo.io.reader import open_zoo
from zookit import planted_zoo

pytestmark = pytest.mark.slow


def _weightzoo(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightzoo.cli", *argv], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare") / "zoo"
    planted_zoo(root, n_models=30)
    return root


def test_compare_writes_the_table_plot_and_summary_and_caches(prefect_api, zoo_root):
    argv = ["compare", str(zoo_root), "--target", "planted", "--methods", "majority,stats-linear,stats-boosted",
            "--folds", "3", "--workers", "1", "--json"]
    first = _weightzoo(*argv)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    assert result["study"] == "compare" and not result["cached"]
    assert {"results.parquet", "results.csv", "curve.parquet", "curve.csv", "compare.png", "summary.md",
            "predictions.parquet"} <= set(result["files"])
    table = pd.read_csv(Path(result["path"]) / "results.csv")
    assert list(table.columns[:8]) == ["target", "method", "metric", "mean", "ci_low", "ci_high", "chance",
                                       "n_networks"]
    assert set(table["protocol"]) == {"3-fold cv by network (seed 0)"} and set(table["snapshots"]) == {"1:"}
    linear = table[(table["method"] == "stats-linear") & (table["metric"] == "accuracy")].iloc[0]
    assert linear["ci_low"] > linear["chance"] and linear["n_networks"] == 30
    curve = pd.read_parquet(Path(result["path"]) / "curve.parquet")
    assert sorted(curve["k"].unique()) == [1, 2]
    summary = (Path(result["path"]) / "summary.md").read_text()
    assert "interval above chance: stats-linear" in summary and "3-fold cv by network" in summary
    # the same parameters from Python read the command's cached result back (no second Dask cluster)
    again = run_compare(open_zoo(zoo_root), "planted", methods=["majority", "stats-linear", "stats-boosted"],
                        protocol=Protocol(folds=3))
    assert again.cached and again.path == result["path"] and again.rows == result["rows"]


def test_compare_names_a_bad_option(zoo_root, capsys):
    assert main(["compare", str(zoo_root), "--target", "planted", "--methods", "majority,nope"]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["compare", str(zoo_root), "--target", "planted", "--protocol", "loo"]) == 2
    assert "--protocol" in capsys.readouterr().err
    assert main(["compare", str(zoo_root), "--target", "no_such_column"]) == 2
    assert "--target" in capsys.readouterr().err
