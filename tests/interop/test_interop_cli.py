"""``weightzoo import`` / ``export``: in-process runs, reports, exit codes; one run through Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from interopkit import make_nws_source
from weightzoo.cli import main
from weightzoo.interop.export import read_bundle
from weightzoo.io.reader import open_zoo


def test_import_in_process_prints_the_report_and_export_writes_both_formats(tmp_path, nws_source, capsys):
    source, _ = nws_source
    (source / "0003" / "stat.bin").unlink()  # metrics missing: still imported, with null metrics
    (source / "0002" / "weights" / "020.bin").unlink()
    zoo = tmp_path / "zoo"
    assert main(["import", "nws", str(source), "--out", str(zoo), "--in-process"]) == 0
    out = capsys.readouterr().out
    assert "2 networks imported" in out and "1 rejected" in out and "020.bin: missing file" in out
    assert open_zoo(zoo).snapshots.groupby("model_id")["test_acc"].count().sort_values().tolist() == [0, 20]
    assert main(["export", f"{zoo}@v0001", "--format", "bundle", "--out", str(tmp_path / "b.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_models"] == 2
    assert sum(w.shape[0] for w in read_bundle(tmp_path / "b.npz")["weights"].values()) == 2
    assert main(["export", str(zoo), "--format", "modelzoos", "--out", str(tmp_path / "mz")]) == 0
    assert len(list((tmp_path / "mz").glob("*/checkpoint_*/checkpoints"))) == 40
    capsys.readouterr()
    assert main(["export", str(zoo), "--format", "smallcnnzoo", "--out", str(tmp_path / "scz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "smallcnnzoo"
    assert np.load(tmp_path / "scz" / "weights.npy").shape[0] == 40


def test_bad_sources_and_targets_exit_2_with_one_line(tmp_path, nws_source, capsys):
    source, _ = nws_source
    assert main(["import", "torch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z"), "--in-process"]) == 2
    assert "nowhere: no such file or directory" in capsys.readouterr().err
    for weights in source.glob("0*/weights/001.bin"):
        weights.write_bytes(b"\0" * 12)
    assert main(["import", "nws", str(source), "--out", str(tmp_path / "z"), "--in-process", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_rejected"] == 3 and "none of the 3 networks" in captured.err
    assert not (tmp_path / "z" / "versions").exists()
    make_nws_source(tmp_path / "ok")
    assert main(["import", "nws", str(tmp_path / "ok"), "--out", str(tmp_path / "z"), "--in-process"]) == 0
    assert main(["export", str(tmp_path / "z"), "--format", "bundle", "--out", str(source)]) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.slow
def test_import_flow_runs_through_prefect_and_reuses_what_is_staged(prefect_api, tmp_path):
    source = tmp_path / "nws"
    make_nws_source(source, n=3)
    argv = [sys.executable, "-m", "weightzoo.cli", "import", "nws", str(source), "--out", str(tmp_path / "zoo"),
            "--workers", "1", "--chunk-size", "2", "--json"]
    first = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    first_report = json.loads(first.stdout)
    assert first_report["version"] == "v0001" and first_report["n_reused"] == 0
    staged = {p: p.stat().st_mtime_ns for p in (tmp_path / "zoo" / "staging").glob("*.wzs")}
    again = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert report["version"] == "v0001" and report["n_reused"] == 3, "staging is the one cache"
    assert {p: p.stat().st_mtime_ns for p in staged} == staged, "nothing was staged again"
    zoo = open_zoo(tmp_path / "zoo")
    assert len(zoo.models) == 3 and np.isfinite(zoo.weights(zoo.models["model_id"].iloc[0])).all()
