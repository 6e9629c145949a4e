"""The store: staged training outputs, Icechunk weight arrays, versioned Parquet tables, readers."""

from weightzoo.io.errors import (CorruptChunkError, NotAZooError, SimulatedCrash, StagingError,
                                 TracesNotFound, VersionNotFound)
from weightzoo.io.publish import publish_version
from weightzoo.io.reader import Zoo, list_versions, open_zoo
from weightzoo.io.staging import StagedModel, find_staged, load_staged, stage_model

__all__ = [
    "CorruptChunkError", "NotAZooError", "SimulatedCrash", "StagedModel", "StagingError",
    "TracesNotFound", "VersionNotFound", "Zoo", "find_staged", "list_versions", "load_staged", "open_zoo",
    "publish_version", "stage_model",
]
