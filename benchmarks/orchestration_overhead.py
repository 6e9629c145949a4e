"""Orchestration overhead: a Prefect + Dask build of trivially cheap models against the sum of
their training times, and against the same build without Prefect or Dask.

What it measures
    F  wall time of ``weightzoo_flows.build_zoo.run_build_flow`` (a real Prefect server, a Dask
       LocalCluster of ``--workers`` processes, one task per group of ``--max-group``
       models, then publish), server start-up excluded and reported on its own;
    I  wall time of ``weightzoo.pipelines.build.build_in_process`` (same plan, same training code,
       same publish, one process);
    T  the sum of the models' training times (``train_seconds`` in their staged records;
       a fleet's time is shared equally by its models).

    Overhead fraction of the flow = 1 − T / (F × workers): the share of the workers' wall
    time not spent training (scheduling, task start-up, process start, result passing,
    publishing). Per-task overhead = (F − I) / number of tasks.

Method
    ``--models`` tiny MLPs (digits, 4 hidden units, 1 epoch, 1 snapshot): training is
    milliseconds, so nearly everything else is overhead. I runs first (it also warms the
    dataset cache on disk), then the server starts, then F. Run once; the machine's load
    is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from weightzoo.io.handle import ZooHandle
from weightzoo.pipelines.build import build_in_process, plan_build
from weightzoo.io.reader import open_zoo
from weightzoo.io.staging import load_staged


def cheap_spec(n_models: int) -> dict:
    """A spec of ``n_models`` tiny MLPs that train in milliseconds."""
    return {"name": "overhead-bench", "architecture": "mlp", "models": n_models,
            "sampling": {"method": "random", "seed": 0},
            "hyperparameters": {"dataset": "digits", "hidden_width": 4, "optimizer": "sgd",
                                "lr": {"log-uniform": [0.01, 0.1]}, "batch_size": 64},
            "training": {"epochs": 1, "snapshots": {"count": 1}}}


def training_seconds(zoo: Path) -> float:
    """Sum of the published models' recorded training times."""
    models = open_zoo(zoo).models
    return sum(float(load_staged(zoo, fp, weights=False).record.get("train_seconds") or 0.0)
               for fp in models["fingerprint"])


def main(argv=None) -> dict:
    """Run the in-process and the flow build, print wall times and the overhead fractions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-group", type=int, default=4, help="models per task (default 4: many small tasks)")
    args = parser.parse_args(argv)
    spec = cheap_spec(args.models)
    tmp = Path(tempfile.mkdtemp(prefix="wz-overhead-bench-"))
    n_tasks = len(plan_build(ZooHandle.at(tmp / "plan"), spec, max_group=args.max_group,
                             min_groups=args.workers).work)
    print(f"load average at start: {os.getloadavg()[0]:.1f}; {args.models} models in {n_tasks} tasks, "
          f"{args.workers} worker(s)")
    try:
        start = time.perf_counter()
        build_in_process(tmp / "in-process", spec, max_group=args.max_group)
        in_process = time.perf_counter() - start
        train_in_process = training_seconds(tmp / "in-process")
        flow, train_flow, server = run_flow(spec, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"models": args.models, "tasks": n_tasks, "workers": args.workers, "server_start_s": server,
              "flow_s": flow, "in_process_s": in_process, "train_flow_s": train_flow,
              "train_in_process_s": train_in_process,
              "flow_overhead_fraction": 1 - train_flow / (flow * args.workers),
              "in_process_overhead_fraction": 1 - train_in_process / in_process,
              "per_task_overhead_s": (flow - in_process) / n_tasks}
    print(f"prefect server start-up       {server:8.1f} s (not in F)")
    print(f"F  flow build (Prefect+Dask)  {flow:8.1f} s   training {train_flow:6.2f} s   "
          f"overhead fraction {result['flow_overhead_fraction']:.3f}")
    print(f"I  in-process build           {in_process:8.1f} s   training {train_in_process:6.2f} s   "
          f"overhead fraction {result['in_process_overhead_fraction']:.3f}")
    print(f"F/I {flow / in_process:.1f}x; per-task overhead of the flow {result['per_task_overhead_s']:.2f} s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return result


def run_flow(spec: dict, tmp: Path, args) -> tuple[float, float, float]:
    """(flow wall seconds, its training seconds, server start-up seconds)."""
    from weightzoo_flows.server import prefect_server

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    start = time.perf_counter()
    with prefect_server(tmp / "prefect-home"):
        server = time.perf_counter() - start
        from weightzoo_flows.build_zoo import run_build_flow  # Prefect reads the server URL when imported

        start = time.perf_counter()
        plan = plan_build(ZooHandle.at(tmp / "flow"), spec, max_group=args.max_group, min_groups=args.workers)
        run_build_flow(plan, workers=args.workers)
        flow = time.perf_counter() - start
        return flow, training_seconds(tmp / "flow"), server


if __name__ == "__main__":
    main()
