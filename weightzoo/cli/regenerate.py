"""The ``regenerate`` command: retrain a random sample of a version's members through the build's
flow machinery and report whether their snapshots match the stored ones bit for bit.

Exit codes: 0 every member matches, 3 some member differs (the report says how much),
1 runtime failure, 2 bad input.
"""

from __future__ import annotations

from weightzoo.cli.common import add_cluster_options, positive, print_json, run_flow, split_version, zoo_handle
from weightzoo.errors import UsageError

EXIT_DIFFERS = 3


def add_commands(sub) -> None:
    """Add ``regenerate`` to the ``weightzoo`` parser's subparsers."""
    parser = sub.add_parser("regenerate", help="retrain a random sample of members from their recorded configs "
                                               "and compare them with the stored snapshots")
    parser.add_argument("zoo", help="ZOO or ZOO@VERSION")
    parser.add_argument("--sample", type=positive, required=True, help="members to retrain (with their fleets)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice (default: 0)")
    parser.add_argument("--scratch", help="directory for the retrained models, outside the zoo (default: a "
                                          "temporary one, removed afterwards; needed with --dask-address)")
    add_cluster_options(parser)
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(handler=_regenerate)


def _regenerate(args) -> int:
    from weightzoo.pipelines.regenerate import check_scratch, plan_regeneration

    path, version = split_version(args.zoo)
    zoo = zoo_handle(path)
    if args.dask_address and not args.scratch:
        raise UsageError("--dask-address: also pass --scratch, a directory every worker can write")
    check_scratch(zoo, args.scratch)
    plan = plan_regeneration(zoo, version, args.sample, args.seed)  # clear errors before any server starts
    result = run_flow("regenerate:regenerate_flow", {"plan": plan, "scratch": args.scratch}, args)
    if args.json:
        print_json(result)
    else:
        _print_report(result)
    return 0 if result["all_exact"] else EXIT_DIFFERS


def _print_report(result: dict) -> None:
    print(f"{result['zoo']}@{result['version']}: {result['n_exact']}/{result['n_members']} members match bit for "
          f"bit ({result['n_models_trained']} models retrained in {result['n_fleets']} fleets)")
    for member in result["members"]:
        verdict = "exact" if member["exact"] else f"DIFFERS max |dw| {_number(member['max_abs_diff'])}"
        metrics = "" if member["exact"] else "  metrics " + ", ".join(
            f"{name} {_number(value)}" for name, value in member["metrics_max_abs_diff"].items())
        notes = [] if member["config_matches_fingerprint"] else ["config does not match its fingerprint"]
        notes += [] if member["fleet_recorded"] else ["fleet not recorded: trained alone"]
        print(f"  {member['model_id']}  {verdict}{metrics}{'  (' + '; '.join(notes) + ')' if notes else ''}")
    if not result["all_exact"]:
        print(f"  largest weight difference {_number(result['max_abs_diff'])}; metrics "
              + ", ".join(f"{name} {_number(v)}" for name, v in result["metrics_max_abs_diff"].items()))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"
