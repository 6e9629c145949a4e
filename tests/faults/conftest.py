"""Fault tests reuse the io tests' tiny staged models (fixtures of tests/io/conftest.py)."""

from __future__ import annotations

from faultkit import load_io_test_module

io_fixtures = load_io_test_module("conftest.py")
# Re-exported fixtures: pytest finds them as attributes of this conftest.
zoo_root, stage, seeded_torch, make_inputs = (
    io_fixtures.zoo_root, io_fixtures.stage, io_fixtures.seeded_torch, io_fixtures.make_inputs)
