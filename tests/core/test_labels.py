"""One rule decides which columns are classes, for the readers and for every study."""

import pandas as pd

from weightzoo.core.labels import MAX_CLASSES, is_categorical


def test_strings_bools_and_few_valued_integers_are_categories():
    assert is_categorical(pd.Series(["adam", "sgd"]))
    assert is_categorical(pd.Series([True, False]))
    assert is_categorical(pd.Series([32, 128, 32]))
    assert not is_categorical(pd.Series(range(MAX_CLASSES + 1)))  # many-valued integers are quantities
    assert not is_categorical(pd.Series([0.1, 0.01]))
