"""Property prediction from weights as a flow: features per chunk of models, then one fit
per target, all as tasks on the Dask cluster.

Computing s(W) (or gathering raw vectors) reads every selected snapshot, so it is spread
over the cluster in chunks of models; the fits (a linear and a boosted model per target,
slow on raw vectors) run in parallel, one task per target. The result is cached in the
zoo's analyses folder under ``<version>/properties/<key>/`` (version, parameters, code):
a second run with the same inputs reads it back without starting any task.
"""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from weightzoo.analysis.cache import cached_result
from weightzoo.analysis.properties import (combine_feature_tables, default_targets, feature_table, fit_properties,
                                           run_property_study)
from weightzoo.analysis.results import StudyResult
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.io.handle import ZooHandle

from weightzoo_flows.runtime import chunked, recipe_flow, step_options

MODELS_PER_CHUNK = 32


@task(name="features", task_run_name="features {index}", **step_options(retries=1))
def features_task(zoo: ZooHandle, version: str, model_ids: list[str], snapshots, features: str, index: int):
    """The feature table of one chunk of models (a pandas DataFrame)."""
    return feature_table(zoo.open(version), snapshots=snapshots, model_ids=model_ids, features=features)


@task(name="fit", task_run_name="fit {target}", **step_options(retries=1))
def fit_task(table: pd.DataFrame, target: str, features: str, seed: int) -> pd.DataFrame:
    """The result rows of one target (a linear and a boosted model; per layout for raw)."""
    return fit_properties(table, [target], features=features, seed=seed)


@recipe_flow(name="properties")
def properties_flow(zoo: ZooHandle | str, version: str | None = None, targets: list[str] | None = None,
                    features: str = "stats", snapshots=None, seed: int = 0) -> StudyResult:
    """Predict test accuracy, gap, epoch and hyperparameters from weight features."""
    logger = get_run_logger()
    handle = ZooHandle.at(zoo)
    opened = handle.open(version)
    snapshots = SnapshotChoice.of(snapshots).text
    parameters = {"targets": targets, "features": features, "snapshots": snapshots, "seed": seed}

    def run(out):
        selection = opened.select(snapshots=snapshots)  # the feature table's models, in storage order
        selection.require_samples()
        chunks = chunked(selection.models["model_id"].tolist(), MODELS_PER_CHUNK)
        logger.info("%s features of %d models in %d chunks", features, len(selection.models), len(chunks))
        futures = [features_task.submit(handle, opened.version, chunk, snapshots, features, i)
                   for i, chunk in enumerate(chunks)]
        table = combine_feature_tables([f.result() for f in futures])
        names = targets or default_targets(table)
        logger.info("fitting %d targets on %d samples (%d columns)", len(names), len(table), table.shape[1])
        fits = [fit_task.submit(table, name, features, seed) for name in names]
        results = pd.concat([f.result() for f in fits], ignore_index=True)
        return run_property_study(opened, out, features=features, seed=seed, table=table, results=results)

    return cached_result(opened, "properties", parameters, run)
