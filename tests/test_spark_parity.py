"""Each construct the Spark dialect rewrites: the DuckDB original run on DuckDB and its translation run on
a local Spark session over the same rows give the same result, including where a plain translation
would run with another meaning (day boundaries, the order of a list, a temporary table's contents)."""

import math
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pandas as pd
import pytest

from resources.spark.dialect import UnsupportedConstruct, to_spark_one
from resources.spark.runner import SparkSql, TransactionsUnavailable
from resources.sql import Sql, SqlDataError, SqlError
from tests.test_conditions import _SAMPLE, FUNCTION_EXAMPLES, OPERATOR_EXAMPLES

pytestmark = pytest.mark.spark

EVENTS = pd.DataFrame(
    {
        "customer": ["a", "a", "a", "b", "b", "c"],
        "v": ["x3", "x1", "x2", "y2", "y1", None],
        "k": [3, 1, 2, None, 5, 1],
        "occurred_at": [
            datetime(2024, 3, 1, 23, 30),
            datetime(2024, 3, 2, 0, 30),
            datetime(2024, 2, 28, 12, 0),
            datetime(2023, 12, 31, 23, 59, 59),
            datetime(2024, 1, 1, 0, 0, 1),
            datetime(2024, 6, 15, 8, 0),
        ],
        "tags": [["p", "q", "r"], ["p"], [], ["z", "y"], ["y"], None],
        "raw": ["2024-03-01", "01/02/2024 07:05", "20240105", "2024-3-7", "not a date", None],
    }
)


