"""Fault tests reuse the io tests' tiny staged models (fixtures of tests/io/conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("io_fixtures", Path(__file__).parents[1] / "io" / "conftest.py")
io_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(io_fixtures)
# Re-exported fixtures: pytest finds them as attributes of this conftest.
zoo_root, stage, no_crash_env, seeded_torch = (io_fixtures.zoo_root, io_fixtures.stage,
                                                io_fixtures.no_crash_env, io_fixtures.seeded_torch)
