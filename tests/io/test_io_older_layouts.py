"""Versions published before every block had its Dropout module stay readable.

Until then a block without dropout had no Dropout module, so a version's layouts.parquet
names an mlp's tensors 1.* and 3.* where today's builder says 1.* and 4.*. The fixture
publishes such a version exactly as the earlier code did (its layout taken from the module
the earlier builder made), and every reader that rebuilds a module must still match it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from zookit import publish_staged

from weightzoo.analysis.reinit import random_reinit
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import Activation, build_model
from weightzoo.core.models import flat_to_module as load_flat
from weightzoo.core.permutations import permute_hidden_units
from weightzoo.io.reader import open_zoo
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model

CONFIG = {"architecture": "mlp", "dataset": "digits", "hidden_layers": 1, "hidden_width": 12,
          "activation": "tanh", "dropout": 0.0, "seed": 3}


def _earlier_mlp() -> nn.Sequential:
    """What build_model(CONFIG) returned before: no module for a dropout rate of 0."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), Activation("tanh"), nn.Linear(12, 10))


@pytest.fixture(scope="module")
def earlier_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("earlier") / "zoo"
    layout = WeightLayout.from_module(_earlier_mlp())
    assert [t.name for t in layout.tensors] == ["1.weight", "1.bias", "3.weight", "3.bias"]
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(2, layout.n_params)).astype(np.float32)
    record = StagedRecord(model_id="m0", fingerprint="fp0", status="ok",
                          hyperparameters={k: v for k, v in CONFIG.items() if k != "seed"}, config=CONFIG, training={},
                          spec_name="earlier", layout_id=layout.layout_id, n_params=layout.n_params,
                          code_version="before dropout slots")
    stage_model(root / "staging", record, weights=weights, snapshots=[{"k": 0}, {"k": 1}], layout=layout)
    publish_staged(root, ["fp0"])
    return open_zoo(root), weights


def test_load_model_rebuilds_an_earlier_layout_with_identical_outputs(earlier_zoo):
    zoo, weights = earlier_zoo
    assert WeightLayout.from_module(build_model(CONFIG)).layout_id != zoo.models["layout_id"].item()
    earlier = _earlier_mlp().eval()
    earlier.load_state_dict(zoo.layout(zoo.models["layout_id"].item()).unflatten(weights[1]))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(zoo.load_model("m0", 1)(x), earlier(x))


def test_studies_that_rebuild_modules_match_an_earlier_layout(earlier_zoo):
    zoo, weights = earlier_zoo
    layout = zoo.layout(zoo.models["layout_id"].item())
    fresh = random_reinit(CONFIG, layout, seed=0, model_id="m0")
    assert fresh.shape == (layout.n_params,) and not np.array_equal(fresh, weights[0])
    module = load_flat(CONFIG, layout, weights[1])
    assert torch.equal(module.state_dict()["4.weight"], torch.from_numpy(weights[1][-130:-10].reshape(10, 12)))
    permuted = permute_hidden_units(weights[1], layout, np.random.default_rng(1), model=build_model(CONFIG))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load_flat(CONFIG, layout, permuted)(x), module(x), atol=1e-6)
    assert json.loads(zoo.models["config_json"].item()) == CONFIG
