"""``weightzoo verify DIR[@VERSION]``: decode every chunk and check every table checksum.

Exit codes: 0 nothing wrong, 1 problems found (one line each on stdout, or a JSON report),
2 bad input (not a zoo, unknown version).
"""

from __future__ import annotations

import json
import sys
import time

from weightzoo.cli.common import split_version, zoo_handle
from weightzoo.errors import UsageError

PROGRESS_SECONDS = 2.0


def add_commands(sub) -> None:
    """Add ``verify`` to the ``weightzoo`` parser's subparsers."""
    verify = sub.add_parser("verify", help="check every chunk and table checksum of a version; "
                                           "exit 1 if anything is damaged")
    verify.add_argument("zoo", help="ZOO (latest version) or ZOO@VERSION")
    verify.add_argument("--all", action="store_true", dest="every", help="verify every published version")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    verify.set_defaults(handler=_verify)


def _verify(args) -> int:
    from weightzoo.io.verify import verify_version, versions_to_verify

    path, version = split_version(args.zoo)
    if args.every and version:
        raise UsageError(f"--all verifies every version; drop @{version} or --all")
    zoo = zoo_handle(path)
    reports = []
    for name in versions_to_verify(zoo, version, args.every):
        reports.append(verify_version(zoo, name, progress=None if args.quiet else _progress(name)))
    problems = [p for report in reports for p in report.problems]
    if args.json:
        print(json.dumps({"zoo": path, "ok": not problems, "versions": [r.to_dict() for r in reports]},
                         indent=2))
    else:
        for problem in problems:
            print(problem)
        for report in reports:
            state = f"{len(report.problems)} PROBLEMS" if report.problems else "ok"
            print(f"{path}@{report.version}: {state} ({report.tables_checked} tables, {report.models_checked} models, "
                  f"{report.chunks_checked} chunks, {report.bytes_read / 1e6:.1f} MB decoded)")
    return 1 if problems else 0


def _progress(version: str):
    """A progress callback that prints at most one line every PROGRESS_SECONDS, and the last."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_SECONDS or done == total:
            last[0] = now
            print(f"verify {version}: {done}/{total} rows", file=sys.stderr, flush=True)
    return report
