"""The dataset card: CARD.md with counts, hyperparameters, accuracy, failed runs and the diff."""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cardkit import write_frames
from matplotlib.image import imread

from weightzoo.cli import main
from weightzoo.io.card import write_card
from weightzoo.io.records import Manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def manifest_of(root, version: str) -> Manifest:
    """The published manifest of ``version``."""
    path = root / "versions" / version / "manifest.json"
    return Manifest.from_json(path.read_bytes(), str(path))


def assert_real_png(path) -> None:
    """A non-empty PNG that decodes to an image that is not one flat colour."""
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    pixels = imread(path)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, pixels.shape
    assert float(pixels.std()) > 0, f"{path} is blank"


def test_card_of_a_published_version(catalog_zoo, tables_of, files_of, tmp_path):
    tables = tables_of(catalog_zoo, "v0002")
    card = write_card(tmp_path, files_of(catalog_zoo, "v0002"), manifest_of(catalog_zoo, "v0002"),
                      files_of(catalog_zoo, "v0001"))
    text = card.read_text()
    models, snapshots = tables["models"], tables["snapshots"]
    assert f"| models | {len(models)} |" in text and f"| snapshots | {len(snapshots)} |" in text
    splits = models["split"].value_counts().sort_index()
    assert "| by split | " + ", ".join(f"{s}: {n}" for s, n in splits.items()) + " |" in text
    optimizers = models["optimizer"].value_counts().sort_index()
    assert "| `optimizer` | str | categorical | " + ", ".join(f"{o}: {n}" for o, n in optimizers.items()) + " | 0 |" in text
    last = snapshots[snapshots["k"] == snapshots["k"].max()]["test_acc"]
    assert f"| digits | test_acc | {len(last)} |" in text and f"{last.mean():.3f}" in text
    added = sorted(set(models["model_id"]) - set(tables_of(catalog_zoo, "v0001")["models"]["model_id"]))
    assert "| 2 | 0 | 0 | 4 |" in text and all(f"`{model_id}`" in text for model_id in added)
    assert "Every run ended with status `ok`." in text
    for name in ("hyperparameters.png", "accuracy.png"):
        assert f"](card/{name})" in text
        assert_real_png(tmp_path / "card" / name)


def test_card_lists_diverged_runs_and_regression_losses(catalog_zoo, tables_of, tmp_path):
    tables = tables_of(catalog_zoo, "v0001")
    models, snapshots = tables["models"].copy(), tables["snapshots"].copy()
    bad = models["model_id"].iloc[1]
    models.loc[models["model_id"] == bad, ["status", "message"]] = ["diverged", "loss is nan at epoch 2"]
    snapshots.loc[(snapshots["model_id"] == bad) & (snapshots["k"] > 0), ["test_acc", "test_loss"]] = math.nan
    models.loc[models["model_id"] == models["model_id"].iloc[0], "dataset"] = "sinusoid"
    first = models["model_id"].iloc[0]
    snapshots.loc[snapshots["model_id"] == first, "test_acc"] = math.nan
    files = write_frames(tmp_path / "tables", {**tables, "models": models, "snapshots": snapshots})
    text = write_card(tmp_path, files, manifest_of(catalog_zoo, "v0001")).read_text()
    assert "1 of 4 runs did not end `ok` (diverged: 1)" in text
    assert f"| `{bad}` | diverged |" in text and "loss is nan at epoch 2" in text
    assert "| sinusoid | test_loss | 1 |" in text and "| digits | test_acc | 2 |" in text
    assert "names no parent version" in text


