"""``weightzoo serve``: register the build, analysis and SANE deployments with a Prefect
server and run their flow runs until interrupted.

Where ``PREFECT_API_URL`` is set the deployments go to that server; otherwise a local
``prefect server`` is started for as long as the command runs (as for ``weightzoo build``).
"""

from __future__ import annotations

import logging
import os
import sys

from weightzoo.cli.common import positive
from weightzoo.errors import UsageError


def add_commands(sub) -> None:
    """Add ``serve`` to the ``weightzoo`` parser's subparsers."""
    serve = sub.add_parser("serve", help="serve the build, analysis and SANE flows as Prefect deployments")
    serve.add_argument("--dask-address", help="default Dask scheduler of every run, e.g. tcp://10.0.0.5:8786 "
                                              "(default: $WEIGHTZOO_DASK_ADDRESS, else a LocalCluster per run)")
    serve.add_argument("--limit", type=positive, help="at most this many flow runs at once (default: no limit)")
    serve.set_defaults(handler=_serve)


def _serve(args) -> int:
    from weightzoo_flows.server import prefect_server

    _check_address(args.dask_address)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with prefect_server() as url:
        # Prefect reads its settings when first imported: import it once the URL is exported
        from weightzoo_flows.deployments import deployments, serve_deployments

        logging.getLogger("distributed").setLevel(logging.WARNING)
        names = [f"{d.flow_name}/{d.name}" for d in deployments(args.dask_address)]
        print(f"serving {', '.join(names)} against {url}; trigger a run with e.g.\n"
              f"  prefect deployment run weightzoo-build/build -p spec=smoke -p out=$PWD/zoo\n"
              "Ctrl-C stops serving", file=sys.stderr, flush=True)
        serve_deployments(args.dask_address, limit=args.limit)
    return 0


def _check_address(address: str | None) -> None:
    """A scheduler address must name a host and a port (tcp://HOST:PORT or HOST:PORT)."""
    if address is None:
        return
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--dask-address: expected tcp://HOST:PORT, got {address!r}")
