"""JSON-safe records of result tables: the rows and details of every study's StudyResult."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def json_value(value):
    """A plain Python value: numpy scalars unwrapped, NaN and ±inf as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_safe(record: dict) -> dict:
    """``record`` with every value made JSON-safe (see :func:`json_value`)."""
    return {key: json_value(value) for key, value in record.items()}


def json_records(rows) -> list[dict]:
    """JSON-safe records of a DataFrame or of a list of dicts."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    return [json_safe(row) for row in rows]
