"""The ``weightzoo`` command: build zoos and look at their versions.

Exit codes: 0 success, 1 runtime failure, 2 bad input (spec, arguments, unknown version).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

EXIT_FAILURE, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """An argument that parsed but means nothing (e.g. a malformed snapshot range)."""


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
        print(f"error: {error}", file=sys.stderr)
        if os.environ.get("WEIGHTZOO_DEBUG"):
            raise
        return code


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
    meta = sub.add_parser("meta-classify", help="NWS meta-classifier: predict hyperparameters from weight slices")
    meta.add_argument("zoo", help="DIR or DIR@VERSION")
    meta.add_argument("--target", "--label", dest="label", action="append", required=True,
                      help="models.parquet column to predict (repeatable)")
    meta.add_argument("--snapshots", help="snapshot range A:B (B exclusive), e.g. 1:5")
    meta.add_argument("--part", choices=["all", "conv", "fc"], help="part of the network to read")
    meta.add_argument("--slice-length", type=_positive, default=1000)
    meta.add_argument("--epochs", type=_positive, default=30, help="passes over the training samples (default: 30)")
    _cluster_arguments(meta)
    meta.add_argument("--json", action="store_true")
    meta.set_defaults(handler=_meta_classifier)
    properties = sub.add_parser("predict", help="weight statistics s(W) → accuracy, gap, epoch, hyperparameters")
    properties.add_argument("zoo", help="DIR or DIR@VERSION")
    properties.add_argument("--target", action="append", help="column to predict (repeatable; default: all)")
    properties.add_argument("--features", choices=["stats", "raw"], default="stats",
                            help="stats: per-layer weight statistics s(W) (default); raw: the flat weight "
                                 "vector itself, fitted per layout")
    properties.add_argument("--snapshots", help="snapshot range A:B (B exclusive); default: every snapshot")
    _cluster_arguments(properties)
    properties.add_argument("--json", action="store_true")
    properties.set_defaults(handler=_properties)
    presets = sub.add_parser("presets", help="list the shipped presets")
    presets.set_defaults(handler=_presets)
    return parser


def _cluster_arguments(parser) -> None:
    parser.add_argument("--workers", type=_positive, default=2, help="local Dask worker processes (default: 2)")
    parser.add_argument("--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _build(args) -> int:
    from weightzoo.build import check_extend, plan_build
    from weightzoo.core.spec import load_spec

    spec = load_spec(args.spec if args.spec else (args.preset or "demo"))
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


def _snapshot_range(text: str | None):
    if not text:
        return None
    start, _, stop = text.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        raise UsageError(f"--snapshots: expected A:B with integers, got {text!r}") from None
    if not 0 <= first < last:
        raise UsageError(f"--snapshots: expected 0 <= A < B (B exclusive), got {text!r}")
    return range(first, last)


def _run_analysis(flow_name: str, parameters: dict, args):
    from flows.server import prefect_server

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with prefect_server():
        # after the server URL is exported (see _run_build_flow)
        from flows.meta_classifier import meta_classifier_flow
        from flows.properties import properties_flow
        from flows.runtime import run_on_dask

        logging.getLogger("distributed").setLevel(logging.WARNING)
        flows = {"meta_classifier_flow": meta_classifier_flow, "properties_flow": properties_flow}
        return run_on_dask(flows[flow_name], parameters, workers=args.workers, dask_address=args.dask_address)


def _open_version(text: str):
    """``DIR[@VERSION]`` → (path, version or None, Zoo); clear errors before any server starts."""
    from weightzoo.io.reader import open_zoo

    path, _, version = text.partition("@")
    return path, version or None, open_zoo(path, version or None)


def _check_columns(zoo, names, option: str) -> None:
    known = set(zoo.models.columns) | set(zoo.snapshots.columns)
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise UsageError(f"{option}: unknown column(s) {unknown}; known: {sorted(known)}")


def _meta_classifier(args) -> int:
    from flows.runtime import threads_per_task

    path, version, zoo = _open_version(args.zoo)
    _check_columns(zoo, args.label, "--target")
    snapshots = _snapshot_range(args.snapshots)
    options = {"snapshots": None if snapshots is None else list(snapshots), "part": args.part,
               "slice_length": args.slice_length, "epochs": args.epochs}
    threads = None if args.dask_address else threads_per_task(min(args.workers, len(args.label)))
    results = _run_analysis("meta_classifier_flow", {"zoo_dir": path, "labels": args.label, "version": version,
                                                     "options": options, "threads": threads}, args)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    for result in results:
        print(f"{result['path']}{' (cached)' if result['cached'] else ''}")
        for row in result["results"]:
            print(f"  {row['label']:>14} k={row['k']:>4} n={row['n']:>5}  {row['metric']} "
                  f"local {row['local']:.3f}  global {row['global']:.3f}  chance {row['chance']:.3f}")
        for row in result["per_class"]:
            print(f"  {row['label']:>14} class {row['class']!s:>16} n={row['n']:>5}  "
                  f"local {_number(row['local'])}  global {_number(row['global'])}  "
                  f"precision {_number(row['precision'])}")
    return 0


def _number(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def _properties(args) -> int:
    path, version, zoo = _open_version(args.zoo)
    _check_columns(zoo, args.target, "--target")
    snapshots = _snapshot_range(args.snapshots)
    result = _run_analysis("properties_flow", {"zoo_dir": path, "version": version, "targets": args.target,
                                               "features": args.features,
                                               "snapshots": None if snapshots is None else list(snapshots)}, args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{result['path']}{' (cached)' if result['cached'] else ''}")
    for row in result["records"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        chance = "" if row["chance"] is None else f"chance {row['chance']:.3f}"
        where = "" if row["layout_id"] == "all" else f" [{row['layout_id']}]"
        print(f"  {row['target']:>14}{where} {row['model']:>6} {row['metric']:>8} {value:>7} {chance:>13}  "
              f"{row['status']} {row['note'] or ''}")
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
