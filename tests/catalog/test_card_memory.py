"""The dataset card's memory does not grow with the number of networks: the card of a synthetic
version of 100,000 networks × 20 snapshots (and its parent of 95,000) is written in a fresh
process whose peak RSS stays within a fixed budget above what its imports take.

Built from DataFrames, the card of these tables took ≈ 920 MB above the imports (1,250 MB in all);
the DuckDB card takes ≈ 120–180 MB above them at 10,000 and 100,000 networks alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "card_memory.py"
BUDGET_MB = 320  # peak RSS above the process's imports (torch, pandas, DuckDB, matplotlib)


def test_card_of_100000_networks_stays_within_a_memory_budget(tmp_path):
    rows = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(BENCHMARK), "--models", "100000", "--snapshots", "20", "--no-baseline",
                    "--keep", str(tmp_path / "version"), "--json", str(rows)], check=True, capture_output=True,
                   timeout=120)
    row, = json.loads(rows.read_text())
    above_imports = row["card_peak_mb"] - row["floor_mb"]
    assert above_imports < BUDGET_MB, f"the card took {above_imports:.0f} MB above its imports ({row})"
    text = (tmp_path / "version" / "out" / "CARD.md").read_text()
    assert "| models | 100000 |" in text and "| snapshots | 2000000 |" in text
    moved = moved_models(tmp_path / "version")
    assert f"| 5000 | 0 | {moved} | {95000 - moved} |" in text and f"`split` ({moved})" in text
    assert f"and {5000 - 20} more" in text  # the added models beyond the first 20
    assert "| nan |" not in text  # diverged runs' NaN metrics count as missing


def moved_models(folder: Path) -> int:
    """Models of the parent whose split the synthetic version changed."""
    before = pq.read_table(folder / "parent-models.parquet", columns=["split"]).column("split").to_pylist()
    after = pq.read_table(folder / "models.parquet", columns=["split"]).column("split").to_pylist()
    return sum(a != b for a, b in zip(before, after))
