"""The statement runner every stage goes through (resources/sql.py)."""

import duckdb
import pandas as pd
import pytest

from resources.sql import Sql, SqlDataError, SqlError

pytestmark = pytest.mark.unit


@pytest.fixture
def sql():
    conn = duckdb.connect(":memory:")
    yield Sql(conn)
    conn.close()


def _exists(sql: Sql, table: str) -> bool:
    return bool(sql.value("select count(*) from duckdb_tables() where table_name = ?", [table]))


def test_a_scratch_scope_drops_its_tables_and_frames_even_when_the_step_fails(sql: Sql) -> None:
    with pytest.raises(ZeroDivisionError), sql.scratch("step") as tables:
        sql.create_table_as(tables("edges"), "select 1 as a", temporary=True)
        view = tables.frame("input", pd.DataFrame({"b": [1, 2]}))
        assert sql.value(f"select count(*) from {view}") == 2
        assert _exists(sql, "step__edges")
        raise ZeroDivisionError("the step failed")
    assert not _exists(sql, "step__edges")
    with pytest.raises(SqlError):
        sql.value("select count(*) from step__input")


def test_a_transaction_that_raises_leaves_nothing_behind(sql: Sql) -> None:
    sql.execute("create table t (a int)")
    with pytest.raises(RuntimeError), sql.transaction():
        sql.execute("insert into t values (1)")
        raise RuntimeError("half way")
    assert sql.value("select count(*) from t") == 0
    with sql.transaction():
        sql.execute("insert into t values (2)")
    assert sql.rows("select a from t") == [(2,)]


def test_a_registered_frame_is_forgotten_after_its_block(sql: Sql) -> None:
    with sql.registered("people", pd.DataFrame({"name": ["Ann"]})) as name:
        assert sql.frame(f"select * from {name}")["name"].tolist() == ["Ann"]
    with pytest.raises(SqlError):
        sql.rows("select * from people")


def test_columns_binds_without_running_and_data_errors_are_told_apart(sql: Sql) -> None:
    assert sql.columns("select 1 as a, 'x' as b") == ["a", "b"]
    with pytest.raises(SqlDataError):
        sql.value("select 'Ann'::integer")
    assert list(sql.stream("select * from range(5)", batch_rows=2)) == [(0,), (1,), (2,), (3,), (4,)]


def test_an_in_memory_sandbox_cannot_read_files(tmp_path) -> None:
    (tmp_path / "secret.csv").write_text("a\n1\n")
    box = Sql.in_memory(enable_external_access=False)
    try:
        with pytest.raises(SqlError):
            box.rows(f"select * from read_csv('{tmp_path / 'secret.csv'}')")
    finally:
        box.close()


def test_table_exists_answers_for_tables_and_views_by_schema(sql: Sql) -> None:
    sql.execute("create schema s; create table s.t as select 1 as a; create view s.v as select 2 as b")
    assert sql.table_exists("s.t") and sql.table_exists("s.v")
    assert not sql.table_exists("s.missing") and not sql.table_exists("main.t")


def test_a_rule_over_groups_gets_each_group_once_its_rows_sorted_none_first(sql: Sql) -> None:
    """`map_groups` hands the rule each group of equal keys once, its rows as text sorted column by column
    with NULL (None) before any text, the empty text included, whatever order the rows were written in."""
    sql.execute(
        """create table t as select * from (values
               ('b', 'z', 1), ('a', 'y', 2), ('b', null, 3), ('a', '', 4), ('a', null, 5), ('c', 'x', 6),
               ('b', 'y', 7), ('a', null, 8))
           as v(k, name, n)"""
    )
    seen: list[list[tuple]] = []

    def rule(rows: list[tuple]) -> list[tuple]:
        seen.append(rows)
        return [(rows[0][0], "|".join("-" if r[1] is None else r[1] for r in rows))]

    written = sql.map_groups("grouped", "select k, name, n from t", ["k"], rule, ["k", "names"])
    assert written == 3
    assert sorted(sql.rows("select k, names from grouped")) == [("a", "-|-||y"), ("b", "-|y|z"), ("c", "x")]
    assert [(rows[0][0], len(rows)) for rows in seen] == [("a", 4), ("b", 3), ("c", 1)]
    # Within the two rows without a name, the third column (as text) decides.
    assert [r[2] for r in seen[0][:2]] == ["5", "8"]
