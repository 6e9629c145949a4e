"""The study commands: compare, meta-classify, predict, projections, reinit, trajectories, sane.

Each opens the version and resolves its selection first (clear input errors, exit 2, before
any server starts), then runs its flow on a Dask runner against a Prefect server (a local
one where none is configured) and prints every study the same way: the result's directory,
its headline and its rows as a table — or, with ``--json``, the
:class:`~weightzoo.analysis.results.StudyResult` as a dict.
"""

from __future__ import annotations

from weightzoo.cli.common import (add_cluster_options, add_snapshots_option, open_version, positive,
                                  print_json, run_flow, snapshot_choice, snapshot_text, task_threads)
from weightzoo.errors import UsageError


def add_commands(sub) -> None:
    """Add the study subcommands to the ``weightzoo`` parser's subparsers."""
    meta = _study_parser(sub, "meta-classify", "NWS meta-classifier: predict hyperparameters from weight slices",
                         _meta_classifier)
    meta.add_argument("--target", "--label", dest="label", action="append", required=True,
                      help="models.parquet column to predict (repeatable)")
    add_snapshots_option(meta)
    meta.add_argument("--part", choices=["all", "conv", "fc"], help="part of the network to read")
    meta.add_argument("--slice-length", type=positive, default=1000)
    meta.add_argument("--epochs", type=positive, default=30, help="passes over the training samples (default: 30)")
    properties = _study_parser(sub, "predict", "weight statistics s(W) → accuracy, gap, epoch, hyperparameters",
                               _properties)
    properties.add_argument("--target", action="append", help="column to predict (repeatable; default: all)")
    properties.add_argument("--features", choices=["stats", "raw"], default="stats",
                            help="stats: per-layer weight statistics s(W) (default); raw: the flat weight "
                                 "vector itself, fitted per layout")
    add_snapshots_option(properties)
    _compare_parser(sub)
    _study_parsers(sub)


def _compare_parser(sub) -> None:
    from weightzoo.analysis.baselines import DEFAULT_METHODS, METHOD_NAMES

    compare = _study_parser(sub, "compare", "every method on the same folds of one target: means with 95 %% "
                                            "intervals, chance, balanced accuracy, score against k", _compare)
    compare.add_argument("--target", required=True, help="models.parquet or snapshots.parquet column to predict")
    compare.add_argument("--methods", help=f"comma-separated, of {','.join(METHOD_NAMES)} "
                                           f"(default: {','.join(DEFAULT_METHODS)})")
    compare.add_argument("--folds", type=positive, default=5, help="cross-validation folds by network (default: 5)")
    compare.add_argument("--protocol", default="cv", help="cv: K-fold cross-validation by network (default); "
                                                          "split: the zoo's fixed train(+val)/test split")
    compare.add_argument("--seed", type=int, default=0, help="seed of the folds, the bootstrap and the methods")
    compare.add_argument("--min-test-networks", type=positive, default=5,
                         help="fewer test networks in a fold give a status instead of a figure (default: 5)")
    compare.add_argument("--snapshots", type=snapshot_choice,
                         help="snapshots k to train and test on (default: 1: — the trained snapshots — for a "
                              "training hyperparameter, all for a metric such as test_acc); also all, last, K, "
                              "A:B (B exclusive), A:, :B or a list 0,2,4")
    compare.add_argument("--where", help="compare only these networks: a pandas query on models.parquet, e.g. "
                                         "\"layout_id == 'L…'\" (raw-linear, nfn and SANE fit each layout on its own)")
    compare.add_argument("--meta-epochs", type=positive, help="meta-classifier epochs (default: 10)")
    compare.add_argument("--nfn-epochs", type=positive, help="neural functional epochs (default: 40)")
    compare.add_argument("--sane-epochs", type=positive, help="SANE epochs per fold (default: 10)")


