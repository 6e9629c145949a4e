"""SANE (Schürholt et al.) as flows: train (resumable, cached), embeddings, probes.

A task body is one call into ``weightzoo.analysis.sane.study``. Training writes a
checkpoint after every epoch, so a retried task (or the same command run again after a
crash) resumes where it stopped; the finished result is cached on (version, options, code).
Tasks are submitted to the flow's Dask cluster; with ``device: cuda`` they ask for a ``GPU``
resource, so only workers started with ``--resources "GPU=1"`` run them.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from weightzoo.analysis.sane.sampling import run_sane_sampling
from weightzoo.analysis.sane.study import run_sane_probe, run_sane_training
from weightzoo.io.handle import ZooHandle

from weightzoo_flows.runtime import placed_for, recipe_flow, step_options

COMMANDS = ("train", "embed", "probe", "sample")


@task(name="sane-train", **step_options(retries=1))
def sane_train_task(zoo: ZooHandle, version: str | None, options: dict) -> dict:
    """Train the autoencoder on the train split and embed every snapshot of the version."""
    logger = get_run_logger()
    return run_sane_training(zoo.open(version), options, progress=logger.info)


@task(name="sane-probe", **step_options(retries=1))
def sane_probe_task(zoo: ZooHandle, version: str | None, options: dict, targets: list[str] | None) -> dict:
    """Probes on the embeddings next to the s(W) baseline, same splits."""
    logger = get_run_logger()
    return run_sane_probe(zoo.open(version), options, targets, progress=logger.info)


@task(name="sane-sample", **step_options(retries=1))
def sane_sample_task(zoo: ZooHandle, version: str | None, options: dict, sampling: dict) -> dict:
    """Sample networks from the embedding space, evaluate them beside random and anchor ones."""
    logger = get_run_logger()
    return run_sane_sampling(zoo.open(version), options, progress=logger.info, **sampling)


@recipe_flow(name="sane", flow_run_name="sane {command}")
def sane_flow(zoo: ZooHandle | str, command: str, version: str | None = None, options: dict | None = None,
              targets: list[str] | None = None, sampling: dict | None = None) -> dict:
    """``train`` and ``embed`` give the (cached) training result with its embeddings table;
    ``probe`` adds the probes; ``sample`` draws, evaluates and optionally publishes networks."""
    if command not in COMMANDS:
        raise ValueError(f"unknown SANE command {command!r}; known: {list(COMMANDS)}")
    options, zoo = options or {}, ZooHandle.at(zoo)
    with placed_for(str(options.get("device") or "cpu")):  # every command may train
        if command == "probe":
            future = sane_probe_task.submit(zoo, version, options, targets)
        elif command == "sample":
            future = sane_sample_task.submit(zoo, version, options, sampling or {})
        else:
            future = sane_train_task.submit(zoo, version, options)
    return future.result()
