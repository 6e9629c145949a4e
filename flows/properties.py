"""Property prediction from weight statistics as a flow (one cached, retryable task).

The result is cached on disk under ``<zoo>/analyses/<version>/properties/<key>/``.
"""

from __future__ import annotations

from prefect import flow, task

from weightzoo.analysis.properties import run_property_study
from weightzoo.analysis.studies import result_dir
from weightzoo.io.reader import open_zoo


@task(name="properties", retries=1, retry_delay_seconds=2)
def properties_task(zoo_dir: str, version: str | None, out_dir: str | None, targets: list[str] | None) -> dict:
    """Weight-statistics features and property prediction."""
    zoo = open_zoo(zoo_dir, version)
    target = out_dir or str(result_dir(zoo, "properties", {"targets": targets}))
    return run_property_study(zoo, target, targets=targets)


@flow(name="properties")
def properties_flow(zoo_dir: str, version: str | None = None, out_dir: str | None = None,
                    targets: list[str] | None = None) -> dict:
    """The weight-statistics property-prediction study (all targets by default)."""
    return properties_task(zoo_dir, version, out_dir, targets)
