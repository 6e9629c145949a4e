"""What every command shares: reading ``ZOO[@VERSION]``, running a flow against a Prefect
server, argument types (one ``--snapshots`` grammar for every command), and printing.

This is the boundary: a zoo named on the command line becomes a
:class:`~weightzoo.io.handle.ZooHandle` here, once, and every function below receives it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from weightzoo.errors import UsageError


def zoo_handle(text: str):
    """The handle of the zoo named by ``text`` (a path or ``s3://`` URL, without ``@VERSION``)."""
    from weightzoo.io.handle import ZooHandle

    return ZooHandle.at(text)


def split_version(text: str) -> tuple[str, str | None]:
    """``ZOO[@VERSION]`` → (ZOO, VERSION or None)."""
    where, _, version = text.partition("@")
    if not where:
        raise UsageError(f"expected ZOO or ZOO@VERSION, got {text!r}")
    return where, version or None


def open_version(text: str):
    """``ZOO[@VERSION]`` → the opened version (:class:`weightzoo.io.reader.Zoo`); clear errors
    (not a zoo, unknown version) before any server starts."""
    where, version = split_version(text)
    return zoo_handle(where).open(version)


def run_flow(target: str, parameters: dict, args) -> object:
    """Run the flow ``target`` (``"module:flow"`` of ``weightzoo_flows``) with ``parameters`` on
    Dask (``args.workers`` local processes, or ``args.dask_address``) against a Prefect server:
    the one of ``PREFECT_API_URL``, else a local one started for the duration."""
    from weightzoo_flows.server import prefect_server

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with prefect_server():
        # Prefect reads its settings when first imported: import the flows only once the
        # server's URL is in the environment
        module, _, name = target.partition(":")
        flow = getattr(importlib.import_module(f"weightzoo_flows.{module}"), name)
        from weightzoo_flows.runtime import run_on_dask

        logging.getLogger("distributed").setLevel(logging.WARNING)
        return run_on_dask(flow, parameters, workers=args.workers, dask_address=args.dask_address)


def task_threads(args, tasks: int | None = None) -> int | None:
    """torch threads per task: this machine's cores shared by the local workers (None on a
    cluster given by address, whose workers keep their own setting)."""
    if args.dask_address:
        return None
    workers = min(args.workers, tasks) if tasks else args.workers
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def add_cluster_options(parser) -> None:
    """``--workers`` and ``--dask-address``, for commands that run flows."""
    parser.add_argument("--workers", type=positive, default=2, help="local Dask worker processes (default: 2)")
    parser.add_argument("--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")


SNAPSHOTS_HELP = ("snapshots k to read: all (default), last, K, A:B (B exclusive), A: (to each model's last), "
                  ":B or a list 0,2,4; a k that a selected model lacks is an error naming it")


def add_snapshots_option(parser) -> None:
    """``--snapshots``, the same grammar and help for every command (see :func:`snapshot_choice`)."""
    parser.add_argument("--snapshots", type=snapshot_choice, help=SNAPSHOTS_HELP)


def snapshot_choice(text: str):
    """An argparse type: ``text`` as a :class:`weightzoo.core.snapshots.SnapshotChoice`."""
    from weightzoo.core.snapshots import SnapshotChoice

    try:
        return SnapshotChoice.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def snapshot_text(choice) -> str | None:
    """A parsed ``--snapshots`` as the text a flow parameter carries (None when not given)."""
    return None if choice is None else choice.text


def positive(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def print_json(value) -> None:
    """``value`` as indented JSON on stdout (objects with ``to_dict()`` as their dict)."""
    print(json.dumps(value, indent=2, default=lambda v: v.to_dict() if hasattr(v, "to_dict") else str(v)))


def say(args, text: str) -> None:
    """A progress line: on stdout, or on stderr when stdout carries ``--json``."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)
