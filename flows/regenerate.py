"""The regeneration flow: plan → retrain the sampled members' fleets on Dask → compare.

Every task body is one call into ``weightzoo.regenerate``. Nothing is cached: the point is to
train again. Fleets go to the workers exactly as a build sends its groups (same runner, same
GPU placement); the thread count and deterministic flags come from the record, not from here.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from weightzoo import regenerate

from flows.build_zoo import PERMANENT_ERRORS
from flows.runtime import placed_for, retry_unless, run_on_dask


@task(name="retrain-fleet", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless(*PERMANENT_ERRORS),
      task_run_name="retrain {job.group.key:.12}")
def retrain_fleet(scratch: str, job: regenerate.FleetJob) -> list[dict]:
    """Retrain one recorded fleet into the scratch directory; returns small receipts."""
    logger = get_run_logger()
    return regenerate.retrain(scratch, job,
                              progress=lambda line: logger.info("fleet %.12s: %s", job.group.key, line))


@task(name="compare-members")
def compare_members(plan: regenerate.RegenerationPlan, scratch: str) -> dict:
    """Compare the regenerated members with the stored snapshots (read on the worker)."""
    return regenerate.compare(plan, scratch)


@flow(name="regenerate", log_prints=True)
def regenerate_flow(zoo_dir: str, version: str | None = None, sample: int = 1, seed: int = 0,
                    scratch: str | None = None) -> dict:
    """Retrain ``sample`` random members of a version and report how closely they match."""
    logger = get_run_logger()
    plan = regenerate.plan_regeneration(zoo_dir, version, sample, seed)
    logger.info("%s@%s: %d members in %d fleets (%d models to train)", zoo_dir, plan.version,
                len(plan.members), len(plan.jobs), plan.n_models_trained)
    with regenerate.scratch_directory(zoo_dir, scratch) as folder:
        futures = []
        for job in plan.jobs:
            with placed_for(job.group.configs[0].training.device):
                futures.append(retrain_fleet.submit(str(folder), job))
        for future in futures:
            future.result()
        result = compare_members.submit(plan, str(folder)).result()
    logger.info("%d/%d members match bit for bit; largest weight difference %g", result["n_exact"],
                result["n_members"], result["max_abs_diff"])
    return result


def run_regenerate(zoo_dir, version=None, sample=1, seed=0, scratch=None, workers=2, dask_address=None) -> dict:
    """Run :func:`regenerate_flow` on a Dask runner (the CLI's entry point)."""
    parameters = {"zoo_dir": str(zoo_dir), "version": version, "sample": sample, "seed": seed,
                  "scratch": None if scratch is None else str(scratch)}
    return run_on_dask(regenerate_flow, parameters, workers=workers, dask_address=dask_address)
