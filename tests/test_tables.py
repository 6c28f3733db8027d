"""The warehouse's shared tables, their one declaration, and the one transaction helper every writer uses."""

import shutil
from pathlib import Path

import duckdb
import pytest

from cdp_assets.profiles.assets import build_profiles, count_unexplained
from resources import schema
from resources.schema import ACTIVITY_COLUMNS
from resources.sql import Sql
from resources.tables import (
    ACTIVITY_TABLES,
    LINEAGE_COLUMNS,
    LOADED_FILES,
    QUARANTINE_COLUMNS,
    SHARED_TABLES,
    Table,
    TableShapeError,
)
from resources.warehouse import bootstrap
from tests.fixtures import Platform


@pytest.fixture
def conn(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute("create table t (n integer)")
        yield connection


@pytest.mark.stage
def test_transaction_commits_what_the_block_wrote(conn: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with Sql(conn).transaction():
        conn.execute("insert into t values (1), (2)")
    conn.close()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as reopened:
        assert reopened.execute("select sum(n) from t").fetchone()[0] == 3


@pytest.mark.stage
def test_transaction_rolls_back_everything_when_the_block_fails(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("insert into t values (1)")
    with pytest.raises(duckdb.ConversionException), Sql(conn).transaction():
        conn.execute("insert into t values (2)")
        conn.execute("insert into t values ('not a number')")
    assert conn.execute("select list(n) from t").fetchone()[0] == [1]
    # The connection is usable again: no transaction was left open.
    with Sql(conn).transaction():
        conn.execute("insert into t values (3)")
    assert conn.execute("select list(n order by n) from t").fetchone()[0] == [1, 3]


@pytest.mark.stage
def test_transaction_rolls_back_on_an_interrupt_too(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(KeyboardInterrupt), Sql(conn).transaction():
        conn.execute("insert into t values (1)")
        raise KeyboardInterrupt
    assert conn.execute("select count(*) from t").fetchone()[0] == 0


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    schema, name = table.split(".")
    return dict(
        conn.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
    )


@pytest.mark.stage
def test_bootstrap_creates_every_shared_table_as_declared(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        bootstrap(conn)
        bootstrap(conn)  # idempotent
        for table in SHARED_TABLES:
            assert _columns(conn, table.name) == dict(table.columns), table.name
        keys = conn.execute(
            "select schema_name || '.' || table_name, constraint_column_names from duckdb_constraints() "
            "where constraint_type = 'PRIMARY KEY'"
        ).fetchall()
        assert dict(keys) == {t.name: list(t.primary_key) for t in SHARED_TABLES if t.primary_key}
        quarantine = _columns(conn, "cdp.quarantine")
        assert quarantine == QUARANTINE_COLUMNS


@pytest.mark.stage
def test_a_column_added_later_reaches_an_existing_warehouse(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("create schema meta")
        older = {c: t for c, t in LOADED_FILES.columns.items() if c not in LOADED_FILES.added_later}
        conn.execute(f"create table meta.loaded_files ({', '.join(f'{c} {t}' for c, t in older.items())})")
        conn.execute("insert into meta.loaded_files (source, file) values ('crm', 'a.csv')")
        bootstrap(conn)
        assert _columns(conn, "meta.loaded_files") == dict(LOADED_FILES.columns)
        assert conn.execute("select source, file, read_settings from meta.loaded_files").fetchall() == [
            ("crm", "a.csv", None)
        ]


@pytest.mark.stage
def test_a_fill_that_strays_from_the_declaration_fails_naming_the_columns(tmp_path: Path) -> None:
    table = Table("main.t", {"a": "VARCHAR", "b": "BIGINT"})
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        table.replace(Sql(conn), "select 2 as b, 'x' as a")  # any order, stored in the declared order and types
        assert _columns(conn, "main.t") == {"a": "VARCHAR", "b": "BIGINT"}
        with pytest.raises(TableShapeError, match=r"selected but not declared: \['c'\]"):
            table.replace(Sql(conn), "select 'y' as a, 3 as b, 4 as c")
        with pytest.raises(TableShapeError, match=r"declared but not selected: \['b'\]"):
            table.replace(Sql(conn), "select 'y' as a")
        with pytest.raises(TableShapeError, match=r"selected more than once: \['a'\]"):
            table.replace(Sql(conn), "select 'y' as a, 3 as b, 'z' as a")
        with pytest.raises(TableShapeError, match=r"declares no column\(s\) \['c'\]"):
            table.projection({"c": "1"})
        # A refused statement leaves the table as it was.
        assert conn.execute("select * from main.t").fetchall() == [("x", 2)]


@pytest.mark.dagster
def test_materialized_tables_have_their_declared_shape(platform: Platform) -> None:
    """What the cleaning stage writes, and what traits and conditions may read, is the declaration."""
    with duckdb.connect(str(platform.config.warehouse_path), read_only=True) as conn:
        for table in SHARED_TABLES:
            assert _columns(conn, table.name) == dict(table.columns), table.name
        for role, table in ACTIVITY_TABLES.items():
            assert ACTIVITY_COLUMNS[role] == {
                c: t for c, t in _columns(conn, table.name).items() if c not in LINEAGE_COLUMNS
            }
        assert conn.execute("select count(*) from clean.person_records").fetchone()[0] > 0


@pytest.mark.dagster
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda columns: {**columns, "loyalty_tier": "VARCHAR"}, r"declared but not selected: \['loyalty_tier'\]"),
        (
            lambda columns: {c: t for c, t in columns.items() if c != "rfm_score"},
            r"selected but not declared: \['rfm_score'\]",
        ),
    ],
    ids=["declared-not-built", "built-not-declared"],
)
def test_a_profile_column_out_of_step_with_its_declaration_fails_the_build(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change, message: str
) -> None:
    """Golden profiles are built from the declaration in resources/schema.py: a column built but not
    declared is not dropped, and one declared but not built is not left out; either fails the build."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(platform.config.warehouse_path, copy)
    monkeypatch.setattr(schema, "PROFILE_COLUMNS", change(schema.PROFILE_COLUMNS))
    with duckdb.connect(str(copy)) as conn:
        bootstrap(conn)
        before = conn.execute("select * exclude (profile_built_at) from cdp.golden_profiles order by all").fetchall()
        with pytest.raises(TableShapeError, match=message):
            build_profiles(Sql(conn), platform.config)
        after = conn.execute("select * exclude (profile_built_at) from cdp.golden_profiles order by all").fetchall()
    assert before and after == before


@pytest.mark.dagster
def test_the_provenance_check_counts_each_kind_of_unexplained_value(platform: Platform, tmp_path: Path) -> None:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(platform.config.warehouse_path, copy)
    with duckdb.connect(str(copy)) as conn:
        assert count_unexplained(Sql(conn)) == 0
        customers = conn.execute(
            "select customer_id from cdp.golden_profiles where email is not null and phone is not null "
            "and first_name is not null and date_of_birth is not null order by customer_id limit 4"
        ).fetchall()
        assert len(customers) == 4
        # Another e-mail and phone than the profile's, and no name or birth-date row at all.
        changes = [
            "update cdp.profile_provenance set value = 'x' where attribute = 'email' and customer_id = ?",
            "update cdp.profile_provenance set value = 'x' where attribute = 'phone' and customer_id = ?",
            "delete from cdp.profile_provenance where attribute = 'name' and customer_id = ?",
            "delete from cdp.profile_provenance where attribute = 'date_of_birth' and customer_id = ?",
        ]
        for change, customer in zip(changes, customers, strict=True):
            conn.execute(change, list(customer))
        assert count_unexplained(Sql(conn)) == 4
