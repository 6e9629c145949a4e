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
    target = zoo_handle(args.dest)
    target.check_destination("DEST")  # a plain file: one line, exit 2, nothing read or created
    from weightzoo.pipelines.pull import pull_zoo

    zoo = open_version(args.source)  # clear errors for a bad source before anything is copied
    zoo.select(args.where, snapshots=args.snapshots, status=None)  # a --where or --snapshots that does not fit
    progress = None if args.json else Progress(sys.stderr)
    try:
        report = pull_zoo(zoo, target, where=args.where, snapshots=args.snapshots, progress=progress)
    finally:
        if progress is not None:
            progress.close()  # an error that follows starts on a line of its own
    if args.json:
        print_json(report)
        return 0
    source_bytes = report["source_repo_bytes"]
    repo = f"repo {report['dest_repo_bytes']:,} bytes" + (f" of the source's {source_bytes:,}"
                                                           if source_bytes is not None else "")
    print(f"pulled {report['n_models']} models of {report['source']}@{report['version']} into "
          f"{report['dest']}@{report['dest_version']} ({report['n_copied']} copied, {report['n_resumed']} resumed "
          f"from staging; {report['bytes_copied']:,} weight bytes copied; {repo}); checksums verified")
    return 0


class Progress:
    """Progress lines of a pull on ``stream``: rewritten in place (``\\r``) on a terminal; in a log
    (not a terminal) plain lines, about ten per pull, and never a ``\\r``."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.pending = False  # a \r line waits for its newline
        self.last = None

    def __call__(self, line: str) -> None:
        if self.terminal:
            print(f"\r{line}", end="", file=self.stream, flush=True)
            self.pending = True
            return
        done, _, total = line.partition(" ")[0].partition("/")
        if done.isdigit() and total.isdigit():
            step = max(1, int(total) // 10)
            if int(done) % step and int(done) != int(total):
                self.last = line
                return
        print(line, file=self.stream, flush=True)
        self.last = None

    def close(self) -> None:
        if self.pending:
            print(file=self.stream, flush=True)
            self.pending = False
