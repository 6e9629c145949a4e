"""Which table columns are categories: one rule for every reader and study.

Strings, booleans and integers with few distinct values (batch size, layer counts) are
classes; floats and many-valued integers are continuous. The readers encode classes as
codes into the sorted distinct values, the studies classify them, and both must agree.
"""

from __future__ import annotations

import pandas as pd

MAX_CLASSES = 10  # integer columns with at most this many distinct values are categories


def is_categorical(values: pd.Series) -> bool:
    """True for strings, booleans and integers with at most MAX_CLASSES distinct values."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return True
    return pd.api.types.is_integer_dtype(values) and values.nunique() <= MAX_CLASSES
