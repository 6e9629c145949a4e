"""Crash safety: a publish killed at any point leaves no visible version and no duplicate rows."""

from __future__ import annotations

import icechunk
import numpy as np
import pandas as pd
import pytest

from zookit import CRASH_POINTS, SimulatedCrash, inject_crash, publish_staged as publish, stored_rows

from weightzoo.errors import VersionNotFound
from weightzoo.io.reader import list_versions, open_zoo
from weightzoo.io.staging import load_staged


def crash_publish(zoo_root, fingerprints, point, monkeypatch):
    """A publish that dies at ``point``."""
    with monkeypatch.context() as patches:
        inject_crash(patches, point)
        with pytest.raises(SimulatedCrash, match=point):
            publish(zoo_root, fingerprints)


def assert_rows_match_models(zoo, zoo_root):
    """Arrays hold exactly one row per model (no duplicates) and each row is the staged weights."""
    for layout_id, group in zoo.models.groupby("layout_id"):
        assert stored_rows(zoo, layout_id) == sorted(group["row"]), f"orphan or duplicate rows in {layout_id}"
    for model in zoo.models.itertuples():
        np.testing.assert_array_equal(zoo.weights(model.model_id), load_staged(zoo_root / "staging", model.fingerprint).weights)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_during_extension_leaves_previous_version_intact(zoo_root, stage, monkeypatch, point):
    first = stage("conv", range(3)) + stage("mlp", range(2))
    publish(zoo_root, first)
    before = list_versions(zoo_root)
    old = open_zoo(zoo_root)
    old_models, old_weights = old.models.copy(), {m: old.weights(m) for m in old.models["model_id"]}

    second = first + stage("conv", range(3, 5)) + stage("mlp", range(2, 5))
    crash_publish(zoo_root, second, point, monkeypatch)
    storage = icechunk.local_filesystem_storage(str(zoo_root / "repo"))
    pending_head = icechunk.Repository.open(storage).lookup_branch("main")

    assert list_versions(zoo_root) == before
    with pytest.raises(VersionNotFound, match="v0001"):
        open_zoo(zoo_root, "v0002")
    after = open_zoo(zoo_root)
    assert after.version == "v0001"
    pd.testing.assert_frame_equal(after.models, old_models)
    for model_id, weights in old_weights.items():
        np.testing.assert_array_equal(after.weights(model_id), weights)

    assert publish(zoo_root, second) == "v0002"
    assert list_versions(zoo_root)[-1]["snapshot_id"] == pending_head, "the crashed commit is reused"
    zoo = open_zoo(zoo_root)
    assert len(zoo.models) == 10
    assert_rows_match_models(zoo, zoo_root)
    assert not list((zoo_root / "versions").glob("*.incomplete*"))
    assert sorted(p.name for p in (zoo_root / "versions").iterdir()) == ["v0001", "v0002"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_during_first_publish_leaves_no_version(zoo_root, stage, monkeypatch, point):
    fingerprints = stage("conv", range(3))
    crash_publish(zoo_root, fingerprints, point, monkeypatch)

    assert list_versions(zoo_root) == []
    with pytest.raises(VersionNotFound, match="no published versions"):
        open_zoo(zoo_root)
    assert publish(zoo_root, fingerprints) == "v0001"
    assert_rows_match_models(open_zoo(zoo_root), zoo_root)


def test_rerun_with_other_models_after_commit_discards_the_orphan_commit(zoo_root, stage, monkeypatch):
    publish(zoo_root, stage("conv", range(2)))
    crash_publish(zoo_root, stage("conv", range(2, 6)), "after_commit", monkeypatch)

    assert publish(zoo_root, stage("conv", range(2, 4))) == "v0002"
    zoo = open_zoo(zoo_root)
    assert sorted(zoo.models["model_id"]) == [f"conv-{i:03d}" for i in range(4)]
    assert_rows_match_models(zoo, zoo_root)


def test_repeated_crashes_then_success(zoo_root, stage, monkeypatch):
    fingerprints = stage("mlp", range(3))
    for point in CRASH_POINTS:
        crash_publish(zoo_root, fingerprints, point, monkeypatch)
    assert publish(zoo_root, fingerprints) == "v0001"
    assert_rows_match_models(open_zoo(zoo_root), zoo_root)
