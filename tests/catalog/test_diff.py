"""weightzoo diff: models added, removed and changed between two versions."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq
from cardkit import write_frames

from weightzoo.cli import main
from weightzoo.io.card_queries import CardData
from weightzoo.io.diff import diff_tables, diff_versions, summarise_diff
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


def summary_of(folder, models_a, snapshots_a, models_b, snapshots_b, limit=100, parent_as_files=False):
    """summarise_diff of two versions given as DataFrames (written to Parquet under ``folder``)."""
    new = write_frames(folder / "b", {"models": models_b, "snapshots": snapshots_b})
    parent = write_frames(folder / "a", {"models": models_a, "snapshots": snapshots_a})
    if parent_as_files:
        parent = {name: pq.ParquetFile(path) for name, path in parent.items()}
    with CardData(new, parent, folder) as data:
        return summarise_diff(data, limit)


def edited_versions(tables):
    """(models_a, snapshots_a, models_b, snapshots_b) pairs that exercise every rule of the diff."""
    models, snapshots = tables["models"], tables["snapshots"]
    first, second, third = models["model_id"].iloc[:3]
    edited = snapshots.copy()
    edited.loc[(edited["model_id"] == first) & (edited["k"] == 1), "test_acc"] += 0.25
    edited = edited[~((edited["model_id"] == second) & (edited["k"] == edited["k"].max()))]
    edited.loc[(edited["model_id"] == second) & (edited["k"] == 0), "train_loss"] += 1  # beside a one-sided k
    edited_models = models.assign(new_column=None, n_params=models["n_params"].astype(float))
    edited_models.loc[edited_models["model_id"] == third, "status"] = "diverged"
    nan_models = models.assign(lr=math.nan)
    yield models, snapshots, edited_models, edited
    yield models.iloc[1:], snapshots, models.iloc[:-1], snapshots  # one removed, one added
    yield nan_models, snapshots.assign(test_loss=math.nan), nan_models.assign(lr=None), snapshots.assign(test_loss=None)
    yield models, snapshots.assign(gap=-0.0), models.assign(lr=models["lr"].astype(str)), snapshots.assign(gap=0.0)


def test_summarised_diff_agrees_with_diff_tables(catalog_zoo, tables_of, tmp_path):
    cases = [(tables_of(catalog_zoo, a)["models"], tables_of(catalog_zoo, a)["snapshots"],
              tables_of(catalog_zoo, b)["models"], tables_of(catalog_zoo, b)["snapshots"])
             for a, b in (("v0001", "v0002"), ("v0002", "v0003"), ("v0002", "v0001"))]
    cases += list(edited_versions(tables_of(catalog_zoo, "v0002")))
    for index, case in enumerate(cases):
        expected = diff_tables(*case)
        summary = summary_of(tmp_path / str(index), *case, parent_as_files=index % 2 == 1)
        assert summary.counts == expected.to_dict()["counts"], index
        assert summary.listed == {"added": expected.added, "removed": expected.removed,
                                  "changed": expected.changed}, index
    assert expected.changed and all(fields == ["lr"] for fields in expected.changed.values())


def test_summarised_diff_counts_all_and_lists_a_few(tmp_path):
    models = pd.DataFrame({"model_id": [f"m{i:03d}" for i in range(50)], "lr": [0.1] * 50})
    snapshots = pd.DataFrame({"model_id": models["model_id"], "k": 0, "test_acc": 0.5})
    moved = models.assign(lr=[0.2 if i % 2 else 0.1 for i in range(50)])
    summary = summary_of(tmp_path, models.iloc[:20], snapshots.iloc[:20], moved, snapshots, limit=3)
    assert summary.counts == {"added": 30, "removed": 0, "changed": 10, "unchanged": 10}
    assert summary.listed["added"] == ["m020", "m021", "m022"]
    assert summary.listed["changed"] == {"m001": ["lr"], "m003": ["lr"], "m005": ["lr"]}
    assert summary.field_counts == {"lr": 10}
