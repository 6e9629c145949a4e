"""The build pipeline without Prefect: one plan, one recipe on any runner, staging as the one cache."""

from __future__ import annotations

import pytest

from weightzoo.core.sampling import sample_configs
from weightzoo.core.spec import load_spec
from weightzoo.errors import InputError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo
from weightzoo.io.staging import find_staged
from weightzoo.pipelines import build
from weightzoo.pipelines.runner import InProcessRunner


def plan(tmp_path, spec="smoke", models=None, **options):
    """A plan against a zoo in ``tmp_path``."""
    return build.plan_build(ZooHandle.at(tmp_path / "zoo"), spec, models, **options)


def test_demo_plan_groups_models_into_balanced_fleets(tmp_path):
    groups = plan(tmp_path, "demo", min_groups=2).groups
    sizes = sorted(len(g.configs) for g in groups)
    assert sum(sizes) == 256 and len(groups) <= 16 and min(sizes) >= 4 and max(sizes) <= 32
    for group in groups:
        assert len({(c.params["batch_size"], c.params["activation"]) for c in group.configs}) == 1


def test_planning_builds_each_structure_once_not_each_config(tmp_path, monkeypatch):
    built = []
    original = build.build_model
    monkeypatch.setattr(build, "build_model", lambda params, *a: built.append(params) or original(params, *a))
    build._structure.cache_clear()
    configs = sample_configs(load_spec("demo"), 256)
    build.group_configs(configs, "demo")
    assert len(built) == 1, "the demo preset's 256 configs share one architecture"


def test_a_config_that_cannot_become_a_model_fails_at_planning(tmp_path):
    spec = {"name": "bad", "architecture": "small-cnn", "models": 2,
            "hyperparameters": {"dataset": "digits"}, "training": {"epochs": 1}}
    with pytest.raises(InputError, match="small-cnn"):
        plan(tmp_path, spec)


def test_staged_members_are_not_trained_again(tmp_path, monkeypatch):
    group = plan(tmp_path).groups[0]
    first = build.train_group(tmp_path, group)
    assert all(r.status == "ok" for r in first.receipts) and first.n_trained == len(group.configs)

    def refuse(*args, **kwargs):
        raise AssertionError("a staged model was trained again")

    monkeypatch.setattr(build, "train_fleet", refuse)
    monkeypatch.setattr(build, "train_model", refuse)
    again = build.train_group(tmp_path, group)
    assert again.receipts == first.receipts and again.n_trained == 0 and again.seconds["training"] == 0


def test_partially_staged_group_trains_only_the_missing_members(tmp_path, monkeypatch):
    group = plan(tmp_path).groups[0]
    assert len(group.configs) >= 2
    most = build.TrainGroup("most", group.spec_name, group.configs[:-1])
    build.train_group(tmp_path, most)
    trained = []
    original = build.train_model
    monkeypatch.setattr(build, "train_model", lambda params, *a: trained.append(params) or original(params, *a))
    build.train_group(tmp_path, group)
    assert trained == [group.configs[-1].params]
    assert all(find_staged(tmp_path, fp) for fp in group.fingerprints)


class CountingRunner(InProcessRunner):
    """Runs steps here and records every call."""

    def __init__(self):
        super().__init__(threads=1)
        self.calls = []

    def map(self, step, calls, *, device="cpu"):
        calls = list(calls)
        self.calls += [(step.__name__, args) for args in calls]
        return super().map(step, calls, device=device)

    def call(self, step, *args):
        self.calls.append((step.__name__, args))
        return super().call(step, *args)


def test_one_plan_runs_on_any_runner_and_says_what_it_reuses(tmp_path):
    first = plan(tmp_path, models=2)
    assert (first.parent, first.n_new, first.n_staged) == (None, 2, 0)
    runner = CountingRunner()
    report = build.run_build(first, runner)
    assert report.published and (report.version, report.n_trained, report.n_reused) == ("v0001", 2, 0)
    assert [name for name, _ in runner.calls] == ["train_group"] * len(first.work) + ["publish_build"]

    with pytest.raises(build.BuildError, match="pass --extend"):
        plan(tmp_path, models=4)  # before anything trains
    bigger = plan(tmp_path, models=4, extend=True)
    assert (bigger.parent, bigger.n_published, bigger.n_new) == ("v0001", 2, 2)
    assert all(fp not in open_zoo(tmp_path / "zoo").models["fingerprint"].tolist() for fp in bigger.new_fingerprints)
    build.train_group(tmp_path / "zoo" / "staging", bigger.work[0])  # as if an earlier run had stopped here
    resumed = plan(tmp_path, models=4, extend=True)
    assert resumed.n_staged == len(bigger.work[0].configs)
    report = build.run_build(resumed, CountingRunner())
    assert (report.version, report.n_reused, report.n_trained) == ("v0002", resumed.n_staged, 2 - resumed.n_staged)

    unchanged = plan(tmp_path, models=4, extend=True)
    assert unchanged.work == () and unchanged.n_new == 0, "nothing new: nothing to run"
    assert build.run_build(unchanged, CountingRunner()).published is False


def test_publish_then_extend_keeps_the_old_version(tmp_path):
    assert build.build_in_process(tmp_path / "zoo", "smoke", models=2).version == "v0001"
    assert build.build_in_process(tmp_path / "zoo", "smoke", models=3).version == "v0002"
    assert len(open_zoo(tmp_path / "zoo", "v0001").models) == 2
    assert len(open_zoo(tmp_path / "zoo").models) == 3
