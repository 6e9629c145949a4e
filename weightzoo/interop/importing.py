"""Import a foreign source: list its networks, read and stage each, publish one version.

Every importer module (``nws``, ``modelzoos``, ``torchdir``, ``bundle``, ``smallcnnzoo``) has
``list_networks(source) -> list[str]`` (handles, relative to the source) and
``read_network(source, handle) -> ImportedNetwork`` (raising SourceError naming the bad
file) and ``network_paths(source, handle)`` (what a network is read from, for cache keys). A bad network is reported and skipped; the good ones are still published.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from weightzoo import __version__
from weightzoo.build import BuildError
from weightzoo.interop.common import IMPORTER_VERSION, SourceError, stage_network
from weightzoo.io.publish import publish_version
from weightzoo.io.reader import list_versions, open_zoo

IMPORTERS = {"nws": "weightzoo.interop.nws", "modelzoos": "weightzoo.interop.modelzoos",
             "torch": "weightzoo.interop.torchdir", "bundle": "weightzoo.interop.bundle",
             "smallcnnzoo": "weightzoo.interop.smallcnnzoo"}


def importer(kind: str):
    """The importer module of ``kind``; ValueError lists the known kinds."""
    if kind not in IMPORTERS:
        raise ValueError(f"unknown import format {kind!r}; expected one of {sorted(IMPORTERS)}")
    return importlib.import_module(IMPORTERS[kind])


def list_networks(kind: str, source) -> list[str]:
    """The networks of a source; SourceError if it does not exist or holds none."""
    path = Path(source)
    if not path.exists():
        raise SourceError(path, "no such file or directory")
    handles = importer(kind).list_networks(path)
    if not handles:
        raise SourceError(path, f"no {kind} networks found")
    return handles


def chunk_key(kind: str, source, handles: list[str]) -> str:
    """A cheap cache key for a chunk of networks: the name, size and mtime of every file
    they would read (re-reading terabytes to key a cache is what staging's content
    fingerprints are for)."""
    module, root, digest = importer(kind), Path(source), hashlib.sha256(kind.encode())
    for handle in handles:
        for path in module.network_paths(root, handle):
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                stat = file.stat() if file.exists() else None
                digest.update(f"{handle}\0{file}\0{stat and (stat.st_size, stat.st_mtime_ns)}\n".encode())
    return digest.hexdigest()


def stage_networks(kind: str, source, handles: list[str], zoo_root) -> dict:
    """Read and stage the given networks: {"accepted": [...], "rejected": [...]}, one entry
    per network (rejections carry the file and the reason)."""
    module, root = importer(kind), Path(source)
    accepted, rejected = [], []
    for handle in handles:
        try:
            network = module.read_network(root, handle)
        except SourceError as error:
            rejected.append({"network": handle, "file": error.path, "reason": error.reason})
            continue
        receipt = stage_network(zoo_root, network, str(root.resolve()))
        accepted.append({"network": handle, "model_id": receipt["model_id"], "fingerprint": network.fingerprint,
                         "n_snapshots": receipt["n_snapshots"], "layout_id": receipt["layout_id"],
                         "n_params": network.layout.n_params, "status": receipt["status"],
                         "loadable": network.mapped})
    return {"accepted": accepted, "rejected": rejected}


def finish_import(zoo_root, kind: str, source, staged: dict, *, extend: bool = False) -> dict:
    """Publish the accepted networks as the zoo's next version; return the import report.

    The report's ``version`` is None when no network could be imported. Re-importing
    what the latest version holds already publishes nothing and returns that version.
    """
    accepted, rejected = staged["accepted"], staged["rejected"]
    report = {"zoo": str(zoo_root), "kind": kind, "source": str(source), "version": None,
              "n_accepted": len(accepted), "n_rejected": len(rejected), "accepted": accepted, "rejected": rejected}
    if not accepted:
        return report
    fingerprints = [row["fingerprint"] for row in accepted]
    split = _check_extend(zoo_root, fingerprints, extend)
    spec = {"name": f"import-{kind}", "import": {"kind": kind, "source": str(Path(source).resolve()),
                                                 "importer": IMPORTER_VERSION, "n_accepted": len(accepted),
                                                 "rejected": rejected}}
    report["version"] = publish_version(zoo_root, fingerprints, specs=[spec],
                                        code_version=f"weightzoo {__version__} / {IMPORTER_VERSION}",
                                        extend=True, split_seed=split["seed"], split_fractions=split["fractions"],
                                        message=f"import {kind} {source}")
    return report


def import_source(kind: str, source, zoo_root, *, extend: bool = False) -> dict:
    """Import every network of ``source`` (in this process) and publish; the import report."""
    handles = list_networks(kind, source)
    return finish_import(zoo_root, kind, source, stage_networks(kind, source, handles, zoo_root), extend=extend)


def _check_extend(zoo_root, fingerprints: list[str], extend: bool) -> dict:
    """Refuse to add networks to a published zoo without ``extend``; the split to publish with."""
    default = {"seed": 0, "fractions": [0.7, 0.15, 0.15]}
    if not (Path(zoo_root) / "repo").exists() or not list_versions(zoo_root):
        return default
    zoo = open_zoo(zoo_root)
    new = set(fingerprints) - set(zoo.models["fingerprint"])
    if new and not extend:
        raise BuildError(f"{zoo_root} already holds version {zoo.version}; this import would add {len(new)} "
                         f"networks: pass --extend to publish them as a new version")
    return zoo.manifest.get("split", default)
