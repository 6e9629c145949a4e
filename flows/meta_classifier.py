"""The NWS meta-classifier as a flow: one cached, retryable task per target column, spread
over the Dask cluster.

The task body is one call into ``weightzoo.analysis``; the result itself is cached in the
zoo's analyses folder under ``<version>/meta-classifier/<key>/`` (version, parameters, code).
"""

from __future__ import annotations

from prefect import get_run_logger, task

from weightzoo.analysis.meta_classifier import run_meta_classifier_study
from weightzoo.analysis.results import StudyResult
from weightzoo.io.handle import ZooHandle
from weightzoo.train.tasks import set_threads

from weightzoo_flows.runtime import recipe_flow, step_options


@task(name="meta-classifier", task_run_name="meta-classifier {label}", **step_options(retries=1))
def meta_classifier_task(zoo: ZooHandle, version: str | None, label: str, options: dict,
                         threads: int | None = None) -> StudyResult:
    """Train and evaluate the NWS meta-classifier for one label."""
    logger = get_run_logger()
    set_threads(threads)
    return run_meta_classifier_study(zoo.open(version), label, progress=logger.info, **options)


@recipe_flow(name="meta-classifier")
def meta_classifier_flow(zoo: ZooHandle | str, labels: list[str], version: str | None = None,
                         options: dict | None = None, threads: int | None = None) -> list[StudyResult]:
    """One meta-classifier per label, in parallel on the task runner."""
    handle = ZooHandle.at(zoo)
    futures = [meta_classifier_task.submit(handle, version, label, options or {}, threads) for label in labels]
    return [f.result() for f in futures]
