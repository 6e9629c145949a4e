"""The catalog commands: query (SQL over a version), card (its dataset card), diff (two versions).

None of them starts a server or a cluster: they read a version's tables directly.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from weightzoo.cli_studies import UsageError, positive

DEFAULT_MAX_ROWS = 100


def add_commands(sub) -> None:
    """Add ``query``, ``card`` and ``diff`` to the ``weightzoo`` parser's subparsers."""
    query = sub.add_parser("query", help="SQL (DuckDB) over a version's tables and analysis results")
    query.add_argument("zoo", help="DIR or DIR@VERSION")
    query.add_argument("sql", help="one SELECT statement, e.g. \"select optimizer, count(*) from models group by 1\"")
    output = query.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print all rows as a JSON list of objects")
    output.add_argument("--csv", action="store_true", help="print all rows as CSV")
    query.add_argument("--max-rows", type=positive, default=DEFAULT_MAX_ROWS,
                       help=f"rows shown in the table view (default: {DEFAULT_MAX_ROWS})")
    query.set_defaults(handler=_query)
    card = sub.add_parser("card", help="write a version's dataset card (CARD.md with plots) if it has none")
    card.add_argument("zoo", help="DIR or DIR@VERSION")
    card.add_argument("--out", type=Path, help="write into this directory instead (required when the version "
                                               "has a card already: versions are immutable)")
    card.add_argument("--json", action="store_true")
    card.set_defaults(handler=_card)
    diff = sub.add_parser("diff", help="models added, removed and changed between two versions")
    diff.add_argument("zoo", help="zoo directory")
    diff.add_argument("version_a", help="the older version, e.g. v0001")
    diff.add_argument("version_b", help="the newer version, e.g. v0002")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(handler=_diff)


def _open_version(text: str):
    from weightzoo.io.reader import open_zoo

    path, _, version = text.partition("@")
    return open_zoo(path, version or None)


def _query(args) -> int:
    from weightzoo.analysis.records import json_records
    from weightzoo.io.query import QueryError, run_query

    zoo = _open_version(args.zoo)
    try:
        result = run_query(zoo, args.sql)
    except QueryError as error:
        raise UsageError(f"query: {error}") from None
    result = _plain_cells(result)
    if args.json:
        print(json.dumps(json_records(result), indent=2, default=str))
    elif args.csv:
        result.to_csv(sys.stdout, index=False)
    else:
        _print_table(result, args.max_rows)
    return 0


def _plain_cells(frame):
    """List cells (e.g. layouts.shape) as Python lists, so JSON and CSV show ``[3, 3]``."""
    for column in frame.columns[frame.dtypes == object]:
        if frame[column].map(lambda value: hasattr(value, "tolist")).any():
            frame[column] = frame[column].map(lambda value: value.tolist() if hasattr(value, "tolist") else value)
    return frame


def _print_table(frame, max_rows: int) -> None:
    if frame.empty:
        print(f"(no rows; columns: {', '.join(map(str, frame.columns))})")
        return
    width = shutil.get_terminal_size((160, 40)).columns
    print(frame.head(max_rows).to_string(index=False, max_colwidth=48, line_width=width))
    shown = f"{max_rows} of " if len(frame) > max_rows else ""
    print(f"({shown}{len(frame)} rows{'; --csv or --json for all' if shown else ''})")


def _card(args) -> int:
    from weightzoo.io.card import CARD_NAME, write_card
    from weightzoo.io.reader import open_zoo

    path, _, version = args.zoo.partition("@")
    zoo = open_zoo(path, version or None)
    target = args.out or _own_card_dir(zoo, CARD_NAME)
    if args.out is not None and zoo.folder.is_dir() and args.out.resolve() == zoo.folder.resolve():
        raise UsageError(f"--out {args.out} is the version's own directory; give another directory")
    tables = {"models": zoo.models, "snapshots": zoo.snapshots, "layouts": zoo.layouts}
    parent = zoo.manifest.get("parent")
    parent_tables = None
    if parent:
        parent_zoo = open_zoo(path, parent)
        parent_tables = {"models": parent_zoo.models, "snapshots": parent_zoo.snapshots}
    Path(target).mkdir(parents=True, exist_ok=True)
    card = write_card(Path(target), tables, zoo.manifest, parent_tables)
    plots = sorted(str(p) for p in (Path(target) / "card").glob("*.png"))
    if args.json:
        print(json.dumps({"version": zoo.version, "card": str(card), "plots": plots}, indent=2))
    else:
        print(f"wrote {card} ({len(plots)} plots)")
    return 0


def _own_card_dir(zoo, card_name: str) -> Path:
    """The version's own directory, where a card may be added only if it has none yet."""
    if not zoo.folder.is_dir():
        raise UsageError(f"{zoo.root} is not a local directory; pass --out DIR to write the card there")
    if (zoo.folder / card_name).exists():
        raise UsageError(f"{zoo.folder / card_name} exists and versions are immutable; "
                         f"pass --out DIR to write a fresh card elsewhere")
    return zoo.folder


def _diff(args) -> int:
    from weightzoo.io.diff import diff_versions

    diff = diff_versions(args.zoo, args.version_a, args.version_b)
    if args.json:
        print(json.dumps(diff.to_dict(), indent=2))
        return 0
    counts = diff.to_dict()["counts"]
    print(f"{args.zoo} {diff.version_a} -> {diff.version_b}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    for model_id in diff.added:
        print(f"  + {model_id}")
    for model_id in diff.removed:
        print(f"  - {model_id}")
    for model_id, fields in diff.changed.items():
        print(f"  ~ {model_id}: {', '.join(fields)}")
    return 0
