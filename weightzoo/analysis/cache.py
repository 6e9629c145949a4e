"""The result cache of the studies: ``<zoo analyses>/<version>/<study>/<key>/``.

``key`` is the fingerprint of (version, the version's Icechunk snapshot, the study, its
parameters, the analysis code version). A result is written into a fresh directory that
appears under its final name only when the study returns
(:func:`weightzoo.io.atomic.atomic_directory`), so a result directory is complete or absent,
and a second run with the same inputs reads the stored :class:`StudyResult` back — unless a
part of it failed (a row with status ``failed…``: a method that raised, a worker that died):
such a result is run again and replaced, so that a fixed bug or a passing fault is not
remembered as the answer. A study may reuse the parts that succeeded (``compare`` keeps the
out-of-fold predictions of its methods that ran; see :func:`stored_result`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from weightzoo.analysis.results import SUMMARY, StudyResult
from weightzoo.core.fingerprint import fingerprint
from weightzoo.io.atomic import atomic_directory
from weightzoo.io.location import ZooLocation

ANALYSIS_CODE_VERSION = "weightzoo-analysis-5"  # bump when a study's results change meaning or shape


def result_dir(zoo, study: str, parameters: dict) -> Path:
    """Where the result of ``study`` with ``parameters`` on this zoo version lives: under the
    zoo's ``analyses/``, or for a zoo in object storage under its local staging root."""
    key = fingerprint(zoo.version, zoo.manifest.icechunk_snapshot_id, study, parameters,
                      ANALYSIS_CODE_VERSION)[:16]
    return zoo.handle.analyses / zoo.version / study / key


def stored_result(zoo, study: str, parameters: dict) -> StudyResult | None:
    """The stored result of ``study`` with ``parameters`` on this zoo version, or None."""
    target = result_dir(zoo, study, parameters)
    return StudyResult.read(target, cached=True) if (target / SUMMARY).exists() else None


def cached_result(zoo, study: str, parameters: dict, run: Callable[[Path], StudyResult]) -> StudyResult:
    """``run(out_dir)`` once per (version, study, parameters, code); later calls read its result back.

    ``run`` writes its files into ``out_dir`` (which already holds ``parameters.json``) and
    returns their :class:`StudyResult`; it is kept as ``summary.json`` with paths pointing at
    the final directory. An interrupted run leaves nothing behind. A stored result with
    failed rows is run again; the new result replaces it only when the run returns.
    """
    target = result_dir(zoo, study, parameters)
    stored = stored_result(zoo, study, parameters)
    if stored is not None and not stored.failures:
        return stored
    with atomic_directory(ZooLocation.local(target.parent), target.name, durable=False,
                          replace=stored is not None) as tmp:
        (tmp / "parameters.json").write_text(json.dumps(parameters, indent=2, default=str))
        result = run(tmp)
        if not isinstance(result, StudyResult):
            raise TypeError(f"the {study} study returned {type(result).__name__}, not a StudyResult")
        # paths inside the result point at the final directory, not at the one being written
        (tmp / SUMMARY).write_text(result.summary_json().replace(str(tmp), str(target)))
    return StudyResult.read(target, cached=False)
