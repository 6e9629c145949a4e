"""The errors weightzoo raises, under one base class.

Two kinds matter to callers:

- :class:`InputError` — the input is wrong (a spec, an argument, a path that is not a zoo, a
  version that was never published, a foreign file that cannot be read). Retrying cannot
  help; the CLI exits with code 2 and one line naming the problem. Input errors are also
  ``ValueError``s, so code that catches ``ValueError`` keeps working.
- every other :class:`WeightzooError` — something failed at run time (a damaged chunk, a
  staged file that does not match its receipt). The CLI exits with code 1; flows retry
  such failures.

Domain errors live beside their domain (``SpecError`` in ``core.spec``, ``ConfigError`` in
``core.models``, ``SourceError`` in ``interop.common``, ...) and derive from these. This module
imports nothing, so every layer (``core`` included) may use it.
"""

from __future__ import annotations


class WeightzooError(Exception):
    """Base class of every error weightzoo raises on purpose."""


class InputError(WeightzooError, ValueError):
    """Bad input: retrying cannot help; the CLI exits with code 2."""


class UsageError(InputError):
    """An argument that parsed but means nothing here (e.g. a malformed snapshot range)."""


class NotAZooError(InputError, FileNotFoundError):
    """A location that holds no weightzoo store (no Icechunk repository under ``repo/``)."""


class VersionNotFound(InputError, LookupError):
    """A version name that has no tag in the zoo; the message lists the available ones."""


class TracesNotFound(InputError, LookupError):
    """A model (or a whole version) that holds no dense training traces."""


class StagingError(WeightzooError):
    """A staged model is missing, incomplete or does not match its receipt."""


class RecordError(WeightzooError, ValueError):
    """A record crossing a boundary (staged record, receipt, manifest) is malformed; names the field."""


class CorruptChunkError(WeightzooError, OSError):
    """A stored chunk failed its checksum or could not be decoded."""


def is_input_error(error: BaseException) -> bool:
    """True when ``error`` is the input's fault (exit code 2, never retried)."""
    return isinstance(error, InputError)
