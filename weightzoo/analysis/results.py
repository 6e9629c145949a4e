"""What every study returns: one typed, JSON-safe result, validated when read back from its cache.

A study writes its files into a result directory and describes them with a
:class:`StudyResult`: a one-line ``headline``, the summary table to print (``rows``) and its
study-specific values (``details``: paths, counts, full records). The cache keeps
``headline``, ``rows`` and ``details`` as ``summary.json`` and reads them back through
:meth:`StudyResult.read`, which raises RecordError naming the file and the field when the
stored summary is not a study result; ``path``, ``cached`` and ``files`` describe the
directory at the time it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from weightzoo.errors import RecordError
from weightzoo.io.records import to_jsonable

SUMMARY = "summary.json"
SUMMARY_FORMAT = 1


@dataclass(frozen=True)
class StudyResult:
    """One study's result: where it is, whether it came from the cache, and what it says.

    ``rows`` are the summary table (one dict per row, the same keys in every row where they
    apply); ``details`` the study's own values. Both are made JSON-safe on construction
    (numpy scalars unwrapped, NaN and ±inf as None, tuples as lists, paths as strings).
    """

    study: str
    path: str
    cached: bool = False
    files: tuple[str, ...] = ()
    headline: str = ""
    rows: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (("study", str), ("path", str), ("cached", bool), ("headline", str), ("rows", list),
                           ("details", dict)):
            value = getattr(self, name)
            if name == "path" and isinstance(value, Path):
                value = str(value)
            if not isinstance(value, kind):
                raise RecordError(f"StudyResult.{name}: expected {kind.__name__}, got {type(value).__name__}")
            object.__setattr__(self, name, value)
        if not all(isinstance(row, dict) for row in self.rows):
            raise RecordError("StudyResult.rows: expected a list of objects (one per table row)")
        object.__setattr__(self, "files", tuple(str(name) for name in self.files))
        object.__setattr__(self, "rows", _json_safe(self.rows))
        object.__setattr__(self, "details", _json_safe(self.details))

    @classmethod
    def of_directory(cls, study: str, path, *, headline: str, rows, details: dict) -> "StudyResult":
        """A freshly written result in ``path`` (not cached), its files listed from the directory."""
        return cls(study, str(path), False, _files(Path(path)), headline, list(rows), dict(details))

    @classmethod
    def read(cls, path, *, cached: bool) -> "StudyResult":
        """The result stored in ``path``: its ``summary.json``, validated."""
        path = Path(path)
        where = path / SUMMARY
        try:
            data = json.loads(where.read_text())
        except (OSError, ValueError) as error:
            raise RecordError(f"{where}: cannot read a study result: {error}") from error
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [key for key in ("study", "headline", "rows", "details") if key not in data]
        if missing:
            raise RecordError(f"{where}: a study result lacks {missing}")
        try:
            return cls(data["study"], str(path), cached, _files(path), data["headline"], data["rows"],
                       data["details"])
        except RecordError as error:
            raise RecordError(f"{where}: {error}") from None

    def summary_json(self) -> str:
        """The text of ``summary.json``: study, headline, rows and details (strict JSON)."""
        return json.dumps({"format": SUMMARY_FORMAT, "study": self.study, "headline": self.headline,
                           "rows": self.rows, "details": self.details}, indent=2, allow_nan=False)

    @property
    def failures(self) -> list[dict]:
        """The rows whose ``status`` says a part of the study failed (``failed`` or ``failed: <error>``)."""
        return [row for row in self.rows if str(row.get("status") or "").startswith("failed")]

    def with_details(self, headline: str | None = None, **details) -> "StudyResult":
        """A copy with ``details`` added (and the headline replaced when given)."""
        return replace(self, headline=self.headline if headline is None else headline,
                       details={**self.details, **details})

    def to_dict(self) -> dict:
        """Every field as plain JSON values (what ``--json`` prints)."""
        return {"study": self.study, "path": self.path, "cached": self.cached, "files": list(self.files),
                "headline": self.headline, "rows": self.rows, "details": self.details}


def _files(path: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in path.iterdir())) if path.is_dir() else ()


def _json_safe(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in (value.tolist() if isinstance(value, np.ndarray) else value)]
    value = to_jsonable(value)  # numpy scalars, non-finite floats
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if pd.isna(value):  # pandas' NA and NaT
        return None
    raise RecordError(f"StudyResult: {type(value).__name__} value {value!r} is not JSON")
