"""The study commands: meta-classify, predict, projections, reinit, trajectories.

Each opens the version first (clear errors before any server starts), then runs its flow
on a Dask runner against a Prefect server (a local one where none is configured) and
prints the headline numbers, or everything with ``--json``.
"""

from __future__ import annotations

import json

from weightzoo.cli.common import add_cluster_options, open_version, positive, run_flow, task_threads
from weightzoo.errors import UsageError


def add_commands(sub) -> None:
    """Add the study subcommands to the ``weightzoo`` parser's subparsers."""
    meta = _study_parser(sub, "meta-classify", "NWS meta-classifier: predict hyperparameters from weight slices",
                         _meta_classifier)
    meta.add_argument("--target", "--label", dest="label", action="append", required=True,
                      help="models.parquet column to predict (repeatable)")
    meta.add_argument("--snapshots", help="snapshot range A:B (B exclusive), e.g. 1:5")
    meta.add_argument("--part", choices=["all", "conv", "fc"], help="part of the network to read")
    meta.add_argument("--slice-length", type=positive, default=1000)
    meta.add_argument("--epochs", type=positive, default=30, help="passes over the training samples (default: 30)")
    properties = _study_parser(sub, "predict", "weight statistics s(W) → accuracy, gap, epoch, hyperparameters",
                               _properties)
    properties.add_argument("--target", action="append", help="column to predict (repeatable; default: all)")
    properties.add_argument("--features", choices=["stats", "raw"], default="stats",
                            help="stats: per-layer weight statistics s(W) (default); raw: the flat weight "
                                 "vector itself, fitted per layout")
    properties.add_argument("--snapshots", help="snapshot range A:B (B exclusive); default: every snapshot")
    _study_parsers(sub)


def _study_parsers(sub) -> None:
    projections = _study_parser(sub, "projections", "hyperplane-arrangement statistics of conv filters "
                                                     "(Gamba et al.)", _projections)
    projections.add_argument("--where", help="a pandas query on models.parquet, e.g. \"activation == 'relu'\"")
    projections.add_argument("--snapshots", help="snapshot range A:B (B exclusive); default: every snapshot")
    projections.add_argument("--include-linear", action="store_true", help="also linear layers' weights")
    reinit = _study_parser(sub, "reinit", "accuracy drop when one layer is reset (Zhang et al.)", _reinit)
    reinit.add_argument("--where", help="a pandas query on models.parquet")
    reinit.add_argument("--resets", default="0,random",
                        help="comma-separated snapshot indices k and/or 'random' (default: 0,random)")
    reinit.add_argument("--trained-k", type=int, help="snapshot taken as the trained network (default: last)")
    reinit.add_argument("--max-models", type=positive, help="at most this many networks (table order)")
    reinit.add_argument("--whole-network", action="store_true", help="also reset every layer at once")
    trajectories = _study_parser(sub, "trajectories", "training-trajectory length, variance and distance "
                                                       "(Loukas et al.) from dense traces", _trajectories)
    trajectories.add_argument("--where", help="a pandas query on models.parquet")
    trajectories.add_argument("--tensor", help="traced tensor to measure (default: the first traced)")
    trajectories.add_argument("--by", help="hyperparameter to plot against (default: the one that varies)")
    _sane_parser(sub)


def _sane_parser(sub) -> None:
    action = {"choices": ["train", "embed", "probe", "sample"],
              "help": "train: train and embed (cached); embed: the embeddings table; probe: probes on embeddings "
                      "next to the s(W) baseline; sample: decode new networks from the embedding space"}
    sane = _study_parser(sub, "sane", "SANE: transformer autoencoder over tokenised weights; embeddings, probes",
                         _sane, action=action)
    sane.add_argument("--epochs", type=positive, help="training epochs (default: 20)")
    sane.add_argument("--token-size", type=positive, help="values per token (default: 16)")
    sane.add_argument("--window", type=positive, help="tokens per training window (default: 16)")
    sane.add_argument("--latent-dim", type=positive, help="per-token latent size (default: 16)")
    sane.add_argument("--snapshots", help="snapshot range A:B (B exclusive); default: every snapshot")
    sane.add_argument("--layout", help="layout id (default: the layout with the most models)")
    sane.add_argument("--device", choices=["cpu", "cuda"], help="training device (default: cpu)")
    sane.add_argument("--target", action="append", help="probe target (repeatable; default: all that vary)")
    sane.add_argument("--n", type=positive, default=16, help="networks to sample (default: 16)")
    sane.add_argument("--bandwidth", type=float, help="sampling noise, × the latents' spread (default: 0.1)")
    sane.add_argument("--finetune-epochs", type=int, default=0,
                      help="sample: also train sampled and random networks this many epochs (default: 0)")
    sane.add_argument("--publish", action="store_true", help="publish the sampled networks as a new version")


def _study_parser(sub, name: str, help: str, handler, *, action: dict | None = None):
    """A study subcommand with what every study takes: [ACTION] DIR[@VERSION], the cluster
    options and --json; the caller adds the study's own options."""
    parser = sub.add_parser(name, help=help)
    if action:
        parser.add_argument("action", **action)
    parser.add_argument("zoo", help="ZOO or ZOO@VERSION")
    add_cluster_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handler)
    return parser


