"""The geometry and dynamics study commands, end to end through Prefect and Dask.

One tiny traced CNN zoo serves all three studies; each command runs in a subprocess (see
test_analysis_flows.py for why) against the session's Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from weightzoo.pipelines.build import build_in_process

pytestmark = pytest.mark.slow

SPEC = {
    "name": "study-commands", "architecture": "nws-cnn", "models": 4,
    "sampling": {"method": "grid", "seeds": 1, "seed": 0},
    "hyperparameters": {"dataset": "digits", "activation": ["relu", "tanh"], "optimizer": ["sgd", "adam"],
                        "conv_layers": 2, "conv_width": 4, "filter_size": 3, "fc_layers": 1, "fc_width": 8,
                        "lr": 0.01, "batch_size": 64},
    "training": {"epochs": 2, "snapshots": {"count": 2}, "traces": {"tensors": ["0.bias"]}},
}


@pytest.fixture(scope="module")
def traced_cnn_zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study-commands") / "zoo"
    build_in_process(root, SPEC)
    return root


def _weightzoo(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "weightzoo.cli", *argv, "--workers", "1", "--json"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_projections_command_writes_table_and_plots_and_caches(prefect_api, traced_cnn_zoo):
    result = _weightzoo("projections", str(traced_cnn_zoo))
    assert result["details"]["n_models"] == 4 and not result["cached"]
    assert "/analyses/v0001/projections/" in result["path"]
    table = pd.read_parquet(result["details"]["table"])
    assert set(table["k"]) == {0, 1, 2} and (table.loc[table["k"] == 0, "rel_l2_from_init"] == 0).all()
    assert all(Path(p).stat().st_size > 1000 for p in result["details"]["plots"])
    assert _weightzoo("projections", str(traced_cnn_zoo))["cached"]


def test_reinit_command_spreads_networks_over_tasks(prefect_api, traced_cnn_zoo):
    result = _weightzoo("reinit", str(traced_cnn_zoo), "--resets", "2,random", "--where", "activation == 'relu'")
    table = pd.read_parquet(Path(result["path"]) / "reinit.parquet")
    assert result["details"]["n_models"] == 2 and set(table["reset"]) == {"2", "random"}
    assert (table.loc[table["reset"] == "2", "drop"] == 0).all()  # reset to the trained snapshot itself
    assert Path(result["details"]["plot"]).stat().st_size > 1000


def test_trajectories_command_measures_the_traces(prefect_api, traced_cnn_zoo):
    result = _weightzoo("trajectories", str(traced_cnn_zoo))
    assert result["details"]["n_analysed"] == 4
    table = pd.read_parquet(result["details"]["table"])
    assert (table["length_raw"] > 0).all()


def test_sane_commands_train_once_and_probe_beside_the_baseline(prefect_api, traced_cnn_zoo):
    options = ["--epochs", "1", "--token-size", "8", "--window", "8", "--d-model", "32", "--layers", "1"]
    trained = _weightzoo("sane", "train", str(traced_cnn_zoo), *options)
    assert trained["details"]["epochs"] == 1 and not trained["cached"]
    parameters = json.loads((Path(trained["details"]["model"]).parent / "parameters.json").read_text())
    assert (parameters["d_model"], parameters["n_layers"]) == (32, 1)
    embedded = _weightzoo("sane", "embed", str(traced_cnn_zoo), *options)
    assert embedded["cached"] and embedded["details"]["embeddings"] == trained["details"]["embeddings"]
    assert len(pd.read_parquet(embedded["details"]["embeddings"])) == 4 * 3  # models × snapshots
    probed = _weightzoo("sane", "probe", str(traced_cnn_zoo), *options, "--target", "test_acc")
    assert {row["features"] for row in probed["details"]["records"]} == {"sane", "stats"}
    sampled = _weightzoo("sane", "sample", str(traced_cnn_zoo), *options, "--n", "2")
    table = pd.read_parquet(sampled["details"]["table"])
    assert (table["kind"] == "sampled").sum() == 2 and (table["kind"] == "random").sum() == 2
