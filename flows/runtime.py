"""Where flows run: the Dask task runner every flow shares, the Prefect runner of the package's
recipes, and log flushing.

Building and analysing use the same choice: an existing Dask cluster by address (scale-out),
or a LocalCluster of single-threaded worker processes on this machine.

A recipe of ``weightzoo.pipelines`` is written against a runner; :class:`PrefectRunner`
submits each of its steps as a Prefect task (retried unless the error is the input's, never
cached: staging is the one cache) to the flow's Dask task runner.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any, Callable, Iterable, Iterator

import dask
from prefect import Flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.logging.handlers import APILogHandler
from prefect_dask import DaskTaskRunner

from weightzoo.errors import is_input_error

STEP_RETRIES = 2


def dask_runner(workers: int = 2, address: str | None = None) -> DaskTaskRunner:
    """A Dask task runner: an existing cluster by address, or a LocalCluster of processes."""
    if address:
        return DaskTaskRunner(address=address)
    # local workers share this machine's GPU (if any): a CUDA task must never wait for a
    # resource no local worker advertises
    # everything a local command starts listens on 127.0.0.1 only (":0" would bind every interface);
    # the cluster is the command's own and ends with it: its processes' shutdown chatter (heartbeats
    # to a scheduler that has gone, "still alive after 4.0 seconds") is not the user's business,
    # while a task's failure reaches the user through Prefect, not through Dask's log
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
                                          "resources": {"GPU": 1}, "silence_logs": logging.CRITICAL})


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


def retry_unless_input_error(task, task_run, state) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task (worker lost, out of memory, an I/O
    hiccup) unless its error is the input's (:class:`weightzoo.errors.InputError`)."""
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the state's own error, whatever it is
        return not is_input_error(error)
    return False


def step_options(**overrides) -> dict:
    """The options of every task: retried unless the input is at fault, never cached or persisted."""
    return {"retries": STEP_RETRIES, "retry_delay_seconds": 2, "retry_condition_fn": retry_unless_input_error,
            "cache_policy": NO_CACHE, "persist_result": False, **overrides}


@functools.cache
def step_task(step: Callable):
    """The Prefect task of a recipe step: the step itself, its progress lines going to the run log."""
    def run(*args):
        return step(*args, progress=get_run_logger().info)
    run.__name__ = run.__qualname__ = step.__name__
    run.__doc__ = step.__doc__
    return task(run, name=step.__name__.replace("_", "-"), **step_options())


class PrefectRunner:
    """Runs a recipe's steps as Prefect tasks on the current flow's task runner (see
    ``weightzoo.pipelines.runner``)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map(self, step: Callable, calls: Iterable[tuple], *, device: str = "cpu") -> Iterator[Any]:
        """Submit ``step(*args)`` for every call at once; yield the results as they complete."""
        with placed_for(device):  # CUDA steps go to workers with a GPU resource
            futures = [step_task(step).submit(*args) for args in calls]
        for future in as_completed(futures):
            yield future.result()

    def call(self, step: Callable, *args) -> Any:
        """Run one step as a task and wait for its result."""
        return step_task(step).submit(*args).result()


def _summaries(parameters: dict) -> dict:
    """Parameters as Prefect may keep them: typed weightzoo values by their ``summary()`` (or text)."""
    return {key: value.summary() if hasattr(value, "summary") else
            str(value) if type(value).__module__.startswith("weightzoo") else value
            for key, value in parameters.items()}


class RecipeFlow(Flow):
    """A flow whose typed parameters (plans, zoo handles) Prefect records by their ``summary()``.

    Prefect stores every flow run's parameters as JSON; a plan of 100,000 configs would be
    megabytes there. Parameters are still passed to the flow function unchanged.
    """

    def serialize_parameters(self, parameters: dict) -> dict:
        return super().serialize_parameters(_summaries(parameters))

    def with_options(self, **options) -> "RecipeFlow":
        flow = super().with_options(**options)
        flow.__class__ = RecipeFlow  # Flow.with_options builds a plain Flow
        return flow


def recipe_flow(**options) -> Callable[[Callable], RecipeFlow]:
    """``@recipe_flow(name=...)``: like ``@flow``, for flows that take typed weightzoo values.

    The flow run's context keeps the parameters' summaries, not the values: Prefect sends that
    context with every task it submits, and Dask tokenizes and pickles it each time, so a
    build plan of 10,000 configs in it made every submission cost seconds and megabytes in
    the flow process (and in the worker) — quadratic in the size of the build. The function
    itself still receives the values.
    """
    def decorate(function: Callable) -> RecipeFlow:
        @functools.wraps(function)
        def run(*args, **kwargs):
            context = FlowRunContext.get()
            if context is not None:
                context.parameters = _summaries(context.parameters or {})
            return function(*args, **kwargs)
        return RecipeFlow(run, validate_parameters=False, **options)
    return decorate


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
