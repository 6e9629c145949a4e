"""Import to, build to and study a zoo in object storage through the command line, end to end
against the local S3 server, with Prefect flows on a Dask cluster.

The zoo named on the command line becomes one handle at the boundary; staged models and study
results go to its local work folder, never to a relative folder named after the URL (an
import to ``s3://`` once staged into ``./s3:`` and then failed with "not staged").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from s3_server import fresh_url
from torch import nn

from weightzoo.cli import main
from weightzoo.io.handle import ZooHandle
from weightzoo.io.reader import open_zoo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_torch_runs(root, n: int) -> dict[str, list[np.ndarray]]:
    """``n`` folders of epoch_<e>.pt files (an MLP for the digits) with metadata; {folder: flat weights per epoch}."""
    flats = {}
    for index in range(n):
        torch.manual_seed(index)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
        folder = root / f"run{index}"
        folder.mkdir(parents=True)
        flats[folder.name] = []
        for epoch in (0, 3):
            state = {key: value + 0.01 * epoch for key, value in model.state_dict().items()}
            torch.save(state, folder / f"epoch_{epoch}.pt")
            flats[folder.name].append(np.concatenate([v.numpy().ravel() for v in state.values()]))
        metadata = {"hyperparameters": {"lr": 0.01 * (index + 1), "optimizer": "sgd", "dataset": "digits"},
                    "metrics": {"3": {"train_acc": 0.5, "test_acc": 0.4, "step": 30}}}
        (folder / "metadata.json").write_text(json.dumps(metadata))
    return flats


def test_import_build_and_study_a_zoo_in_object_storage(s3, prefect_api, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named after the URL
    imported, built = fresh_url(), fresh_url()
    flats = write_torch_runs(tmp_path / "runs", 3)

    assert main(["import", "torch", str(tmp_path / "runs"), "--out", imported, "--workers", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["version"], report["n_accepted"], report["n_rejected"]) == ("v0001", 3, 0)
    zoo = open_zoo(imported)
    for row in report["accepted"]:
        np.testing.assert_array_equal(zoo.weights(row["model_id"]), np.stack(flats[row["network"]]))

    assert main(["build", "--preset", "smoke", "--out", built, "--workers", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == "v0001" and result["n_models"] == 4 and result["published"]
    assert not ZooHandle.at(built).location.local_path(), "the zoo itself is in object storage"
    assert len(list(ZooHandle.at(built).staging.iterdir())) == 4, "staged in the handle's local work folder"

    assert main(["projections", built, "--include-linear", "--workers", "1", "--json"]) == 0
    study = json.loads(capsys.readouterr().out)
    assert study["path"].startswith(str(ZooHandle.at(built).analyses / "v0001" / "projections"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"], "no folder named after the URL"
