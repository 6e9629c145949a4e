"""Property prediction from weights as a flow: features per chunk of models, then one fit
per target, all as tasks on the Dask cluster.

Computing s(W) (or gathering raw vectors) reads every selected snapshot, so it is spread
over the cluster in chunks of models; the fits (a linear and a boosted model per target,
slow on raw vectors) run in parallel, one task per target. The result is cached
on disk under ``<zoo>/analyses/<version>/properties/<key>/`` (version, parameters, code):
a second run with the same inputs reads it back without starting any task.
"""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from weightzoo.analysis.properties import (combine_feature_tables, default_targets, feature_table, fit_properties,
                                           run_property_study)
from weightzoo.analysis.studies import cached_study, study_summary
from weightzoo.io.reader import open_zoo

from flows.runtime import chunked

MODELS_PER_CHUNK = 32


@task(name="features", retries=1, retry_delay_seconds=2, task_run_name="features {index}", cache_policy=NO_CACHE)
def features_task(zoo_dir: str, version: str, model_ids: list[str], snapshots, features: str, index: int):
    """The feature table of one chunk of models (a pandas DataFrame)."""
    return feature_table(open_zoo(zoo_dir, version), snapshots=snapshots, model_ids=model_ids, features=features)


@task(name="fit", retries=1, retry_delay_seconds=2, task_run_name="fit {target}", cache_policy=NO_CACHE)
def fit_task(table: pd.DataFrame, target: str, features: str, seed: int) -> pd.DataFrame:
    """The result rows of one target (a linear and a boosted model; per layout for raw)."""
    return fit_properties(table, [target], features=features, seed=seed)


@flow(name="properties")
def properties_flow(zoo_dir: str, version: str | None = None, targets: list[str] | None = None,
                    features: str = "stats", snapshots=None, seed: int = 0) -> dict:
    """Predict test accuracy, gap, epoch and hyperparameters from weight features."""
    logger = get_run_logger()
    zoo = open_zoo(zoo_dir, version)
    parameters = {"targets": targets, "features": features, "snapshots": snapshots, "seed": seed}

    def produce(out):
        ids = zoo.models.loc[zoo.models["status"] == "ok", "model_id"].tolist()
        if not ids:
            raise ValueError(f"{zoo_dir}@{zoo.version} has no models with status 'ok'")
        chunks = chunked(ids, MODELS_PER_CHUNK)
        logger.info("%s features of %d models in %d chunks", features, len(ids), len(chunks))
        futures = [features_task.submit(zoo_dir, zoo.version, chunk, snapshots, features, i)
                   for i, chunk in enumerate(chunks)]
        table = combine_feature_tables([f.result() for f in futures])
        names = targets or default_targets(table)
        logger.info("fitting %d targets on %d samples (%d columns)", len(names), len(table), table.shape[1])
        fits = [fit_task.submit(table, name, features, seed) for name in names]
        results = pd.concat([f.result() for f in fits], ignore_index=True)
        run_property_study(zoo, out, features=features, seed=seed, table=table, results=results)

    path, cached = cached_study(zoo, "properties", parameters, produce, marker="properties.parquet")
    return study_summary(path, cached, "properties.parquet")
