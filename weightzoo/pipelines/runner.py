"""Where a recipe's steps run: the interface every recipe is written against.

A step is a plain function that takes its arguments and a keyword ``progress`` (a callable
receiving one line of text, or None). A recipe calls ``runner.map(step, calls)`` for the
fan-out and ``runner.call(step, *args)`` for a single step; the runner decides where they
run. :class:`InProcessRunner` runs them here, one after another (notebooks, tests,
``--in-process``); the Prefect runner of ``weightzoo_flows.runtime`` submits them as
retried tasks to a Dask cluster.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol


class Runner(Protocol):
    """Runs a recipe's steps; see the module docstring."""

    threads: int | None  # torch threads a training step may use (None: leave torch's setting)

    def map(self, step: Callable, calls: Iterable[tuple], *, device: str = "cpu") -> Iterator[Any]:
        """Run ``step(*args)`` for every ``args`` of ``calls``; yield the results as they complete.

        ``device`` is where the steps compute (``cuda`` steps go to workers with a GPU).
        """

    def call(self, step: Callable, *args) -> Any:
        """Run one ``step(*args)`` and return its result."""


class InProcessRunner:
    """Runs every step in this process, in order; ``progress`` receives the steps' lines."""

    def __init__(self, *, threads: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.threads, self.progress = threads, progress

    def map(self, step: Callable, calls: Iterable[tuple], *, device: str = "cpu") -> Iterator[Any]:
        """Run the calls one after another (see :meth:`Runner.map`)."""
        for args in calls:
            yield step(*args, progress=self.progress)

    def call(self, step: Callable, *args) -> Any:
        """Run one step (see :meth:`Runner.call`)."""
        return step(*args, progress=self.progress)
