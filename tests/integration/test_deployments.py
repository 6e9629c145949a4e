"""Prefect deployments against a real ``prefect server`` on 127.0.0.1: ``weightzoo serve`` runs
a triggered smoke build; ``prefect deploy --all`` registers prefect.yaml on the work pool."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from weightzoo.io.reader import open_zoo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ("weightzoo-build/build", "weightzoo-analysis/analysis", "weightzoo-sane/sane")


def _deployment_names(since: datetime | None = None) -> set[str]:
    """``flow/deployment`` names on the server (only those updated after ``since``)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}" for d in deployments if since is None or d.updated >= since}


def test_served_build_deployment_publishes_a_version(prefect_api, run_process, tmp_path):
    from prefect.deployments import run_deployment

    env = dict(os.environ, PREFECT_RUNNER_POLL_FREQUENCY="1", DASK_LOGGING__DISTRIBUTED="warning")
    serve = [sys.executable, "-m", "weightzoo.cli", "serve", "--limit", "1"]
    zoo_dir, started = tmp_path / "zoo", datetime.now(timezone.utc)

    def registered() -> bool:  # by this serve, not left over from another test
        return set(DEPLOYMENTS) <= _deployment_names(since=started)

    with run_process(serve, tmp_path / "serve.log", ready=registered, env=env):
        run = run_deployment("weightzoo-build/build", parameters={"spec": "smoke", "out": str(zoo_dir), "workers": 1},
                             timeout=180, poll_interval=1, as_subflow=False)
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log[-3000:]}"
    zoo = open_zoo(zoo_dir)
    assert zoo.version == "v0001" and len(zoo.models) == 4 and set(zoo.models["status"]) == {"ok"}


def test_prefect_yaml_registers_every_deployment_on_the_work_pool(prefect_api, tmp_path):
    from prefect import get_client

    config, started = yaml.safe_load((REPO / "prefect.yaml").read_text()), datetime.now(timezone.utc)
    for command in (["work-pool", "create", "weightzoo", "--type", "process", "--overwrite"],
                    ["--no-prompt", "deploy", "--all"]):
        result = subprocess.run([sys.executable, "-m", "prefect", *command], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"prefect {' '.join(command)}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    assert set(DEPLOYMENTS) <= _deployment_names(since=started)
    with get_client(sync_client=True) as client:
        for entry in config["deployments"]:
            flow_name = next(name.split("/")[0] for name in DEPLOYMENTS if name.endswith("/" + entry["name"]))
            stored = client.read_deployment_by_name(f"{flow_name}/{entry['name']}")
            assert stored.work_pool_name == "weightzoo" and stored.entrypoint == entry["entrypoint"]
            assert stored.parameters == entry["parameters"], entry["name"]
            # every parameter the yaml sets exists in the flow's signature (a typo fails here)
            assert set(entry["parameters"]) <= set(stored.parameter_openapi_schema["properties"]), entry["name"]
