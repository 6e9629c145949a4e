"""Where a zoo lives: a local directory or an S3-compatible object-store prefix.

A zoo location is a path (``zoo``, ``/data/zoo``) or an URL ``s3://bucket/prefix``. Both hold
the same layout (``repo/``, ``versions/vNNNN/``; see DESIGN.md); :class:`ZooLocation` opens
the Icechunk storage and reads and writes the small files (tables, manifests) of either.

Object storage is configured from the environment only, never from code:

- credentials: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``);
- endpoint (for S3-compatible servers): ``WEIGHTZOO_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``,
  else ``AWS_ENDPOINT_URL``; ``http://`` endpoints are allowed, and addressing is path-style;
- region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else ``us-east-1``.

Where staged models and study results go (always a local folder) is decided by the zoo
handle (:mod:`weightzoo.io.handle`), which parses the user's text once with
:meth:`ZooLocation.parse`; nothing below the handle parses a location again.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from weightzoo.errors import UsageError, WeightzooError

def check_local_destination(path, what: str, *, folder: bool = True) -> None:
    """Refuse, with one line (UsageError, exit 2), a local destination that cannot be written:
    ``path`` a plain file (when ``folder``), a path below a plain file, or a first existing
    ancestor that is not a writable directory. Called before anything starts (no server, no
    cluster, no folder created)."""
    try:
        _check_local_destination(Path(path).expanduser(), what, folder)
    except UsageError:
        raise
    except (ValueError, OSError) as error:  # an embedded NUL byte, a name too long, ...
        raise UsageError(f"{what} {str(path)!r}: not a usable path ({error})") from None


def _check_local_destination(path: Path, what: str, folder: bool) -> None:
    if "\x00" in str(path):
        raise ValueError("embedded null byte")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a directory: give a directory (new or a zoo)")
    ancestor = path if folder else path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise UsageError(f"{what} {path}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{what} {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {ancestor} is not writable")


S3_PATTERN = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<prefix>.*?)/*$")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class ZooLocation:
    """A parsed zoo location: ``scheme`` "file" (``path`` a local path) or "s3" (``path`` "bucket/prefix")."""

    scheme: str
    path: str

    @classmethod
    def parse(cls, value) -> "ZooLocation":
        """A location from a path or an ``s3://bucket/prefix`` URL (a ZooLocation is returned as is).

        Raises UsageError naming the text for another URL scheme, an S3 URL without a
        bucket, or ``s3:/bucket`` (what ``pathlib.Path`` makes of an URL: pass URLs as text).
        """
        if isinstance(value, ZooLocation):
            return value
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if text.startswith("s3:"):
            match = S3_PATTERN.match(text)
            if not match:
                hint = " (a pathlib.Path turns '//' into '/': pass the URL as a string)" \
                    if not text.startswith("s3://") else ""
                raise UsageError(f"zoo location {text!r}: expected s3://bucket/prefix{hint}")
            return cls("s3", _key(match["bucket"], match["prefix"]))
        scheme = urlsplit(text).scheme
        if "://" in text and scheme not in ("", "file"):
            raise UsageError(f"zoo location {text!r}: unsupported scheme {scheme!r}; "
                             f"use a local path or s3://bucket/prefix")
        if not text.strip():
            raise UsageError("zoo location: empty path")
        return cls("file", text.removeprefix("file://"))

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        return self.url

    @classmethod
    def local(cls, path: str | os.PathLike) -> "ZooLocation":
        """A location for a local folder (no parsing: the path is taken as is)."""
        return cls("file", os.fspath(path))

    @property
    def remote(self) -> bool:
        """True for object storage."""
        return self.scheme != "file"

    @property
    def url(self) -> str:
        """The location as a user writes it."""
        return f"s3://{self.path}" if self.remote else self.path

    @property
    def bucket(self) -> str:
        """The bucket of an S3 location."""
        return self.path.partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix of an S3 location ("" for a bucket's root)."""
        return self.path.partition("/")[2]

    def join(self, relative: str) -> str:
        """The URL (or local path) of a file inside the zoo, for messages."""
        return f"{self.url.rstrip('/')}/{relative}"

    def icechunk_storage(self):
        """The Icechunk storage of the zoo's ``repo/``."""
        import icechunk

        if not self.remote:
            return icechunk.local_filesystem_storage(str(Path(self.path) / "repo"))
        settings = s3_settings()
        return icechunk.s3_storage(bucket=self.bucket, prefix=_key(self.prefix, "repo"), region=settings["region"],
                                   endpoint_url=settings["endpoint"], allow_http=settings["allow_http"],
                                   from_env=True, force_path_style=settings["endpoint"] is not None)

    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem reaching the zoo's files (local or S3)."""
        if not self.remote:
            return pafs.LocalFileSystem()
        settings = s3_settings()
        options = {"region": settings["region"]}
        if settings["endpoint"]:
            parts = urlsplit(settings["endpoint"])
            options.update(endpoint_override=parts.netloc or parts.path, scheme=parts.scheme or "https")
        return pafs.S3FileSystem(**options)

    def file_path(self, relative: str) -> str:
        """The path of a zoo file as :attr:`filesystem` names it."""
        if not self.remote:
            return str(Path(self.path) / relative)
        return _key(self.path, relative)

    def exists(self, relative: str) -> bool:
        """Whether a file exists in the zoo."""
        return self.filesystem.get_file_info(self.file_path(relative)).type == pafs.FileType.File

    def read_bytes(self, relative: str) -> bytes:
        """A file's content; FileNotFoundError names it when missing."""
        try:
            with self.filesystem.open_input_stream(self.file_path(relative)) as stream:
                return stream.read()
        except (FileNotFoundError, OSError) as error:
            if not self.exists(relative):
                raise FileNotFoundError(f"{self.join(relative)} does not exist") from None
            raise OSError(f"cannot read {self.join(relative)}: {error}") from error

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write (replace) a file; return the sha256 of ``data``.

        On object storage one PUT is atomic for its object: readers see the old or the new file.
        """
        with self.filesystem.open_output_stream(self.file_path(relative)) as stream:
            stream.write(data)
        return hashlib.sha256(data).hexdigest()

    def read_table(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        """A Parquet file of the zoo as an Arrow table (only ``columns``, if given)."""
        return pq.read_table(self.file_path(relative), filesystem=self.filesystem, columns=columns)

    def parquet_file(self, relative: str) -> pq.ParquetFile:
        """A Parquet file of the zoo, opened to be read row group by row group."""
        return pq.ParquetFile(self.filesystem.open_input_file(self.file_path(relative)))

    def write_table(self, relative: str, table: pa.Table) -> str:
        """Write a Parquet file (one object); return its sha256."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return self.write_bytes(relative, sink.getvalue().to_pybytes())

    def delete_dir(self, relative: str) -> None:
        """Delete every file under a folder of the zoo (nothing if there is none)."""
        path = self.file_path(relative)
        if self.filesystem.get_file_info(path).type != pafs.FileType.NotFound:
            self.filesystem.delete_dir_contents(path, missing_dir_ok=True)

    def total_bytes(self, relative: str) -> int:
        """Total size of the files under a folder of the zoo."""
        selector = pafs.FileSelector(self.file_path(relative), recursive=True, allow_not_found=True)
        return sum(info.size or 0 for info in self.filesystem.get_file_info(selector)
                   if info.type == pafs.FileType.File)

    def local_path(self, relative: str = "") -> Path | None:
        """The local path of a file or folder of the zoo; None in object storage."""
        if self.remote:
            return None
        return Path(self.path) / relative if relative else Path(self.path)

    def upload_folder(self, folder: Path, relative: str, *, last: str | None = None) -> dict[str, str]:
        """Copy every file under a local ``folder`` to ``relative/`` of the zoo, ``last`` after
        all others; return {relative file name: sha256}."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(folder).as_posix() == last)
        return {p.relative_to(folder).as_posix(): self.write_bytes(f"{relative}/{p.relative_to(folder).as_posix()}",
                                                                    p.read_bytes()) for p in files}


class StoreUnreachable(WeightzooError, OSError):
    """The object store of a zoo does not answer; the message names the endpoint."""


_REACHED: set = set()


def endpoint_name(settings: dict | None = None) -> str:
    """The S3 endpoint in use and where it came from, for messages."""
    settings = settings or s3_settings()
    for variable in ("WEIGHTZOO_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(variable):
            return f"S3 endpoint {settings['endpoint']} (from {variable})"
    return f"AWS S3 in region {settings['region']} (no endpoint set: WEIGHTZOO_S3_ENDPOINT)"


def check_reachable(location: "ZooLocation", timeout: float = 5.0) -> None:
    """StoreUnreachable, naming the endpoint, when a configured S3 endpoint refuses or does not
    answer a TCP connection within ``timeout`` seconds (instead of a client's retries for half a
    minute and an anonymous "dispatch failure"). Checked once per endpoint and process."""
    settings = s3_settings()
    endpoint = settings["endpoint"]
    if not location.remote or not endpoint or endpoint in _REACHED:
        return
    import socket

    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise StoreUnreachable(f"cannot reach {location.url}: the {endpoint_name(settings)} does not answer "
                               f"({reason}); check the endpoint and that the server runs") from None
    _REACHED.add(endpoint)


def s3_settings() -> dict:
    """Endpoint, region and allow_http for S3 from the environment (see module docstring)."""
    endpoint = (os.environ.get("WEIGHTZOO_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return {"endpoint": endpoint, "region": region,
            "allow_http": bool(endpoint and endpoint.startswith("http://"))}


def _key(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))
