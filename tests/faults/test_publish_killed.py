"""A publish process SIGKILLed inside the Icechunk commit (the crash points after_commit,
before_rename and before_tag are covered by tests/io/test_io_crash.py): no partial version
is visible, the previous version reads back unchanged, and a re-run publishes the version
from the staged models."""

from __future__ import annotations

import shutil
import signal

import icechunk
import pytest

from faultkit import assert_rows_match_staged, assert_unchanged, publish, published_state, run_publish_child

pytestmark = pytest.mark.faults

# From "the commit has just started" to "it has certainly finished" (a commit of a few
# tiny models takes milliseconds here).
KILL_DELAYS = ("0", "0.005", "0.02", "0.2")


def head_of(zoo_root) -> str:
    """The snapshot id that the ``main`` branch points at."""
    storage = icechunk.local_filesystem_storage(str(zoo_root / "repo"))
    return icechunk.Repository.open(storage).lookup_branch("main")


def test_publish_killed_inside_the_commit_leaves_the_previous_version(zoo_root, stage, tmp_path):
    first = stage("conv", range(3)) + stage("mlp", range(2))
    publish(zoo_root, first)
    second = first + stage("conv", range(3, 6)) + stage("mlp", range(2, 4))
    before, v1_head = published_state(zoo_root), head_of(zoo_root)

    outcomes = []
    for index, delay in enumerate(KILL_DELAYS):
        # a fresh copy each time: a re-run after a completed commit reuses it and never commits
        zoo = shutil.copytree(zoo_root, tmp_path / f"zoo-{index}", symlinks=True)
        result = run_publish_child(zoo, second, delay)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        assert_unchanged(before, published_state(zoo))
        assert not (zoo / "versions" / "v0002").exists()
        outcomes.append(("after" if "finished" in result.stdout else "during") + " the commit, branch "
                        + ("moved" if head_of(zoo) != v1_head else "not moved"))

        assert publish(zoo, second) == "v0002", "the re-run publishes from the staged models"
        assert_unchanged(before, {k: v for k, v in published_state(zoo).items() if k == "v0001"})
        assert_rows_match_staged(zoo)
        assert sorted(p.name for p in (zoo / "versions").iterdir()) == ["v0001", "v0002"]
    assert any(o.startswith("during") for o in outcomes), f"no kill landed inside a commit: {outcomes}"
