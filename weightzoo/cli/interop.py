"""The interoperability commands: ``weightzoo import`` and ``weightzoo export``.

``import FORMAT SOURCE --out ZOO`` reads a foreign zoo (nws, modelzoos, torch, smallcnnzoo) or a
weightzoo bundle, stages every readable network and publishes one version; the report
lists each network accepted or rejected (with the file and the reason). The plan is made
here; it runs as the ``import-zoo`` Prefect flow (a local server where none is configured),
or in this process with ``--in-process`` (the same recipe).
Exit code 2 when the source is missing or no network could be imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from weightzoo.cli.common import add_cluster_options, open_version, positive, print_json, run_flow, zoo_handle
from weightzoo.errors import UsageError

FORMATS = ("nws", "modelzoos", "torch", "bundle", "smallcnnzoo")
EXPORT_FORMATS = ("modelzoos", "bundle", "smallcnnzoo")


def add_commands(sub) -> None:
    """Add ``import`` and ``export`` to the ``weightzoo`` parser's subparsers."""
    parser = sub.add_parser("import", help="import a foreign zoo (NWS, Model Zoos, Small CNN Zoo, torch files) "
                                           "as a new version")
    parser.add_argument("format", choices=FORMATS, help="the source's layout")
    parser.add_argument("source", type=Path, help="nws: a CSV file or folder of CSVs; modelzoos: the zoo folder; "
                                                  "torch: a run folder or a folder of them; bundle: a .npz file; "
                                                  "smallcnnzoo: a dataset folder or a folder of them")
    parser.add_argument("--out", required=True, help="the zoo to publish into: a directory or s3://bucket/prefix")
    parser.add_argument("--extend", action="store_true", help="add networks to a zoo that has versions already")
    parser.add_argument("--in-process", action="store_true", help="run here, without Prefect and Dask")
    add_cluster_options(parser)
    parser.add_argument("--chunk-size", type=positive, default=64, help="networks per task (default: 64)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_import)
    export = sub.add_parser("export", help="export a version to the Model Zoos or Small CNN Zoo layout, or a "
                                           "single .npz bundle")
    export.add_argument("zoo", help="ZOO or ZOO@VERSION")
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--out", type=Path, required=True, help="a new folder (modelzoos, smallcnnzoo) or file "
                                                                "(bundle)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=_export)


def _import(args) -> int:
    zoo = zoo_handle(args.out)
    zoo.check_destination()  # before torch and the importers are imported: a bad --out fails at once
    from weightzoo.pipelines.importing import plan_import, run_import
    from weightzoo.pipelines.runner import InProcessRunner

    plan = plan_import(zoo, args.format, args.source, extend=args.extend,
                       chunk_size=args.chunk_size)  # clear errors before any server starts
    if args.in_process:
        report = run_import(plan, InProcessRunner())
    else:
        report = run_flow("interop:import_zoo", {"plan": plan}, args)
    _print_report(args, report)
    if report["version"] is None:
        raise UsageError(f"none of the {report['n_rejected']} networks of {args.source} could be imported")
    return 0


def _print_report(args, report: dict) -> None:
    if args.json:
        print_json(report)
        return
    where = f"published {report['zoo']}@{report['version']}" if report["version"] else "published nothing"
    print(f"{where}: {report['n_accepted']} networks imported from {report['source']} ({report['kind']}), "
          f"{report['n_rejected']} rejected")
    for row in report["accepted"]:
        print(f"  accepted  {row['network']}  {row['model_id']}  {row['n_snapshots']} snapshots  "
              f"layout {row['layout_id']}  load_model {'yes' if row['loadable'] else 'no'}")
    for row in report["rejected"]:
        print(f"  rejected  {row['network']}  {row['file']}: {row['reason']}")


def _export(args) -> int:
    from weightzoo.interop.export import export_bundle, export_modelzoos
    from weightzoo.interop.smallcnnzoo import export_smallcnnzoo

    from weightzoo.io.location import check_local_destination

    zoo = open_version(args.zoo)
    if args.out.exists():
        raise UsageError(f"--out: {args.out} exists already; exports never overwrite")
    check_local_destination(args.out, "--out", folder=False)  # its parent: a writable directory
    exporters = {"bundle": export_bundle, "modelzoos": export_modelzoos, "smallcnnzoo": export_smallcnnzoo}
    result = exporters[args.format](zoo, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exported {zoo.handle}@{zoo.version} ({result['n_models']} models) to {result['out']} as "
              f"{args.format}")
    return 0
