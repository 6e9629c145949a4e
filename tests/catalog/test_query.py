"""weightzoo query: DuckDB over a version's tables and its analysis results."""

from __future__ import annotations

import io
import json
import shutil

import pandas as pd
import pytest

from weightzoo.cli import main
from weightzoo.io.query import QueryError, analysis_files, run_query, view_name
from weightzoo.io.reader import open_zoo


def test_join_and_group_match_pandas(catalog_zoo, tables_of):
    sql = ("select m.optimizer, count(*) as n, avg(s.test_acc) as acc from models m join snapshots s "
           "using (model_id) where s.k = (select max(k) from snapshots) group by 1 order by 1")
    result = run_query(open_zoo(catalog_zoo, "v0002"), sql)
    tables = tables_of(catalog_zoo, "v0002")
    snaps = tables["snapshots"]
    last = snaps[snaps["k"] == snaps["k"].max()].merge(tables["models"], on="model_id")
    expected = last.groupby("optimizer").agg(n=("model_id", "size"), acc=("test_acc", "mean")).reset_index()
    assert result["optimizer"].tolist() == expected["optimizer"].tolist()
    assert result["n"].tolist() == expected["n"].tolist()
    assert result["acc"].to_numpy() == pytest.approx(expected["acc"].to_numpy())


@pytest.mark.parametrize("version, n_models", [("v0001", 4), ("v0002", 6)])
def test_each_version_sees_its_own_tables(catalog_zoo, version, n_models):
    result = run_query(open_zoo(catalog_zoo, version), "select count(*) as n, count(distinct layout_id) as l "
                                                       "from models join layouts using (layout_id)")
    n_tensors = len(pd.read_parquet(catalog_zoo / "versions" / version / "layouts.parquet"))
    assert result.to_dict("records") == [{"n": n_models * n_tensors, "l": 1}]


def test_analysis_results_are_views_stacked_by_key(catalog_zoo):
    zoo = open_zoo(catalog_zoo, "v0002")
    files = analysis_files(catalog_zoo / "analyses", "v0002")
    assert {f.view for f in files} == {"projections", "projections_networks"} and len(files) == 4
    files = [f for f in files if f.view == "projections"]
    counts = run_query(zoo, "select result_key, count(*) as n from projections group by 1 order by 1")
    expected = sorted((f.result_key, len(pd.read_parquet(f.path))) for f in files)
    assert list(counts.itertuples(index=False, name=None)) == expected
    listed = run_query(zoo, "select view, study, result_key, parameters from analyses where view = 'projections' "
                            "order by result_key")
    assert listed["result_key"].tolist() == [key for key, _ in expected]
    assert {json.loads(text).get("snapshots") is None for text in listed["parameters"]} == {True, False}


def test_unfinished_results_are_not_views(catalog_zoo, tmp_path):
    source = analysis_files(catalog_zoo / "analyses", "v0002")[0].path
    leftover = catalog_zoo / "analyses" / "v0002" / "reinit" / "abc.incomplete-1234"
    leftover.mkdir(parents=True)
    try:
        shutil.copy(source, leftover / "reinit.parquet")
        assert sorted(f.view for f in analysis_files(catalog_zoo / "analyses", "v0002")) == [
            "projections", "projections", "projections_networks", "projections_networks"]
    finally:
        shutil.rmtree(leftover.parent)


def test_view_names():
    assert view_name("meta-classifier", "per_class") == "meta_classifier_per_class"
    assert view_name("reinit", "reinit") == "reinit"
    assert view_name("sane", "embeddings") == "sane_embeddings"
    assert view_name("trajectories", "trajectories_per_epoch") == "trajectories_per_epoch"


def test_unknown_table_lists_the_available_ones(catalog_zoo):
    with pytest.raises(QueryError, match="available tables: analyses, layouts, models, projections, "
                                         "projections_networks, snapshots"):
        run_query(open_zoo(catalog_zoo, "v0002"), "select * from model")


@pytest.mark.parametrize("sql, problem", [
    ("COPY models TO '{target}' (FORMAT parquet)", "COPY statement"),
    ("select 1; select 2", "exactly one SQL statement"),
    ("create table x as select 1", "CREATE statement"),
])
def test_only_one_read_only_statement_runs(catalog_zoo, tmp_path, sql, problem):
    target = tmp_path / "out.parquet"
    with pytest.raises(QueryError, match=problem):
        run_query(open_zoo(catalog_zoo), sql.format(target=target))
    assert not target.exists()


