"""The catalog commands: versions, info, query (SQL over a version), card (its dataset card),
diff (two versions).

None of them starts a server or a cluster: they read a version's tables directly.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from weightzoo.cli.common import open_version, positive, print_json, zoo_handle
from weightzoo.errors import UsageError

DEFAULT_MAX_ROWS = 100


def add_commands(sub) -> None:
    """Add ``versions``, ``info``, ``query``, ``card`` and ``diff`` to the ``weightzoo`` parser's subparsers."""
    versions = sub.add_parser("versions", help="list a zoo's published versions")
    versions.add_argument("zoo", help="a zoo: a directory or s3://bucket/prefix")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=_versions)
    info = sub.add_parser("info", help="summarise a version: counts, layouts, datasets, accuracy")
    info.add_argument("zoo", help="ZOO or ZOO@VERSION")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=_info)
    query = sub.add_parser("query", help="SQL (DuckDB) over a version's tables and analysis results")
    query.add_argument("zoo", help="ZOO or ZOO@VERSION")
    query.add_argument("sql", help="one SELECT statement, e.g. \"select optimizer, count(*) from models group by 1\"")
    output = query.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print all rows as a JSON list of objects")
    output.add_argument("--csv", action="store_true", help="print all rows as CSV")
    query.add_argument("--max-rows", type=positive, default=DEFAULT_MAX_ROWS,
                       help=f"rows shown in the table view (default: {DEFAULT_MAX_ROWS})")
    query.set_defaults(handler=_query)
    card = sub.add_parser("card", help="write a version's dataset card (CARD.md with plots) if it has none")
    card.add_argument("zoo", help="ZOO or ZOO@VERSION")
    card.add_argument("--out", type=Path, help="write into this directory instead (required when the version "
                                               "has a card already: versions are immutable)")
    card.add_argument("--json", action="store_true")
    card.set_defaults(handler=_card)
    diff = sub.add_parser("diff", help="models added, removed and changed between two versions")
    diff.add_argument("zoo", help="a zoo: a directory or s3://bucket/prefix")
    diff.add_argument("version_a", help="the older version, e.g. v0001")
    diff.add_argument("version_b", help="the newer version, e.g. v0002")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(handler=_diff)


def _versions(args) -> int:
    from weightzoo.io.reader import list_versions

    zoo = zoo_handle(args.zoo)
    zoo.open()  # a clear error for a location that is not a zoo, or one without versions
    rows = list_versions(zoo)
    if args.json:
        print_json(rows)
        return 0
    print(f"{'version':8} {'parent':8} {'models':>7}  created_at")
    for row in rows:
        print(f"{row['version']:8} {str(row.get('parent') or '-'):8} {row['n_models']:>7}  {row['created_at']}")
    return 0


def _info(args) -> int:
    zoo = open_version(args.zoo)
    summary = {"zoo": zoo.handle.url, "version": zoo.version, **zoo.summary()}
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {_readable(key, value)}")
    return 0


def _readable(key: str, value) -> str:
    """One ``info`` value as text: counts as ``ok 4, diverged 1``, statistics as ``mean 0.486
    (min 0.198, median 0.416, max 0.914; 4 models)``, bytes with their unit; never a dict repr."""
    if isinstance(value, dict) and "mean" in value:
        if not value.get("count"):
            return "- (no values)"
        return (f"mean {value['mean']:.3f} (min {value['min']:.3f}, median {value['median']:.3f}, "
                f"max {value['max']:.3f}; {value['count']} models)")
    if isinstance(value, dict):
        return ", ".join(f"{name} {count}" for name, count in value.items()) or "-"
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{value:,} bytes ({value / 2**20:.2f} MiB)"
    return "-" if value is None else str(value)


def _query(args) -> int:
    from weightzoo.analysis.records import json_records
    from weightzoo.io.query import QueryError, run_query

    zoo = open_version(args.zoo)
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

    zoo = open_version(args.zoo)
    own = zoo.location.local_path(zoo.folder)
    target = args.out or _own_card_dir(zoo, own, CARD_NAME)
    if args.out is not None and own is not None and own.is_dir() and args.out.resolve() == own.resolve():
        raise UsageError(f"--out {args.out} is the version's own directory; give another directory")
    tables = _table_files(zoo, ("models", "snapshots", "layouts"))
    parent_tables = None
    if zoo.manifest.parent:
        parent_tables = _table_files(zoo.handle.open(zoo.manifest.parent), ("models", "snapshots"))
    Path(target).mkdir(parents=True, exist_ok=True)
    card = write_card(Path(target), tables, zoo.manifest, parent_tables)
    plots = sorted(str(p) for p in (Path(target) / "card").glob("*.png"))
    if args.json:
        print(json.dumps({"version": zoo.version, "card": str(card), "plots": plots}, indent=2))
    else:
        print(f"wrote {card} ({len(plots)} plots)")
    return 0


def _table_files(zoo, names) -> dict:
    """A version's tables for the card: local paths, or ParquetFiles streamed from object storage."""
    own = zoo.location.local_path(zoo.folder)
    return {name: own / f"{name}.parquet" if own is not None else zoo.location.parquet_file(f"{zoo.folder}/{name}.parquet")
            for name in names}


def _own_card_dir(zoo, own: Path | None, card_name: str) -> Path:
    """The version's own directory, where a card may be added only if it has none yet."""
    if own is None or not own.is_dir():
        raise UsageError(f"{zoo.handle} is not a local directory; pass --out DIR to write the card there")
    if (own / card_name).exists():
        raise UsageError(f"{own / card_name} exists and versions are immutable; "
                         f"pass --out DIR to write a fresh card elsewhere")
    return own


def _diff(args) -> int:
    from weightzoo.io.diff import diff_versions

    diff = diff_versions(zoo_handle(args.zoo), args.version_a, args.version_b)
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