@pytest.fixture(scope="module")
def engines(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    conn = duckdb.connect()
    conn.register("events_frame", EVENTS)
    conn.execute("create table events as select * from events_frame")
    runner = SparkSql(spark)
    # Through Arrow from DuckDB, so a missing number stays NULL (pandas would make it NaN).
    spark.createDataFrame(conn.execute("select * from events").to_arrow_table()).createOrReplaceTempView("events")
    yield conn, runner
    conn.close()
    spark.catalog.dropTempView("events")


def both(engines, sql: str) -> tuple[list[tuple], list[tuple]]:  # noqa: ANN001
    conn, runner = engines
    return conn.execute(sql).fetchall(), runner.rows(sql)


def test_first_ordered_is_the_first_by_its_keys_with_nulls_last(engines) -> None:  # noqa: ANN001
    sql = """select customer, first(v order by k) filter (where v is not null),
                    first(v order by k desc, occurred_at desc), first(v order by k nulls first)
             from events group by customer order by customer"""
    duck, spark = both(engines, sql)
    assert duck == spark == [("a", "x1", "x3", "x1"), ("b", "y1", "y1", "y2"), ("c", None, None, None)]


def test_first_and_list_ordered_in_mixed_directions(engines) -> None:  # noqa: ANN001
    sql = """select customer, first(v order by k desc, occurred_at) filter (where v is not null),
                    list(v order by k nulls first, occurred_at desc) filter (where v is not null),
                    first(v order by k desc, v) filter (where v = 'none')
             from events group by customer order by customer"""
    duck, spark = both(engines, sql)
    assert duck == spark
    assert duck[1] == ("b", "y1", ["y2", "y1"], None)


def test_subscripts_are_one_based_and_negative_from_the_end(engines) -> None:  # noqa: ANN001
    sql = "select customer, tags[1], tags[-1], tags[2], tags[5] from events order by customer, k nulls last"
    duck, spark = both(engines, sql)
    assert duck == spark
    assert duck[0][1:3] == ("p", "p") and duck[2][1:3] == ("p", "r")


def test_a_sorted_distinct_list_keeps_its_order(engines) -> None:  # noqa: ANN001
    sql = """select customer, list(distinct v order by v) filter (where v is not null),
                    list(distinct v order by v desc) filter (where v is not null),
                    list(v order by k desc) filter (where v is not null)
             from events group by customer order by customer"""
    duck, spark = both(engines, sql)
    assert duck == spark
    assert duck[0] == ("a", ["x1", "x2", "x3"], ["x3", "x2", "x1"], ["x3", "x2", "x1"])
    # What sqlglot alone would have run: the distinct list in whatever order Spark collected it.
    assert "ARRAY_SORT" in to_spark_one("select list(distinct v order by v) from events")


def test_date_diff_counts_boundaries_not_24_hour_periods(engines) -> None:  # noqa: ANN001
    sql = """select date_diff('day', occurred_at, timestamp '2024-03-02 00:10:00'),
                    date_diff('month', occurred_at, timestamp '2024-03-02 00:10:00'),
                    date_diff('year', occurred_at, timestamp '2024-03-02 00:10:00'),
                    date_diff('hour', occurred_at, timestamp '2024-03-02 00:10:00')
             from events order by occurred_at"""
    duck, spark = both(engines, sql)
    assert duck == spark
    # 23:30 to 00:10 the next day: 40 minutes, yet one day boundary, as DuckDB counts.
    assert (1, 0, 0, 1) in duck


def test_try_strptime_tries_each_format_in_turn(engines) -> None:  # noqa: ANN001
    sql = """select raw, try_strptime(raw, ['%Y-%m-%d', '%d/%m/%Y %H:%M', '%Y%m%d']) from events order by raw"""
    duck, spark = both(engines, sql)
    assert duck == spark
    assert (("01/02/2024 07:05", datetime(2024, 2, 1, 7, 5))) in duck and ("not a date", None) in duck


def test_union_all_by_name_aligns_columns(engines) -> None:  # noqa: ANN001
    sql = """select customer, v from events where k = 1
             union all by name select k, customer from events where k = 5
             union all by name select * from (select 'd' as customer, 'w' as v)
             order by customer, v"""
    duck, spark = both(engines, sql)
    assert duck == spark == [("a", "x1", None), ("b", None, 5), ("c", None, None), ("d", "w", None)]


def test_materialized_cte_hugeint_and_integer_division(engines) -> None:  # noqa: ANN001
    sql = """with totals as materialized (select customer, sum(k)::hugeint * 10 as units from events group by 1)
             select customer, units // 3, (units * 1000000000000000000000)::decimal(38, 0) from totals
             order by customer"""
    duck, spark = both(engines, sql)
    assert [(c, int(u)) for c, u, _ in duck] == [(c, int(u)) for c, u, _ in spark]
    assert [Decimal(big) for *_, big in duck] == [Decimal(big) for *_, big in spark]


def test_timezone_gives_the_wall_clock_in_a_zone_and_back(engines) -> None:  # noqa: ANN001
    sql = """select occurred_at, timezone('America/New_York', occurred_at at time zone 'UTC'),
                    date_diff('day', timezone('America/New_York', occurred_at at time zone 'UTC'),
                              timezone('America/New_York', timestamp '2024-03-02 12:00:00' at time zone 'UTC'))
             from events order by occurred_at"""
    duck, spark = both(engines, sql)
    assert duck == spark
    assert (datetime(2024, 3, 2, 0, 30), datetime(2024, 3, 1, 19, 30), 1) in duck
    # A wall clock in a zone as its UTC instant: DuckDB gives a TIMESTAMPTZ, compared as UTC.
    conn, runner = engines
    duck_utc = conn.execute("select timezone('Europe/Paris', timestamp '2024-07-01 12:00:00') at time zone 'UTC'")
    spark_utc = runner.value("select timezone('Europe/Paris', timestamp '2024-07-01 12:00:00')")
    assert duck_utc.fetchone()[0] == spark_utc == datetime(2024, 7, 1, 10, 0)


def test_refused_constructs_name_themselves() -> None:
    with pytest.raises(UnsupportedConstruct, match="row_number"):
        to_spark_one("select row_number() over (partition by customer) from events")


def test_a_temporary_table_is_materialised_not_a_lazy_view(engines) -> None:  # noqa: ANN001
    conn, runner = engines
    runner.create_table_as("source_rows", "select * from events")
    runner.create_table_as("kept", "select customer, count(*) as n from source_rows group by 1", temporary=True)
    before = runner.rows("select * from kept order by customer")
    runner.execute("insert into source_rows select * from source_rows")
    assert runner.rows("select * from kept order by customer") == before == [("a", 3), ("b", 2), ("c", 1)]
    runner.drop_table("kept")
    runner.drop_table("source_rows")
    assert not runner.spark.catalog.tableExists("kept")


def test_temporary_tables_declared_by_columns_take_inserts_as_duckdb_does(engines) -> None:  # noqa: ANN001
    """Spark's temporary tables are views: the runner keeps an empty one declared by columns, and an insert
    into one (positional, a CTE before it, repeated names in the select) keeps its rows and the new ones."""
    steps = [
        "create temp table pairs_t (l bigint, r bigint, rule smallint)",
        "insert into pairs_t select a.k, b.k, 1 from events a join events b on a.customer = b.customer where a.k < b.k",
        "with again as (select l, r from pairs_t) insert into pairs_t select l, r, 2 from again where l = 1",
        "insert into pairs_t (r, l) select 9, 8",
    ]
    conn, runner = engines
    for step in steps:
        conn.execute(step)
        runner.execute(step)
    query = "select l, r, rule from pairs_t order by all"
    assert runner.rows(query) == conn.execute(query).fetchall()
    assert (8, 9, None) in runner.rows(query)
    assert runner.rows("select count(*) from pairs_t where rule = 2") == [(2,)]  # (1, 2) and (1, 3) again
    runner.drop_table("pairs_t")
    conn.execute("drop table pairs_t")


def test_a_table_declared_by_columns_is_replaced(engines) -> None:  # noqa: ANN001
    _, runner = engines
    runner.execute("create or replace table scratch_db.declared (a bigint, j json)")
    runner.execute("insert into scratch_db.declared values (1, '{}')")
    runner.execute("create or replace table scratch_db.declared (a bigint, b varchar)")
    assert runner.columns("select * from scratch_db.declared") == ["a", "b"]
    assert runner.rows("select * from scratch_db.declared") == []
    assert not runner.is_view("scratch_db.declared")
    runner.execute("drop database scratch_db cascade")


def test_updates_and_deletes_change_the_rows_duckdb_changes(engines) -> None:  # noqa: ANN001
    """Spark cannot change a parquet table's rows in place: the runner writes the table anew with the rows
    the statement picks changed or gone (a condition with a subquery, a join through `from` or `using`, a
    parameter, rows where the condition is NULL left alone), for a table and a temporary table alike."""
    conn, runner = engines
    rows = """select * from (values ('a', 'active', null, 1), ('b', 'active', 'b', 2), ('c', 'retired', 'b', 3),
                                    ('d', 'active', 'd', null), ('e', 'active', 'e', 5))
              t(customer_id, status, current_id, n)"""
    steps = [
        ("update ids_t set status = 'merged', n = ? where customer_id in (select old_id from merged_t)", [10]),
        ("update ids_t g set current_id = m.survivor from merged_t m where g.current_id = m.old_id", None),
        ("update ids_t set status = 'seen' where current_id = 'a'", None),  # NULL for a's row: left alone
        ("delete from ids_t where n is null", None),
        ("delete from ids_t r using gone_t g where r.customer_id = g.customer_id", None),
        # Picking no row: nothing changes (parameters in the set and the condition bound in their order).
        ("update ids_t set n = ? where customer_id = ?", [99, "zz"]),
        ("delete from ids_t where customer_id = ?", ["zz"]),
    ]
    helpers = {"merged_t": "select 'b' as old_id, 'a' as survivor", "gone_t": "select 'e' as customer_id"}
    for temporary in (False, True):
        conn.execute(f"create or replace {'temp ' if temporary else ''}table ids_t as {rows}")
        runner.create_table_as("ids_t", rows, temporary=temporary)
        for table, select in helpers.items():
            conn.execute(f"create or replace temp table {table} as {select}")
            runner.create_table_as(table, select, temporary=True)
        for statement, params in steps:
            conn.execute(statement, params)
            runner.execute(statement, params)
        query = "select customer_id, status, current_id, n from ids_t order by all"
        expected = [("a", "active", None, 1), ("b", "seen", "a", 10), ("c", "seen", "a", 3)]
        assert runner.rows(query) == conn.execute(query).fetchall() == expected
        if not temporary:  # a statement that picks nothing leaves the table's files as they were
            files = set(runner.spark.table("ids_t").inputFiles())
            runner.execute("delete from ids_t where customer_id = ?", ["zz"])
            assert set(runner.spark.table("ids_t").inputFiles()) == files
            runner.execute("delete from ids_t where customer_id = ?", ["c"])
            assert set(runner.spark.table("ids_t").inputFiles()) != files
        for table in ("ids_t", "merged_t", "gone_t"):
            runner.drop_table(table)
            conn.execute(f"drop table if exists {table}")


def test_parameters_are_bound_not_spliced(engines) -> None:  # noqa: ANN001
    conn, runner = engines
    sql = "select count(*) from events where customer = ? or v = ?"
    hostile = "x' or '1' = '1"
    assert runner.value(sql, ["a", hostile]) == conn.execute(sql, ["a", hostile]).fetchone()[0] == 3
    assert runner.value("select cast(? as date) + 1", [date(2024, 2, 28)]) == date(2024, 2, 29)


def test_scratch_drops_its_tables_and_transactions_are_refused(engines) -> None:  # noqa: ANN001
    _, runner = engines
    with runner.scratch("step") as tables:
        runner.create_table_as(tables("a"), "select 1 as x", temporary=True)
        view = tables.frame("f", pd.DataFrame({"y": [1, 2]}))
        assert runner.value(f"select sum(x + y) from {tables('a')}, {view}") == 5
    assert not runner.spark.catalog.tableExists("step__a")
    assert not runner.spark.catalog.tableExists("step__f")
    with pytest.raises(TransactionsUnavailable, match="makes no transactions"), runner.transaction():
        pass


# Conditions whose translation depends on a column's type, which the translation does not see: DuckDB's
# `len` takes a string or a list, Spark's `length` only a string (`array_length` translates).
TYPE_DEPENDENT = {"len(emails) > 1"}


@pytest.fixture(scope="module")
def profiles(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    conn = duckdb.connect()
    conn.execute(_SAMPLE)
    spark.createDataFrame(conn.sql("select * from golden_profiles").to_arrow_table()).createOrReplaceTempView(
        "golden_profiles"
    )
    yield conn, SparkSql(spark)
    conn.close()
    spark.catalog.dropTempView("golden_profiles")


def test_every_allowed_condition_selects_the_same_profiles_or_is_refused(profiles) -> None:  # noqa: ANN001
    """Each function and operator a segment may use (resources/conditions.py): on every sample profile
    Spark gives the value DuckDB gives (true, false or NULL), or the translation refuses it by name;
    never another answer. All of them in one query each, to keep the Spark time small."""
    conn, runner = profiles
    translatable, refused = [], []
    for condition in [*FUNCTION_EXAMPLES.values(), *OPERATOR_EXAMPLES]:
        try:
            to_spark_one(f"select {condition}")
        except UnsupportedConstruct:
            refused.append(condition)
            continue
        if condition not in TYPE_DEPENDENT:
            translatable.append(condition)
    columns = ", ".join(f"({c}) as c{i}" for i, c in enumerate(translatable))
    query = f"select first_name, {columns} from golden_profiles order by first_name"
    expected, actual = conn.execute(query).fetchall(), runner.rows(query)
    differing = [c for i, c in enumerate(translatable) if [r[i + 1] for r in expected] != [r[i + 1] for r in actual]]
    assert differing == []
    assert len(translatable) > 70 and refused == [
        "age(date_of_birth) > interval 40 years",
        "sources[1] = 'crm' and emails[1:1] = ['ann@gmail.com']",
    ]
    for condition in TYPE_DEPENDENT:
        with pytest.raises(duckdb.Error, match="DATATYPE_MISMATCH"):
            runner.rows(f"select first_name from golden_profiles where ({condition})")


def test_errors_are_the_runner_errors_callers_catch(engines) -> None:  # noqa: ANN001
    _, runner = engines
    with pytest.raises(SqlDataError):
        runner.value("select cast(v as integer) from events where v is not null")
    with pytest.raises(SqlError, match="no_such_column") as failed:
        runner.value("select no_such_column from events")
    assert not isinstance(failed.value, SqlDataError)


RECORDS = """select * from (values
    (1, '{"First Name": "Ann", "a": 1, "n": {"x": 2}, "b": true, "z": null, "l": [1, 2]}', 'Zoë', 1e16),
    (2, '{"First Name": "Bo", "a": "text"}', 'abba', 1.0),
    (3, '{}', '', -1e16),
    (4, null, null, 0.1),
    (5, '{"a": 3}', 'aab', 0.2)
) as t(id, record, word, x)"""


@pytest.fixture(scope="module")
def records(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute(f"create table records as {RECORDS}")
    spark.createDataFrame(conn.execute("select * from records").to_arrow_table()).createOrReplaceTempView("records")
    yield conn, SparkSql(spark)
    conn.close()
    spark.catalog.dropTempView("records")


def test_json_extract_string_of_a_list_of_paths_and_strlen(records) -> None:  # noqa: ANN001
    sql = """select id, json_extract_string(record, ['$."First Name"', '$.a', '$.n', '$.b', '$.z', '$.missing']),
                    strlen(word), length(word) from records order by id"""
    duck, spark = both(records, sql)
    assert duck == spark
    assert duck[0] == (1, ["Ann", "1", '{"x":2}', "true", None, None], 4, 3)  # Zoë: four bytes, three letters


def test_json_type_names_each_paths_value_as_duckdb_does(records) -> None:  # noqa: ANN001
    paths = "['$.\"First Name\"', '$.a', '$.n', '$.n.x', '$.b', '$.z', '$.l', '$.missing', '$.a.x']"
    sql = f"select id, json_type(record, {paths}), json_type(record, '$.a') from records order by id"
    duck, spark = both(records, sql)
    assert duck == spark
    assert duck[0] == (
        1,
        ["VARCHAR", "UBIGINT", "OBJECT", "UBIGINT", "BOOLEAN", "NULL", "ARRAY", None, None],
        "UBIGINT",
    )
    assert duck[3] == (4, None, None)


def test_star_exclude_and_replace_list_the_columns(records) -> None:  # noqa: ANN001
    sql = """select r.* exclude (record) replace (upper(word) as word, x * 2 as x) from records r
             where id < 4 order by id"""
    duck, spark = both(records, sql)
    assert duck == spark == [(1, "ZOË", 2e16), (2, "ABBA", 2.0), (3, "", -2e16)]


def test_list_comprehensions_and_ranges(records) -> None:  # noqa: ANN001
    # The shape of identity's one-slip forms (each one-character deletion, repeated letters once), unhashed.
    slips = """[case when i = 0 then word else left(word, i::integer - 1) || substr(word, i::integer + 1) end
                for i in range(0, length(word) + 1)
                if i < 2 or substr(word, i::integer, 1) <> substr(word, i::integer - 1, 1)]"""
    sql = f"""select id, {slips}, [upper(c) for c in ['a', 'b', word] if c is not null], range(0, length(word)),
                     range(2, 2), range(3, 1) from records order by id"""
    duck, spark = both(records, sql)
    assert duck == spark
    assert duck[1][1] == ["abba", "bba", "aba", "abb"] and duck[1][3:] == ([0, 1, 2, 3], [], [])


def test_one_slip_forms_hash_alike_on_both_engines_and_keep_apart_different_forms(records) -> None:  # noqa: ANN001
    from cdp_assets.identity.matching.features import FEATURES

    # Each pair is two addresses more than one slip apart, one of whose forms DuckDB's own hash() gave the
    # other's value (johnrodtiguez892hotmail.com and johnrodriguez89@hotmail.com): no candidate pair for them.
    pairs = [
        ("johnrodtiguez892@hotmail.com", "johnrodriguez89@hotmail.com"),
        ("jennife_brown219@gmail.com", "jenniferbrown216@gmail.com"),
        ("msmith84@comcas.net", "msmith86@comcastnet"),
    ]
    values = ", ".join(f"('{a}'), ('{b}')" for a, b in pairs)
    sql = f"""select b.email_key, {FEATURES["email_one_slip"]}
              from (select k as email_key, split_part(k, '@', 1) as email_local_key
                    from (values {values}) t(k)) b order by 1"""
    duck, spark = both(records, sql)
    assert duck == spark
    forms = dict(duck)
    for left, right in pairs:
        assert len(set(forms[left])) == len(forms[left]) > 15 and not set(forms[left]) & set(forms[right])


def test_term_frequency_weights_are_the_same_doubles_on_both_engines(spark) -> None:  # noqa: ANN001
    import numpy as np

    from cdp_assets.identity.matching.model import FellegiSunterModel, build_term_frequencies, scoring_sql

    # Shares of 3/4 and 1/4: Spark's own log2 (two natural logarithms divided) gives log2(0.8 / (3/4)) one
    # bit off DuckDB's, which at a million people reordered links of equal strength.
    names = ["ann"] * 3 + ["bo"]
    conn = duckdb.connect()
    conn.execute(
        "create table tf_records as select i as node_id, n as first_name "
        f"from (select unnest(range({len(names)})) as i, unnest({names}) as n)"
    )
    conn.execute("create table tf_vectors as select 0::bigint as l, 1::bigint as r, 4 as first_name")
    conn.execute("insert into tf_vectors values (3, 0, 4), (1, 2, 4)")
    for table in ("tf_records", "tf_vectors"):
        spark.createDataFrame(conn.execute(f"select * from {table}").to_arrow_table()).createOrReplaceTempView(table)
    model = FellegiSunterModel(
        ["first_name"], {"first_name": np.array([0.05, 0.02, 0.03, 0.1, 0.8])}, {"first_name": np.full(5, 0.2)}, 1e-4
    )
    found = []
    for sql in (Sql(conn), SparkSql(spark)):
        build_term_frequencies(sql, "tf_records", {"first_name": "tf_first"})
        found.append(
            sql.rows(
                # Not the probability: the engines' pow() differ in its last bit, so clustering orders by weight.
                f"select l, r, w_first_name, match_weight from "
                f"({scoring_sql(model, 'tf_records', 'tf_vectors', {'first_name': 'tf_first'}, 1e-9)}) order by l, r"
            )
        )
        sql.drop_table("tf_first")
    assert found[0] == found[1]
    # Pairs (0, 1), (1, 2): left record ann, 3 of 4; (3, 0): left record bo, 1 of 4.
    common, rare = math.log2(0.8) - math.log2(3 / 4), math.log2(0.8) - math.log2(1 / 4)
    assert [w for _, _, w, _ in found[0]] == [common, common, rare]
    conn.close()
    for table in ("tf_records", "tf_vectors"):
        spark.catalog.dropTempView(table)


def test_an_ordered_sum_adds_in_that_order(records) -> None:  # noqa: ANN001
    sql = """select id % 2, sum(x order by x), sum(x order by id), sum(x order by id desc) filter (where id > 1),
                    sum(x order by x) filter (where id > 9), (sum(x order by x) / count(x))::double
             from records group by 1 order by 1"""
    duck, spark = both(records, sql)
    assert duck == spark
    # 1e16, -1e16 and 0.2: in the order of x the 0.2 is lost against -1e16; in the order of id it is kept.
    assert duck[1][1:3] == (0.0, 0.2) and duck[1][4] is None


def test_current_setting_timezone_is_the_session_zone(records) -> None:  # noqa: ANN001
    duck, spark = both(records, "select current_setting('TimeZone')")
    assert duck == spark == [("UTC",)]


def test_create_table_with_column_definitions_and_keys(records) -> None:  # noqa: ANN001
    conn, runner = records
    create = """create table if not exists {schema}.bookkeeping (name varchar, big ubigint, doc json, n integer,
                primary key (name, n))"""
    insert = """insert into {schema}.bookkeeping values ('a', 18446744073709551615, '{{"k": 1}}', 1),
                ('b', null, null, 2)"""
    conn.execute("create schema if not exists book")
    runner.execute("create database if not exists book")
    for step in (create, insert):
        conn.execute(step.format(schema="book"))
        runner.execute(step.format(schema="book"))
    sql = "select name, big, doc, n from book.bookkeeping order by name"
    duck, spark = both(records, sql)
    assert [(a, int(b) if b is not None else None, c, d) for a, b, c, d in spark] == duck
    assert duck[0] == ("a", 18446744073709551615, '{"k": 1}', 1)
    runner.execute("drop table book.bookkeeping")


def test_update_from_and_delete_using_are_merges_spark_reads(records) -> None:  # noqa: ANN001
    """MERGE INTO changes rows only on tables with row-level changes (Delta, Iceberg), which the local
    session has not: Spark's parser takes the statements, and their text says what they change."""
    _, runner = records
    update = to_spark_one(
        "update cdp.golden_profiles as g set score = s.score, tier = 'a' from scores as s "
        "where g.customer_id = s.customer_id and s.score > 1"
    )
    delete = to_spark_one("delete from clean.events as t using scope as f where f.source = t.source")
    assert update == (
        "MERGE INTO cdp.golden_profiles AS g USING scores AS s ON g.customer_id = s.customer_id AND s.score > 1 "
        "WHEN MATCHED THEN UPDATE SET score = s.score, tier = 'a'"
    )
    assert delete == "MERGE INTO clean.events AS t USING scope AS f ON f.source = t.source WHEN MATCHED THEN DELETE"
    parser = runner.spark._jsparkSession.sessionState().sqlParser()
    for statement in (update, delete):
        assert "MergeIntoTable" in parser.parsePlan(statement).getClass().getName()


def test_map_literals_and_compared_patterns(records) -> None:  # noqa: ANN001
    # The shape of the street-suffix abbreviation (clean/rules.py) and of the mixed-case test.
    sql = """select id, list_transform(string_split(upper(coalesce(word, '')), 'B'),
                                       lambda w: coalesce(map {'A': 'one', 'AA': 'two'}[w], w)),
                    regexp_matches(word, '[A-Z]') = regexp_matches(word, '[a-z]')
             from records order by id"""
    duck, spark = both(records, sql)
    assert duck == spark
    assert duck[1] == (2, ["one", "", "one"], False) and duck[2] == (3, [""], True)


def test_the_u_sample_draws_the_same_pairs_on_both_engines(records) -> None:  # noqa: ANN001
    from cdp_assets.identity.matching.model import sample_pairs_sql

    numbered = "(select id * 10 as node_id, id - 1 as position from records)"
    sql = f"select l, r from ({sample_pairs_sql(numbered, 200, 42)}) order by l, r"
    duck, spark = both(records, sql)
    assert duck == spark
    # Five records: about a fifth of the draws pair a record with itself and are dropped.
    assert 120 < len(duck) < 190 and all(left != right for left, right in duck)
    assert {n for pair in duck for n in pair} == {10, 20, 30, 40, 50}


def test_u_over_every_pair_of_few_records_is_the_same_on_both_engines(spark, tmp_path) -> None:  # noqa: ANN001
    """Few records (n(n-1) no more than the sample): every ordered pair compared once, on each engine."""
    import numpy as np

    from cdp_assets.identity.matching.model import estimate_u
    from tests.fixtures import identity_warehouse
    from tests.test_identity_matching import background

    conn = identity_warehouse(tmp_path, background(people=15))
    # Without the base row's hash (an unsigned 64-bit `hash()`, which Spark has no type for): u reads none.
    conn.execute("create table few_records as select * exclude (base_hash) from identity.match_features")
    features = conn.execute("select * from few_records").to_arrow_table()
    spark.createDataFrame(features).createOrReplaceTempView("few_records")
    names = ["first_name", "last_name", "date_of_birth", "email", "phone", "address", "postal_code", "city"]
    try:
        duck = estimate_u(Sql(conn), "few_records", names, 1_000_000, seed=42)
        on_spark = estimate_u(SparkSql(spark), "few_records", names, 1_000_000, seed=42)
    finally:
        spark.catalog.dropTempView("few_records")
        conn.close()
    assert features.num_rows == 30
    assert all(np.array_equal(duck[name], on_spark[name]) for name in names), (duck, on_spark)