def test_card_is_cheap_for_hundreds_of_models(catalog_zoo, tables_of, tmp_path):
    tables = tables_of(catalog_zoo, "v0002")
    rng = np.random.default_rng(0)
    copies = 50  # 300 models, 900 snapshots
    models = pd.concat([tables["models"].assign(model_id=tables["models"]["model_id"] + f"-{i}",
                                                lr=rng.uniform(1e-4, 1e-1, len(tables["models"])))
                        for i in range(copies)], ignore_index=True)
    snapshots = pd.concat([tables["snapshots"].assign(model_id=tables["snapshots"]["model_id"] + f"-{i}")
                           for i in range(copies)], ignore_index=True)
    files = write_frames(tmp_path / "tables", {**tables, "models": models, "snapshots": snapshots})
    parent = write_frames(tmp_path / "parent", {"models": models.iloc[:150], "snapshots": snapshots.iloc[:450]})
    write_card(tmp_path / "warm", write_frames(tmp_path / "small", tables), manifest_of(catalog_zoo, "v0002"))
    started = time.perf_counter()
    write_card(tmp_path, files, manifest_of(catalog_zoo, "v0002"), parent)
    seconds = time.perf_counter() - started
    assert seconds < 4, f"the card of 300 models took {seconds:.1f} s"
    assert "| models | 300 |" in (tmp_path / "CARD.md").read_text()


def test_cli_writes_a_missing_card_once(catalog_zoo, capsys, tmp_path):
    folder = catalog_zoo / "versions" / "v0003"
    # as if v0003 had been published before cards existed
    (folder / "CARD.md").unlink(missing_ok=True)
    shutil.rmtree(folder / "card", ignore_errors=True)
    assert main(["card", f"{catalog_zoo}@v0003"]) == 0
    first = (folder / "CARD.md").read_text()
    assert "| models | 6 |" in first and capsys.readouterr().out.startswith(f"wrote {folder / 'CARD.md'}")
    assert_real_png(folder / "card" / "accuracy.png")
    assert main(["card", f"{catalog_zoo}@v0003"]) == 2
    assert "versions are immutable; pass --out DIR" in capsys.readouterr().err
    assert (folder / "CARD.md").read_text() == first
    assert main(["card", f"{catalog_zoo}@v0003", "--out", str(tmp_path / "again"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["card"] == str(tmp_path / "again" / "CARD.md") and len(result["plots"]) == 2


def test_cli_card_shows_the_diff_against_the_parent(catalog_zoo, capsys, tmp_path):
    assert main(["card", f"{catalog_zoo}@v0002", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "CARD.md").read_text()
    assert "## Changes against the parent version (v0001)" in text and "| 2 | 0 | 0 | 4 |" in text


def test_every_published_version_carries_its_card(catalog_zoo):
    for version, n_models in (("v0001", 4), ("v0002", 6)):
        folder = catalog_zoo / "versions" / version
        text = (folder / "CARD.md").read_text()
        assert f"| models | {n_models} |" in text, version
        assert_real_png(folder / "card" / "hyperparameters.png")
    assert "| 2 | 0 | 0 | 4 |" in (catalog_zoo / "versions" / "v0002" / "CARD.md").read_text()


def test_nan_metrics_count_as_missing(catalog_zoo, tables_of, tmp_path):
    tables = tables_of(catalog_zoo, "v0001")
    snapshots = pa.Table.from_pandas(tables["snapshots"], preserve_index=False)
    last = pc.equal(snapshots.column("k"), 2)
    nan_acc = pc.if_else(last, pa.scalar(math.nan), snapshots.column("test_acc"))  # NaN, not null, in the file
    snapshots = snapshots.set_column(snapshots.schema.get_field_index("test_acc"), "test_acc", nan_acc)
    files = write_frames(tmp_path / "tables", {"models": tables["models"], "layouts": tables["layouts"]})
    pq.write_table(snapshots, files.setdefault("snapshots", tmp_path / "tables" / "snapshots.parquet"))
    assert pc.sum(pc.is_nan(pq.read_table(files["snapshots"]).column("test_acc"))).as_py() == 4
    text = write_card(tmp_path / "card", files, manifest_of(catalog_zoo, "v0001")).read_text()
    assert "| digits | test_acc | 4 |" in text and "| nan |" not in text
