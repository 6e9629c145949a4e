"""A full disk and an unwritable output directory while publishing: a clear error naming
the problem, nothing already published lost, and a re-run (with space again) publishes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from contextlib import contextmanager

import pytest

from faultkit import assert_rows_match_staged, assert_unchanged, publish, published_state, run_publish_child

pytestmark = pytest.mark.faults


@pytest.fixture
def extension(zoo_root, stage):
    """(published state of v0001, fingerprints of a bigger second version), all staged."""
    first = stage("conv", range(3)) + stage("mlp", range(2))
    publish(zoo_root, first)
    return published_state(zoo_root), first + stage("conv", range(3, 30)) + stage("mlp", range(2, 6))


def file_size_limit(limit: int):
    """A preexec_fn: files can grow to ``limit`` bytes, and writing more fails with EFBIG (a full
    disk as far as the writer can tell) instead of killing the process with SIGXFSZ."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


@pytest.mark.parametrize("limit, failing_write", [(1000, "weight chunks"), (5000, "version tables")])
def test_disk_full_while_publishing(zoo_root, extension, limit, failing_write):
    before, fingerprints = extension
    result = run_publish_child(zoo_root, fingerprints, preexec_fn=file_size_limit(limit))
    assert result.returncode == 1, result.stdout
    assert "File too large" in result.stderr, f"{failing_write}: {result.stderr[-1500:]}"
    assert_unchanged(before, published_state(zoo_root))
    assert not (zoo_root / "versions" / "v0002").exists()

    assert publish(zoo_root, fingerprints) == "v0002"
    assert_rows_match_staged(zoo_root)


@contextmanager
def unwritable(path):
    """Make a directory refuse new entries: chmod for a normal user; root ignores modes, so
    the ext4 immutable flag (chattr +i) there."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
        pytest.skip("running as root without a filesystem that supports chattr +i")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("directory, named", [("versions", "versions/v0002.incomplete"),
                                              ("repo/chunks", "chunk")])
def test_unwritable_directory_while_publishing(zoo_root, extension, directory, named):
    before, fingerprints = extension
    with unwritable(zoo_root / directory):
        with pytest.raises(Exception) as raised:
            publish(zoo_root, fingerprints)
    message = str(raised.value)
    assert ("Permission denied" in message or "Operation not permitted" in message
            or "permission" in message.lower()), message
    assert named in message, message
    assert_unchanged(before, published_state(zoo_root))

    assert publish(zoo_root, fingerprints) == "v0002"
    assert_rows_match_staged(zoo_root)
