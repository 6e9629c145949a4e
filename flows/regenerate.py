"""The regeneration flow: the recipe of ``weightzoo.pipelines.regenerate`` with its steps as
Prefect tasks on Dask (retrain the sampled members' fleets, compare with the stored snapshots).

Nothing is cached: the point is to train again. Fleets go to the workers exactly as a build
sends its groups (same runner, same GPU placement); the thread count and deterministic flags
come from the record, not from here.
"""

from __future__ import annotations

from prefect import get_run_logger

from weightzoo.pipelines.regenerate import RegenerationPlan, run_regeneration

from weightzoo_flows.runtime import PrefectRunner, recipe_flow


@recipe_flow(name="regenerate", log_prints=True)
def regenerate_flow(plan: RegenerationPlan, scratch: str | None = None) -> dict:
    """Retrain the plan's members with their fleets and report how closely they match."""
    logger = get_run_logger()
    logger.info("%s@%s: %d members in %d fleets (%d models to train)", plan.zoo, plan.version,
                len(plan.members), len(plan.jobs), plan.n_models_trained)
    result = run_regeneration(plan, PrefectRunner(), scratch)
    logger.info("%d/%d members match bit for bit; largest weight difference %g", result["n_exact"],
                result["n_members"], result["max_abs_diff"])
    return result
