"""The ``weightzoo pull`` command: copy a selection of a zoo (local or s3://) into a new zoo.

No Prefect, no Dask: a pull is I/O bound and runs in this process (see :mod:`weightzoo.io.pull`).
"""

from __future__ import annotations

import json
import sys

from weightzoo.cli_studies import UsageError, _open_version, _snapshot_range


def add_commands(sub) -> None:
    """Add ``pull`` to the ``weightzoo`` parser's subparsers."""
    pull = sub.add_parser("pull", help="copy a selection of a zoo (local or s3://bucket/prefix) into a new zoo "
                                       "with its own first version; interrupted pulls resume")
    pull.add_argument("source", help="SOURCE or SOURCE@VERSION (a directory or s3://bucket/prefix)")
    pull.add_argument("dest", help="the new zoo: a directory (or s3://bucket/prefix to publish there)")
    pull.add_argument("--where", help="a pandas query on models.parquet, e.g. \"optimizer == 'adam'\"")
    pull.add_argument("--snapshots", help="snapshot range A:B (B exclusive), renumbered from k=0 in the copy")
    pull.add_argument("--json", action="store_true", help="print the report as JSON")
    pull.set_defaults(handler=_pull)


def _pull(args) -> int:
    from weightzoo.io.pull import PullError, pull_zoo

    from weightzoo.io.location import parse_location

    try:
        parse_location(args.source.partition("@")[0]), parse_location(args.dest)
    except ValueError as error:  # an URL that is not a zoo location
        raise UsageError(str(error)) from error
    _, _, zoo = _open_version(args.source)  # clear errors for a bad source before anything is copied
    snapshots = _snapshot_range(args.snapshots)
    try:
        zoo.select(args.where, snapshots=snapshots, status=None)
    except ValueError as error:  # a --where or --snapshots that does not fit this zoo
        raise UsageError(str(error)) from error
    progress = None if args.json else (lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True))
    try:
        report = pull_zoo(zoo.location, args.dest, version=zoo.version, where=args.where, snapshots=snapshots,
                          progress=progress)
    except PullError as error:
        raise UsageError(str(error)) from error
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(file=sys.stderr)
    print(f"pulled {report['n_models']} models of {report['source']}@{report['version']} into "
          f"{report['dest']}@{report['dest_version']} ({report['n_copied']} copied, {report['n_resumed']} resumed "
          f"from staging; {report['bytes_copied']} weight bytes; repo {report['dest_repo_bytes']} of "
          f"{report['source_repo_bytes']} bytes); checksums verified")
    return 0
