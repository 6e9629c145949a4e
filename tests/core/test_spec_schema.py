"""The zoo-spec schema: valid, generated from the table, and enforcing each table entry's domain."""

import re
from pathlib import Path

import jsonschema
import pytest

from weightzoo.core.spec import SpecError, load_spec
from weightzoo.core.spec_schema import (
    HYPERPARAMETERS,
    Hyperparameter,
    build_spec_schema,
    main,
    spec_schema,
    spec_schema_text,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "schemas" / "zoo-spec.schema.json"
BASE = {"name": "minimal", "models": 3, "hyperparameters": {"dataset": "digits"}, "training": {"epochs": 10}}


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(spec_schema())


def test_schema_file_is_generated_from_the_table():
    assert not SCHEMA_FILE.is_symlink()
    assert SCHEMA_FILE.read_text(encoding="utf-8") == spec_schema_text(), (
        "schemas/zoo-spec.schema.json is out of date; regenerate it with "
        "`python -m weightzoo.core.spec_schema schemas/zoo-spec.schema.json`")


def test_schema_lists_every_hyperparameter_in_table_order():
    properties = spec_schema()["properties"]["hyperparameters"]["properties"]
    assert list(properties) == list(HYPERPARAMETERS)


def test_built_schemas_share_nothing():
    first, second = build_spec_schema(), build_spec_schema()
    first["properties"]["training"]["properties"]["epochs"]["maximum"] = 1
    first["properties"]["hyperparameters"]["properties"]["lr"]["anyOf"][0]["maximum"] = 1
    assert second == spec_schema() and first != second


@pytest.mark.parametrize(("name", "description"), [
    ("lr", "learning rate, number in (0, 10]; given as a value, a list (categorical), {fixed: v}, "
           "{categorical: [...]}, {uniform: [low, high]}, {log-uniform: [low, high]}"),
    ("dropout", "dropout probability, number in [0, 1); given as a value, a list (categorical), {fixed: v}, "
                "{categorical: [...]}, {uniform: [low, high]}, {log-uniform: [low, high]}"),
    ("filter_size", "conv filter size, odd integer 1..9; given as a value, a list (categorical), {fixed: v}, "
                    "{categorical: [...]}, {integer: [low, high]}"),
    ("classes", "number of classes used, integer >= 0 (0 = all); given as a value, a list (categorical), "
                "{fixed: v}, {categorical: [...]}, {integer: [low, high]}"),
    ("optimizer", "optimizer (sgd | momentum | adam | rmsprop); given as a value, a list (categorical), "
                  "{fixed: v}, {categorical: [...]}"),
    ("batch_norm", "batch normalisation, boolean; given as a value, a list (categorical), {fixed: v}, "
                   "{categorical: [...]}"),
])
def test_descriptions_state_the_domain_and_the_forms(name, description):
    assert HYPERPARAMETERS[name].describe() == description


def domain_cases(info: Hyperparameter) -> list:
    """(value, accepted) pairs at and just beyond the edges of ``info``'s domain."""
    if info.type == "str":
        return [(choice, True) for choice in info.choices] + [("not-a-choice", False), (1, False)]
    if info.type == "bool":
        return [(True, True), (False, True), ("yes", False), (1, False)]
    step = 1 if info.type == "int" else 0.5
    cases = [(info.minimum, not info.exclusive_minimum), (info.minimum - step, False), ("1", False)]
    if info.maximum is not None:
        cases += [(info.maximum, not info.exclusive_maximum), (info.maximum + step, False)]
    if info.type == "int":
        cases += [(info.minimum + 0.5, False)]
    if info.odd:
        cases += [(info.minimum + 1, False)]
    return cases


@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_schema_enforces_each_hyperparameter_domain(name):
    info = HYPERPARAMETERS[name]
    for value, accepted in domain_cases(info):
        for given in (value, [value], {"fixed": value}):
            spec = {**BASE, "hyperparameters": {**BASE["hyperparameters"], name: given}}
            if accepted:
                assert load_spec(spec).hyperparameters[name].values == (info.coerce(value),)
                continue
            with pytest.raises(SpecError) as caught:
                load_spec(spec)
            assert caught.value.field == f"hyperparameters.{name}", (value, given)
            assert f"expected {info.describe()}" in str(caught.value), (value, given)


@pytest.mark.parametrize("name", [name for name, info in HYPERPARAMETERS.items() if info.range_kinds])
def test_ranges_are_offered_exactly_for_numbers(name):
    info = HYPERPARAMETERS[name]
    low = info.minimum + (0.5 if info.exclusive_minimum else 0)
    spec = {**BASE, "hyperparameters": {**BASE["hyperparameters"], name: {info.range_kinds[0]: [low, low]}}}
    if info.type == "int":
        assert load_spec(spec).hyperparameters[name].kind == "integer"
    else:
        with pytest.raises(SpecError, match="low < high"):
            load_spec(spec)
    wrong = "integer" if info.type == "float" else "uniform"
    with pytest.raises(SpecError, match=re.escape(f"expected {info.describe()}")):
        load_spec({**BASE, "hyperparameters": {**BASE["hyperparameters"], name: {wrong: [low, low]}}})


def test_main_writes_the_schema_to_a_file_or_stdout(tmp_path, capsys):
    main([str(tmp_path / "schema.json")])
    assert (tmp_path / "schema.json").read_text(encoding="utf-8") == spec_schema_text()
    main([])
    assert capsys.readouterr().out == spec_schema_text()
    with pytest.raises(SystemExit, match="usage"):
        main(["a.json", "b.json"])
