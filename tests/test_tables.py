"""The warehouse's shared tables, their one declaration, and the one transaction helper every writer uses."""

from pathlib import Path

import duckdb
import pytest

from resources.warehouse import transaction


@pytest.fixture
def conn(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute("create table t (n integer)")
        yield connection


def test_transaction_commits_what_the_block_wrote(conn: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with transaction(conn):
        conn.execute("insert into t values (1), (2)")
    conn.close()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as reopened:
        assert reopened.execute("select sum(n) from t").fetchone()[0] == 3


def test_transaction_rolls_back_everything_when_the_block_fails(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("insert into t values (1)")
    with pytest.raises(duckdb.ConversionException), transaction(conn):
        conn.execute("insert into t values (2)")
        conn.execute("insert into t values ('not a number')")
    assert conn.execute("select list(n) from t").fetchone()[0] == [1]
    # The connection is usable again: no transaction was left open.
    with transaction(conn):
        conn.execute("insert into t values (3)")
    assert conn.execute("select list(n order by n) from t").fetchone()[0] == [1, 3]


def test_transaction_rolls_back_on_an_interrupt_too(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(KeyboardInterrupt), transaction(conn):
        conn.execute("insert into t values (1)")
        raise KeyboardInterrupt
    assert conn.execute("select count(*) from t").fetchone()[0] == 0
