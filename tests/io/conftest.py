"""Fixtures of the io tests: an empty zoo folder and tiny staged models (see tests/zookit.py)."""

from __future__ import annotations

import icechunk
import pytest
import torch
from zookit import build_from_config, model_id_of, stage_inputs, staged_inputs

# The local-filesystem "not safe for concurrent commits" warning is expected: publishers
# serialise on .publish.lock. Keep it out of test output.
icechunk.set_logs_filter("warn,icechunk::storage::object_store=error")


@pytest.fixture
def zoo_root(tmp_path):
    """An empty zoo directory."""
    return tmp_path / "zoo"


@pytest.fixture
def stage(zoo_root):
    """stage(architecture, indices, **kw) → fingerprints of freshly staged models."""
    def _stage(architecture: str, indices, **kwargs) -> list[str]:
        receipts = [stage_inputs(zoo_root, staged_inputs(architecture, i, **kwargs)) for i in indices]
        return [receipt.fingerprint for receipt in receipts]
    return _stage


@pytest.fixture(autouse=True)
def seeded_torch():
    """Deterministic torch initialisation for module builders."""
    torch.manual_seed(0)


@pytest.fixture
def make_inputs():
    """The staged_inputs helper, for tests that stage or compare by hand."""
    return staged_inputs


@pytest.fixture
def builder():
    """A load_model builder for the test architectures."""
    return build_from_config


@pytest.fixture
def ids():
    """model_id_of(architecture, index)."""
    return model_id_of
