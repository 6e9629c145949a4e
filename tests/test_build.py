"""Build steps without Prefect: grouping, resumable staging, publishing."""

from __future__ import annotations

import pytest

from weightzoo.pipelines import build
from weightzoo.core.spec import load_spec
from weightzoo.io.reader import open_zoo
from weightzoo.io.staging import find_staged


def test_demo_plan_groups_models_into_balanced_fleets():
    groups = build.plan_build("demo", min_groups=2)
    sizes = sorted(len(g.configs) for g in groups)
    assert sum(sizes) == 256 and len(groups) <= 16 and min(sizes) >= 4 and max(sizes) <= 32
    for group in groups:
        assert len({(c.params["batch_size"], c.params["activation"]) for c in group.configs}) == 1


def test_a_config_that_cannot_become_a_model_fails_at_planning():
    spec = {"name": "bad", "architecture": "small-cnn", "models": 2,
            "hyperparameters": {"dataset": "digits"}, "training": {"epochs": 1}}
    with pytest.raises(ValueError, match="small-cnn"):
        build.plan_build(spec)


def test_staged_members_are_not_trained_again(tmp_path, monkeypatch):
    group = build.plan_build("smoke")[0]
    first = build.train_and_stage(tmp_path, group)
    assert all(r["status"] == "ok" for r in first)

    def refuse(*args, **kwargs):
        raise AssertionError("a staged model was trained again")

    monkeypatch.setattr(build, "train_fleet", refuse)
    monkeypatch.setattr(build, "train_model", refuse)
    assert build.train_and_stage(tmp_path, group) == first
    assert build.staged_receipts(tmp_path, group) == first


def test_partially_staged_group_trains_only_the_missing_members(tmp_path, monkeypatch):
    group = build.plan_build("smoke")[0]
    assert len(group.configs) >= 2
    most = build.TrainGroup("most", group.spec_name, group.configs[:-1])
    build.train_and_stage(tmp_path, most)
    trained = []
    original = build.train_model
    monkeypatch.setattr(build, "train_model", lambda params, *a: trained.append(params) or original(params, *a))
    build.train_and_stage(tmp_path, group)
    assert trained == [group.configs[-1].params]
    assert all(find_staged(tmp_path, fp) for fp in group.fingerprints)


def test_publish_then_extend_keeps_the_old_version(tmp_path):
    spec = load_spec("smoke")
    receipts = [r for g in build.plan_build(spec, 2) for r in build.train_and_stage(tmp_path, g)]
    assert build.publish(tmp_path, [r["fingerprint"] for r in receipts], spec) == "v0001"
    more = [r for g in build.plan_build(spec, 3) for r in build.train_and_stage(tmp_path, g)]
    assert build.publish(tmp_path, [r["fingerprint"] for r in more], spec) == "v0002"
    assert len(open_zoo(tmp_path, "v0001").models) == 2
    assert len(open_zoo(tmp_path).models) == 3
