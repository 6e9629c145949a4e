"""Where flows run: the Dask task runner every flow shares, and log flushing.

Building and analysing use the same choice: an existing Dask cluster by address (scale-out),
or a LocalCluster of single-threaded worker processes on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import dask
from prefect.logging.handlers import APILogHandler
from prefect_dask import DaskTaskRunner


def dask_runner(workers: int = 2, address: str | None = None) -> DaskTaskRunner:
    """A Dask task runner: an existing cluster by address, or a LocalCluster of processes."""
    if address:
        return DaskTaskRunner(address=address)
    # local workers share this machine's GPU (if any): a CUDA task must never wait for a
    # resource no local worker advertises
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0", "resources": {"GPU": 1}})


def device_resources(device: str) -> dict[str, int]:
    """Dask resources a training task on ``device`` needs: one ``GPU`` for CUDA, none for CPU.

    Workers advertise GPUs with ``dask worker ... --resources "GPU=1"``; a task asking for one
    runs only there, while CPU tasks (which ask for nothing) may run on any worker.
    """
    return {"GPU": 1} if device.startswith("cuda") else {}


@contextlib.contextmanager
def placed_for(device: str) -> Iterator[dict[str, int]]:
    """Tasks submitted inside this block carry the Dask resources ``device`` needs.

    prefect-dask submits through ``distributed.Client.submit``, which merges the annotations
    of an enclosing ``dask.annotate`` block into each task it sends to the scheduler.
    """
    resources = device_resources(device)
    if not resources:
        yield resources
        return
    with dask.annotate(resources=resources):
        yield resources


def retry_unless(*permanent: type[BaseException]):
    """A Prefect ``retry_condition_fn``: retry a failed task unless its error is one of
    ``permanent`` (errors of the input, which no retry can fix)."""
    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except permanent:
            return False
        except Exception:  # worker lost, out of memory, I/O hiccup
            return True
        return False
    return condition


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
