"""Session-wide fixtures: one real Prefect server for every flow test, and a tiny zoo."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real ``prefect server`` on 127.0.0.1 for the whole session (started once).

    Prefect reads its settings when first imported, so flow tests import ``flows.*``
    inside the test, after this fixture has exported ``PREFECT_API_URL``.
    """
    from flows.server import prefect_server

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
    from weightzoo.build import build_in_process

    root = tmp_path_factory.mktemp("zoos") / "smoke"
    build_in_process(root, "smoke", threads=None)
    return root