def _study_parsers(sub) -> None:
    projections = _study_parser(sub, "projections", "hyperplane-arrangement statistics of conv filters "
                                                     "(Gamba et al.)", _projections)
    projections.add_argument("--where", help="a pandas query on models.parquet, e.g. \"activation == 'relu'\"")
    add_snapshots_option(projections)
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
    sane.add_argument("--d-model", type=positive,
                      help="transformer width, a multiple of 4 (default: 64; SANE's own runs use 2048)")
    sane.add_argument("--layers", type=positive, help="transformer layers (default: 2; SANE's own runs use 8)")
    sane.add_argument("--pooling", choices=["mean", "layers"],
                      help="a network's embedding: the mean token latent (default, SANE's) or that mean per "
                           "layer, concatenated")
    add_snapshots_option(sane)
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


def _check_columns(zoo, names, option: str) -> None:
    known = set(zoo.models.columns) | set(zoo.snapshots.columns)
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise UsageError(f"{option}: unknown column(s) {unknown}; known: {sorted(known)}")


def _meta_classifier(args) -> int:
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.label, "--target")
    # input errors before any server: the snapshot choice, and a small zoo's empty split
    chosen = zoo.select(snapshots=args.snapshots, part=args.part, split=["train", "test"])
    for split in ("train", "test"):
        if not (chosen.models["split"] == split).any():
            zoo.select(snapshots=args.snapshots, part=args.part, split=split).require_samples()
    options = {"snapshots": snapshot_text(args.snapshots), "part": args.part,
               "slice_length": args.slice_length, "epochs": args.epochs}
    threads = task_threads(args, len(args.label))
    results = run_flow("meta_classifier:meta_classifier_flow", {"zoo": zoo.handle, "labels": args.label,
                                                                "version": zoo.version, "options": options,
                                                                "threads": threads}, args)
    return print_results(args, results)


def _compare(args) -> int:
    from weightzoo.analysis.baselines import methods_for
    from weightzoo.analysis.protocol import Protocol, snapshot_choice as default_choice, truth_table

    zoo = open_version(args.zoo)
    _check_columns(zoo, [args.target], "--target")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    options = {"meta_epochs": args.meta_epochs, "nfn_epochs": args.nfn_epochs, "sane_epochs": args.sane_epochs}
    options = {k: v for k, v in options.items() if v is not None}
    names = list(methods_for(methods, options))  # input errors before any server
    protocol = Protocol(args.protocol, args.folds, args.seed, args.min_test_networks)
    choice = default_choice(zoo, args.target, args.snapshots)
    truth_table(zoo, args.target, choice, args.where)
    parameters = {"zoo": zoo.handle, "version": zoo.version, "target": args.target, "methods": names,
                  "protocol": {"kind": protocol.kind, "folds": protocol.folds, "seed": protocol.seed,
                               "min_test_networks": protocol.min_test_networks},
                  "snapshots": choice.text, "options": options, "threads": task_threads(args, 2),
                  **({"where": args.where} if args.where else {})}
    result = run_flow("compare:compare_flow", parameters, args)
    return print_results(args, result)


def _properties(args) -> int:
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.target, "--target")
    zoo.select(snapshots=args.snapshots)  # input errors before any server
    result = run_flow("properties:properties_flow", {"zoo": zoo.handle, "version": zoo.version, "targets": args.target,
                                                     "features": args.features,
                                                     "snapshots": snapshot_text(args.snapshots)}, args)
    return print_results(args, result)


def _projections(args) -> int:
    from weightzoo.analysis.projections import check_projection_inputs

    zoo = open_version(args.zoo)
    selection = zoo.select(args.where, snapshots=args.snapshots)
    selection.require_samples()  # input errors before any server
    check_projection_inputs(zoo, selection, include_linear=args.include_linear, option="--include-linear")
    options = {"where": args.where, "snapshots": snapshot_text(args.snapshots), "include_linear": args.include_linear}
    result = run_flow("geometry:study_flow", {"zoo": zoo.handle, "study": "projections", "version": zoo.version,
                                              "options": options}, args)
    return print_results(args, result)


