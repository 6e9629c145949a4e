"""Which table columns are categories: one rule for every reader and study.

Strings, booleans and integers with few distinct values (batch size, layer counts) are
classes; floats and many-valued integers are continuous. The readers encode classes as
codes into the sorted distinct values, the studies classify them, and both must agree.
Decided from the dtype's kind, so this pure module needs no table library.
"""

from __future__ import annotations

MAX_CLASSES = 10  # integer columns with at most this many distinct values are categories


def is_categorical(values) -> bool:
    """True for strings, booleans and integers with at most MAX_CLASSES distinct values.

    ``values`` is a pandas Series (or anything with ``dtype.kind`` and ``nunique()``).
    """
    kind = values.dtype.kind
    if kind in "iu":
        return values.nunique() <= MAX_CLASSES
    return kind not in "fc"  # bool, strings, objects, categories, datetimes: classes
