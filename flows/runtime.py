"""Where flows run: the Dask task runner every flow shares, and log flushing.

Building and analysing use the same choice: an existing Dask cluster by address (scale-out),
or a LocalCluster of single-threaded worker processes on this machine.
"""

from __future__ import annotations

import logging
import os

from prefect.logging.handlers import APILogHandler
from prefect_dask import DaskTaskRunner


def dask_runner(workers: int = 2, address: str | None = None) -> DaskTaskRunner:
    """A Dask task runner: an existing cluster by address, or a LocalCluster of processes."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0"})


def threads_per_task(workers: int) -> int:
    """torch threads for one task when ``workers`` tasks share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def chunked(items: list, size: int) -> list[list]:
    """``items`` in consecutive chunks of at most ``size`` (one Dask task each)."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def run_on_dask(flow, parameters: dict, *, workers: int = 2, dask_address: str | None = None):
    """Run ``flow(**parameters)`` on a Dask task runner and flush its logs afterwards."""
    try:
        return flow.with_options(task_runner=dask_runner(workers, dask_address))(**parameters)
    finally:
        flush_logs()


def flush_logs() -> None:
    """Send buffered run logs now, while the server that should receive them is still up."""
    for handler in logging.getLogger("prefect").handlers + logging.getLogger("prefect.flow_runs").handlers:
        if isinstance(handler, APILogHandler):
            handler.flush()