def _reinit(args) -> int:
    zoo = open_version(args.zoo)
    resets = [r.strip() for r in args.resets.split(",") if r.strip()]
    try:
        resets = [r if r == "random" else int(r) for r in resets]
    except ValueError:
        raise UsageError(f"--resets: expected snapshot indices and/or 'random', got {args.resets!r}") from None
    trained = "last" if args.trained_k is None else args.trained_k
    selection = zoo.select(args.where, snapshots=trained, max_models=args.max_models)
    selection.require_samples()  # before any server
    if 0 in resets:
        zoo.require_initialisation(selection.models["model_id"], "reinit --resets 0")
    options = {"resets": resets, "trained_k": args.trained_k, "whole_network": args.whole_network}
    result = run_flow("geometry:reinit_flow", {"zoo": zoo.handle, "version": zoo.version, "where": args.where,
                                               "max_models": args.max_models, "options": options,
                                               "threads": task_threads(args)}, args)
    return print_results(args, result)


def _trajectories(args) -> int:
    zoo = open_version(args.zoo)
    zoo.select(args.where, status=None).require_samples()  # input errors before any server
    options = {"where": args.where, "tensor": args.tensor, "by": args.by}
    result = run_flow("geometry:study_flow", {"zoo": zoo.handle, "study": "trajectories", "version": zoo.version,
                                              "options": options}, args)
    return print_results(args, result)


def _sane(args) -> int:
    if args.d_model is not None and args.d_model % 4:  # even, and split over the model's 4 heads
        raise UsageError(f"--d-model must be a multiple of 4 (4 attention heads), got {args.d_model}")
    zoo = open_version(args.zoo)
    _check_columns(zoo, args.target, "--target")
    if args.finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    zoo.select(snapshots=args.snapshots, **({"layout_id": args.layout} if args.layout else {}))  # before any server
    options = {"epochs": args.epochs, "token_size": args.token_size, "window": args.window,
               "latent_dim": args.latent_dim, "d_model": args.d_model, "n_layers": args.layers, "pooling": args.pooling,
               "layout_id": args.layout, "device": args.device,
               "snapshots": snapshot_text(args.snapshots)}
    options = {k: v for k, v in options.items() if v is not None}
    sampling = {"n": args.n, "bandwidth": args.bandwidth, "publish": args.publish,
                "finetune_epochs": args.finetune_epochs}
    result = run_flow("sane:sane_flow", {"zoo": zoo.handle, "command": args.action, "version": zoo.version,
                                         "options": options, "targets": args.target, "sampling": sampling}, args)
    return print_results(args, result)


def print_results(args, results) -> int:
    """Print study results (one, or a list): with ``--json`` their ``to_dict()`` (a list for a
    list); else per result its directory, ``(cached)``, headline and rows as a table. Returns 0."""
    several = isinstance(results, list)
    if args.json:
        print_json([r.to_dict() for r in results] if several else results.to_dict())
        return 0
    for result in results if several else [results]:
        print(f"{result.path}{' (cached)' if result.cached else ''}: {result.headline}")
        for line in table_lines(result.rows):
            print(f"  {line}")
    return 0


def table_lines(rows: list[dict]) -> list[str]:
    """``rows`` as aligned text: a header of every key (first-seen order), then one line per row
    (blank where a row lacks a key, ``n/a`` where its value is None)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row[key]) if key in row else "" for key in columns] for row in rows]
    widths = [max([len(name)] + [len(line[i]) for line in cells]) for i, name in enumerate(columns)]
    return [" ".join(text.rjust(width) for text, width in zip(line, widths)).rstrip()
            for line in [columns, *cells]] if rows else []


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(_cell(item) for item in value)
    return str(value)
