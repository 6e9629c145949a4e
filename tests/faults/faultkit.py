"""Helpers shared by the fault tests: publishing staged models, damaging files, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

def load_io_test_module(file_name: str):
    """A module of tests/io (its conftest or a test module) by path, to reuse its helpers."""
    import importlib.util

    path = Path(__file__).parents[1] / "io" / file_name
    spec = importlib.util.spec_from_file_location(f"io_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish(zoo_root, fingerprints, **kwargs) -> str:
    """The one publish with a test spec (``zookit.publish_staged``)."""
    from zookit import publish_staged

    return publish_staged(zoo_root, fingerprints, **kwargs)


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one bit of one byte of a file (the middle one by default)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def chunk_files(zoo_root: Path) -> list[Path]:
    """The stored chunk objects of a zoo's repository."""
    return sorted((zoo_root / "repo" / "chunks").iterdir())


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m weightzoo.cli ARGS`` in a subprocess; captured text output."""
    return subprocess.run([sys.executable, "-m", "weightzoo.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def run_publish_child(zoo_root: Path, fingerprints: list[str], *args: str, preexec_fn=None,
                      timeout: float = 120) -> subprocess.CompletedProcess:
    """Publish in a child process (publish_child.py), which may be killed or starved on purpose."""
    import json

    script = Path(__file__).with_name("publish_child.py")
    return subprocess.run([sys.executable, str(script), str(zoo_root), json.dumps(fingerprints), *args],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def published_state(zoo_root: Path) -> dict:
    """What a reader sees: versions, and per version its models table and every model's weights."""
    from weightzoo.io.reader import list_versions, open_zoo

    state = {}
    for entry in list_versions(zoo_root):
        zoo = open_zoo(zoo_root, entry["version"])
        state[entry["version"]] = (zoo.models.copy(), {m: zoo.weights(m) for m in zoo.models["model_id"]})
    return state


def assert_unchanged(before: dict, after: dict) -> None:
    """Every version of ``before`` reads back identically in ``after`` (and nothing else is visible)."""
    import numpy as np
    import pandas as pd

    assert list(after) == list(before), f"visible versions changed: {list(before)} → {list(after)}"
    for version, (models, weights) in before.items():
        pd.testing.assert_frame_equal(after[version][0], models)
        for model_id, values in weights.items():
            np.testing.assert_array_equal(after[version][1][model_id], values, err_msg=f"{version} {model_id}")


def assert_rows_match_staged(zoo_root: Path) -> None:
    """The latest version holds one array row per model, each equal to the model's staged weights."""
    import numpy as np

    from zookit import stored_rows

    from weightzoo.io.reader import open_zoo
    from weightzoo.io.staging import load_staged

    zoo = open_zoo(zoo_root)
    for layout_id, group in zoo.models.groupby("layout_id"):
        assert stored_rows(zoo, layout_id) == sorted(group["row"]), f"orphan or duplicate rows in {layout_id}"
    for model in zoo.models.itertuples():
        np.testing.assert_array_equal(zoo.weights(model.model_id), load_staged(zoo_root / "staging", model.fingerprint).weights)
