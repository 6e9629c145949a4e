"""The import pipeline: plan (list a foreign source's networks, check against the zoo) → read
and stage each chunk of networks → publish one version.

Every importer module (``weightzoo.interop.nws``, ``modelzoos``, ``torchdir``, ``bundle``,
``smallcnnzoo``) has
``list_networks(source) -> list[str]`` (handles, relative to the source) and
``read_network(source, handle) -> ImportedNetwork`` (raising SourceError naming the bad file).
A bad network is reported and skipped; the good ones are still published. Staging is the
one cache: an imported network's fingerprint is a hash of the bytes read, so importing the
same files again stages and publishes nothing new.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from weightzoo import __version__
from weightzoo.interop.common import IMPORTER_VERSION, ImportedNetwork, SourceError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import Receipt, StagedRecord
from weightzoo.io.staging import find_staged, stage_model, sync_staging
from weightzoo.pipelines.build import BuildError
from weightzoo.pipelines.runner import Runner

IMPORTERS = {"nws": "weightzoo.interop.nws", "modelzoos": "weightzoo.interop.modelzoos",
             "torch": "weightzoo.interop.torchdir", "bundle": "weightzoo.interop.bundle",
             "smallcnnzoo": "weightzoo.interop.smallcnnzoo"}
NETWORKS_PER_CHUNK = 64


@dataclass(frozen=True)
class ImportPlan:
    """One import into one zoo: the source's networks in chunks (one step each)."""

    zoo: ZooHandle
    kind: str
    source: Path
    chunks: tuple[tuple[str, ...], ...] = field(repr=False)
    parent: str | None
    extend: bool

    @property
    def n_networks(self) -> int:
        """Networks the source lists."""
        return sum(len(chunk) for chunk in self.chunks)

    def summary(self) -> dict:
        """A small description (what Prefect records of the plan)."""
        return {"zoo": self.zoo.url, "kind": self.kind, "source": str(self.source), "networks": self.n_networks,
                "chunks": len(self.chunks), "parent": self.parent, "extend": self.extend}


@dataclass(frozen=True)
class ChunkReport:
    """What staging one chunk did: a row per accepted network, a row per rejected one."""

    accepted: tuple[dict, ...]
    rejected: tuple[dict, ...]


def importer(kind: str):
    """The importer module of ``kind``; SourceError lists the known kinds."""
    if kind not in IMPORTERS:
        raise SourceError(kind, f"unknown import format; expected one of {sorted(IMPORTERS)}")
    return importlib.import_module(IMPORTERS[kind])


def plan_import(zoo: ZooHandle, kind: str, source, *, extend: bool = False,
                chunk_size: int = NETWORKS_PER_CHUNK) -> ImportPlan:
    """List the source's networks; SourceError if it does not exist or holds none."""
    zoo.check_destination()
    path = Path(source)
    if not path.exists():
        raise SourceError(path, "no such file or directory")
    handles = importer(kind).list_networks(path)
    if not handles:
        raise SourceError(path, f"no {kind} networks found")
    chunks = tuple(tuple(handles[i:i + chunk_size]) for i in range(0, len(handles), chunk_size))
    return ImportPlan(zoo, kind, path.resolve(), chunks, zoo.latest_version(), extend)


def stage_chunk(staging, kind: str, source, handles: tuple[str, ...], *,
                progress: Callable[[str], None] | None = None) -> ChunkReport:
    """Read and stage the given networks (already staged ones are not written again)."""
    module, root = importer(kind), Path(source)
    accepted, rejected = [], []
    for handle in handles:
        try:
            network = module.read_network(root, handle)
        except SourceError as error:
            rejected.append({"network": handle, "file": error.path, "reason": error.reason})
            continue
        reused = find_staged(staging, network.fingerprint) is not None
        receipt = stage_network(staging, network, str(root), durable=False)
        accepted.append({"network": handle, "model_id": receipt.model_id, "fingerprint": receipt.fingerprint,
                         "n_snapshots": receipt.n_snapshots, "layout_id": receipt.layout_id,
                         "n_params": network.layout.n_params, "status": receipt.status, "loadable": network.mapped,
                         "reused": reused})
    if accepted:
        sync_staging(staging)  # the chunk's networks are durable: one sync, not one per file
    if progress:
        progress(f"{len(accepted)} networks staged, {len(rejected)} rejected")
    return ChunkReport(tuple(accepted), tuple(rejected))


