"""Orchestration overhead: what a Prefect task on a warm Dask worker costs, and what share of a
build of trivially cheap models is not training.

What it measures
    Against one real Prefect server and one Dask LocalCluster of ``--workers`` processes,
    both started once (their start-up times are reported on their own) and warmed up by a
    first flow:

    P  per-task overhead: a flow that runs ``--tasks`` steps that do nothing through the
       build's Prefect runner (``weightzoo_flows.runtime.PrefectRunner``, the runner every
       recipe uses), minus the same steps run in this process, divided by the number of
       tasks: task-run bookkeeping against the server, Dask scheduling, argument and result
       passing. The target is at most 0.2 s per task.
    F  wall time of the build flow (``weightzoo_flows.build_zoo.build_zoo``) of ``--models``
       tiny MLPs in groups of ``--max-group`` on the warm cluster, against
    I  the same plan run in this process (``InProcessRunner``: the same recipe, no Prefect,
       no Dask), and against
    T  the time the tasks spent training and staging (reported by the build itself).

    Per-task overhead of the build = (F − I) / tasks; the build's overhead fraction =
    1 − T / (F × workers).
    C  what every submitted task carries with a real plan as the flow's parameter: the
       ``--plan-models`` configs of ``--plan-preset`` (default 10,000 of nws-scale) planned,
       then, inside a flow, the run context prefect-dask sends with each task
       (``prefect.context.serialize_context``), tokenized by Dask and pickled as Dask does —
       seconds and bytes per task in a ``recipe_flow`` (the context keeps the plan's summary)
       against the baseline, the same flow keeping the plan itself in its context (what every
       flow did before; 13.8 s and 6.6 MiB per task at 10,000 configs, so a build's
       submissions grew quadratically with its size).

Method
    Tiny MLPs (digits, 4 hidden units, 1 epoch, 1 snapshot) train in milliseconds, so nearly
    everything else is overhead. Order: in-process build, server, cluster, warm-up flow,
    no-op flow, build flow. Load averages are printed at the start and the end; ``--json
    FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from weightzoo.io.handle import ZooHandle
from weightzoo.pipelines.build import plan_build, run_build
from weightzoo.pipelines.runner import InProcessRunner


def cheap_spec(n_models: int, seed: int = 0) -> dict:
    """A spec of ``n_models`` tiny MLPs that train in milliseconds."""
    return {"name": "overhead-bench", "architecture": "mlp", "models": n_models,
            "sampling": {"method": "random", "seed": seed},
            "hyperparameters": {"dataset": "digits", "hidden_width": 4, "optimizer": "sgd",
                                "lr": {"log-uniform": [0.01, 0.1]}, "batch_size": 64},
            "training": {"epochs": 1, "snapshots": {"count": 1}}}


def noop(index: int, *, progress=None) -> int:
    """A step that does nothing (its task's cost is all orchestration)."""
    return index


def main(argv=None) -> dict:
    """Measure and print the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-group", type=int, default=4, help="models per task (default 4: many small tasks)")
    parser.add_argument("--tasks", type=int, default=32, help="no-op tasks for the per-task figure")
    parser.add_argument("--plan-models", type=int, default=10000,
                        help="configs of the plan for the per-task context figure C (0: skip it)")
    parser.add_argument("--plan-preset", default="nws-scale")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="wz-overhead-bench-"))
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    try:
        result = _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = os.getloadavg()[0]
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _measure(args, tmp: Path) -> dict:
    from distributed import LocalCluster

    from weightzoo_flows.server import prefect_server

    plan = plan_build(ZooHandle.at(tmp / "in-process"), cheap_spec(args.models), max_group=args.max_group,
                      min_groups=args.workers)
    start = time.perf_counter()
    in_process = run_build(plan, InProcessRunner(threads=1))
    result = {"models": args.models, "build_tasks": len(plan.work), "workers": args.workers,
              "noop_tasks": args.tasks, "in_process_s": time.perf_counter() - start}
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    start = time.perf_counter()
    with prefect_server(tmp / "prefect-home"):
        result["server_start_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            result["cluster_start_s"] = time.perf_counter() - start
            result.update(_flows(args, tmp, cluster.scheduler_address, plan, in_process))
        if args.plan_models:
            result.update(_context_cost(args, tmp))
    return result


def _flows(args, tmp: Path, address: str, plan, in_process) -> dict:
    from weightzoo_flows.build_zoo import build_zoo
    from weightzoo_flows.runtime import PrefectRunner, recipe_flow, run_on_dask

    @recipe_flow(name="noop-steps")
    def noop_flow(n: int) -> list:
        return list(PrefectRunner().map(noop, [(i,) for i in range(n)]))

    start = time.perf_counter()
    run_on_dask(noop_flow, {"n": args.workers}, dask_address=address)  # warm-up: workers import, connect
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    run_on_dask(noop_flow, {"n": args.tasks}, dask_address=address)
    noop_s = time.perf_counter() - start
    start = time.perf_counter()
    list(InProcessRunner().map(noop, [(i,) for i in range(args.tasks)]))
    noop_here = time.perf_counter() - start
    flow_plan = plan_build(ZooHandle.at(tmp / "flow"), plan.spec, plan.n_models, max_group=args.max_group,
                           min_groups=args.workers)
    start = time.perf_counter()
    report = run_on_dask(build_zoo, {"plan": flow_plan, "threads": 1}, dask_address=address)
    flow_s = time.perf_counter() - start
    task_s = report.seconds["training"] + report.seconds["staging"]
    return {"warm_up_s": warm_up, "noop_flow_s": noop_s, "noop_in_process_s": noop_here,
            "per_task_overhead_s": (noop_s - noop_here) / args.tasks, "flow_s": flow_s,
            "flow_tasks_s": task_s, "build_per_task_overhead_s": (flow_s - in_process_time(in_process)) / len(plan.work),
            "build_overhead_fraction": 1 - task_s / (flow_s * args.workers), "flow_vs_in_process": flow_s / in_process_time(in_process)}


def _context_cost(args, tmp: Path) -> dict:
    import cloudpickle
    from dask.base import tokenize
    from prefect.context import serialize_context

    from weightzoo_flows.runtime import RecipeFlow, recipe_flow

    plan = plan_build(ZooHandle.at(tmp / "context"), args.plan_preset, args.plan_models)

    def per_task(plan) -> tuple[float, int]:
        started = time.perf_counter()
        context = serialize_context()
        tokenize(context)
        size = len(cloudpickle.dumps(context))
        return time.perf_counter() - started, size

    before = RecipeFlow(per_task, name="context-as-before", validate_parameters=False)(plan)
    after = recipe_flow(name="context")(per_task)(plan)
    return {"plan_models": args.plan_models, "plan_tasks": len(plan.work), "context_before_s": before[0],
            "context_before_bytes": before[1], "context_s": after[0], "context_bytes": after[1]}


def in_process_time(report) -> float:
    """Wall seconds of an in-process build (its training phase and publish)."""
    return report.seconds["training_phase"] + report.seconds["publishing"]


def _print(r: dict) -> None:
    print(f"prefect server start-up {r['server_start_s']:6.1f} s; Dask cluster start-up {r['cluster_start_s']:5.1f} s; "
          f"warm-up flow {r['warm_up_s']:5.1f} s (not in the figures below)")
    print(f"P  {r['noop_tasks']} no-op tasks on the warm cluster {r['noop_flow_s']:6.2f} s, in this process "
          f"{r['noop_in_process_s']:.4f} s: {r['per_task_overhead_s']:.3f} s per task (target <= 0.2)")
    print(f"F  build flow, {r['models']} models in {r['build_tasks']} tasks {r['flow_s']:6.2f} s; I in-process "
          f"{r['in_process_s']:6.2f} s; F/I {r['flow_vs_in_process']:.2f}; "
          f"{r['build_per_task_overhead_s']:.3f} s per task; tasks trained and staged for {r['flow_tasks_s']:.2f} s "
          f"(overhead fraction {r['build_overhead_fraction']:.2f})")
    if "context_s" in r:
        print(f"C  per task with a {r['plan_models']:,}-config plan ({r['plan_tasks']} tasks): {r['context_s']:.3f} s, "
              f"{r['context_bytes'] / 2**20:.2f} MiB; baseline (the plan in the context) {r['context_before_s']:.3f} s, "
              f"{r['context_before_bytes'] / 2**20:.2f} MiB: {r['context_before_s'] / r['context_s']:.0f}x the time, "
              f"{r['context_before_bytes'] / r['context_bytes']:.0f}x the bytes")
    print(f"load average at end: {r['load_end']:.1f}")


if __name__ == "__main__":
    main()
