"""The command line: clear errors with exit code 2 for bad input, scriptable JSON output."""

from __future__ import annotations

import json

import pytest

from weightzoo.cli import main


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
