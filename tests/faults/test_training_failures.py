"""Training that goes wrong while extending a zoo: a diverging run (NaN) is kept and marked,
a group whose training raises stops the build with its error, and in both cases the
published versions stay as they were and a re-run trains only what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from faultkit import assert_unchanged, published_state
from weightzoo.pipelines import build
from weightzoo.io.handle import ZooHandle
from weightzoo.pipelines.build import build_in_process, plan_build, train_group
from weightzoo.io.reader import open_zoo
from weightzoo.io.verify import verify_version
from weightzoo.train import fleet, single

pytestmark = pytest.mark.faults


def test_diverging_models_are_kept_and_marked(zoo_root):
    build_in_process(zoo_root, "smoke", models=2)
    before = published_state(zoo_root)

    diverging = {"name": "diverging", "architecture": "mlp", "models": 2, "sampling": {"method": "random", "seed": 0},
                 "hyperparameters": {"dataset": "sinusoid", "frequency": 0.5, "hidden_layers": 2, "hidden_width": 16,
                                     "activation": "relu", "optimizer": "sgd", "lr": 10.0, "batch_size": 8},
                 "dataset_options": {"sinusoid": {"n_samples": 64}},
                 "training": {"epochs": 2, "snapshots": {"count": 2}}}  # regression at lr 10: the loss overflows
    assert build_in_process(zoo_root, diverging, models=2).version == "v0002"

    zoo = open_zoo(zoo_root)
    assert_unchanged(before, {k: v for k, v in published_state(zoo_root).items() if k == "v0001"})
    new = zoo.models[zoo.models["version_added"] == "v0002"]
    assert len(new) == 2 and set(new["status"]) == {"diverged"}
    assert all(new["message"].str.len() > 0), "a diverged run says why"
    mine = zoo.snapshots[zoo.snapshots["model_id"].isin(new["model_id"])]
    last = mine.sort_values("k").drop_duplicates("model_id", keep="last")
    assert not np.isfinite(last["test_loss"]).any(), "the last snapshot of a diverged run has no loss"
    assert verify_version(ZooHandle.at(zoo_root), "v0002").problems == [], "NaN weights are data, not damage"


def count_training(monkeypatch, trained: list, fail_on_call: int | None = None) -> None:
    """Record how many models each training call gets (fleet or one by one); raise on one call."""
    for name, real in (("train_fleet", fleet.train_fleet), ("train_model", single.train_model)):

        def counted(jobs, *args, _real=real, _fleet=name == "train_fleet", **kwargs):
            trained.append(len(jobs) if _fleet else 1)
            if len(trained) == fail_on_call:
                raise RuntimeError("worker ran out of memory (injected)")
            return _real(jobs, *args, **kwargs)
        monkeypatch.setattr(build, name, counted)


def test_a_group_that_raises_keeps_staged_groups_and_published_versions(zoo_root, monkeypatch):
    build_in_process(zoo_root, "smoke", models=2)
    before = published_state(zoo_root)
    plan = plan_build(ZooHandle.at(zoo_root), "smoke", 6, max_group=2, extend=True)
    groups = plan.work
    assert len(groups) >= 2

    trained = []
    count_training(monkeypatch, trained, fail_on_call=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        for group in groups:
            train_group(zoo_root / "staging", group, 1, fleet=True)
    assert_unchanged(before, published_state(zoo_root))
    staged = {fp for g in plan.groups for fp in g.fingerprints if build.find_staged(zoo_root / "staging", fp)}
    assert len(staged) > 2, "the group trained before the failure stays staged"

    trained = []
    count_training(monkeypatch, trained)
    assert build_in_process(zoo_root, "smoke", models=6).version == "v0002"
    assert len(open_zoo(zoo_root).models) == 6
    assert sum(trained) == 6 - len(staged), "only the models that were not staged are trained"
