"""Fingerprints: stable hashes of canonical JSON that decide identity and caching.

A value is canonicalised before hashing: mapping keys sorted, no whitespace, floats
written by ``repr`` (shortest round-trip form), and mapping entries whose value is
``None`` or an empty mapping/sequence dropped, so that adding an optional field with
an empty default keeps every old hash valid. Anything that has no JSON form is an
error: hashing ``id()`` or a random repr would silently break caching.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

CODE_VERSION = "weightzoo-train-1"
"""Version of the numbers the training code produces; bump when they change."""


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (see the module docstring).

    Raises ``TypeError`` naming the offending key path for a value with no JSON form
    (including non-string mapping keys, NaN and infinities).
    """
    plain = _flat_plain(value) if isinstance(value, dict) else None
    if plain is None:
        plain = _to_plain(value, "$")
    return json.dumps(
        plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def fingerprint(*parts: Any) -> str:
    """Return the sha256 hex digest of ``canonical_json(list(parts))``."""
    return hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()


def fingerprint_of_texts(*texts: str) -> str:
    """:func:`fingerprint` of parts given as their canonical JSON texts (the same digest: a list's
    canonical JSON is its items' texts joined by commas), so a part shared by many fingerprints
    is made canonical once."""
    return hashlib.sha256(("[" + ",".join(texts) + "]").encode("utf-8")).hexdigest()


def _flat_plain(value: dict) -> dict | None:
    """The plain form of a flat mapping of plain scalars (a config's hyperparameters), or None
    when anything in it needs the general conversion; the fast path of planning."""
    plain = {}
    for key, item in value.items():
        kind = type(item)
        if kind not in _SCALARS or type(key) is not str or (kind is float and not math.isfinite(item)):
            return None
        if item is not None:  # as in the general conversion, empty entries are dropped
            plain[key] = item
    return plain


_SCALARS = {str, bool, int, float, type(None)}


def _to_plain(value: Any, path: str) -> Any:
    """Convert ``value`` to plain JSON types, dropping empty mapping entries."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return _number_to_plain(value, path)
    if isinstance(value, Mapping):
        return _mapping_to_plain(value, path)
    if isinstance(value, (list, tuple)):
        return [_to_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} has no canonical JSON form")


def _number_to_plain(value: Any, path: str) -> int | float | bool:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"{path}: {value!r} has no canonical JSON form")
    return value


def _mapping_to_plain(value: Mapping, path: str) -> dict:
    plain = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{path}: key {key!r} is not a string")
        converted = _to_plain(item, f"{path}.{key}")
        if converted is None or converted == {} or converted == []:
            continue
        plain[key] = converted
    return plain
