"""SQL over a published version with DuckDB: its tables and its analysis results as views.

Views (created lazily over the Parquet files; nothing is copied):

``models``, ``snapshots``, ``layouts``
    ``versions/<v>/<name>.parquet``.
``<study>_<table>``
    every ``analyses/<v>/<study>/<key>/<table>.parquet``, e.g. ``meta_classifier_results``,
    ``sane_embeddings``; just ``<table>`` when the file's name starts with the study's
    (``projections``, ``reinit``, ``properties``, ``trajectories``,
    ``trajectories_per_epoch``). Dashes become underscores. Results of one study run with different parameters (several ``<key>``
    directories) are stacked by column name, with a ``result_key`` column naming the
    directory; ``analyses`` says which parameters each key stands for.
``analyses``
    one row per result file: view, study, result_key, path, parameters (JSON text).

Only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, SUMMARIZE) is run: a query
can never overwrite a stored file (``COPY ... TO`` is refused).

The connection is a sandbox: once the views exist it is locked (``enable_external_access``
off with ``allowed_paths`` = the version's own Parquet files, no extension autoload or
autoinstall, ``lock_configuration``). A query reads those files and nothing else: no other
file (``read_text('/etc/passwd')``, ``read_csv``, ``read_blob``, ``glob``), no URL, no
``ATTACH``, ``INSTALL`` or ``LOAD``; each is refused with one line (a :class:`QueryError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from weightzoo.errors import InputError


VERSION_TABLES = ("models", "snapshots", "layouts")
# Staging directories of interrupted studies and SANE checkpoints are not results.
_NOT_RESULTS = (".incomplete", ".checkpoints")


class QueryError(InputError):
    """A query that cannot run: bad SQL, an unknown table, or a statement that is not a read."""


@dataclass(frozen=True)
class AnalysisFile:
    """One stored analysis table: the view it belongs to and where it came from."""

    view: str
    study: str
    result_key: str
    path: Path

    @property
    def parameters(self) -> str | None:
        """The result's ``parameters.json`` text, if it has one."""
        path = self.path.parent / "parameters.json"
        return path.read_text() if path.is_file() else None


def view_name(study: str, table: str) -> str:
    """The view of ``analyses/<v>/<study>/<key>/<table>.parquet`` (see the module docstring)."""
    study, table = (re.sub(r"\W", "_", name).lower() for name in (study, table))
    return table if table.startswith(study) else f"{study}_{table}"


def analysis_files(analyses: Path, version: str) -> list[AnalysisFile]:
    """The finished analysis tables stored for ``version`` under ``analyses`` (a zoo handle's
    ``analyses`` folder), sorted by view and key."""
    base = Path(analyses) / version
    found = []
    for path in base.glob("*/*/*.parquet"):
        study, key = path.parent.parent.name, path.parent.name
        if any(marker in key for marker in _NOT_RESULTS):
            continue
        found.append(AnalysisFile(view_name(study, path.stem), study, key, path))
    return sorted(found, key=lambda f: (f.view, f.result_key))


def connect(zoo) -> tuple[duckdb.DuckDBPyConnection, list[str], list[str]]:
    """An in-memory DuckDB connection with the views of ``zoo`` (an opened version).

    Returns it with the sorted view names and the analysis files that could not be read
    (each "path: error"; they are left out of their view rather than hiding every result).
    """
    connection = duckdb.connect(":memory:")
    views = {}
    for name in VERSION_TABLES:
        local = zoo.location.local_path(f"{zoo.folder}/{name}.parquet")
        if local is not None:
            views[name] = f"SELECT * FROM read_parquet({_literal(local)})"
        else:  # a zoo in object storage: the reader fetches the (small) tables
            connection.register(name, getattr(zoo, name))
    files, unreadable = _readable(connection, analysis_files(zoo.handle.analyses, zoo.version))
    for view in dict.fromkeys(f.view for f in files):
        if view in VERSION_TABLES or view == "analyses":  # a study's name must not hide a built-in view
            unreadable.append(f"{view}: named like a built-in table, not registered")
            continue
        parts = [f"SELECT *, {_literal(f.result_key)} AS result_key FROM read_parquet({_literal(f.path)})"
                 for f in files if f.view == view]
        views[view] = " UNION ALL BY NAME ".join(parts)
    for view, select in views.items():
        connection.execute(f'CREATE VIEW "{view}" AS {select}')
    connection.register("analyses", _analyses_frame(files))
    own = [str(local) for name in VERSION_TABLES
           if (local := zoo.location.local_path(f"{zoo.folder}/{name}.parquet")) is not None]
    _lock(connection, own + [str(f.path) for f in files])
    return connection, sorted({*views, *VERSION_TABLES, "analyses"}), unreadable


def _lock(connection, own_files: list[str]) -> None:
    """Sandbox ``connection``: only ``own_files`` can be read, no extension is loaded or
    installed, and no setting can be changed back (``lock_configuration``)."""
    paths = "[" + ", ".join(_literal(path) for path in own_files) + "]"
    for setting in (f"allowed_paths = {paths}", "allowed_directories = []",
                    "autoload_known_extensions = false", "autoinstall_known_extensions = false",
                    "enable_external_access = false", "lock_configuration = true"):
        connection.execute(f"SET {setting}")


def run_query(zoo, sql: str) -> pd.DataFrame:
    """Run one read-only SQL statement over the version's views; the result as a DataFrame.

    Raises QueryError with DuckDB's first message line and the available tables.
    """
    connection, names, unreadable = connect(zoo)
    available = f"available tables: {', '.join(names)}"
    if unreadable:
        available += f" (unreadable, left out: {'; '.join(unreadable)})"
    try:
        statements = connection.extract_statements(sql)
        if len(statements) != 1:
            raise QueryError(f"expected exactly one SQL statement, got {len(statements)}; {available}")
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryError(f"only read-only queries (SELECT, WITH, SHOW, DESCRIBE) run here, "
                             f"got a {kind.name} statement; {available}")
        return connection.execute(sql).df()
    except duckdb.PermissionException as error:
        message = str(error).strip().splitlines()[0]
        raise QueryError(f"refused: a query reads only this version's tables (no other files, URLs, "
                         f"ATTACH, INSTALL or LOAD): {message}; {available}") from None
    except duckdb.Error as error:
        message = str(error).strip().splitlines()[0]
        raise QueryError(f"{message}; {available}") from None
    finally:
        connection.close()


def _readable(connection, files: list[AnalysisFile]) -> tuple[list[AnalysisFile], list[str]]:
    """The files DuckDB can read the schema of, and "path: error" for the others."""
    readable, unreadable = [], []
    for file in files:
        try:
            connection.execute(f"DESCRIBE SELECT * FROM read_parquet({_literal(file.path)})")
            readable.append(file)
        except duckdb.Error as error:
            unreadable.append(f"{file.path}: {str(error).strip().splitlines()[0]}")
    return readable, unreadable


def _analyses_frame(files: list[AnalysisFile]) -> pd.DataFrame:
    columns = ["view", "study", "result_key", "path", "parameters"]
    return pd.DataFrame([[f.view, f.study, f.result_key, str(f.path), f.parameters] for f in files],
                        columns=columns).astype("string")


def _literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"
