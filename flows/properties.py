"""Property prediction from weights as a flow: features per chunk of models on the Dask
cluster, then one fit.

Computing s(W) (or gathering raw vectors) reads every selected snapshot, so it is spread
over the cluster in chunks of models; the fit is small and runs once. The result is cached
on disk under ``<zoo>/analyses/<version>/properties/<key>/`` (version, parameters, code):
a second run with the same inputs reads it back without starting any task.
"""

from __future__ import annotations

import numpy as np
from prefect import flow, get_run_logger, task

from weightzoo.analysis.properties import combine_feature_tables, feature_table, run_property_study
from weightzoo.analysis.studies import cached_study, study_summary
from weightzoo.io.reader import open_zoo

MODELS_PER_CHUNK = 32


@task(name="features", retries=1, retry_delay_seconds=2, task_run_name="features {index}")
def features_task(zoo_dir: str, version: str, model_ids: list[str], snapshots, features: str, index: int):
    """The feature table of one chunk of models (a pandas DataFrame)."""
    return feature_table(open_zoo(zoo_dir, version), snapshots=snapshots, model_ids=model_ids, features=features)


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
        chunks = np.array_split(np.array(ids), max(1, -(-len(ids) // MODELS_PER_CHUNK)))
        logger.info("%s features of %d models in %d chunks", features, len(ids), len(chunks))
        futures = [features_task.submit(zoo_dir, zoo.version, chunk.tolist(), snapshots, features, i)
                   for i, chunk in enumerate(chunks)]
        table = combine_feature_tables([f.result() for f in futures])
        logger.info("fitting on %d samples (%d features)", len(table), table.shape[1])
        run_property_study(zoo, out, targets=targets, features=features, seed=seed, table=table)

    path, cached = cached_study(zoo, "properties", parameters, produce, marker="properties.parquet")
    return study_summary(path, cached, "properties.parquet")
