"""Build time of a preset, estimated from a random sample of its fleets.

What it measures
    The training time a whole build of a spec (by default the ``nws-scale`` preset, 10,000
    networks) would take on this machine, without training all of it. It plans the full
    build exactly as ``weightzoo build`` does (``weightzoo.pipelines.build.plan_build``: sampled
    configs grouped into fleets of compatible models, at most 32 each), draws ``--groups``
    of those fleets at random (seeded) and trains each with the fleet trainer, as a build
    task would (``--threads`` torch threads, the spec's deterministic flag).

Method
    Per-network cost = (sum of the sampled fleets' wall seconds) / (networks in them), a
    ratio estimator over whole fleets, so fleet size and the mix of shapes, batch sizes and
    activations enter as in the build. The 95 % interval comes from resampling the sampled
    fleets (bootstrap, 2,000 draws). Training core-seconds for the build = per-network cost
    x networks; wall time on W workers = that / W + (fleets x ``--task-overhead``) / W,
    where the task overhead is the Prefect + Dask cost per task measured by
    ``orchestration_overhead.py`` (2.4 s on this machine; docs/benchmarks.md). Staging and
    publishing are not included (docs/benchmarks.md has their rates). The same figures from
    CPU seconds instead of wall seconds estimate the build on an otherwise idle machine. The sample's
    accuracies are reported per optimizer (share of networks above chance + 0.05 on the
    test split) as a check that the space trains. The baseline: the first ``--baseline``
    sampled fleets are also trained one network at a time with the single-model trainer, and
    the ratio of the two wall times is printed (the fleet's speed-up on the preset's own
    configs, with their dropout, augmentation and mixed optimizers).

Reading it
    Absolute seconds scale with machine load: the per-network cost is measured on the
    machine as it is while the benchmark runs, so run it when the machine is as busy as it
    will be during the build, and read the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

from weightzoo.io.handle import ZooHandle
from weightzoo.pipelines.build import plan_build
from weightzoo.core.spec import load_spec
from weightzoo.train.fleet import train_fleet
from weightzoo.train.single import train_model
from weightzoo.train.tasks import deterministic_mode, set_threads


def train_group(group, threads: int) -> dict:
    """Train one planned fleet; its seconds and its members' final test accuracies."""
    configs = group.configs
    set_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    with deterministic_mode(configs[0].training.deterministic):
        results = train_fleet([c.params for c in configs], configs[0].training, configs[0].dataset_kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    params = configs[0].params
    return {"models": len(configs), "wall_seconds": wall, "cpu_seconds": cpu,
            "key": {k: params.get(k) for k in ("conv_layers", "conv_width", "batch_norm", "activation", "batch_size")},
            "members": [{"optimizer": c.params.get("optimizer"), "lr": c.params.get("lr"), "status": r.status,
                         "test_acc": r.snapshots[-1]["test_acc"]} for c, r in zip(configs, results)]}


def train_one_by_one(group, threads: int) -> float:
    """Baseline: the same fleet's members trained one after another by the single-model
    trainer; wall seconds."""
    set_threads(threads)
    started = time.perf_counter()
    with deterministic_mode(group.configs[0].training.deterministic):
        for config in group.configs:
            train_model(config.params, config.training, config.dataset_kwargs)
    return time.perf_counter() - started


def bootstrap_interval(groups: list[dict], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of seconds per network, resampling whole fleets."""
    rng = np.random.default_rng(seed)
    seconds = np.array([g["wall_seconds"] for g in groups])
    models = np.array([g["models"] for g in groups])
    picks = rng.integers(0, len(groups), size=(draws, len(groups)))
    ratios = seconds[picks].sum(1) / models[picks].sum(1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def accuracy_by_optimizer(groups: list[dict], chance: float) -> dict:
    """Per optimizer: networks, share above chance + 0.05, median final test accuracy."""
    by_optimizer = defaultdict(list)
    for member in (m for g in groups for m in g["members"]):
        by_optimizer[member["optimizer"]].append(member["test_acc"] if member["status"] == "ok" else float("nan"))
    return {name: {"networks": len(acc), "above_chance": float(np.mean(np.nan_to_num(acc) > chance + 0.05)),
                   "median_test_acc": float(np.nanmedian(acc)) if np.isfinite(acc).any() else None}
            for name, acc in sorted(by_optimizer.items())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="nws-scale", help="preset name or spec file")
    parser.add_argument("--models", type=int, help="plan this many networks instead of the spec's count")
    parser.add_argument("--groups", type=int, default=8, help="fleets to sample and train")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fleet (a build task's setting)")
    parser.add_argument("--workers", type=int, default=2, help="parallel build workers to estimate wall time for")
    parser.add_argument("--task-overhead", type=float, default=2.4, help="orchestration seconds per task")
    parser.add_argument("--baseline", type=int, default=1,
                        help="also train the first N sampled fleets one network at a time (the ratio's baseline)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    spec = load_spec(args.preset)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:  # an empty zoo: every group is planned
        plan = plan_build(ZooHandle.at(empty), spec, args.models).groups
    plan_seconds = time.perf_counter() - started
    n_models = sum(len(g.configs) for g in plan)
    print(f"{spec.name}: {n_models} networks in {len(plan)} fleets (planned in {plan_seconds:.0f} s); "
          f"training {args.groups} random fleets, {args.threads} thread(s); load {load_before}")
    sample = random.Random(args.seed).sample(plan, min(args.groups, len(plan)))
    groups = []
    for i, group in enumerate(sample, start=1):
        groups.append(train_group(group, args.threads))
        g = groups[-1]
        print(f"  fleet {i}/{len(sample)}: {g['models']} networks {g['key']}: {g['wall_seconds']:.1f} s wall, "
              f"{g['cpu_seconds']:.1f} s cpu, {g['wall_seconds'] / g['models']:.2f} s/network")
    for i, (group, g) in enumerate(list(zip(sample, groups))[:args.baseline], start=1):
        g["one_by_one_wall_seconds"] = train_one_by_one(group, args.threads)
        print(f"  baseline: the {g['models']} networks of fleet {i} one by one: "
              f"{g['one_by_one_wall_seconds']:.1f} s wall; fleet/one-by-one "
              f"{g['one_by_one_wall_seconds'] / g['wall_seconds']:.2f}x")
    trained = sum(g["models"] for g in groups)
    per_model = sum(g["wall_seconds"] for g in groups) / trained
    low, high = bootstrap_interval(groups)
    core_seconds = per_model * n_models
    wall = (core_seconds + len(plan) * args.task_overhead) / args.workers
    # what the same fleets cost in CPU time: the build's duration on an otherwise idle machine
    cpu_per_model = sum(g["cpu_seconds"] for g in groups) / trained
    idle_wall = (cpu_per_model * n_models + len(plan) * args.task_overhead) / args.workers
    load_after = os.getloadavg()
    chance = 1.0 / 10
    accuracy = accuracy_by_optimizer(groups, chance)
    print(f"\nper network: {per_model:.3f} s (95 % interval {low:.3f}-{high:.3f}) over {trained} networks "
          f"in {len(groups)} fleets; cpu/wall {sum(g['cpu_seconds'] for g in groups) / sum(g['wall_seconds'] for g in groups):.2f}")
    print(f"build of {n_models} networks: {core_seconds / 3600:.2f} core-hours of training "
          f"({low * n_models / 3600:.2f}-{high * n_models / 3600:.2f}); on {args.workers} workers with "
          f"{args.task_overhead} s per task over {len(plan)} tasks: about {wall / 3600:.2f} h "
          f"({(low * n_models + len(plan) * args.task_overhead) / args.workers / 3600:.2f}-"
          f"{(high * n_models + len(plan) * args.task_overhead) / args.workers / 3600:.2f} h)")
    print(f"in CPU time: {cpu_per_model:.3f} s per network, about {idle_wall / 3600:.2f} h on {args.workers} "
          f"otherwise idle cores")
    for name, row in accuracy.items():
        print(f"  {name:9s} {row['networks']:4d} networks: {row['above_chance']:.0%} above chance + 0.05, "
              f"median test acc {row['median_test_acc']}")
    print(f"load average before {load_before}, after {load_after}")
    out = {"spec": spec.name, "networks": n_models, "fleets": len(plan), "plan_seconds": plan_seconds,
           "threads": args.threads, "workers": args.workers, "task_overhead": args.task_overhead,
           "seconds_per_network": per_model, "seconds_per_network_95": [low, high],
           "training_core_hours": core_seconds / 3600, "estimated_wall_hours": wall / 3600,
           "cpu_seconds_per_network": cpu_per_model, "estimated_wall_hours_idle": idle_wall / 3600,
           "accuracy_by_optimizer": accuracy, "sampled_fleets": groups, "torch": torch.__version__,
           "python": platform.python_version(), "load_before": load_before, "load_after": load_after}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
