"""``weightzoo build`` and ``weightzoo presets``.

A build makes one plan here (sampling, grouping, the check against the zoo's latest
version, what staging holds already), then hands it to the build flow (Prefect tasks on
Dask) or, with ``--in-process``, runs the same recipe in this process.
"""

from __future__ import annotations

import time
from pathlib import Path

from weightzoo.cli.common import add_cluster_options, positive, print_json, run_flow, say, task_threads, zoo_handle
from weightzoo.presets import list_presets

MAX_LAYOUTS_SHOWN = 10


def add_commands(sub) -> None:
    """Add ``build`` and ``presets`` to the ``weightzoo`` parser's subparsers."""
    build = sub.add_parser("build", help="train a zoo (default: the demo preset into ./zoo) and publish a version")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--preset", help=f"a shipped preset: {', '.join(list_presets())} (default: demo; "
                                         f"`weightzoo presets` describes them)")
    source.add_argument("--spec", type=Path, help="a spec file (YAML or JSON)")
    build.add_argument("--out", default="zoo", help="the zoo: a directory or s3://bucket/prefix (default: ./zoo)")
    build.add_argument("--models", type=positive, help="number of models in total (default: the spec's)")
    add_cluster_options(build)
    build.add_argument("--max-group", type=positive, default=32, help="models per vectorised fleet (default: 32)")
    build.add_argument("--extend", action="store_true", help="add models to a zoo that has versions already")
    build.add_argument("--in-process", action="store_true", help="run here, without Prefect and Dask")
    build.add_argument("--dry-run", action="store_true", help="print the plan (models, groups, layouts, bytes) and "
                                                              "start nothing")
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    build.set_defaults(handler=_build)
    presets = sub.add_parser("presets", help="list the shipped presets")
    presets.add_argument("--json", action="store_true", help="print them as a JSON list of objects")
    presets.set_defaults(handler=_presets)


def _build(args) -> int:
    started = time.perf_counter()
    zoo = zoo_handle(args.out)
    zoo.check_destination()  # before torch and the planner are imported: a bad --out fails at once
    from weightzoo.pipelines.build import plan_build

    plan = plan_build(zoo, args.spec or args.preset or "demo", args.models,
                      max_group=args.max_group, min_groups=args.workers, extend=args.extend or args.dry_run)
    planning = time.perf_counter() - started
    if args.dry_run:
        return _print_plan(args, plan, planning)
    if not plan.work:
        return _report(args, None, plan, planning, started)
    if plan.n_staged == plan.n_new:
        say(args, f"reusing {plan.n_staged} staged models of spec {plan.spec.name!r} (staged by an earlier run; "
                  f"nothing to train) and publishing them into {plan.zoo}")
    else:
        staged = f"; {plan.n_staged} staged by an earlier run are reused" if plan.n_staged else ""
        say(args, f"building {plan.n_new} new models of spec {plan.spec.name!r} in {len(plan.work)} groups into "
                  f"{plan.zoo}{staged}")
    flow_called = time.time()
    if args.in_process:
        from weightzoo.pipelines.build import run_build
        from weightzoo.pipelines.runner import InProcessRunner

        report = run_build(plan, InProcessRunner(threads=1, progress=lambda line: say(args, line)))
    else:
        report = run_flow("build_zoo:build_zoo", {"plan": plan, "threads": task_threads(args)}, args)
    report.seconds["start_up"] = round(max(0.0, report.started_at - flow_called), 3)  # server, cluster, flow
    return _report(args, report, plan, planning, started)


def _report(args, report, plan, planning: float, started: float) -> int:
    seconds = time.perf_counter() - started
    summary = plan.zoo.open(report.version if report else plan.parent).summary()
    stages = {"planning": round(planning, 3), **(report.seconds if report else {})}
    if args.json:
        print_json({"zoo": plan.zoo.url, "published": bool(report and report.published),
                    "trained": report.n_trained if report else 0, "reused": report.n_reused if report else 0,
                    "seconds": round(seconds, 1), "stages": stages, **summary})
    elif report is None:
        print(f"nothing new to train: the zoo already has {summary['n_models']} ≥ {plan.n_models} models "
              f"({plan.zoo}@{plan.parent} holds every model of this plan; --models is the total, not the number "
              f"to add); nothing published")
    elif not report.published:
        print(f"nothing new to publish: {plan.zoo}@{report.version} already holds every trained model; "
              f"no version published")
    else:
        done = [f"trained {report.n_trained}"] * bool(report.n_trained) + \
               [f"reused {report.n_reused} staged models"] * bool(report.n_reused)
        print(f"published {plan.zoo}@{report.version}: {summary['n_models']} models ({report.n_new} new: "
              f"{', '.join(done) or 'none'}), {summary['n_snapshots']} snapshots in {seconds:.0f}s; "
              f"by status {_plain(summary.get('by_status'))}")
    return 0


def _plain(counts) -> str:
    """``{"ok": 4}`` as ``ok 4``."""
    return ", ".join(f"{key} {value}" for key, value in (counts or {}).items()) or "-"


def _print_plan(args, plan, planning: float) -> int:
    summary = {**plan.summary(), "planning_seconds": round(planning, 3)}
    if args.json:
        print_json(summary)
        return 0
    print(f"plan for {summary['zoo']} (spec {summary['spec']!r}, made in {planning:.2f}s; nothing was started):")
    print(f"  {summary['models']} models in {summary['groups']} groups; the latest version "
          f"{summary['parent'] or '(none)'} holds {summary['already_published']}")
    print(f"  {summary['new']} new: {summary['to_train']} to train in {summary['groups_to_run']} groups, "
          f"{summary['staged_earlier']} staged by an earlier run")
    if plan.parent and plan.n_new and not args.extend:
        print("  the zoo has a version already: this build needs --extend")
    layouts = sorted(summary["layouts"].items(), key=lambda item: -item[1]["models"])
    for layout_id, entry in layouts[:MAX_LAYOUTS_SHOWN]:
        print(f"  layout {layout_id}: {entry['models']} new models of {entry['n_params']:,} parameters")
    if len(layouts) > MAX_LAYOUTS_SHOWN:
        print(f"  ... and {len(layouts) - MAX_LAYOUTS_SHOWN} more layouts (--json lists them all)")
    print(f"  {summary['snapshots_per_model']} snapshots per model: {summary['weight_bytes'] / 2**20:,.1f} MiB of "
          f"float32 weights to store")
    return 0


def _presets(args) -> int:
    from weightzoo.core.spec import load_spec
    from weightzoo.presets import list_presets

    from weightzoo.core.sampling import grid_size

    rows = []
    for name in list_presets():
        spec = load_spec(name)
        method = spec.sampling["method"]
        # a grid spec without ``models`` builds its whole grid (grid points × seeds)
        models = spec.models if spec.models is not None else grid_size(spec) if method == "grid" else None
        rows.append({"name": name, "models": models, "sampling": method, "architecture": spec.architecture,
                     "description": spec.description})
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        print(f"{row['name']:18} {row['models'] if row['models'] is not None else '?':>6} models  "
              f"{row['sampling']:6}  {row['description']}")
    return 0