def stage_network(staging, network: ImportedNetwork, source: str, *, durable: bool = True) -> Receipt:
    """Stage one imported network (nothing is written if its fingerprint is staged)."""
    receipt = find_staged(staging, network.fingerprint)
    if receipt is not None:
        return receipt
    finite = np.isfinite(network.weights).all(axis=1)
    status, message = "ok", ""
    if not finite.all():
        status, message = "diverged", f"non-finite weights from snapshot {int(np.argmin(finite))} on"
    training = {"imported_from": network.kind, "source": source, "network": network.name,
                "source_sha256": network.digest, "mapped_architecture": network.mapped, **network.training}
    if network.split is not None:  # the publish keeps it; a later resplit too (training_json)
        training["source_split"] = network.split
    record = StagedRecord(
        model_id=network.model_id, fingerprint=network.fingerprint, status=status, message=message,
        hyperparameters=network.hyperparameters, config=network.config, training=training,
        spec_name=f"import-{network.kind}", layout_id=network.layout.layout_id, n_params=network.layout.n_params,
        code_version=IMPORTER_VERSION, split=network.split)
    return stage_model(staging, record, weights=network.weights, snapshots=network.snapshots, layout=network.layout,
                       durable=durable)


def publish_import(plan: ImportPlan, accepted: list[dict], rejected: list[dict], *,
                   progress: Callable[[str], None] | None = None) -> str | None:
    """Publish the accepted networks as the zoo's next version; its name (None if none was accepted)."""
    if not accepted:
        return None
    if plan.parent and not plan.extend:
        published = set(plan.zoo.open(plan.parent).models["fingerprint"])
        new = {row["fingerprint"] for row in accepted} - published
        if new:
            raise BuildError(f"{plan.zoo} already holds version {plan.parent}; this import would add {len(new)} "
                             f"networks: pass --extend to publish them as a new version")
    spec = {"name": f"import-{plan.kind}", "import": {"kind": plan.kind, "source": str(plan.source),
                                                      "importer": IMPORTER_VERSION, "weightzoo": __version__,
                                                      "n_accepted": len(accepted), "rejected": rejected}}
    result = publish_version(plan.zoo, PublishRequest(
        fingerprints=tuple(row["fingerprint"] for row in accepted), specs=(spec,),
        message=f"import {plan.kind} {plan.source}"))
    return result.version


def run_import(plan: ImportPlan, runner: Runner) -> dict:
    """The import recipe: stage every chunk on ``runner``, publish once; the import report.

    The report's ``version`` is None when no network could be imported. Re-importing what
    the latest version holds already publishes nothing and returns that version.
    """
    accepted, rejected = [], []
    calls = [(plan.zoo.staging, plan.kind, str(plan.source), chunk) for chunk in plan.chunks]
    for report in runner.map(stage_chunk, calls):
        accepted += report.accepted
        rejected += report.rejected
    version = runner.call(publish_import, plan, accepted, rejected)
    return {"zoo": plan.zoo.url, "kind": plan.kind, "source": str(plan.source), "version": version,
            "n_accepted": len(accepted), "n_reused": sum(row["reused"] for row in accepted),
            "n_rejected": len(rejected), "accepted": accepted, "rejected": rejected}


def import_in_process(zoo, kind: str, source, *, extend: bool = False) -> dict:
    """Plan and run an import in this process, without Prefect or Dask (notebooks, tests): the
    same plan and recipe as ``weightzoo import``; the import report."""
    from weightzoo.pipelines.runner import InProcessRunner

    return run_import(plan_import(ZooHandle.at(zoo), kind, source, extend=extend), InProcessRunner())
