"""The card's hyperparameter panels: drawn as the spec's distributions say, seeds left out,
numeric categories in numeric order; values decide only for imported zoos, and the card says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cardkit import write_frames

from weightzoo.io import card
from weightzoo.io.card_plots import plan_panels, spec_distributions
from weightzoo.io.card_queries import CardData
from weightzoo.io.records import Manifest, SplitSettings

SPEC = {"name": "plots", "hyperparameters": {
    "lr": {"log-uniform": [3e-4, 3e-2]}, "dropout": {"uniform": [0.0, 0.3]},
    "batch_size": {"categorical": [128, 32, 8]}, "optimizer": {"categorical": ["sgd", "adam"]},
    "width": {"integer": [1, 200]}, "conv_width": {"fixed": 8}}}
IMPORT_SPEC = {"name": "import-modelzoos", "import": {"kind": "modelzoos"}}


def synthetic_tables(n: int = 400) -> dict:
    """Models drawn as SPEC says (dropout spans > 2 decades, so a max/min rule would pick log), with seeds."""
    rng = np.random.default_rng(0)
    ids = [f"m{i:04d}" for i in range(n)]
    models = pd.DataFrame({
        "model_id": ids, "fingerprint": ids, "layout_id": "L0", "row": range(n),
        "lr": np.exp(rng.uniform(np.log(3e-4), np.log(3e-2), n)), "dropout": rng.uniform(0.001, 0.3, n),
        "batch_size": rng.choice([128, 32, 8], n), "optimizer": rng.choice(["sgd", "adam"], n),
        "width": rng.integers(1, 201, n), "conv_width": 8, "seed": rng.integers(0, 2**31, n),
        "split": "train", "status": "ok", "message": "", "n_params": 10, "n_snapshots": 2})
    snapshots = pd.DataFrame({"model_id": np.repeat(ids, 2), "k": np.tile([0, 1], n), "test_acc": 0.5})
    return {"models": models, "snapshots": snapshots}


def manifest(spec: dict) -> Manifest:
    """A first version's manifest with ``spec``."""
    return Manifest(version="v0001", parent=None, icechunk_snapshot_id="S", created_at="now", counts={"models": 1},
                    split=SplitSettings(), tables={}, specs=[spec])


@pytest.fixture
def synthetic_files(tmp_path):
    """The synthetic tables as Parquet files."""
    return write_frames(tmp_path / "tables", synthetic_tables())


def decisions(files, scratch, specs) -> tuple[dict, dict]:
    """{column: (kind, log)} of the planned panels, and {column: why} of those left out."""
    with CardData(files, None, scratch) as data:
        panels, left_out = plan_panels(data.column_summaries(data.hyperparameter_columns()), spec_distributions(specs))
    return {p.column: (p.kind, p.log) for p in panels}, dict(left_out)


def card_figure(monkeypatch, folder, files, spec):
    """Write the card; the hyperparameter figure it saved, and the card's text."""
    saved = {}
    monkeypatch.setattr(card, "save_png", lambda figure, path: saved.setdefault(path.name, figure))
    text = card.write_card(folder, files, manifest(spec)).read_text()
    return saved["hyperparameters.png"], text


def axes_by_title(figure) -> dict:
    """The figure's axes by their titles."""
    return {axes.get_title(): axes for axes in figure.axes}


def test_panels_follow_the_spec_distributions(synthetic_files, tmp_path):
    panels, left_out = decisions(synthetic_files, tmp_path, [SPEC])
    assert panels == {"lr": ("histogram", True), "dropout": ("histogram", False), "batch_size": ("bars", False),
                      "optimizer": ("bars", False), "width": ("histogram", False)}
    assert left_out == {"seed": "a seed"}  # conv_width does not vary: the table gives its one value


def test_figure_draws_lr_on_a_log_axis_dropout_linear_no_seed(synthetic_files, tmp_path, monkeypatch):
    figure, text = card_figure(monkeypatch, tmp_path / "card", synthetic_files, SPEC)
    axes = axes_by_title(figure)
    assert set(axes) == {"lr", "dropout", "batch_size", "optimizer", "width"}
    assert axes["lr"].get_xscale() == "log" and axes["dropout"].get_xscale() == "linear"
    assert [label.get_text() for label in axes["batch_size"].get_xticklabels()] == ["8", "32", "128"]
    assert [label.get_text() for label in axes["optimizer"].get_xticklabels()] == ["adam", "sgd"]
    assert "`lr`: log axis, log-uniform in the spec" in text and "`dropout`: linear axis, uniform in the spec" in text
    assert "Not plotted: `seed` (a seed)." in text
    assert "| `batch_size` | int | categorical | 8: " in text and "| `seed` | int | - |" in text


def test_log_histogram_bins_are_log_spaced(synthetic_files, tmp_path):
    with CardData(synthetic_files, None, tmp_path) as data:
        lr = next(s for s in data.column_summaries(["lr"]))
        edges, counts = data.histogram(lr, log=True)
    assert np.allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))
    assert counts.sum() == 400 and counts.min() > 0  # log-uniform draws fill log-spaced bins evenly


def test_an_imported_zoo_is_drawn_by_its_values_and_says_so(synthetic_files, tmp_path, monkeypatch):
    panels, left_out = decisions(synthetic_files, tmp_path, [IMPORT_SPEC])
    assert panels["lr"] == ("histogram", True) and panels["dropout"] == ("histogram", False)
    assert panels["batch_size"] == ("bars", False) and "seed" in left_out
    figure, text = card_figure(monkeypatch, tmp_path / "card", synthetic_files, IMPORT_SPEC)
    assert axes_by_title(figure)["lr"].get_xscale() == "log"
    assert "The spec gives no hyperparameter distributions (an imported zoo)" in text
    assert "`lr`: log axis, no distribution in the spec; log axis from the values" in text


def test_spec_distributions_name_table_columns_and_merge_specs():
    specs = [{"hyperparameters": {"lr": {"fixed": 0.1}, "status": {"categorical": ["a", "b"]},
                                  "dropout": {"uniform": [0, 0.5]}}},
             {"hyperparameters": {"lr": {"log-uniform": [1e-3, 1e-1]}, "dropout": {"log-uniform": [1e-3, 0.5]}}},
             IMPORT_SPEC]
    assert spec_distributions(specs) == {"lr": "log-uniform", "hp_status": "categorical", "dropout": None}
    assert spec_distributions([IMPORT_SPEC]) == {}
