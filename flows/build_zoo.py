"""The build flow: the build recipe of ``weightzoo.pipelines.build`` with its steps as Prefect
tasks on Dask (train each group of compatible models, publish once).

The plan is made once, before the flow starts (by the CLI, or by the deployment's entry
flow); staging is the only cache, so a re-run trains only what is not staged yet.
"""

from __future__ import annotations

from prefect import get_run_logger

from weightzoo.pipelines.build import BuildPlan, BuildReport, run_build

from weightzoo_flows.runtime import PrefectRunner, recipe_flow, run_on_dask, threads_per_task


@recipe_flow(name="build-zoo", log_prints=True)
def build_zoo(plan: BuildPlan, threads: int | None = None) -> BuildReport:
    """Train the plan's groups as tasks and publish the next version of its zoo."""
    logger = get_run_logger()
    logger.info("plan %s", plan.summary())
    report = run_build(plan, PrefectRunner(threads), progress=logger.info)
    logger.info("%s %s of %s", "published" if report.published else "nothing new; latest is",
                report.version, plan.zoo)
    return report


def run_build_flow(plan: BuildPlan, *, workers: int = 2, dask_address: str | None = None) -> BuildReport:
    """Run :func:`build_zoo` on a Dask runner (a LocalCluster of ``workers``, or a cluster by address)."""
    threads = None if dask_address else threads_per_task(workers)
    return run_on_dask(build_zoo, {"plan": plan, "threads": threads}, workers=workers, dask_address=dask_address)
