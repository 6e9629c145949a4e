"""The import flow: the import recipe of ``weightzoo.pipelines.importing`` with its steps as
Prefect tasks on Dask (read and stage each chunk of networks, publish once).

Staging is the only cache: a network is keyed by a hash of the bytes read, so a re-run after
a crash, or with unchanged files, stages and publishes nothing new.
"""

from __future__ import annotations

from prefect import get_run_logger

from weightzoo.pipelines.importing import ImportPlan, run_import

from weightzoo_flows.runtime import PrefectRunner, recipe_flow


@recipe_flow(name="import-zoo", log_prints=True)
def import_zoo(plan: ImportPlan) -> dict:
    """Import every network of the plan's source into its zoo; the import report."""
    logger = get_run_logger()
    logger.info("plan %s", plan.summary())
    report = run_import(plan, PrefectRunner())
    for row in report["rejected"]:
        logger.warning("rejected %s: %s: %s", row["network"], row["file"], row["reason"])
    logger.info("%d accepted, %d rejected; version %s", report["n_accepted"], report["n_rejected"],
                report["version"])
    return report
