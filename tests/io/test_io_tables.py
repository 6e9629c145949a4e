"""Tables: canonical splits, typed hyperparameter columns, and the publish lock."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from zookit import publish_staged, stage_inputs

from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo
from weightzoo.io.tables import assign_split, check_fractions, models_table


def test_split_depends_only_on_model_and_seed():
    ids = [f"m{i}" for i in range(2000)]
    splits = [assign_split(m, 0, (0.7, 0.15, 0.15)) for m in ids]
    assert splits == [assign_split(m, 0, [0.7, 0.15, 0.15]) for m in reversed(ids)][::-1]
    shares = {name: splits.count(name) / len(ids) for name in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.04 and abs(shares["val"] - 0.15) < 0.03, shares
    assert splits != [assign_split(m, 1, (0.7, 0.15, 0.15)) for m in ids], "the seed matters"
    assert {assign_split(m, 0, (1, 0, 0)) for m in ids} == {"train"}


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="split_fractions"):
        check_fractions(fractions)


def model(model_id, **hyper):
    """A minimal models-table row."""
    return {"model_id": model_id, "fingerprint": "fp", "layout_id": "L", "row": 0, **hyper,
            "split": "train", "status": "ok", "message": "", "n_params": 1, "n_snapshots": 1,
            "spec_name": "s", "config_json": "{}", "training_json": "{}", "version_added": "v0001"}


def test_hyperparameter_columns_keep_their_types():
    table = models_table([
        model("a", lr=0.1, width=3, mixed=1, flag=True, opt="sgd", layers=[1, 2]),
        model("b", lr=1, mixed="x", flag=None, opt=None),
    ])
    types = {field.name: field.type for field in table.schema}
    assert types["lr"] == pa.float64() and table.column("lr").to_pylist() == [0.1, 1.0]
    assert types["width"] == pa.int64() and table.column("width").to_pylist() == [3, None]
    assert types["flag"] == pa.bool_() and types["opt"] == pa.string()
    assert table.column("mixed").to_pylist() == ["1", "x"]
    assert table.column("layers").to_pylist() == ["[1,2]", None]
    assert table.schema.names[:4] == ["model_id", "fingerprint", "layout_id", "row"]
    assert table.schema.names[-1] == "version_added"


def test_clashing_hyperparameter_names_are_prefixed(zoo_root, make_inputs):
    inputs = make_inputs("conv", 0)
    inputs["record"]["hyperparameters"]["status"] = "frozen"
    stage_inputs(zoo_root, inputs)
    publish_staged(zoo_root, [inputs["fingerprint"]])
    models = open_zoo(zoo_root).models
    assert models["status"].iloc[0] == "ok" and models["hp_status"].iloc[0] == "frozen"


def test_publishers_wait_for_the_lock(zoo_root, stage):
    fingerprints = stage("mlp", range(2))
    finished = threading.Event()

    def run():
        publish_staged(zoo_root, fingerprints)
        finished.set()

    with ZooHandle.at(zoo_root).publish_lock():
        worker = threading.Thread(target=run)
        worker.start()
        assert not finished.wait(0.5), "publish ran while another publisher held the lock"
    worker.join(timeout=30)
    assert finished.is_set()
