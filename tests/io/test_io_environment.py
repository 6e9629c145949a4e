"""Every version records how to make it again: code revision, packages, training settings, fleets."""

from __future__ import annotations

import json
import re

import torch

from weightzoo.pipelines.build import build_in_process
from weightzoo.io import environment
from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord


def test_the_manifest_records_code_packages_settings_and_fleets(smoke_zoo):
    manifest = open_zoo(smoke_zoo).manifest.to_dict()
    assert manifest["code"]["weightzoo"] and manifest["code"]["kind"] in ("git", "package")
    assert {"python", "torch", "numpy", "scikit-learn"} <= set(manifest["packages"])
    assert manifest["packages"]["torch"] == torch.__version__
    (env,) = manifest["environment"]["training"]
    assert env["n_models"] == 4 and manifest["environment"]["models_without_environment"] == 0
    for key in ("device", "torch_threads", "deterministic_algorithms", "float32_matmul_precision",
                "cudnn_benchmark", "code"):
        assert key in env, key
    fleets = manifest["fleets"]
    assert sorted(m for f in fleets for m in f["models"]) == sorted(open_zoo(smoke_zoo).models["model_id"])
    assert {f["trainer"] for f in fleets} <= {"fleet", "single"} and {f["environment"] for f in fleets} == {0}


def test_training_settings_come_from_the_training_process_not_the_publisher(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        build_in_process(tmp_path / "zoo", "smoke", models=2, threads=1)  # trains on 1 thread, publishes on 2
    finally:
        torch.set_num_threads(previous)
    (env,) = open_zoo(tmp_path / "zoo").manifest.environment["training"]
    assert env["torch_threads"] == 1 and env["n_models"] == 2
    # the spec's training.deterministic (true by default) was in force while training, and only then
    assert env["deterministic_algorithms"] and env["cudnn_deterministic"]
    assert not torch.are_deterministic_algorithms_enabled()


def test_source_revision_is_the_git_commit_in_a_checkout_else_the_package_version(monkeypatch):
    revision = environment.source_revision.__wrapped__()
    if revision["kind"] == "git":
        assert re.fullmatch(r"[0-9a-f]{40}", revision["git_commit"]) and isinstance(revision["git_dirty"], bool)
    monkeypatch.setenv("PATH", "")  # no git to ask
    without_git = environment.source_revision.__wrapped__()
    assert without_git["kind"] == "package" and without_git["git_commit"] is None
    assert without_git["weightzoo"] == revision["weightzoo"]


def test_training_summary_counts_environments_and_deduplicates_fleets():
    one, two = {"torch_threads": 1}, {"torch_threads": 4}
    fleet = {"trainer": "fleet", "models": ["a", "b"]}
    def record(model_id, **fields):
        return StagedRecord(model_id=model_id, fingerprint=model_id, status="ok", layout_id="L", n_params=1,
                            hyperparameters={}, config={}, training={}, spec_name="s", code_version="c", **fields)

    records = [record("a", environment=one, fleet=fleet), record("b", environment=one, fleet=fleet),
               record("c", environment=two, fleet={"trainer": "single", "models": ["c"]}), record("d")]
    summary = environment.training_summary(records, n_models=5)
    assert [e["n_models"] for e in summary["environment"]["training"]] == [2, 1]
    assert summary["environment"]["models_without_environment"] == 2
    assert summary["fleets"] == [{"trainer": "fleet", "models": ["a", "b"], "environment": 0},
                                 {"trainer": "single", "models": ["c"], "environment": 1}]
    json.dumps(summary)  # goes into manifest.json as is


def test_training_settings_are_applied_and_restored():
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with environment.training_settings({"torch_threads": 1, "deterministic_algorithms": True,
                                        "cudnn_deterministic": True}):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert not torch.backends.cudnn.deterministic
    with environment.training_settings(None):  # a record of older code: nothing changes
        assert torch.get_num_threads() == before[0]