def snapshot_range(text: str | None):
    """``--snapshots A:B`` as a range (None when not given)."""
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


def _check_columns(zoo, names, option: str) -> None:
    known = set(zoo.models.columns) | set(zoo.snapshots.columns)
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise UsageError(f"{option}: unknown column(s) {unknown}; known: {sorted(known)}")


def _meta_classifier(args) -> int:
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.label, "--target")
    snapshots = snapshot_range(args.snapshots)
    options = {"snapshots": None if snapshots is None else list(snapshots), "part": args.part,
               "slice_length": args.slice_length, "epochs": args.epochs}
    threads = task_threads(args, len(args.label))
    results = run_flow("meta_classifier:meta_classifier_flow", {"zoo": zoo.handle, "labels": args.label, "version": zoo.version,
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
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.target, "--target")
    snapshots = snapshot_range(args.snapshots)
    result = run_flow("properties:properties_flow", {"zoo": zoo.handle, "version": zoo.version, "targets": args.target,
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


def _projections(args) -> int:
    zoo = open_version(args.zoo)
    snapshots = snapshot_range(args.snapshots)
    options = {"where": args.where, "snapshots": None if snapshots is None else list(snapshots),
               "include_linear": args.include_linear}
    result = run_flow("geometry:study_flow", {"zoo": zoo.handle, "study": "projections", "version": zoo.version,
                                          "options": options}, args)
    if _print_summary(args, result, f"{result['n_models']} networks"):
        return 0
    for row in result["skipped"]:
        print(f"  skipped {row}")
    return 0


def _reinit(args) -> int:
    zoo = open_version(args.zoo)
    resets = [r.strip() for r in args.resets.split(",") if r.strip()]
    try:
        resets = [r if r == "random" else int(r) for r in resets]
    except ValueError:
        raise UsageError(f"--resets: expected snapshot indices and/or 'random', got {args.resets!r}") from None
    options = {"resets": resets, "trained_k": args.trained_k, "whole_network": args.whole_network}
    threads = task_threads(args)
    result = run_flow("geometry:reinit_flow", {"zoo": zoo.handle, "version": zoo.version, "where": args.where,
                                           "max_models": args.max_models, "options": options,
                                           "threads": threads}, args)
    _print_summary(args, result, f"{result['n_models']} networks; plot {result['plot']}")
    return 0


def _trajectories(args) -> int:
    zoo = open_version(args.zoo)
    options = {"where": args.where, "tensor": args.tensor, "by": args.by}
    result = run_flow("geometry:study_flow", {"zoo": zoo.handle, "study": "trajectories", "version": zoo.version,
                                          "options": options}, args)
    headline = f"{result['n_analysed']}/{result['n_models']} networks measured against {result['by']}"
    if not _print_summary(args, result, headline):
        print(f"  spearman with {result['by']}: {result['spearman']}")
    return 0


def _sane(args) -> int:
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.target, "--target")
    snapshots = snapshot_range(args.snapshots)
    options = {"epochs": args.epochs, "token_size": args.token_size, "window": args.window,
               "latent_dim": args.latent_dim, "layout_id": args.layout, "device": args.device,
               "snapshots": None if snapshots is None else list(snapshots)}
    options = {k: v for k, v in options.items() if v is not None}
    if args.finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    sampling = {"n": args.n, "bandwidth": args.bandwidth, "publish": args.publish,
                "finetune_epochs": args.finetune_epochs}
    result = run_flow("sane:sane_flow", {"zoo": zoo.handle, "command": args.action, "version": zoo.version,
                                         "options": options, "targets": args.target, "sampling": sampling}, args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{result['path']}{' (cached)' if result['cached'] else ''}")
    if args.action == "sample":
        print(f"  mean test accuracy by kind: {result['mean_test_acc']}")
        if result.get("finetune_epochs"):
            print(f"  after {result['finetune_epochs']} epochs of fine-tuning: {result['mean_test_acc_finetuned']}")
        print(f"  table {result['table']}\n  plot {result['plot']}")
        if result.get("published_version"):
            print(f"  published as {zoo.handle}@{result['published_version']}")
        return 0
    if args.action == "probe":
        print(f"  {'target':>14} {'features':>8} {'model':>6} {'metric':>8} {'value':>7}  chance")
        for row in result["records"]:
            value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
            chance = "" if row["chance"] is None else f"{row['chance']:.3f}"
            print(f"  {row['target']:>14} {row['features']:>8} {row['model']:>6} {row['metric']:>8} {value:>7}  "
                  f"{chance}")
        return 0
    print(f"  layout {result['layout_id']}: {result['n_train_samples']} train samples of {result['n_tokens']} "
          f"tokens; loss {result['first_loss']:.4f} -> {result['last_loss']:.4f} in {result['epochs']} epochs")
    print(f"  model {result['model']}\n  embeddings {result['embeddings']} ({result['n_embeddings']} snapshots)")
    return 0


def _print_summary(args, result: dict, headline: str) -> bool:
    """Everything as JSON with ``--json`` (returns True); else the headline and summary rows."""
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return True
    print(f"{result['path']}{' (cached)' if result['cached'] else ''}: {headline}")
    for row in result["summary"]:
        print("  " + "  ".join(f"{key} {_cell(value)}" for key, value in row.items()))
    return False


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


