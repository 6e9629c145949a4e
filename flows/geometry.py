"""Geometry and dynamics studies as flows: hyperplane-arrangement statistics (Gamba et
al.), training-trajectory measures (Loukas et al.) and layer re-initialisation robustness
(Zhang et al.).

Projections and trajectories read each selected model once and are cheap: one task each
(:func:`study_flow`). Re-initialisation evaluates every network once per (layer, reset), so
it is spread over the Dask cluster in chunks of models and combined. All cache their
result in the zoo's analyses folder, ``<version>/<study>/<key>/``.
"""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from weightzoo.analysis import reinit
from weightzoo.analysis.projections import run_projection_study
from weightzoo.analysis.cache import cached_result
from weightzoo.analysis.results import StudyResult
from weightzoo.analysis.trajectories import run_trajectory_study
from weightzoo.io.handle import ZooHandle
from weightzoo.train.tasks import set_threads

from weightzoo_flows.runtime import chunked, recipe_flow, step_options

MODELS_PER_CHUNK = 8
# study name -> run_*_study(zoo, out_dir, progress=..., **options)
SINGLE_TASK_STUDIES = {"projections": run_projection_study, "trajectories": run_trajectory_study}


@task(name="study", task_run_name="{study}", **step_options(retries=1))
def study_task(zoo: ZooHandle, version: str | None, study: str, options: dict) -> StudyResult:
    """One cached single-task study (projections: filter cosines, their mass at or below 0
    and the distance from init; trajectories: length, variance, distance of the traces)."""
    logger = get_run_logger()
    opened = zoo.open(version)
    run = SINGLE_TASK_STUDIES[study]
    return cached_result(opened, study, options, lambda out: run(opened, out, progress=logger.info, **options))


@recipe_flow(name="study", flow_run_name="{study}")
def study_flow(zoo: ZooHandle | str, study: str, version: str | None = None,
               options: dict | None = None) -> StudyResult:
    """A single-task study (``projections`` or ``trajectories``) of one version (cached)."""
    if study not in SINGLE_TASK_STUDIES:
        raise ValueError(f"unknown study {study!r}; known: {sorted(SINGLE_TASK_STUDIES)}")
    return study_task(ZooHandle.at(zoo), version, study, options or {})


@task(name="reinit-chunk", task_run_name="reinit {index}", **step_options(retries=1))
def reinit_chunk(zoo: ZooHandle, version: str, model_ids: list[str], options: dict, index: int,
                 threads: int | None = None) -> pd.DataFrame:
    """Re-initialisation rows of one chunk of networks."""
    logger = get_run_logger()
    set_threads(threads)
    return reinit.reinit_table(zoo.open(version), model_ids=model_ids, progress=logger.info, **options)


@recipe_flow(name="reinit")
def reinit_flow(zoo: ZooHandle | str, version: str | None = None, where: str | None = None,
                max_models: int | None = None, options: dict | None = None,
                threads: int | None = None) -> StudyResult:
    """Accuracy drop per (layer, reset) over the selected networks, in chunks on the cluster."""
    logger = get_run_logger()
    handle = ZooHandle.at(zoo)
    opened = handle.open(version)
    options = options or {}
    parameters = {"where": where, "max_models": max_models, **options}

    def run(out):
        selection = opened.select(where, max_models=max_models)
        selection.require_samples()
        ids = selection.models["model_id"].tolist()
        chunks = chunked(ids, MODELS_PER_CHUNK)
        logger.info("re-initialising layers of %d networks in %d chunks", len(ids), len(chunks))
        futures = [reinit_chunk.submit(handle, opened.version, chunk, options, i, threads)
                   for i, chunk in enumerate(chunks)]
        table = pd.concat([f.result() for f in futures], ignore_index=True)
        return reinit.run_reinit_study(opened, out, table=table)

    return cached_result(opened, "reinit", parameters, run)