def test_cli_csv_and_json_give_every_row(catalog_zoo, capsys, tables_of):
    sql = "select model_id, k, test_acc from snapshots order by model_id, k"
    assert main(["query", f"{catalog_zoo}@v0002", sql, "--csv"]) == 0
    from_csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    expected = tables_of(catalog_zoo, "v0002")["snapshots"].sort_values(["model_id", "k"])
    assert from_csv["model_id"].tolist() == expected["model_id"].tolist()
    assert from_csv["test_acc"].to_numpy() == pytest.approx(expected["test_acc"].to_numpy())
    assert main(["query", f"{catalog_zoo}@v0002", sql, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["k"] for row in rows] == expected["k"].tolist()


def test_cli_table_view_is_readable_and_capped(catalog_zoo, capsys):
    assert main(["query", str(catalog_zoo), "select model_id, split from models order by model_id",
                 "--max-rows", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model_id", "split"] and len(lines) == 4
    assert lines[-1] == "(2 of 6 rows; --csv or --json for all)"


def test_cli_bad_sql_is_one_line_and_exit_2(catalog_zoo, capsys):
    assert main(["query", str(catalog_zoo), "selec * from models"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "syntax error" in error and "available tables: analyses, layouts, models, snapshots" in error


def test_cli_unknown_version_exit_2(catalog_zoo, capsys):
    assert main(["query", f"{catalog_zoo}@v0042", "select 1"]) == 2
    assert "available: v0001, v0002, v0003" in capsys.readouterr().err


def test_an_unreadable_result_is_named_and_the_rest_still_query(catalog_zoo):
    good = analysis_files(catalog_zoo / "analyses", "v0002")
    broken = good[0].path.parent / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    try:
        zoo = open_zoo(catalog_zoo, "v0002")
        total = sum(len(pd.read_parquet(f.path)) for f in good)
        assert run_query(zoo, "select count(*) as n from projections")["n"].tolist() == [total]
        with pytest.raises(QueryError, match=r"unreadable, left out: .*broken\.parquet"):
            run_query(zoo, "select * from projections_broken")
    finally:
        broken.unlink()


def test_cli_json_keeps_list_columns_as_lists(catalog_zoo, capsys, tables_of):
    assert main(["query", str(catalog_zoo), "select name, shape from layouts order by index", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = tables_of(catalog_zoo, "v0003")["layouts"].sort_values("index")
    assert [row["shape"] for row in rows] == [list(shape) for shape in expected["shape"]]


# Issue 18 item 3: the query connection is a sandbox (the zoo's own files only).
@pytest.mark.parametrize("sql", [
    "select * from read_text('/etc/passwd')",
    "select * from read_csv('/etc/passwd')",
    "select * from read_blob('/etc/passwd')",
    "select * from glob('~/*')",
    "select * from read_parquet('https://example.com/weights.parquet')",
    "select count(*) from read_parquet('{zoo}/versions/v0001/models.parquet')",  # another version's file
    "select * from read_parquet('{zoo}/versions/*/models.parquet')",
])
def test_query_reads_no_file_beyond_the_versions_own(catalog_zoo, capsys, tmp_path, monkeypatch, sql):
    monkeypatch.setenv("HOME", str(tmp_path))  # an autoinstall would create ~/.duckdb here
    assert main(["query", f"{catalog_zoo}@v0002", sql.format(zoo=catalog_zoo)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert len(error.splitlines()) == 1, error
    assert "refused: a query reads only this version's tables" in error and "root:" not in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sql", [
    "COPY models TO '{target}' (FORMAT csv)",
    "ATTACH '{target}' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
])
def test_query_refuses_copy_attach_install_and_settings(catalog_zoo, capsys, tmp_path, monkeypatch, sql):
    monkeypatch.setenv("HOME", str(tmp_path))
    target = tmp_path / "out.db"
    assert main(["query", str(catalog_zoo), sql.format(target=target)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "only read-only queries" in error
    assert list(tmp_path.iterdir()) == []


def test_locked_connection_cannot_be_unlocked_and_still_reads_every_view(catalog_zoo):
    from weightzoo.io.query import connect

    connection, names, unreadable = connect(open_zoo(catalog_zoo, "v0002"))
    try:
        assert unreadable == []
        for name in names:  # every view reads (projections_networks may hold no rows on this zoo)
            connection.execute(f'select * from "{name}"').fetchall()
        assert connection.execute("select count(*) from models").fetchone()[0] == 6
        for setting in ("enable_external_access = true", "autoinstall_known_extensions = true",
                        "allowed_directories = ['/']"):
            with pytest.raises(Exception, match="locked"):
                connection.execute(f"SET {setting}")
        with pytest.raises(Exception, match="disabled"):
            connection.execute("select * from read_text('/etc/passwd')")
    finally:
        connection.close()
