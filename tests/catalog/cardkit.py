"""Test writers for the dataset card: DataFrames as Parquet files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


def write_frames(folder, frames: dict) -> dict:
    """Write DataFrames as ``<name>.parquet`` into ``folder``; {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), paths[name])
    return paths
