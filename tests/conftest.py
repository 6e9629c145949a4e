"""Session-wide fixtures: one real Prefect server for every flow test, a tiny zoo, and a
builder of small published zoos for test modules."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real ``prefect server`` on 127.0.0.1 for the whole session (started once).

    Prefect reads its settings when first imported, so flow tests import ``flows.*``
    inside the test, after this fixture has exported ``PREFECT_API_URL``.
    """
    from weightzoo_flows.server import prefect_server

    previous = os.environ.pop("PREFECT_API_URL", None)
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as url:
        os.environ["PREFECT_HOME"] = str(home)
        yield url
    if previous is not None:
        os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def smoke_zoo(tmp_path_factory):
    """A published smoke zoo built with the package functions (no Prefect, no Dask)."""
    from weightzoo.io.reader import open_zoo
    from weightzoo.pipelines.build import build_in_process

    root = tmp_path_factory.mktemp("zoos") / "smoke"
    build_in_process(root, "smoke", threads=None)
    models = open_zoo(root).models
    train, test = models[models["split"] == "train"], models[models["split"] == "test"]
    assert set(train["optimizer"]) == {"adam", "sgd"} and len(test), (
        "the smoke preset's split_seed no longer gives a train split with both optimizers and a test split "
        "(model ids changed with the code version?): pick another seed in weightzoo/presets/smoke.yaml")
    return root


@pytest.fixture(scope="session")
def build_zoo(tmp_path_factory):
    """``build_zoo(name, spec, version=None)``: train and publish ``spec`` in-process (no Prefect,
    no Dask) into a fresh folder and open it (at ``version``, else the latest)."""
    from weightzoo.pipelines.build import build_in_process
    from weightzoo.io.reader import open_zoo

    def build(name: str, spec, version: str | None = None):
        root = tmp_path_factory.mktemp(name) / "zoo"
        build_in_process(root, spec)
        return open_zoo(root, version)
    return build
