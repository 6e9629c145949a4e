"""weightzoo diff: models added, removed and changed between two versions."""

from __future__ import annotations

import json
import math

import pandas as pd

from weightzoo.cli import main
from weightzoo.io.diff import diff_tables, diff_versions
from weightzoo.io.handle import ZooHandle


def test_extension_adds_exactly_the_new_models(catalog_zoo, tables_of):
    old, new = tables_of(catalog_zoo, "v0001")["models"], tables_of(catalog_zoo, "v0002")["models"]
    diff = diff_versions(ZooHandle.at(catalog_zoo), "v0001", "v0002")
    assert diff.added == sorted(set(new["model_id"]) - set(old["model_id"])) and len(diff.added) == 2
    assert diff.removed == [] and diff.changed == {} and diff.n_unchanged == 4
    backwards = diff_versions(ZooHandle.at(catalog_zoo), "v0002", "v0001")
    assert backwards.removed == diff.added and backwards.added == []


def test_resplit_changes_exactly_the_moved_models(catalog_zoo, tables_of):
    before, after = tables_of(catalog_zoo, "v0002")["models"], tables_of(catalog_zoo, "v0003")["models"]
    merged = before.merge(after, on="model_id", suffixes=("_a", "_b"))
    moved = sorted(merged.loc[merged["split_a"] != merged["split_b"], "model_id"])
    assert moved, "the fixture's second split seed must move some model"
    diff = diff_versions(ZooHandle.at(catalog_zoo), "v0002", "v0003")
    assert diff.changed == {model_id: ["split"] for model_id in moved}
    assert diff.added == diff.removed == [] and diff.n_unchanged == 6 - len(moved)


def test_changed_metrics_and_snapshots_are_named(catalog_zoo, tables_of):
    tables = tables_of(catalog_zoo, "v0002")
    models, snapshots = tables["models"], tables["snapshots"]
    first, second, third = models["model_id"].iloc[:3]
    edited = snapshots.copy()
    edited.loc[(edited["model_id"] == first) & (edited["k"] == 1), "test_acc"] += 0.25
    edited = edited[~((edited["model_id"] == second) & (edited["k"] == edited["k"].max()))]
    edited_models = models.assign(new_column=None)
    edited_models.loc[edited_models["model_id"] == third, "status"] = "diverged"
    diff = diff_tables(models, snapshots, edited_models, edited)
    assert diff.changed == {first: ["snapshots.test_acc"], second: ["snapshots.k"], third: ["status"]}


def test_nulls_and_nan_equal_themselves(catalog_zoo, tables_of):
    tables = tables_of(catalog_zoo, "v0001")
    snapshots = tables["snapshots"].assign(test_loss=math.nan, train_acc=None)
    diff = diff_tables(tables["models"], snapshots, tables["models"].copy(), snapshots.copy())
    assert diff.changed == {} and diff.n_unchanged == 4


def test_cli_json_and_text(catalog_zoo, capsys):
    assert main(["diff", str(catalog_zoo), "v0001", "v0002", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"added": 2, "removed": 0, "changed": 0, "unchanged": 4}
    assert main(["diff", str(catalog_zoo), "v0002", "v0001"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("v0002 -> v0001: 0 added, 2 removed, 0 changed, 4 unchanged")
    assert sorted(line.split()[1] for line in lines[1:]) == result["added"]
    assert all(line.startswith("  - ") for line in lines[1:])


def test_cli_unknown_version_exit_2(catalog_zoo, capsys):
    assert main(["diff", str(catalog_zoo), "v0001", "v0009"]) == 2
    assert "v0009" in capsys.readouterr().err


def test_frames_with_new_columns_compare_by_value():
    a = pd.DataFrame({"model_id": ["m1", "m2"], "lr": [0.1, 0.2], "n": [3, 3]})
    b = pd.DataFrame({"model_id": ["m2", "m3"], "lr": [0.2, 0.3], "n": [3.0, 3.0], "width": [None, 8]})
    snaps = pd.DataFrame({"model_id": ["m1", "m2", "m3"], "k": [0, 0, 0], "test_acc": [0.1, 0.2, 0.3]})
    diff = diff_tables(a, snaps, b, snaps)
    assert (diff.added, diff.removed, diff.changed, diff.n_unchanged) == (["m3"], ["m1"], {}, 1)
