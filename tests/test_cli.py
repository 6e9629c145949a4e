"""The command line: clear errors with exit code 2 for bad input, scriptable JSON output."""

from __future__ import annotations

import json

import pytest

from weightzoo.cli import main
from weightzoo.cli.common import SNAPSHOTS_HELP
from weightzoo.io.reader import open_zoo


def test_malformed_spec_fails_before_training_and_names_the_field(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nmodels: 2\nhyperparameters:\n  dataset: digits\n  lr: {log-uniform: [0.1, 0.01]}\n"
                    "training: {epochs: 1}\n")
    assert main(["build", "--spec", str(spec), "--out", str(tmp_path / "zoo")]) == 2
    error = capsys.readouterr().err
    assert "hyperparameters.lr" in error and "Traceback" not in error
    assert not (tmp_path / "zoo").exists()


def test_unknown_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["build", "--preset", "nope", "--out", str(tmp_path / "zoo")]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["build", "--models", "0"], ["build", "--workers", "-1"], ["build", "--models", "x"]])
def test_bad_numbers_are_rejected_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_versions_and_info_as_json(smoke_zoo, capsys):
    assert main(["versions", str(smoke_zoo), "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in versions] == ["v0001"] and versions[0]["n_models"] == 4
    assert main(["info", f"{smoke_zoo}@v0001", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_models"] == 4 and info["by_status"] == {"ok": 4} and info["datasets"] == {"digits": 4}
    assert 0.0 <= info["test_acc_last"]["mean"] <= 1.0


def test_unknown_version_and_non_zoo_paths_exit_2(smoke_zoo, tmp_path, capsys):
    assert main(["info", f"{smoke_zoo}@v0042"]) == 2
    assert "v0001" in capsys.readouterr().err
    assert main(["versions", str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_adding_models_without_extend_is_refused(smoke_zoo, capsys):
    assert main(["build", "--preset", "smoke", "--models", "6", "--out", str(smoke_zoo)]) == 2
    assert "--extend" in capsys.readouterr().err


def _error_of(argv, capsys) -> str:
    """The one error line of a command that must fail with exit code 2 before any server starts."""
    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_every_study_command_refuses_snapshots_a_model_lacks_with_the_same_error(smoke_zoo, capsys):
    n_snapshots = int(open_zoo(smoke_zoo).models["n_snapshots"].max())
    assert n_snapshots == 3
    errors = {command: _error_of([*command.split(), str(smoke_zoo), *extra, "--snapshots", "0:99"], capsys)
              for command, extra in (("predict", []), ("meta-classify", ["--target", "optimizer"]),
                                     ("projections", []), ("sane train", []))}
    first = errors["predict"]
    assert "'0:99' ask for k=3 but model" in first and "n_snapshots=3 (k = 0..2)" in first
    assert set(errors.values()) == {first}, "one grammar, one rule, one message for every command"
    assert _error_of(["pull", str(smoke_zoo), str(smoke_zoo.parent / "copy"), "--snapshots", "0:99"], capsys) == first


@pytest.mark.parametrize("command", ["predict", "meta-classify --target optimizer", "projections", "sane train",
                                     "pull"])
def test_every_snapshots_option_parses_the_same_grammar(command, smoke_zoo, tmp_path, capsys):
    argv = [*command.split(), str(smoke_zoo), *([str(tmp_path / "copy")] if command == "pull" else [])]
    for text, message in (("x:y", "expected all, last, K, A:B"), ("3:1", "0 <= A < B")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--snapshots", text])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "--snapshots" in error and message in error
    helps = {action.help for action in _subparser(command.split()[0])._actions if "--snapshots" in action.option_strings}
    assert helps == {SNAPSHOTS_HELP}


def _subparser(name: str):
    from weightzoo.cli import parser

    (sub,) = [a for a in parser()._actions if a.dest == "command"]
    return sub.choices[name]


def test_every_study_prints_the_same_way_from_its_result(tmp_path, capsys):
    from argparse import Namespace

    from weightzoo.analysis.results import StudyResult
    from weightzoo.cli.studies import print_results

    rows = [{"target": "test_acc", "value": 0.87654, "chance": None}, {"target": "optimizer", "note": "one class"}]
    result = StudyResult("demo", tmp_path, cached=True, headline="2 targets", rows=rows, details={"n": 2})
    assert print_results(Namespace(json=False), [result, result]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path} (cached): 2 targets"
    assert lines[1].split() == ["target", "value", "chance", "note"]
    assert lines[2].split() == ["test_acc", "0.8765", "n/a"] and lines[3].split() == ["optimizer", "one", "class"]
    assert len(lines) == 8 and lines[4] == lines[0]
    print_results(Namespace(json=True), result)
    assert json.loads(capsys.readouterr().out) == result.to_dict() == {
        "study": "demo", "path": str(tmp_path), "cached": True, "files": [], "headline": "2 targets",
        "rows": [{"target": "test_acc", "value": 0.87654, "chance": None}, {"target": "optimizer", "note": "one class"}],
        "details": {"n": 2}}


def test_dry_run_prints_the_plan_and_starts_nothing(smoke_zoo, tmp_path, capsys, monkeypatch):
    from weightzoo.cli import build as cli_build

    monkeypatch.setattr(cli_build, "run_flow", lambda *a, **k: pytest.fail("a dry run started a flow"))
    assert main(["build", "--preset", "smoke", "--out", str(tmp_path / "new"), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["models"], plan["new"], plan["to_train"], plan["parent"]) == (4, 4, 4, None)
    (layout,) = plan["layouts"].values()
    assert plan["weight_bytes"] == 4 * 4 * plan["snapshots_per_model"] * layout["n_params"]
    assert not (tmp_path / "new").exists(), "planning writes nothing"
    assert main(["build", "--preset", "smoke", "--out", str(smoke_zoo), "--models", "6", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing was started" in out and "6 models" in out and "holds 4" in out and "2 new: 2 to train" in out
    assert "needs --extend" in out


def test_a_build_reports_where_its_time_went(tmp_path, capsys):
    assert main(["build", "--preset", "smoke", "--out", str(tmp_path / "zoo"), "--in-process", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    stages = result["stages"]
    for name in ("planning", "start_up", "training_phase", "training", "staging", "publishing", "card"):
        assert stages[name] >= 0, name
    assert stages["training"] > 0 and stages["card"] <= stages["publishing"]
    assert (result["trained"], result["reused"], result["published"]) == (4, 0, True)


def test_a_closed_pipe_ends_the_command_quietly(smoke_zoo, capsys, monkeypatch):
    import builtins

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(builtins, "print", closed)
    assert main(["versions", str(smoke_zoo)]) == 0
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


# Issue 18 item 5: destinations are checked before anything starts (one line, exit 2).
@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if a command reaches Prefect or Dask."""
    import weightzoo.cli.common as common
    from weightzoo.cli import build as cli_build, interop as cli_interop, regenerate as cli_regenerate

    def started(*args, **kwargs):
        pytest.fail("a server or flow was started for a bad destination")

    for module in (common, cli_build, cli_interop, cli_regenerate):
        monkeypatch.setattr(module, "run_flow", started)


@pytest.mark.parametrize("argv", [
    ["build", "--preset", "smoke", "--out", "{file}"],
    ["build", "--preset", "smoke", "--out", "{file}/zoo"],
    ["build", "--preset", "smoke", "--out", "{file}", "--in-process"],
    ["import", "bundle", "{bundle}", "--out", "{file}"],
    ["import", "bundle", "{bundle}", "--out", "{file}", "--in-process"],
    ["regenerate", "{zoo}", "--sample", "1", "--scratch", "{file}"],
    ["export", "{zoo}", "--format", "bundle", "--out", "{file}/x.npz"],
    ["export", "{zoo}", "--format", "modelzoos", "--out", "{file}/x"],
    ["pull", "{zoo}", "{file}"],
    ["pull", "{zoo}", "{file}/sub"],
])
def test_a_plain_file_as_destination_is_one_line_exit_2_before_anything_starts(
        argv, smoke_zoo, tmp_path, capsys, no_server):
    plain = tmp_path / "plain"
    plain.write_text("not a folder\n")
    bundle = tmp_path / "in.npz"
    bundle.write_bytes(b"")
    argv = [part.format(file=plain, zoo=smoke_zoo, bundle=bundle) for part in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert len(error.splitlines()) == 1, error
    assert str(plain) in error and ("is a file, not a directory" in error), error
    assert "Traceback" not in captured.err and "File exists" not in error
    assert plain.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "plain"]


# Issue 18 item 4: say what happened, and publish no version equal to its parent.
def test_extend_to_fewer_models_and_unchanged_reruns_say_so_and_publish_nothing(tmp_path, capsys, monkeypatch):
    from weightzoo.io.handle import ZooHandle
    from weightzoo.io.reader import list_versions
    from weightzoo.pipelines import build as pipeline

    zoo = tmp_path / "zoo"
    assert main(["build", "--preset", "smoke", "--models", "4", "--out", str(zoo), "--in-process"]) == 0
    assert "published" in capsys.readouterr().out
    for extra in (["--models", "2"], ["--models", "4"], []):  # --models is the total, not the number to add
        assert main(["build", "--preset", "smoke", *extra, "--extend", "--out", str(zoo), "--in-process"]) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        wanted = extra[1] if extra else "4"
        assert last.startswith(f"nothing new to train: the zoo already has 4 ≥ {wanted} models"), last
        assert last.endswith("nothing published"), last
    assert [v["version"] for v in list_versions(zoo)] == ["v0001"]
    assert main(["build", "--preset", "smoke", "--models", "2", "--extend", "--out", str(zoo), "--in-process",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["published"], report["trained"], report["reused"], report["version"]) == (False, 0, 0, "v0001")

    # two more models staged by a run that stopped before publishing: the rerun trains nothing
    plan = pipeline.plan_build(ZooHandle.at(zoo), "smoke", 6, extend=True)
    for group in plan.work:
        pipeline.train_group(plan.zoo.staging, group)
    assert main(["build", "--preset", "smoke", "--models", "6", "--extend", "--out", str(zoo), "--in-process"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert "reused 2 staged models" in last and "trained" not in last, last
    assert "building 2 new models" not in out and "reusing 2 staged models" in out, out
    assert [v["version"] for v in list_versions(zoo)] == ["v0001", "v0002"]


# Issue 18 items 12 and 10: spellings that match the command line; presets.
def test_build_help_lists_every_preset_of_the_presets_folder(capsys):
    from pathlib import Path

    import weightzoo.presets

    names = sorted(p.stem for p in Path(weightzoo.presets.__file__).parent.glob("*.yaml"))
    assert len(names) >= 7
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    assert all(name in text for name in names), (names, text)


def test_presets_json_and_grid_presets_have_model_counts(capsys):
    from weightzoo.core.sampling import grid_size
    from weightzoo.core.spec import load_spec

    assert main(["presets", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["smoke"]["models"] == 4 and rows["smoke"]["sampling"] == "random"
    grids = [name for name, row in rows.items() if row["sampling"] == "grid"]
    assert grids, "some preset samples a grid"
    for name in grids:
        spec = load_spec(name)
        assert rows[name]["models"] == (spec.models or grid_size(spec)) > 0
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows)
    for line in lines:
        name, count, word = line.split()[:3]
        assert word == "models" and int(count) == rows[name]["models"], line


def test_projections_without_conv_layers_names_the_cli_option(smoke_zoo, capsys, monkeypatch):
    from weightzoo.analysis.projections import NothingToAnalyse, projection_table
    from weightzoo.cli import studies

    monkeypatch.setattr(studies, "run_flow", lambda *a, **k: pytest.fail("started a flow"))
    assert main(["projections", str(smoke_zoo)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "pass --include-linear to analyse linear layers" in error and "include_linear=True" not in error
    with pytest.raises(NothingToAnalyse, match="pass include_linear=True"):  # Python callers get their spelling
        projection_table(open_zoo(smoke_zoo))


# Issue 18 item 10: small messages, each a line of a test.
def test_pull_progress_is_plain_lines_off_a_terminal_and_a_resumed_pull_knows_its_bytes(smoke_zoo, tmp_path, capsys):
    import io

    from weightzoo.cli.pull import Progress

    assert main(["pull", str(smoke_zoo), str(tmp_path / "copy")]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert "4/4 models staged" in captured.err.splitlines()
    assert "None" not in captured.out and "of the source's" in captured.out
    assert main(["pull", str(smoke_zoo), str(tmp_path / "copy")]) == 0  # finished already: the same report
    again = capsys.readouterr().out
    assert "None" not in again and "4 resumed" in again and "of the source's" in again

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress(stream)
        for i in range(1, 101):
            progress(f"{i}/100 models staged")
        progress.close()
    assert terminal.getvalue().count("\r") == 100 and terminal.getvalue().endswith("\n")
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 10


def test_an_unreachable_s3_endpoint_is_named(monkeypatch, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WEIGHTZOO_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    assert main(["versions", "s3://bucket/zoo"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"S3 endpoint http://127.0.0.1:{port} (from WEIGHTZOO_S3_ENDPOINT) does not answer" in error, error


def test_info_prints_readable_values(smoke_zoo, capsys):
    assert main(["info", str(smoke_zoo)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "'" not in out, out
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines()}
    assert fields["by_status"] == "ok 4" and fields["datasets"] == "digits 4"
    assert fields["test_acc_last"].startswith("mean 0.") and "4 models" in fields["test_acc_last"]
    assert fields["repo_bytes"].endswith("MiB)")


def test_a_failed_import_leaves_nothing_behind(tmp_path, capsys):
    run = tmp_path / "runs" / "run0"
    run.mkdir(parents=True)
    (run / "epoch_0.pt").write_bytes(b"not a torch file")
    (run / "metadata.json").write_text("{}")
    assert main(["import", "torch", str(tmp_path / "runs"), "--out", str(tmp_path / "zoo"), "--in-process"]) == 2
    assert "none of the 1 networks" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists(), "no .zoo-id, staging or repository left behind"


def test_a_sane_width_the_heads_cannot_split_is_a_usage_error(tmp_path, capsys):
    assert main(["sane", "train", str(tmp_path / "zoo"), "--d-model", "30"]) == 2
    assert "--d-model must be a multiple of 4" in capsys.readouterr().err


def test_help_of_every_command_renders(capsys):
    """A stray '%' in a help string breaks `weightzoo --help` (argparse formats help with %)."""
    import argparse

    from weightzoo.cli import parser

    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    (subparsers,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers.choices) > 10
    for name, sub in subparsers.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        commands = [[name]] + [[name, child] for a in nested for child in a.choices]
        for argv in commands:
            with pytest.raises(SystemExit) as done:
                main(argv + ["--help"])
            assert done.value.code == 0, argv
    assert "usage" in capsys.readouterr().out
