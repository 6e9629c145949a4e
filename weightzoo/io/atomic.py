"""Folders that appear all at once: the one helper for staged models, versions and study results.

The producer fills a fresh local folder; only when it returns does the folder appear under
its final name, so a reader finds a folder complete or not at all (the "incomplete directory"
of huggingface/datasets):

- on local disk the folder is ``<name>.incomplete-<random>`` beside the target, renamed into
  place at the end (files and directories fsynced first when ``durable``);
- in object storage, which has no rename, the files are uploaded one by one with ``last``
  uploaded last; readers must treat ``last`` (or a later marker, such as a version's tag) as
  the commit point.

A failed producer leaves nothing behind (its ``.incomplete-*`` folder is removed).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from weightzoo.io.location import ZooLocation

INCOMPLETE = ".incomplete-"


@contextmanager
def atomic_directory(location: ZooLocation, relative: str, *, replace: bool = False, durable: bool = True,
                     last: str | None = None, clean_leftovers: bool = False) -> Iterator[Path]:
    """Yield a local folder to fill; on success its files appear at ``relative`` of ``location``.

    ``replace``: an existing folder is replaced (locally: moved aside, then deleted; in object
    storage: its files are deleted first). Without it, a folder that another producer
    completed first is kept and this one discarded. ``clean_leftovers`` removes earlier
    ``.incomplete-*`` folders of the same name first (only safe under a lock).
    """
    target = location.local_path(relative)
    if target is None:
        with _remote(location, relative, last) as folder:
            yield folder
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if clean_leftovers:
        for leftover in target.parent.glob(f"{target.name}{INCOMPLETE}*"):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = target.parent / f"{target.name}{INCOMPLETE}{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            sync_tree(tmp)
        _move_into_place(tmp, target, replace, durable)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        else:
            fsync_dir(path)
    fsync_dir(folder)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, target: Path, replace: bool, durable: bool) -> None:
    old = None
    if target.exists():
        if not replace:
            return  # another producer finished the same folder first
        # rename() cannot replace a non-empty directory: move the old one aside first, so the
        # final name never points at a half-written folder
        old = target.parent / f"{target.name}.old-{secrets.token_hex(4)}"
        os.rename(target, old)
    os.rename(tmp, target)
    if durable:
        fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _remote(location: ZooLocation, relative: str, last: str | None) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="weightzoo-upload-"))
    try:
        yield folder
        location.delete_dir(relative)  # a crashed attempt's leftovers
        location.upload_folder(folder, relative, last=last)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
