"""The NWS meta-classifier as a flow: one cached, retryable task per target column, spread
over the Dask cluster.

The task body is one call into ``weightzoo.analysis``; the result itself is cached on disk
under ``<zoo>/analyses/<version>/meta-classifier/<key>/`` (version, parameters, code).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from weightzoo.analysis.studies import run_meta_classifier_study
from weightzoo.io.reader import open_zoo
from weightzoo.train.tasks import set_threads


@task(name="meta-classifier", retries=1, retry_delay_seconds=2, task_run_name="meta-classifier {label}")
def meta_classifier_task(zoo_dir: str, version: str | None, label: str, options: dict,
                         threads: int | None = None) -> dict:
    """Train and evaluate the NWS meta-classifier for one label."""
    logger = get_run_logger()
    set_threads(threads)
    return run_meta_classifier_study(open_zoo(zoo_dir, version), label, progress=logger.info, **options)


@flow(name="meta-classifier")
def meta_classifier_flow(zoo_dir: str, labels: list[str], version: str | None = None, options: dict | None = None,
                         threads: int | None = None):
    """One meta-classifier per label, in parallel on the task runner."""
    futures = [meta_classifier_task.submit(zoo_dir, version, label, options or {}, threads) for label in labels]
    return [f.result() for f in futures]
