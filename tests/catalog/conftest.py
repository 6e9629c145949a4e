"""A small zoo with three versions for the catalog tests, built once per session.

v0001: the smoke spec's 4 models; v0002: extended to 6 models; v0003: the same 6 models
published again (not extending) with another split seed, so some models change split.
Two projections results (different parameters) are stored for v0002.
"""

from __future__ import annotations

import pandas as pd
import pytest

from weightzoo.analysis.projections import run_projection_study
from weightzoo.analysis.cache import cached_result
from weightzoo.pipelines.build import build_in_process
from weightzoo.core.spec import load_spec
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import SplitSettings
from weightzoo.io.reader import open_zoo

PROJECTION_OPTIONS = ({"include_linear": True}, {"include_linear": True, "snapshots": [0, 1]})


@pytest.fixture(scope="session")
def catalog_zoo(tmp_path_factory):
    """The zoo directory (see the module docstring)."""
    root = tmp_path_factory.mktemp("catalog") / "zoo"
    assert build_in_process(root, "smoke", models=4).version == "v0001"
    assert build_in_process(root, "smoke", models=6).version == "v0002"
    fingerprints = pd.read_parquet(root / "versions" / "v0002" / "models.parquet")["fingerprint"].tolist()
    spec = load_spec("smoke").to_dict()
    request = PublishRequest(tuple(fingerprints), specs=(spec,), keep_parent=False, split=SplitSettings(seed=1))
    assert publish_version(ZooHandle.at(root), request).version == "v0003"
    zoo = open_zoo(root, "v0002")
    for options in PROJECTION_OPTIONS:
        cached_result(zoo, "projections", options, lambda out, o=options: run_projection_study(zoo, out, **o))
    return root


@pytest.fixture
def tables_of():
    """tables_of(root, version) → {"models", "snapshots", "layouts"} DataFrames of that version."""
    def read(root, version: str) -> dict[str, pd.DataFrame]:
        folder = root / "versions" / version
        return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("models", "snapshots", "layouts")}
    return read


@pytest.fixture
def files_of():
    """files_of(root, version) → {"models", "snapshots", "layouts"} Parquet paths of that version."""
    def paths(root, version: str) -> dict:
        return {name: root / "versions" / version / f"{name}.parquet" for name in ("models", "snapshots", "layouts")}
    return paths

