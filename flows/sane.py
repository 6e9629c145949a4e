"""SANE (Schürholt et al.) as flows: train (resumable, cached), embeddings, probes.

A task body is one call into ``weightzoo.analysis.sane.study``. Training writes a
checkpoint after every epoch, so a retried task (or the same command run again after a
crash) resumes where it stopped; the finished result is cached on (version, options, code).
Tasks are submitted to the flow's Dask cluster; with ``device: cuda`` they ask for a ``GPU``
resource, so only workers started with ``--resources "GPU=1"`` run them.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from weightzoo.analysis.sane.sampling import run_sane_sampling
from weightzoo.analysis.sane.study import run_sane_probe, run_sane_training
from weightzoo.io.reader import open_zoo

from flows.runtime import placed_for

COMMANDS = ("train", "embed", "probe", "sample")


@task(name="sane-train", retries=1, retry_delay_seconds=2)
def sane_train_task(zoo_dir: str, version: str | None, options: dict) -> dict:
    """Train the autoencoder on the train split and embed every snapshot of the version."""
    logger = get_run_logger()
    return run_sane_training(open_zoo(zoo_dir, version), options, progress=logger.info)


@task(name="sane-probe", retries=1, retry_delay_seconds=2)
def sane_probe_task(zoo_dir: str, version: str | None, options: dict, targets: list[str] | None) -> dict:
    """Probes on the embeddings next to the s(W) baseline, same splits."""
    logger = get_run_logger()
    return run_sane_probe(open_zoo(zoo_dir, version), options, targets, progress=logger.info)


@task(name="sane-sample", retries=1, retry_delay_seconds=2)
def sane_sample_task(zoo_dir: str, version: str | None, options: dict, sampling: dict) -> dict:
    """Sample networks from the embedding space, evaluate them beside random and anchor ones."""
    logger = get_run_logger()
    return run_sane_sampling(open_zoo(zoo_dir, version), options, progress=logger.info, **sampling)


@flow(name="sane", flow_run_name="sane {command}")
def sane_flow(zoo_dir: str, command: str, version: str | None = None, options: dict | None = None,
              targets: list[str] | None = None, sampling: dict | None = None) -> dict:
    """``train`` and ``embed`` give the (cached) training result with its embeddings table;
    ``probe`` adds the probes; ``sample`` draws, evaluates and optionally publishes networks."""
    if command not in COMMANDS:
        raise ValueError(f"unknown SANE command {command!r}; known: {list(COMMANDS)}")
    options = options or {}
    with placed_for(str(options.get("device") or "cpu")):  # every command may train
        if command == "probe":
            future = sane_probe_task.submit(zoo_dir, version, options, targets)
        elif command == "sample":
            future = sane_sample_task.submit(zoo_dir, version, options, sampling or {})
        else:
            future = sane_train_task.submit(zoo_dir, version, options)
    return future.result()
