"""The import flow: list a foreign source's networks → read and stage them in chunks on the
cluster → publish one version. Every task body is one call into ``weightzoo.interop``.

A chunk is cached on the names, sizes and mtimes of the files it reads (within this zoo's
identity); the staged networks themselves are keyed by a hash of the bytes read, so a
re-run after a crash or with unchanged files stages and publishes nothing new.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from weightzoo.build import BuildError, zoo_identity
from weightzoo.interop.common import SourceError
from weightzoo.interop.importing import chunk_key, finish_import, list_networks, stage_networks
from weightzoo.io.staging import find_staged

from flows.runtime import chunked, retry_unless, run_on_dask

NETWORKS_PER_CHUNK = 64
PERMANENT_ERRORS = (SourceError, BuildError, ValueError, TypeError)


def _chunk_cache_key(context, parameters) -> str:
    return (f"import-chunk-{zoo_identity(parameters['out'])}-"
            f"{chunk_key(parameters['kind'], parameters['source'], parameters['handles'])}")


_retry_transient = retry_unless(*PERMANENT_ERRORS)  # worker lost, out of memory, I/O hiccup: retry


@task(name="import-chunk", retries=2, retry_delay_seconds=2, retry_condition_fn=_retry_transient,
      cache_key_fn=_chunk_cache_key, persist_result=True, task_run_name="import {kind} chunk {index}")
def import_chunk(kind: str, source: str, handles: list[str], out: str, index: int) -> dict:
    """Read and stage one chunk of networks; accepted receipts and rejections (small dicts)."""
    return stage_networks(kind, source, handles, out)


@task(name="publish-import", retries=1, retry_condition_fn=_retry_transient)
def publish_import(out: str, kind: str, source: str, staged: dict, extend: bool) -> dict:
    """Publish the staged networks as the zoo's next version; the import report."""
    return finish_import(out, kind, source, staged, extend=extend)


@flow(name="import-zoo", log_prints=True)
def import_zoo(kind: str, source: str, out: str, extend: bool = False,
               chunk_size: int = NETWORKS_PER_CHUNK) -> dict:
    """Import every network of a foreign source (nws, modelzoos, torch) into ``out``."""
    logger = get_run_logger()
    handles = list_networks(kind, source)
    chunks = chunked(handles, chunk_size)
    logger.info("%s source %s: %d networks in %d chunks", kind, source, len(handles), len(chunks))
    futures = [import_chunk.submit(kind, source, chunk, out, i) for i, chunk in enumerate(chunks)]
    staged = {"accepted": [], "rejected": []}
    for i, (future, chunk) in enumerate(zip(futures, chunks)):
        result = future.result()
        if any(find_staged(out, row["fingerprint"]) is None for row in result["accepted"]):
            logger.warning("chunk %d: cached but not staged; importing again", i)
            result = import_chunk.with_options(refresh_cache=True).submit(kind, source, chunk, out, i).result()
        staged["accepted"] += result["accepted"]
        staged["rejected"] += result["rejected"]
    for row in staged["rejected"]:
        logger.warning("rejected %s: %s: %s", row["network"], row["file"], row["reason"])
    report = publish_import(out, kind, source, staged, extend)
    logger.info("%d accepted, %d rejected; version %s", report["n_accepted"], report["n_rejected"],
                report["version"])
    return report


def run_import(kind: str, source: str, out: str, *, extend: bool = False, workers: int = 2,
               dask_address: str | None = None, chunk_size: int = NETWORKS_PER_CHUNK) -> dict:
    """Run :func:`import_zoo` on a Dask runner (the CLI's entry point)."""
    parameters = {"kind": kind, "source": str(source), "out": str(out), "extend": extend, "chunk_size": chunk_size}
    return run_on_dask(import_zoo, parameters, workers=workers, dask_address=dask_address)
