"""Errors raised by the store, so callers can catch them without importing zarr or icechunk."""

from __future__ import annotations


class StagingError(ValueError):
    """A staged model is missing, incomplete or does not match its receipt."""


class NotAZooError(FileNotFoundError):
    """A path that holds no weightzoo store (no Icechunk repository under ``repo/``)."""


class VersionNotFound(LookupError):
    """A version name that has no tag in the zoo; the message lists the available ones."""


class TracesNotFound(LookupError):
    """A model (or a whole version) that holds no dense training traces."""


class CorruptChunkError(IOError):
    """A stored chunk failed its checksum or could not be decoded."""


class SimulatedCrash(RuntimeError):
    """Test-only: raised where ``WEIGHTZOO_CRASH_AT`` asks the publisher to stop."""
