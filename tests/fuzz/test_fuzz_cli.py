"""Bad input fuzzing (hypothesis): hostile spec values and command-line arguments always end
in a clear error — exit code 2 and one ``error: ...`` line (argparse: its usage line and one
error line) — never a traceback, a hang or a crash from deep inside.

Spec junk of every JSON shape is fuzzed against ``load_spec`` in tests/core/test_spec.py;
here the values are well-formed but hostile (huge, negative, unknown names, wrong types) and
go through the whole path a ``weightzoo build`` takes before anything starts (spec, sampling,
model building, grouping). A build that gets past that point would start a Prefect server:
``run_flow`` (of ``weightzoo.cli.build``) is replaced by a sentinel that records the input as valid instead.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from weightzoo import cli
from weightzoo.cli import build as cli_build

BASE_SPEC = {
    "name": "fuzz", "architecture": "mlp", "models": 2, "sampling": {"method": "random", "seed": 0},
    "hyperparameters": {"dataset": "digits", "hidden_width": 4, "optimizer": "sgd", "lr": 0.1, "batch_size": 32},
    "training": {"epochs": 1, "snapshots": {"count": 1}},
}
FIELDS = ["models", "name", "architecture", "sampling.seed", "sampling.method", "sampling.seeds",
          "hyperparameters.hidden_width", "hyperparameters.hidden_layers", "hyperparameters.lr",
          "hyperparameters.batch_size", "hyperparameters.dataset", "hyperparameters.optimizer",
          "hyperparameters.activation", "hyperparameters.dropout", "hyperparameters.no_such_thing",
          "training.epochs", "training.snapshots", "training.snapshots.count", "training.device",
          "training.test_fraction", "training.traces", "dataset_options"]
HUGE = st.sampled_from([10**6, 10**9, 2**31, 2**63, 10**30, -(2**63), 1e300, -1e300, 1e-300])
HOSTILE = st.one_of(
    HUGE, st.integers(-10, 0), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), st.text(max_size=12), st.sampled_from(["nope", "mnist9", "conv", "grid", "Adam"]),
    st.lists(st.integers(-3, 10**9), max_size=3), st.dictionaries(st.sampled_from(["integer", "uniform",
    "log-uniform", "fixed", "categorical", "count", "epochs", "x"]), st.lists(HUGE | st.integers(-5, 5), max_size=3)
    | HUGE, max_size=2))


class ValidInput(Exception):
    """Raised instead of starting a build: the input passed every check."""


@pytest.fixture
def no_build(monkeypatch, tmp_path):
    """Never start a server or a build from a fuzzed command; relative paths land in tmp_path
    (opening a zoo path that does not exist still creates an empty ``<path>/repo/`` there)."""
    monkeypatch.chdir(tmp_path)
    def refuse(target, parameters, args):
        raise ValidInput("VALID INPUT: the build would start")
    monkeypatch.setattr(cli_build, "run_flow", refuse)


def run(argv: list[str], capsys) -> tuple[int, str]:
    """main(argv) → (exit code, stderr); argparse errors exit through SystemExit."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, argv) -> None:
    """Exit 2 with one error line and no traceback (or the sentinel of a valid input)."""
    assert "Traceback" not in err, f"{argv}: {err}"
    if "VALID INPUT" in err:
        return
    lines = [line for line in err.strip("\n").split("\n") if line.strip()]  # a value may hold a \r
    assert code == 2, f"{argv} exited {code}: {err}"
    if lines and lines[0].startswith("usage:"):  # argparse: usage, then one error line (which
        # echoes the bad value as given, newlines included)
        assert re.search(r"^weightzoo( [\w-]+)?: error: ", err, re.MULTILINE), err
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: {err}"


def with_value(path: str, value) -> dict:
    """BASE_SPEC with the dotted field set to ``value``."""
    spec = json.loads(json.dumps(BASE_SPEC))
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) or key not in node else node[key]
        if not isinstance(node, dict):
            return spec
    node[last] = value
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(FIELDS), value=HOSTILE)
def test_hostile_spec_values_fail_cleanly_before_a_build_starts(tmp_path, capsys, no_build, path, value):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(with_value(path, value)))
    # --models 2 keeps valid plans small; the spec's own "models" is validated all the same
    argv = ["build", "--spec", str(spec_file), "--out", str(tmp_path / "zoo"), "--models", "2"]
    assert_clear_error(*run(argv, capsys), argv)


ZOO_COMMANDS = ["info", "versions", "verify", "meta-classify", "predict", "projections", "reinit",
                "trajectories"]
OPTIONS = ["--models", "--workers", "--max-group", "--epochs", "--slice-length", "--snapshots", "--target",
           "--trained-k", "--max-models", "--resets", "--part", "--features", "--preset", "--spec", "--json",
           "--all", "--no-such-option", "--tensor", "--where"]
VALUES = st.one_of(HUGE.map(str), st.integers(-5, 5).map(str), st.sampled_from(["", "x", "1:0", "-1:3", "a:b",
                   "3:3", "nope", "@", "v0001", "conv", "0,random"]), st.text(st.characters(codec="utf-8",
                   exclude_characters="\x00"), max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(ZOO_COMMANDS + ["build"]),
       options=st.lists(st.tuples(st.sampled_from(OPTIONS), VALUES), max_size=3),
       target=st.sampled_from(["{tmp}/missing", "{tmp}/missing@v0001", "{tmp}@v9999", "", "@", "{tmp}/zoo@"]))
@example(command="build", options=[("--models", "1000000000"), ("--preset", "smoke")], target="{tmp}/zoo")  # hung
def test_junk_arguments_exit_2_with_one_error_line(tmp_path, capsys, no_build, command, options, target):
    argv = [command]
    if command == "build":
        argv += ["--out", target.format(tmp=tmp_path) or "zoo-fuzz-never-created"]
    else:
        argv.append(target.format(tmp=tmp_path))
    for option, value in options:
        argv += [option] if option in ("--json", "--all") else [option, value]
    code, err = run(argv, capsys)
    assert_clear_error(code, err, argv)


@pytest.mark.parametrize("argv", [["build", "--preset", "smoke", "--models", "1000000000"],
                                  ["build", "--spec", "{spec}"]])
def test_a_huge_model_count_is_refused_instead_of_hanging_the_planner(tmp_path, capsys, no_build, argv):
    # Found by the fuzzing above: 10⁹ models passed every check and the planner sampled them all.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(with_value("models", 10**9)))
    argv = [a.format(spec=spec) for a in argv] + ["--out", str(tmp_path / "zoo")]
    code, err = run(argv, capsys)
    assert_clear_error(code, err, argv)
    assert "1000000000" in err and ("1,000,000" in err or "1000000" in err)
