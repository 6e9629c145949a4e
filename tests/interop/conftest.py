"""Fixtures of the interop tests; the fixture writers themselves are in interopkit.py."""

from __future__ import annotations

import pytest
from interopkit import make_nws_source


@pytest.fixture
def nws_source(tmp_path):
    """(source folder, {row: the 20 TF variable lists}) of three good networks."""
    source = tmp_path / "nws"
    return source, make_nws_source(source)
