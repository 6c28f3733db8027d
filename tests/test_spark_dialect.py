"""The Spark dialect's translations as text (no Spark needed): the rewrites it must make, the constructs
it refuses by name, and strftime formats as Java patterns. tests/test_spark_parity.py runs them."""

import pytest

from resources.spark.dialect import UnsupportedConstruct, condition_to_spark, java_format, to_spark, to_spark_one

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("duckdb", "spark"),
    [
        ("select s[1], s[-1], s[0] from t", "SELECT TRY_ELEMENT_AT(s, 1), TRY_ELEMENT_AT(s, -1), NULL FROM t"),
        ("select first(v order by k) from t", "SELECT MIN_BY(v, STRUCT(k IS NULL, k)) FROM t"),
        ("select first(v order by k desc) from t", "SELECT MAX_BY(v, STRUCT(NOT k IS NULL, k)) FROM t"),
        ("select date_diff('day', a, b) from t", "SELECT DATEDIFF(CAST(b AS DATE), CAST(a AS DATE)) FROM t"),
        ("select 1::hugeint", "SELECT CAST(1 AS DECIMAL(38, 0))"),
        ("with x as materialized (select 1 as a) select a from x", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
        ("select timezone('Europe/Paris', t at time zone 'UTC')", "SELECT FROM_UTC_TIMESTAMP(t, 'Europe/Paris')"),
        ("select timezone('Europe/Paris', t)", "SELECT TO_UTC_TIMESTAMP(t, 'Europe/Paris')"),
        ("select levenshtein(a, b), hamming(a, b)", "SELECT CDP_LEVENSHTEIN(a, b), CDP_HAMMING(a, b)"),
        ("select ('0x' || left(h, 15))::bigint from t", "SELECT CAST(CONV(LEFT(h, 15), 16, 10) AS BIGINT) FROM t"),
        ("select ('1' || h)::bigint from t", "SELECT CAST(('1' || h) AS BIGINT) FROM t"),
        (
            "select hash(a, 1) % 4 from t",
            "SELECT (CAST(XXHASH64(a, 1) AS DECIMAL(20, 0)) + 9223372036854775808) % 4 FROM t",
        ),
        (
            "select sum(hash(t)) from x t",
            "SELECT SUM((CAST(XXHASH64(t.*) AS DECIMAL(20, 0)) + 9223372036854775808)) FROM x AS t",
        ),
        (
            "select row_number() over () as n from t",
            "SELECT ROW_NUMBER() OVER (ORDER BY MONOTONICALLY_INCREASING_ID() NULLS LAST) AS n FROM t",
        ),
    ],
)
def test_translations(duckdb: str, spark: str) -> None:
    assert to_spark_one(duckdb) == spark


def test_a_sorted_list_is_sorted_and_filtered_inside_the_aggregate() -> None:
    spark = to_spark_one("select list(distinct x order by x) filter (where x > 1) from t")
    assert "ARRAY_SORT(ARRAY_DISTINCT(COLLECT_LIST(x) FILTER(WHERE x > 1)))" in spark
    assert spark.startswith("SELECT CASE WHEN SIZE(COLLECT_LIST(x) FILTER(WHERE x > 1)) = 0 THEN NULL")


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("select row_number() over (partition by a) from t", r"row_number\(\) over a partition without an order"),
        ("select s[1:2] from t", r"a slice s\[a:b\]"),
        ("select date_diff('week', a, b) from t", r"date_diff\('week', \.\.\.\)"),
        ("select try_strptime(x, f) from t", "try_strptime with a format that is not a literal"),
        ("select strptime(x, '%U') from t", "the strptime directive %U"),
        ("select * from a union all by name select * from b", "union by name of a side"),
        ("select list(distinct x order by y) from t", r"list\(distinct x order by another key\)"),
    ],
)
def test_refused_constructs_are_named(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedConstruct, match=construct):
        to_spark(sql)


def test_union_by_name_asks_for_the_columns_it_cannot_see() -> None:
    asked = []
    spark = to_spark_one(
        "select a, b from t union all by name select * from u",
        columns_of=lambda select: asked.append(select) or ["b", "c"],
    )
    assert asked == ["SELECT * FROM u"]
    assert spark == (
        "SELECT `a`, `b`, NULL AS `c` FROM (SELECT a, b FROM t) AS __side UNION ALL "
        "SELECT NULL AS `a`, `b`, `c` FROM (SELECT * FROM u) AS __side"
    )


