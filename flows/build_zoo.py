"""The build flow: sample → group → train groups on Dask → publish. Reads like the recipe.

Every task body is one call into ``weightzoo.build``; caching and retries live here.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed

from weightzoo import build
from weightzoo.core.models import ConfigError
from weightzoo.core.spec import SpecError, load_spec
from weightzoo.train.fleet import FleetError

from flows.runtime import placed_for, retry_unless, run_on_dask, threads_per_task

# errors of the input, not of the machine: retrying cannot help
PERMANENT_ERRORS = (SpecError, ConfigError, FleetError, build.BuildError, ValueError, TypeError)


def _group_cache_key(context, parameters) -> str:
    """The group's fingerprint within this zoo (a zoo deleted and built again gets a new
    identity, so Prefect never 'remembers' models that are no longer on disk)."""
    return f"train-group-{build.zoo_identity(parameters['zoo_root'])}-{parameters['group'].key}"


_retry_transient = retry_unless(*PERMANENT_ERRORS)  # worker lost, out of memory, I/O hiccup: retry


@task(name="train-group", retries=2, retry_delay_seconds=2, retry_condition_fn=_retry_transient,
      cache_key_fn=_group_cache_key, persist_result=True, task_run_name="train {group.key:.12}")
def train_group(zoo_root: str, group: build.TrainGroup, threads: int | None = None) -> list[dict]:
    """Train and stage one group of compatible models; returns small receipts."""
    logger = get_run_logger()
    return build.train_and_stage(zoo_root, group, threads=threads,
                                 progress=lambda line: logger.info("group %.12s: %s", group.key, line))


@task(name="publish", retries=1, retry_condition_fn=_retry_transient)
def publish(zoo_root: str, fingerprints: list[str], spec_dict: dict, extend: bool) -> str:
    """Publish staged models as the next version (atomic; see DESIGN.md)."""
    return build.publish(zoo_root, fingerprints, load_spec(spec_dict), extend=True,
                         message="extend" if extend else "build")


@flow(name="build-zoo", log_prints=True)
def build_zoo(spec: str | dict = "demo", out: str = "zoo", models: int | None = None, extend: bool = False,
              workers: int = 2, max_group: int = build.DEFAULT_GROUP_SIZE) -> str:
    """Build (or extend) a zoo from a preset name, spec file or spec dict; returns the version."""
    logger = get_run_logger()
    spec_obj = load_spec(spec)
    groups = build.plan_build(spec_obj, models, max_group=max_group, min_groups=workers)
    build.check_extend(out, groups, extend)
    n_models = sum(len(g.configs) for g in groups)
    logger.info("spec %s: %d models in %d groups (plan %s)", spec_obj.name, n_models, len(groups),
                build.group_digest(groups))
    threads = threads_per_task(workers)
    with placed_for(spec_obj.training.device):  # CUDA groups go to workers with a GPU resource
        futures = {train_group.submit(out, g, threads): g for g in groups}
    fingerprints, done, started = [], 0, time.monotonic()
    for future in as_completed(list(futures)):
        receipts = future.result()
        if build.staged_receipts(out, futures[future]) is None:  # a cached result whose files are gone
            logger.warning("group %.12s: cached but not staged; training again", futures[future].key)
            with placed_for(spec_obj.training.device):
                retry = train_group.with_options(refresh_cache=True).submit(out, futures[future], threads)
            receipts = retry.result()
        fingerprints += [r["fingerprint"] for r in receipts]
        done += len(receipts)
        logger.info("trained %d/%d models (%s)", done, n_models, _eta(started, done, n_models))
    version = publish(out, fingerprints, spec_obj.to_dict(), extend)
    logger.info("published %s of %s", version, out)
    return version


def _eta(started: float, done: int, total: int) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else float("nan")
    return f"{elapsed:.0f}s elapsed, ~{left:.0f}s left"


def run_build(spec="demo", out="zoo", models=None, extend=False, workers=2, dask_address=None,
              max_group=build.DEFAULT_GROUP_SIZE) -> str:
    """Run :func:`build_zoo` on a Dask runner (the CLI's entry point)."""
    parameters = {"spec": spec, "out": str(out), "models": models, "extend": extend, "workers": workers,
                  "max_group": max_group}
    return run_on_dask(build_zoo, parameters, workers=workers, dask_address=dask_address)
