"""Staging: one atomic file per fingerprint that reads back exactly, or fails loudly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from zookit import flip_member_byte, stage_inputs

from weightzoo.errors import RecordError, StagingError
from weightzoo.io import staging
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import find_staged, load_staged, stage_models


def test_round_trip_returns_what_was_staged(zoo_root, make_inputs):
    inputs = make_inputs("conv", 1, n_snapshots=4, status="diverged")
    receipt = stage_inputs(zoo_root, inputs)

    assert receipt == find_staged(zoo_root / "staging", inputs["fingerprint"])
    assert receipt.n_snapshots == 4 and receipt.status == "diverged"
    assert receipt.layout_id == inputs["layout"].layout_id
    staged = load_staged(zoo_root / "staging", inputs["fingerprint"])
    np.testing.assert_array_equal(staged.weights, inputs["weights"])
    assert staged.weights.dtype == np.float32
    assert staged.layout == inputs["layout"]
    assert staged.record.hyperparameters == inputs["record"]["hyperparameters"]
    last = staged.snapshots[-1]
    assert last["train_loss"] is None and last["test_acc"] is None, "NaN is stored as null"
    assert math.isclose(staged.snapshots[0]["gap"], inputs["snapshots"][0]["gap"])


def test_metadata_only_load_skips_weights(zoo_root, make_inputs):
    inputs = make_inputs("mlp", 2)
    stage_inputs(zoo_root, inputs)
    assert load_staged(zoo_root / "staging", inputs["fingerprint"], weights=False).weights is None


def test_flipped_byte_in_weights_names_the_file(zoo_root, make_inputs):
    inputs = make_inputs("conv", 3)
    receipt = stage_inputs(zoo_root, inputs)
    path = zoo_root / "staging" / f"{inputs['fingerprint']}.wzs"
    flip_member_byte(path, "weights")

    with pytest.raises(StagingError, match=f"{path} is corrupt: the sha256 .* delete it and run again"):
        load_staged(zoo_root / "staging", inputs["fingerprint"])
    assert find_staged(zoo_root / "staging", inputs["fingerprint"]) == receipt, "the metadata still reads"


def test_incomplete_files_are_not_found(zoo_root, make_inputs, monkeypatch):
    inputs = make_inputs("conv", 4)
    leftover = zoo_root / "staging" / f"{inputs['fingerprint']}.wzs.incomplete-abc"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a file")
    assert find_staged(zoo_root / "staging", inputs["fingerprint"]) is None

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(staging.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        stage_inputs(zoo_root, inputs)
    assert find_staged(zoo_root / "staging", inputs["fingerprint"]) is None
    leftovers = {p.name for p in (zoo_root / "staging").iterdir()}
    assert leftovers == {leftover.name}, "a failed stage removes its own temporary file"


def test_a_damaged_or_foreign_file_counts_as_not_staged(zoo_root, make_inputs):
    inputs = make_inputs("conv", 7)
    path = stage_inputs(zoo_root, inputs).path
    Path(path).write_bytes(Path(path).read_bytes()[:100])  # truncated, as a power cut may leave it
    assert find_staged(zoo_root / "staging", inputs["fingerprint"]) is None, "it is trained again"


def test_restaging_replaces_the_file(zoo_root, make_inputs):
    inputs = make_inputs("mlp", 5)
    stage_inputs(zoo_root, inputs)
    inputs["weights"] = inputs["weights"] + 1
    receipt = stage_inputs(zoo_root, inputs)
    np.testing.assert_array_equal(load_staged(zoo_root / "staging", inputs["fingerprint"]).weights, inputs["weights"])
    assert [p.name for p in (zoo_root / "staging").iterdir()] == [f"{receipt.fingerprint}.wzs"]


def test_missing_staged_model_is_an_error(zoo_root):
    with pytest.raises(StagingError, match="no complete staged model"):
        load_staged(zoo_root / "staging", "fp-unknown")


@pytest.mark.parametrize("change, error, message", [
    (lambda i: i.update(weights=i["weights"][:, :-1]), StagingError, "expected"),
    (lambda i: i.update(snapshots=i["snapshots"][:-1]), StagingError, "snapshot rows"),
    (lambda i: i["record"].update(status="great"), RecordError, "status"),
    (lambda i: i["record"].pop("config"), RecordError, r"lacks \['config'\]"),
    (lambda i: i["record"].update(split="holdout"), RecordError, "split"),
    (lambda i: i["record"].update(layout_id="Lother"), StagingError, "layout_id"),
])
def test_inconsistent_inputs_are_rejected(zoo_root, make_inputs, change, error, message):
    inputs = make_inputs("conv", 6)
    change(inputs)
    with pytest.raises(error, match=message):
        stage_inputs(zoo_root, inputs)
    assert find_staged(zoo_root / "staging", inputs["fingerprint"]) is None


def test_a_group_is_one_file_with_one_name_per_model(zoo_root, make_inputs):
    items = [_item(make_inputs("conv", i)) for i in range(3)]
    receipts = stage_models(zoo_root / "staging", items)
    paths = [Path(r.path) for r in receipts]
    assert sorted(p.name for p in (zoo_root / "staging").iterdir()) == sorted(p.name for p in paths)
    assert len({p.stat().st_ino for p in paths}) == 1 and paths[0].stat().st_nlink == 3, "hard links of one file"
    for item, receipt in zip(items, receipts):
        assert find_staged(zoo_root / "staging", receipt.fingerprint) == receipt
        np.testing.assert_array_equal(load_staged(zoo_root / "staging", receipt.fingerprint).weights, item.weights)

    restaged = _item(make_inputs("conv", 1))
    restaged = staging.StageItem(restaged.record, restaged.weights + 1, restaged.snapshots, restaged.layout)
    stage_models(zoo_root / "staging", [restaged])
    assert paths[1].stat().st_ino != paths[0].stat().st_ino and paths[0].stat().st_nlink == 2
    np.testing.assert_array_equal(load_staged(zoo_root / "staging", receipts[1].fingerprint).weights, restaged.weights)
    np.testing.assert_array_equal(load_staged(zoo_root / "staging", receipts[2].fingerprint).weights, items[2].weights)


def test_without_hard_links_each_model_gets_its_own_file(zoo_root, make_inputs, monkeypatch):
    def no_links(source, name):
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(staging.os, "link", no_links)
    items = [_item(make_inputs("mlp", i)) for i in range(2)]
    receipts = stage_models(zoo_root / "staging", items)
    assert sorted(p.name for p in (zoo_root / "staging").iterdir()) == sorted(Path(r.path).name for r in receipts)
    for item, receipt in zip(items, receipts):
        np.testing.assert_array_equal(load_staged(zoo_root / "staging", receipt.fingerprint).weights, item.weights)


def test_a_group_fails_whole_before_any_name_appears(zoo_root, make_inputs, monkeypatch):
    items = [_item(make_inputs("conv", i)) for i in range(2)]
    with pytest.raises(StagingError, match="staged twice"):
        stage_models(zoo_root / "staging", items + items[:1])
    bad = _item(make_inputs("conv", 9))
    bad = staging.StageItem(bad.record, bad.weights[:, :3], bad.snapshots, bad.layout)
    with pytest.raises(StagingError, match="have shape"):
        stage_models(zoo_root / "staging", items + [bad])
    assert not any((zoo_root / "staging").iterdir()), "nothing staged, no temporary file left"


def _item(inputs: dict) -> "staging.StageItem":
    return staging.StageItem(StagedRecord.from_dict(inputs["record"]), inputs["weights"], inputs["snapshots"],
                             inputs["layout"])
