"""The one snapshot grammar: every text and Python form, one resolution rule, errors that name the model."""

from __future__ import annotations

import numpy as np
import pytest

from weightzoo.core.snapshots import ALL, LAST, SnapshotChoice
from weightzoo.errors import InputError, UsageError

TEXTS = {  # text -> (canonical text, ks of a model with 5 snapshots)
    "all": ("all", [0, 1, 2, 3, 4]),
    "last": ("last", [4]),
    "3": ("3", [3]),
    "1:4": ("1:4", [1, 2, 3]),
    "2:": ("2:", [2, 3, 4]),
    "0:": ("all", [0, 1, 2, 3, 4]),
    ":2": ("0:2", [0, 1]),
    ":": ("all", [0, 1, 2, 3, 4]),
    "4,0,2": ("0,2,4", [0, 2, 4]),
    " 1, 3 ": ("1,3", [1, 3]),
}


@pytest.mark.parametrize("text", sorted(TEXTS))
def test_every_text_form_resolves_and_round_trips(text):
    canonical, ks = TEXTS[text]
    choice = SnapshotChoice.parse(text)
    assert choice.text == str(choice) == canonical
    assert SnapshotChoice.parse(choice.text) == choice
    resolved = choice.resolve(5, "m")
    assert resolved.dtype == np.int64 and resolved.tolist() == ks


@pytest.mark.parametrize("value, text", [
    (None, "all"), (ALL, "all"), ("last", "last"), (3, "3"), (np.int64(2), "2"), (range(1, 3), "1:3"),
    (range(0, 6, 2), "0,2,4"), (slice(1, None), "1:"), (slice(None, 2), "0:2"), (slice(0, 5, 2), "0,2,4"),
    ([2, 0, 2], "0,2"), (np.array([1, 3]), "1,3"), ((4,), "4"),
])
def test_python_forms_are_the_same_choices(value, text):
    assert SnapshotChoice.of(value) == SnapshotChoice.parse(text)


def test_open_ended_forms_adapt_and_exact_forms_never_shrink():
    assert ALL.open_ended and LAST.open_ended and SnapshotChoice.parse("1:").open_ended
    assert not SnapshotChoice.parse("0:3").open_ended and not SnapshotChoice.parse("1,2").open_ended
    for n in (2, 7):
        assert ALL.resolve(n, "m").tolist() == list(range(n)) and LAST.resolve(n, "m").tolist() == [n - 1]
        assert SnapshotChoice.parse("1:").resolve(n, "m").tolist() == list(range(1, n))
    for text, k in (("0:3", 2), ("2", 2), ("0,1,5", 5), ("2:", 2), (":4", 2)):
        with pytest.raises(InputError, match=rf"snapshots '.*' ask for k={k} but model 'net-7' has "
                                             rf"n_snapshots=2 \(k = 0\.\.1\)"):
            SnapshotChoice.parse(text).resolve(2, "net-7")
    with pytest.raises(InputError, match="model 'empty' has n_snapshots=0 \\(no snapshots\\)"):
        LAST.resolve(0, "empty")


@pytest.mark.parametrize("text, message", [
    ("x:y", "expected all, last, K, A:B"), ("3:1", "0 <= A < B"), ("2:2", "0 <= A < B"), ("-1", "expected all"),
    ("1.5", "expected all"), ("1,,2", "expected all"), ("last:", "expected all"),
])
def test_bad_texts_are_usage_errors_naming_the_text(text, message):
    with pytest.raises(UsageError, match=message) as error:
        SnapshotChoice.parse(text)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("value, message", [
    (-1, "k=-1 is negative"), ([0, -2], "k=-2 is negative"), (range(-1, 2), "k=-1 is negative"),
    (slice(-2, None), "k=-2 is negative"), (slice(0, None, 2), "needs an end"), (slice(0, 4, 0), "step must be"),
    (True, "not a boolean"), ([], "name no snapshot"), (range(3, 1), "name no snapshot"), ([0.5], "integer k"),
])
def test_bad_python_values_are_usage_errors(value, message):
    with pytest.raises(UsageError, match=message):
        SnapshotChoice.of(value)


def test_choices_are_hashable_values():
    assert len({SnapshotChoice.parse("1:3"), SnapshotChoice.of(range(1, 3)), SnapshotChoice.of(slice(1, 3))}) == 1
    with pytest.raises(UsageError):
        SnapshotChoice("list", ks=(2, 1))
