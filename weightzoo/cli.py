"""The ``weightzoo`` command: build zoos and look at their versions.

Exit codes: 0 success, 1 runtime failure, 2 bad input (spec, arguments, unknown version).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from weightzoo.cli_studies import UsageError, positive as _positive

EXIT_FAILURE, EXIT_USAGE = 1, 2
# Modules that contribute subcommands: each has ``add_commands(subparsers)``.
COMMAND_MODULES = (
    "weightzoo.cli_studies",
    "weightzoo.cli_interop",
    "weightzoo.cli_deploy",
    "weightzoo.cli_verify",
    "weightzoo.cli_catalog",
    "weightzoo.cli_regenerate",
    "weightzoo.cli_pull",
)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted: staged models are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one clear line instead of a deep traceback
        code = EXIT_USAGE if _is_input_error(error) else EXIT_FAILURE
        if os.environ.get("WEIGHTZOO_DEBUG"):
            print(f"error: {error}", file=sys.stderr)
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return code


def _one_line(error: Exception) -> str:
    """The first line of an error (a library's may hold a whole report), with a pointer to the rest."""
    text = str(error).strip() or type(error).__name__
    first, _, rest = text.partition("\n")
    return f"{first} (WEIGHTZOO_DEBUG=1 for details)" if rest.strip() else first


def _is_input_error(error: Exception) -> bool:
    from weightzoo.core.models import ConfigError
    from weightzoo.core.spec import SpecError
    from weightzoo.io.errors import NotAZooError, VersionNotFound
    from weightzoo.build import BuildError
    return isinstance(error, (SpecError, ConfigError, NotAZooError, VersionNotFound, BuildError, UsageError))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightzoo", description="Versioned weight-space datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train a zoo (default: the demo preset into ./zoo) and publish a version")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name (smoke, demo, nws, modelzoo-mnist)")
    source.add_argument("--spec", type=Path, help="a spec file (YAML or JSON)")
    build.add_argument("--out", type=Path, default=Path("zoo"), help="zoo directory (default: ./zoo)")
    build.add_argument("--models", type=_positive, help="number of models (default: the spec's)")
    build.add_argument("--workers", type=_positive, default=2, help="local Dask worker processes (default: 2)")
    build.add_argument("--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    build.add_argument("--max-group", type=_positive, default=32, help="models per vectorised fleet (default: 32)")
    build.add_argument("--extend", action="store_true", help="add models to a zoo that has versions already")
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    build.set_defaults(handler=_build)
    versions = sub.add_parser("versions", help="list a zoo's published versions")
    versions.add_argument("zoo", type=Path)
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=_versions)
    info = sub.add_parser("info", help="summarise a version: counts, layouts, datasets, accuracy")
    info.add_argument("zoo", help="DIR or DIR@VERSION")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=_info)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    presets = sub.add_parser("presets", help="list the shipped presets")
    presets.set_defaults(handler=_presets)
    return parser


def _build(args) -> int:
    from weightzoo.build import check_extend, plan_build
    from weightzoo.core.spec import check_model_count, load_spec

    spec = load_spec(args.spec if args.spec else (args.preset or "demo"))
    check_model_count(args.models, "--models")  # a huge count would hang the planner
    groups = plan_build(spec, args.models, max_group=args.max_group, min_groups=args.workers)
    check_extend(args.out, groups, args.extend)  # fail before any server or cluster starts
    n_models = sum(len(g.configs) for g in groups)
    _say(args, f"building {n_models} models of spec {spec.name!r} in {len(groups)} groups into {args.out}")
    started = time.perf_counter()
    version = _run_build_flow(spec, args)
    seconds = time.perf_counter() - started
    return _report_build(args, version, seconds)


def _run_build_flow(spec, args) -> str:
    from flows.server import prefect_server

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with prefect_server():
        # Prefect reads its settings when first imported: import it only once the
        # server's URL is in the environment
        from flows.build_zoo import run_build

        logging.getLogger("distributed").setLevel(logging.WARNING)
        return run_build(spec.to_dict(), str(args.out), models=args.models, extend=args.extend,
                         workers=args.workers, dask_address=args.dask_address, max_group=args.max_group)


def _report_build(args, version: str, seconds: float) -> int:
    from weightzoo.io.reader import open_zoo

    summary = open_zoo(args.out, version).summary()
    result = {"zoo": str(args.out), "version": version, "seconds": round(seconds, 1), **summary}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"published {args.out}@{version}: {summary['n_models']} models, {summary['n_snapshots']} snapshots "
              f"in {seconds:.0f}s; by status {summary.get('by_status')}")
    return 0


def _versions(args) -> int:
    from weightzoo.io.reader import list_versions, open_zoo

    open_zoo(args.zoo)  # a clear error for a path that is not a zoo
    rows = list_versions(args.zoo)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'version':8} {'parent':8} {'models':>7}  created_at")
    for row in rows:
        print(f"{row['version']:8} {str(row.get('parent') or '-'):8} {row['n_models']:>7}  {row['created_at']}")
    return 0


def _info(args) -> int:
    from weightzoo.io.reader import open_zoo

    path, _, version = args.zoo.partition("@")
    zoo = open_zoo(path, version or None)
    summary = {"zoo": path, "version": zoo.version, **zoo.summary()}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {value}")
    return 0


def _presets(args) -> int:
    from weightzoo.core.spec import load_spec
    from weightzoo.presets import list_presets

    for name in list_presets():
        spec = load_spec(name)
        print(f"{name:16} {spec.models or '-':>6} models  {spec.description}")
    return 0


def _say(args, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
