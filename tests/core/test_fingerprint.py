"""Fingerprints: canonical JSON is order-free, drops empties, and refuses the unhashable."""

import math

import numpy as np
import pytest

from weightzoo.core.fingerprint import CODE_VERSION, canonical_json, fingerprint


def test_key_order_does_not_change_the_hash():
    first = {"b": 1, "a": {"y": 2.5, "x": [1, 2]}}
    second = {"a": {"x": [1, 2], "y": 2.5}, "b": 1}
    assert canonical_json(first) == canonical_json(second)
    assert fingerprint(first) == fingerprint(second)


def test_canonical_json_has_no_whitespace_and_sorted_keys():
    assert canonical_json({"b": 1, "a": "x y"}) == '{"a":"x y","b":1}'


def test_none_and_empty_values_are_dropped_so_optional_fields_keep_old_hashes():
    old = {"lr": 0.1}
    new = {"lr": 0.1, "traces": [], "options": {}, "note": None, "nested": {"empty": {}}}
    assert canonical_json(new) == canonical_json(old)
    assert fingerprint(new, "v") == fingerprint(old, "v")


def test_floats_are_written_exactly():
    value = 0.1 + 0.2
    assert canonical_json(value) == repr(value)
    assert fingerprint(0.30000000000000004) != fingerprint(0.3)


def test_tuples_hash_like_lists_and_numpy_scalars_like_python_numbers():
    assert canonical_json((1, 2)) == canonical_json([1, 2])
    assert canonical_json({"n": np.int64(3), "x": np.float32(0.5)}) == canonical_json({"n": 3, "x": 0.5})


def test_code_version_changes_the_hash():
    params = {"lr": 0.01}
    assert fingerprint(params, CODE_VERSION) != fingerprint(params, CODE_VERSION + "-next")


def test_fingerprint_is_sha256_hex():
    digest = fingerprint({"a": 1})
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"training": {"callback": object()}}, "$.training.callback"),
        ({"items": [1, {2, 3}]}, "$.items[1]"),
        ({"x": math.nan}, "$.x"),
        ({"x": {1: "a"}}, "$.x"),
    ],
)
def test_values_without_json_form_raise_type_error_naming_the_path(value, path):
    with pytest.raises(TypeError, match=path.replace("$", r"\$").replace("[", r"\[")):
        canonical_json(value)