@pytest.mark.parametrize(
    ("strftime", "java"),
    [
        ("%Y-%m-%d", "yyyy-M-d"),
        ("%Y%m%d", "yyyyMMdd"),
        ("%d/%m/%Y %H:%M:%S", "d/M/yyyy H:m:s"),
        ("%Y-%m-%dT%H:%M:%S.%f", "yyyy-M-d'T'H:m:s.SSSSSS"),
        ("%d %B %Y", "d MMMM yyyy"),
        ("%I:%M %p", "h:m a"),
        ("at %H o'clock", "'at 'H' o''clock'"),
    ],
)
def test_strftime_formats_become_java_patterns(strftime: str, java: str) -> None:
    assert java_format(strftime) == java


def test_a_condition_translates_alone() -> None:
    assert condition_to_spark("name = ' WHERE ' and s[1] = 'a'") == "name = ' WHERE ' AND TRY_ELEMENT_AT(s, 1) = 'a'"


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("select rowid from t", "rowid"),
        ("select md5_number(x) from t", r"md5_number\(\)"),
        ("select json_merge_patch(a, b, c) from t", r"json_merge_patch\(\) of more than two documents"),
        ("select current_setting('memory_limit')", r"current_setting\('memory_limit'\)"),
        ("copy (select 1) to 'out.csv' (format csv)", r"copy \.\.\. to"),
        ("select column_name from (describe select 1 as a)", "describe"),
        ("attach 'other.duckdb' as other", "attach"),
        ("detach other", "detach"),
        ("checkpoint", "checkpoint"),
        ("insert or replace into t values (1)", "insert or replace / on conflict"),
        ("insert into t values (1) on conflict do nothing", "insert or replace / on conflict"),
        ("update t set n = n + 1 where k = 1 returning n", "returning"),
        ("create or replace temp table x (a bigint)", "create temporary table with column definitions"),
        ("select [x + i for x, i in l] from t", r"a list comprehension over \(value, index\)"),
        ("select n.* replace (1 as a) from t n", r"\* replace"),
        ("update t set a = 1 from s", r"update \.\.\. from without a where"),
    ],
)
def test_constructs_without_a_spark_equal_are_refused_by_name(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedConstruct, match=construct):
        to_spark(sql)


def test_statements_spark_takes_in_its_own_form() -> None:
    assert to_spark_one("create table if not exists s.t (k varchar primary key, n ubigint, j json)") == (
        "CREATE TABLE IF NOT EXISTS s.t (k STRING, n DECIMAL(20, 0), j STRING)"
    )
    assert to_spark_one("select strlen(x), current_setting('TimeZone')") == "SELECT OCTET_LENGTH(x), CURRENT_TIMEZONE()"
    assert to_spark_one("select [x for x in l if x > 1]") == "SELECT FILTER(l, x -> x > 1)"
    assert to_spark_one("select range(0, n)") == "SELECT FILTER(SEQUENCE(0, n), __i -> __i < n)"
    # The assignments of an update are translated like any expression.
    assert to_spark_one("update t set a = s.l[1], b = strlen(s.x) from s where t.k = s.k") == (
        "MERGE INTO t USING s ON t.k = s.k WHEN MATCHED THEN UPDATE SET a = TRY_ELEMENT_AT(s.l, 1), "
        "b = OCTET_LENGTH(s.x)"
    )


def test_a_map_literal_and_a_compared_pattern() -> None:
    assert to_spark_one("select map {'a': 'x'}[w], regexp_matches(r, 'a') = regexp_matches(r, 'b')") == (
        "SELECT TRY_ELEMENT_AT(MAP('a', 'x'), w), (r RLIKE 'a') = (r RLIKE 'b')"
    )


def test_the_statement_probe_records_each_call_once_and_sorts_refusals() -> None:
    from benchmarks.spark_statements import recorded_statements, translate_all
    from resources.sql import Sql

    parameters: dict[str, object] = {}
    with recorded_statements(parameters) as seen:
        sql = Sql.in_memory()
        sql.create_table_as("t", "select 1 as a")
        assert sql.value("select count(*) from t where a = ?", [1]) == 1  # value calls row: one statement
        assert sql.table_exists("main.t")  # its own lookup is the runner's, not the caller's
        sql.close()
    assert seen == ["select 1 as a", "select count(*) from t where a = ?"]
    assert parameters == {"select count(*) from t where a = ?": [1]}
    assert list(translate_all([*seen, "select hash(a) from t", "select rowid from t"])) == ["rowid"]
