"""The ``weightzoo pull`` command: copy a selection of a zoo (local or s3://) into a new zoo.

No Prefect, no Dask: a pull is I/O bound and runs in this process (see
:mod:`weightzoo.pipelines.pull`).
"""

from __future__ import annotations

import sys

from weightzoo.cli.common import add_snapshots_option, open_version, print_json, zoo_handle


def add_commands(sub) -> None:
    """Add ``pull`` to the ``weightzoo`` parser's subparsers."""
    pull = sub.add_parser("pull", help="copy a selection of a zoo (local or s3://bucket/prefix) into a new zoo "
                                       "with its own first version (the chosen snapshots keep their k); "
                                       "interrupted pulls resume")
    pull.add_argument("source", help="SOURCE or SOURCE@VERSION (a directory or s3://bucket/prefix)")
    pull.add_argument("dest", help="the new zoo: a directory (or s3://bucket/prefix to publish there)")
    pull.add_argument("--where", help="a pandas query on models.parquet, e.g. \"optimizer == 'adam'\"")
    add_snapshots_option(pull)
    pull.add_argument("--json", action="store_true", help="print the report as JSON")
    pull.set_defaults(handler=_pull)


def _pull(args) -> int:
    from weightzoo.pipelines.pull import pull_zoo

    target = zoo_handle(args.dest)
    target.check_destination("DEST")  # a plain file: one line, exit 2, nothing read or created
    zoo = open_version(args.source)  # clear errors for a bad source before anything is copied
    zoo.select(args.where, snapshots=args.snapshots, status=None)  # a --where or --snapshots that does not fit
    progress = None if args.json else (lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True))
    report = pull_zoo(zoo, target, where=args.where, snapshots=args.snapshots, progress=progress)
    if args.json:
        print_json(report)
        return 0
    print(file=sys.stderr)
    print(f"pulled {report['n_models']} models of {report['source']}@{report['version']} into "
          f"{report['dest']}@{report['dest_version']} ({report['n_copied']} copied, {report['n_resumed']} resumed "
          f"from staging; {report['bytes_copied']} weight bytes; repo {report['dest_repo_bytes']} of "
          f"{report['source_repo_bytes']} bytes); checksums verified")
    return 0
