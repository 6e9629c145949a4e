"""``weightzoo compare`` as a flow: the plan here, one task per method group on the Dask
cluster (the s(W) methods together, raw weights, the meta-classifier, the SANE probes, the
neural functional), then scoring, table, plot and summary.

Every body is one call into :mod:`weightzoo.analysis.compare`; the result is cached under
``<version>/compare/<key>/`` (version, parameters, code); a stored result with failed methods
is run again, reusing the predictions of the methods that succeeded.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from weightzoo.analysis.cache import cached_result
from weightzoo.analysis.compare import (Plan, groups_of, parameters_of, plan, predict_group, reusable_predictions,
                                       write_study)
from weightzoo.analysis.protocol import Protocol
from weightzoo.analysis.baselines import DEFAULT_METHODS, methods_for
from weightzoo.analysis.results import StudyResult
from weightzoo.io.handle import ZooHandle
from weightzoo.train.tasks import set_threads

from weightzoo_flows.runtime import recipe_flow, step_options


@task(name="compare-methods", task_run_name="compare {names}", **step_options(retries=1))
def methods_task(zoo: ZooHandle, version: str, names: list[str], the_plan: Plan, seed: int, options: dict,
                 threads: int | None = None) -> dict:
    """Out-of-fold predictions of one method group (per name a DataFrame or a failure status)."""
    logger = get_run_logger()
    set_threads(threads)
    return predict_group(zoo.open(version), names, the_plan, seed, options, progress=logger.info)


@recipe_flow(name="compare")
def compare_flow(zoo: ZooHandle | str, target: str, version: str | None = None, methods: list[str] | None = None,
                 protocol: dict | None = None, snapshots=None, options: dict | None = None,
                 threads: int | None = None, where: str | None = None) -> StudyResult:
    """Every method on the same folds of ``target`` (of the networks ``where`` selects): one
    table, a curve over k, a plot, a summary."""
    logger = get_run_logger()
    handle = ZooHandle.at(zoo)
    opened = handle.open(version)
    settings = Protocol(**(protocol or {}))
    names = list(methods_for(methods or DEFAULT_METHODS, options))
    the_plan = plan(opened, target, settings, snapshots, where)
    parameters = parameters_of(target, names, settings, the_plan.snapshots, options, where)

    def run(out):
        predictions = {}
        if the_plan.status == "ok":
            predictions = reusable_predictions(opened, parameters, the_plan)
            if predictions:
                logger.info("a stored result of these parameters has failed methods: re-running them, reusing the "
                            "predictions of %s", ", ".join(predictions))
            groups = groups_of([n for n in names if n not in predictions])
            logger.info("%s: %s, snapshots %s, %d networks%s; %d method groups", target, settings.text,
                        the_plan.snapshots, the_plan.truth["model_id"].nunique(),
                        f" where {where}" if where else "", len(groups))
            futures = [methods_task.submit(handle, opened.version, group, the_plan, settings.seed, options or {},
                                           threads) for group in groups]
            for future in futures:
                predictions.update(future.result())
        else:
            logger.info("%s: %s", target, the_plan.status)
        return write_study(opened, out, the_plan, predictions, settings, names)

    return cached_result(opened, "compare", parameters, run)
