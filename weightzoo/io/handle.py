"""The zoo handle: one object that says where everything of a zoo goes, made once.

A user names a zoo with a path (``zoo``, ``/data/zoo``) or an URL (``s3://bucket/prefix``).
:meth:`ZooHandle.at` parses that text once, at the boundary (the CLI, a flow's entry, or
``weightzoo.open_zoo``), and everything below receives the handle:

- ``location`` — the store itself: ``repo/`` (Icechunk) and ``versions/vNNNN/`` (tables,
  manifest, card), a local folder or an object-store prefix (:mod:`weightzoo.io.location`);
- ``staging`` — the local folder of staged models (training outputs, imported and pulled
  networks waiting to be published; safe to delete once published);
- ``analyses`` — the local folder of study results, keyed by their inputs;
- ``repository()`` — the Icechunk repository, opened on first use and then kept for the
  life of the handle in this process (a handle sent to another process opens its own).

A local zoo keeps ``staging/`` and ``analyses/`` inside its own folder. A zoo in object
storage keeps them under ``$WEIGHTZOO_STAGING_ROOT/<bucket>/<prefix>/`` (default root:
``~/.cache/weightzoo``), because staging is always local.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import icechunk

from weightzoo.errors import NotAZooError
from weightzoo.io.location import ZooLocation

if "ICECHUNK_LOG" not in os.environ:
    # Icechunk warns that local storage is unsafe for concurrent commits; every commit of
    # ours holds the publish lock, so that warning would only be noise for users.
    icechunk.set_logs_filter("icechunk=error")

WORK_ROOT_ENV = "WEIGHTZOO_STAGING_ROOT"


@dataclass(frozen=True)
class ZooHandle:
    """Where a zoo's store, staged models and study results are; see the module docstring."""

    location: ZooLocation
    work: Path  # local folder holding staging/ and analyses/

    @classmethod
    def at(cls, where, *, work: str | os.PathLike | None = None) -> "ZooHandle":
        """The handle of the zoo at ``where`` (a path, an ``s3://`` URL or a handle).

        ``work`` overrides the local folder of ``staging/`` and ``analyses/``. Raises
        UsageError naming the text when it is not a zoo location.
        """
        if isinstance(where, ZooHandle) and work is None:
            return where
        location = where.location if isinstance(where, ZooHandle) else ZooLocation.parse(where)
        if work is None:
            work = location.local_path() or _default_work_root(location)
        return cls(location, Path(work))

    def __str__(self) -> str:
        return self.location.url

    def __getstate__(self) -> dict:
        # the opened repository stays in this process; another process opens its own
        return {"location": self.location, "work": self.work}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "location", state["location"])
        object.__setattr__(self, "work", state["work"])

    @property
    def url(self) -> str:
        """The zoo as a user writes it (a path or ``s3://bucket/prefix``)."""
        return self.location.url

    @property
    def name(self) -> str:
        """A short name for titles: the zoo folder's (or the prefix's) last part."""
        return Path(self.location.path).name or self.location.path

    @property
    def staging(self) -> Path:
        """The local folder of staged models."""
        return self.work / "staging"

    @property
    def analyses(self) -> Path:
        """The local folder of study results."""
        return self.work / "analyses"

    def exists(self) -> bool:
        """Whether the location holds a weightzoo store (an Icechunk repository)."""
        try:
            self.repository()
        except NotAZooError:
            return False
        return True

    def check_destination(self, what: str = "--out") -> None:
        """Refuse (UsageError, exit 2, before anything starts) a zoo that cannot be written here:
        its local folder, or the local work folder of staging/ and analyses/, is a plain file,
        lies below one, or is not writable."""
        from weightzoo.io.location import check_local_destination

        local = self.location.local_path()
        if local is not None:
            check_local_destination(local, what)
        if local is None or self.work.resolve() != local.resolve():
            check_local_destination(self.work, f"{what} (its local work folder)")

    def repository(self, *, create: bool = False) -> icechunk.Repository:
        """The zoo's Icechunk repository; NotAZooError names the location when there is none
        (``create=True`` makes an empty one instead)."""
        cached = self.__dict__.get("_repository")
        if cached is not None:
            return cached
        repository = _open_repository(self.location, create=create)
        self.__dict__["_repository"] = repository  # frozen dataclass: cache beside the fields
        return repository

    def version_tags(self) -> list[str]:
        """Published versions (their tags), oldest first; NotAZooError when there is no store."""
        from weightzoo.io.store import version_tags

        return version_tags(self.repository())

    def latest_version(self) -> str | None:
        """The newest published version, or None (also for a location with no store yet)."""
        if not self.exists():
            return None
        tags = self.version_tags()
        return tags[-1] if tags else None

    def open(self, version: str | None = None):
        """The published ``version`` (default: the latest) as a :class:`weightzoo.io.reader.Zoo`."""
        from weightzoo.io.reader import Zoo

        return Zoo.open(self, version)

    @contextmanager
    def publish_lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<zoo>/.publish.lock`` so publishers never interleave.

        Object storage has no such lock: a zoo there has ONE publisher at a time (run publishes
        from one machine, e.g. the build flow's single publish task). A second concurrent
        publisher is not silently merged: Icechunk rejects a commit on a moved branch and tag
        creation fails for an existing tag, but it may leave the loser's tables unreadable.
        """
        folder = self.location.local_path()
        if folder is None:
            yield
            return
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".publish.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _default_work_root(location: ZooLocation) -> Path:
    base = Path(os.environ.get(WORK_ROOT_ENV) or Path.home() / ".cache" / "weightzoo")
    return base / location.bucket / (location.prefix or "_root")


def _open_repository(location: ZooLocation, *, create: bool) -> icechunk.Repository:
    folder = location.local_path("repo")
    missing = NotAZooError(f"{location} is not a weightzoo store: no Icechunk repository at "
                           f"{folder or location.join('repo')}")
    if not create and folder is not None and not folder.is_dir():
        raise missing  # before opening the storage, which would create the folder
    storage = location.icechunk_storage()
    if location.remote:
        from weightzoo.io.location import StoreUnreachable, check_reachable, endpoint_name

        check_reachable(location)
        try:
            if icechunk.Repository.exists(storage):
                return icechunk.Repository.open(storage)
        except Exception as error:  # IcechunkError: an endpoint that answers but fails, bad credentials
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StoreUnreachable(f"cannot open {location.url} at the {endpoint_name()}: {first}") from error
    elif icechunk.Repository.exists(storage):
        return icechunk.Repository.open(storage)
    if not create:
        raise missing
    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0  # tiny rows would bloat the manifests rewritten per commit
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return icechunk.Repository.create(storage, config)
