"""Statements the stages run that Spark reads otherwise or refuses, run through `Sql` on DuckDB and through
`SparkSql` on Spark, with the same results: JSON built and merged as text, instants with offsets and
zones, a column added when missing, and rows replaced or skipped by a declared key."""

from collections.abc import Iterator

import pytest

from cdp_assets.clean.assets import timestamp_sql
from resources.spark.runner import SparkSql
from resources.sql import Sql
from resources.tables import Table

pytestmark = pytest.mark.spark

# Declared with its key, as the shared tables are: Spark's runner replaces and skips rows by it.
KEYED = Table("scratch_keyed.kv", {"k": "VARCHAR", "v": "INTEGER", "note": "VARCHAR"}, primary_key=("k",))


@pytest.fixture()
def engines(spark) -> Iterator[tuple[Sql, SparkSql]]:  # noqa: ANN001 - the session fixture of tests/conftest.py
    duck, on_spark = Sql.in_memory(), SparkSql(spark, staged_transactions=True)
    yield duck, on_spark
    duck.close()
    on_spark.execute("drop database if exists scratch_keyed cascade")


def both(engines: tuple[Sql, SparkSql], query: str) -> tuple[list, list]:
    duck, on_spark = engines
    return duck.rows(query), on_spark.rows(query)


@pytest.mark.parametrize(
    ("target", "patch"),
    [
        ('{"a":1,"b":{"x":1}}', '{"b":{"y":2},"c":null,"a":3.50}'),
        ("{}", '{"name":null,"category":"shoes"}'),
        ('{"k":[1, 2],"s":"Zoë"}', '{"z":1e5,"k":{"n":true}}'),
        ("[1]", '{"a":1}'),
        ('{"a":1}', "[2]"),
        ('{"a":{"b":{"c":1,"d":2}}}', '{"a":{"b":{"d":null,"e":"x"}}}'),
    ],
)
def test_json_merge_patch_merges_as_duckdb_does(engines, target: str, patch: str) -> None:  # noqa: ANN001
    on_duckdb, on_spark = both(engines, f"select json_merge_patch('{target}'::json, '{patch}'::json)::varchar")
    assert on_duckdb == on_spark


def test_json_objects_keep_their_null_fields_as_duckdb_writes_them(engines) -> None:  # noqa: ANN001
    query = (
        "select json_object('name', 'Ann', 'category', null)::varchar, "
        "to_json({'email': null, 'first_name': 'Ann', 'ltv': 12.5})::varchar, "
        "json_merge_patch('{}'::json, json_object('name', null, 'category', 'c'))::varchar"
    )
    on_duckdb, on_spark = both(engines, query)
    assert on_duckdb == on_spark
    assert on_spark[0][0] == '{"name":"Ann","category":null}'


def test_instants_with_offsets_and_zones_are_read_as_on_duckdb(engines) -> None:  # noqa: ANN001
    written = [
        "2023-11-21T23:26:11-05:00",
        "2023-11-21 23:26:11",
        "2023-11-21 23:26:11 Europe/Berlin",
        "2023-11-21T23:26:11Z",
        "2024-03-10 02:30:00",
    ]
    values = ", ".join(f"('{v}')" for v in written)
    query = f"select v, {timestamp_sql('v', None, 'America/New_York')} from (values {values}) x(v) order by v"
    on_duckdb, on_spark = both(engines, query)
    assert on_duckdb == on_spark
    assert dict(on_spark)["2023-11-21T23:26:11-05:00"].hour == 4


def test_a_column_is_added_once_when_missing(engines) -> None:  # noqa: ANN001
    for runner in engines:
        runner.execute("create schema if not exists scratch_keyed")
        runner.execute(KEYED.create_sql())
        for _ in range(2):
            runner.execute("alter table scratch_keyed.kv add column if not exists extra JSON")
    assert [c.lower() for c in engines[1].columns("select * from scratch_keyed.kv")] == ["k", "v", "note", "extra"]


def test_rows_are_replaced_and_skipped_by_the_declared_key(engines) -> None:  # noqa: ANN001
    for runner in engines:
        runner.execute("create schema if not exists scratch_keyed")
        runner.execute(KEYED.create_sql())
        runner.execute("insert into scratch_keyed.kv values ('a', 1, 'first'), ('b', 2, 'first')")
        runner.execute("insert or replace into scratch_keyed.kv (k, v, note) select 'b', 20, 'replaced'")
        runner.execute("insert into scratch_keyed.kv values (?, ?, 'skipped') on conflict do nothing", ["a", 10])
        runner.execute("insert into scratch_keyed.kv values (?, ?, 'added') on conflict do nothing", ["c", 3])
        with runner.transaction():
            runner.execute("update scratch_keyed.kv set v = v + 1 where k = ?", ["c"])
    on_duckdb, on_spark = both(engines, "select k, v, note from scratch_keyed.kv order by k")
    assert on_duckdb == on_spark == [("a", 1, "first"), ("b", 20, "replaced"), ("c", 4, "added")]


def test_insert_by_name_into_a_temporary_table_matches_columns_by_name(engines) -> None:  # noqa: ANN001
    for runner in engines:
        runner.create_table_as("scores_kept", "select 1 as l, 2 as r, 0.5::double as w", temporary=True)
        runner.execute(
            "insert into scores_kept by name "
            "with kept as (select 3 as l, 4 as r) select 0.25::double as w, r, l from kept"
        )
    on_duckdb, on_spark = both(engines, "select l, r, w from scores_kept order by l")
    engines[0].drop_table("scores_kept")
    engines[1].drop_table("scores_kept")
    assert on_duckdb == on_spark == [(1, 2, 0.5), (3, 4, 0.25)]


def test_a_table_is_written_anew_from_its_own_rows(engines) -> None:  # noqa: ANN001
    """A table replaced by a select of its own rows (a quarantine keeping its first-seen times when every
    row is cleaned again): on Spark the old files must be read before the table is dropped."""
    for sql in engines:
        sql.execute("create schema if not exists scratch_keyed")
        sql.create_table_as("scratch_keyed.own_rows", "select * from (values (1), (2)) t(n)")
        sql.create_table_as(
            "scratch_keyed.own_rows", "select n * 10 as n from scratch_keyed.own_rows union all select 3 as n"
        )
        assert sorted(sql.rows("select n from scratch_keyed.own_rows")) == [(3,), (10,), (20,)]


def test_the_catalogue_lists_tables_not_views_on_both_engines(engines) -> None:  # noqa: ANN001
    """What an erasure walks to find every table holding customer rows, a table added later too."""
    for sql in engines:
        sql.execute("create schema if not exists scratch_keyed")
        sql.create_table_as("scratch_keyed.listed", "select 1 as n")
        sql.execute("create or replace view scratch_keyed.not_listed as select n from scratch_keyed.listed")
        names = sql.table_names()
        assert ("scratch_keyed", "listed") in names and ("scratch_keyed", "not_listed") not in names
        assert names == sorted(names)
