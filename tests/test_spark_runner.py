"""The platform's own statements through both runners: the profile traits (every kind of aggregate, a
`where`, windows, RFM scores, days since the last order in a non-UTC zone, exact money averages) and
the identity comparison levels, computed by `Sql` on DuckDB and by `SparkSql` on Spark over the same
seeded tables, give the same rows."""

import random
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from cdp_assets.identity.matching.comparisons import email_slip_level, jaro_winkler_level, one_edit_level
from cdp_assets.profiles.traits import build_traits
from resources.config import CDPConfig, load_config
from resources.spark.runner import CODEGEN_LOGGER, SparkSql
from resources.sql import Sql, SqlError
from resources.tables import ACTIVITY_TABLES

pytestmark = pytest.mark.spark

AS_OF = datetime(2025, 6, 30, 3, 0)
TRAITS = [
    {"name": "views", "from": "events", "aggregate": "count", "where": "event = 'Product Viewed'", "window": "90 days"},
    {"name": "kinds", "from": "events", "aggregate": "count_distinct", "column": "event"},
    {"name": "spent", "from": "transactions", "aggregate": "sum", "column": "amount", "window": "365 days"},
    {"name": "basket", "from": "transactions", "aggregate": "avg", "column": "amount"},
    {"name": "smallest", "from": "transactions", "aggregate": "min", "column": "amount"},
    {"name": "last_web", "from": "events", "aggregate": "max", "column": "occurred_at", "where": "source = 'web'"},
    {"name": "first_event", "from": "events", "aggregate": "first", "column": "event"},
    {"name": "last_status", "from": "events", "aggregate": "last", "column": "status"},
    {"name": "events_seen", "from": "events", "aggregate": "unique_list", "column": "event"},
    {"name": "favourite", "from": "events", "aggregate": "most_frequent", "column": "event", "window": "30 days"},
]


def make_config(tmp_path: Path) -> CDPConfig:
    raw = {
        "sources": [{"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"}],
        "profiles": {"as_of": AS_OF.isoformat(), "traits": TRAITS},
        "refresh": {"timezone": "America/New_York"},
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def seed_duckdb(seed: int = 7) -> duckdb.DuckDBPyConnection:
    """40 customers, their events and transactions over a year, some on the edges of days and windows."""
    rng = random.Random(seed)
    conn = duckdb.connect()
    conn.execute("create schema clean; create schema cdp")
    for table in ACTIVITY_TABLES.values():
        conn.execute(table.create_sql())
    conn.execute("create table cdp.identity_map (source varchar, source_record_id varchar, customer_id varchar)")
    start = datetime(2024, 7, 1)
    for person in range(40):
        records = [f"r{person}-{k}" for k in range(rng.randrange(1, 3))]
        for source in ("crm", "web", "app", "support"):
            for record in records:
                conn.execute("insert into cdp.identity_map values (?, ?, ?)", [source, record, f"C{person:03d}"])
        for n in range(rng.randrange(0, 12)):
            at = start + timedelta(minutes=rng.randrange(0, 366 * 24 * 60))
            conn.execute(
                "insert into clean.events (source, event_id, source_record_id, event, occurred_at, status) "
                "values (?, ?, ?, ?, ?, ?)",
                [
                    rng.choice(["web", "app", "support"]),
                    f"e{person}-{n}",
                    rng.choice(records),
                    rng.choice(["Product Viewed", "Checkout Started", "open", "click"]),
                    at,
                    rng.choice(["open", "pending", "closed", None]),
                ],
            )
        for n in range(rng.randrange(0, 6)):
            at = start + timedelta(minutes=rng.randrange(0, 366 * 24 * 60))
            amount = Decimal(rng.randrange(100, 50_000)) / 100
            conn.execute(
                "insert into clean.transactions (source, event_id, source_record_id, occurred_at, amount, currency) "
                "values ('crm', ?, ?, ?, ?, 'USD')",
                [f"t{person}-{n}", rng.choice(records), at, amount],
            )
    return conn


@pytest.fixture(scope="module")
def runners(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    conn = seed_duckdb()
    spark_sql = SparkSql(spark)
    for table in ("clean.events", "clean.transactions", "cdp.identity_map"):
        # JSON columns travel as text: Spark has no JSON type.
        arrow = conn.execute(f"select * from {table}").to_arrow_table()
        for i, field in enumerate(arrow.schema):
            if "json" in str(field.metadata or {}).lower() or field.type == "null":
                arrow = arrow.set_column(i, field.name, arrow.column(i).cast("string"))
        spark_sql.execute(f"create database if not exists {table.split('.')[0]}")
        spark.createDataFrame(arrow).write.mode("overwrite").saveAsTable(table)
    yield Sql(conn), spark_sql
    conn.close()
    for table in ("clean.events", "clean.transactions", "cdp.identity_map"):
        spark_sql.drop_table(table)


def test_profile_traits_are_the_same_on_both_engines(runners, tmp_path: Path) -> None:  # noqa: ANN001
    config = make_config(tmp_path)
    results = []
    for runner in runners:
        build_traits(runner, config, AS_OF, "traits_out")
        results.append(runner.rows("select * from traits_out order by customer_id"))
        columns = runner.columns("select * from traits_out")
        runner.drop_table("traits_out")
    duck, spark = results
    assert len(duck) == len(spark) == 40
    for left, right in zip(duck, spark, strict=True):
        for column, a, b in zip(columns, left, right, strict=True):
            if isinstance(a, float):
                assert b == pytest.approx(a, rel=1e-12), (column, left[0])
            else:
                assert a == b, (column, left[0], a, b)
    # The traits really vary: lists, most-frequent values, RFM scores and day counts are all exercised.
    assert len({row[columns.index("rfm_score")] for row in duck}) > 5
    assert any(row[columns.index("events_seen")] for row in duck)
    assert len({row[columns.index("days_since_last_order")] for row in duck}) > 10


def test_identity_comparison_levels_agree(runners) -> None:  # noqa: ANN001
    people = [
        ("Jonathan", "jon.smith", "gmail.com"),
        ("Jonathon", "jon.simth", "gmail.com"),
        ("Jon", "jon.smith", "gmial.com"),
        ("Catherine", "laura1969", "outlook.com"),
        ("Katherine", "laura1996", "outlook.com"),
        ("Kathryn", "luara1969", "outlook.com"),
        ("Smith", "smith1234", "yahoo.com"),
        ("Smyth", "smith1234", "yaho.com"),
        ("", "xxxxxxxxx", "a.b"),
    ]
    rows = " union all ".join(
        f"select {i} as id, '{n}' as name, '{local}' as email_local, replace('{local}', '.', '') as email_local_key, "
        f"'{domain}' as email_domain"
        for i, (n, local, domain) in enumerate(people)
    )
    levels = [jaro_winkler_level("name", 0.88), one_edit_level("name", "one edit"), email_slip_level()]
    conditions = ", ".join(level.condition for level in levels)
    sql = f"with p as ({rows}) select l.id, r.id, {conditions} from p l join p r on l.id < r.id order by 1, 2"
    duck, spark = (runner.rows(sql) for runner in runners)
    assert duck == spark
    assert {sum(1 for row in duck if row[k]) > 0 for k in (2, 3, 4)} == {True}


def _raw_values(seed: int = 3) -> list[tuple[str | None, str | None]]:
    """Seeded (raw phone, region) pairs in many layouts, some without a region, some not numbers at all."""
    rng = random.Random(seed)
    layouts = ["({a}) {b}-{c}", "{a}.{b}.{c}", "+1 {a} {b} {c}", "1-{a}-{b}-{c}", "{a}{b}{c}", "0{a} {b}{c}"]
    values = []
    for _ in range(600):
        digits = {"a": rng.randrange(200, 999), "b": rng.randrange(100, 999), "c": f"{rng.randrange(0, 9999):04d}"}
        raw = rng.choice(layouts).format(**digits)
        if rng.random() < 0.1:
            raw = rng.choice(
                ["n/a", "", "  ", "phone: " + raw, raw + " ext 12", "+44 20 7946 0" + str(rng.randrange(100, 999))]
            )
        values.append((raw, rng.choice(["US", "GB", "DE", None])))
    return values


def test_a_cleaning_rule_runs_where_the_rows_are_and_gives_the_same_map(runners) -> None:  # noqa: ANN001
    """The cleaning's one way of applying a Python rule to distinct values (`register_map`, through the
    runner's `map_rows`), with the phone rule's SQL shortcut: the same rows on both engines, and on Spark
    the rule ran in the executors' Python, not in this (the driver's) process."""
    import os

    from cdp_assets.clean.assets import register_map
    from resources.identifiers import NORMALISERS

    phone = NORMALISERS["phone"]
    maps = {}
    for runner in runners:
        with runner.registered("raw_phones", pd.DataFrame(_raw_values(), columns=["raw", "region"])):
            runner.create_table_as("phone_inputs", "select distinct raw, region from raw_phones", temporary=True)
        count = register_map(
            runner,
            "phone_map",
            "select * from phone_inputs",
            phone.rule,
            phone.outputs,
            phone.sql_shortcut("raw", "region"),
        )
        maps[type(runner).__name__] = sorted(runner.rows("select * from phone_map"), key=repr)
        assert count == len(maps[type(runner).__name__])
        # Where the rule ran: its process id beside each value.
        runner.map_rows("where_ruled", "select raw from phone_inputs", lambda raw: (str(os.getpid()),), ["pid"])
        pids = {int(pid) for (pid,) in runner.rows("select distinct pid from where_ruled")}
        assert (pids == {os.getpid()}) == isinstance(runner, Sql), pids
        for table in ("phone_inputs", "phone_map", "where_ruled"):
            runner.drop_table(table)
    assert maps["Sql"] == maps["SparkSql"]
    # (raw, region, phone, reason): most read as numbers, some rejected with their reason.
    assert sum(row[2] is not None for row in maps["Sql"]) > 200
    assert sum(row[3] is not None for row in maps["Sql"]) > 20


def test_the_address_rule_gives_the_same_keys_on_both_engines(runners) -> None:  # noqa: ANN001
    """The address rule's SQL shortcut (abbreviations, German streets, spelt-out umlauts read as folded, in
    nested lambdas) keys the lines it decides as on DuckDB, and as the Python rule keys the others."""
    from cdp_assets.clean.assets import register_map
    from cdp_assets.clean.rules import address_sql_shortcut, clean_address_line

    lines = ["Koenigsweg 7", "Königsweg 7", "12 North Main Street, Apt. 4", "Muellerstrasse 1", "Queue Ave"]
    lines += ["AEOE Uee", "12 Joe Rue", "OEE x", "Grosse Str. 3", "N/A", "KOENIGSWEG 7"]
    maps = []
    for runner in runners:
        with runner.registered("raw_lines", pd.DataFrame({"raw": lines})):
            runner.create_table_as("line_inputs", "select distinct raw from raw_lines", temporary=True)
        register_map(
            runner,
            "address_map",
            "select * from line_inputs",
            clean_address_line,
            ["display", "address_key", "reason"],
            address_sql_shortcut("raw"),
        )
        maps.append(sorted(runner.rows("select raw, address_key from address_map"), key=repr))
        for table in ("line_inputs", "address_map"):
            runner.drop_table(table)
    assert maps[0] == maps[1]
    keys = dict(maps[0])
    assert keys["Koenigsweg 7"] == keys["Königsweg 7"] == keys["KOENIGSWEG 7"] == "KONIGSWEG 7"
    assert keys["Muellerstrasse 1"] == "MULLERSTR 1"
    assert keys["12 Joe Rue"] == "12 JOE RUE"


def test_a_rule_over_groups_runs_where_the_rows_are_and_sees_the_same_rows(runners) -> None:  # noqa: ANN001
    """`map_groups`, the identity stage's way of judging each shared value and each bridging record: the
    rule gets each group's rows as the same sorted text on both engines (NULLs as None), the same rows
    come out, and on Spark the rule ran in the executors' Python, not in this (the driver's) process."""
    import os

    rng = random.Random(5)
    records = pd.DataFrame(
        [
            (rng.choice(["email", "phone"]), f"v{rng.randrange(60)}", node, rng.choice(["ann", "bob", None]))
            for node in rng.sample(range(10**9), 2_000)
        ],
        columns=["id_type", "id_value", "node_id", "first_name"],
    )

    def judge(rows: list[tuple]) -> list[tuple]:
        nodes = [int(r[2]) for r in rows]
        named = sum(r[3] is not None for r in rows)
        # What the rule saw, in the order it saw it: the smallest node as text first, the largest last.
        return [(rows[0][0], rows[0][1], str(len(rows)), str(named), rows[0][2], rows[-1][3], str(os.getpid()))] + [
            (rows[0][0], rows[0][1], str(node), None, None, None, str(os.getpid())) for node in sorted(nodes)[:2]
        ]

    outputs = ["id_type", "id_value", "a", "b", "first_node", "last_name", "pid"]
    found = {}
    for runner in runners:
        with runner.registered("grouped_records", records):
            runner.create_table_as("records_in", "select * from grouped_records", temporary=True)
        written = runner.map_groups("judged", "select * from records_in", ["id_type", "id_value"], judge, outputs)
        rows = runner.rows("select * from judged")
        assert written == len(rows)
        pids = {int(row[-1]) for row in rows}
        assert (pids == {os.getpid()}) == isinstance(runner, Sql), pids
        found[type(runner).__name__] = sorted((row[:-1] for row in rows), key=repr)
        for table in ("records_in", "judged"):
            runner.drop_table(table)
    assert found["Sql"] == found["SparkSql"]
    groups = records.groupby(["id_type", "id_value"])
    assert len(found["Sql"]) == 3 * groups.ngroups
    smallest_as_text = {key: min(str(n) for n in group["node_id"]) for key, group in groups}
    summaries = [row for row in found["Sql"] if row[3] is not None]
    assert all(row[4] == smallest_as_text[(row[0], row[1])] for row in summaries)
    # The last row is the largest node as text, its NULL name given as None.
    last_name = {
        key: group.assign(text=group["node_id"].astype(str)).sort_values("text")["first_name"].iloc[-1]
        for key, group in groups
    }
    assert all(row[5] == last_name[(row[0], row[1])] for row in summaries)
    assert {row[5] for row in summaries} == {"ann", "bob", None}


def test_a_segment_condition_runs_in_sandboxes_where_the_profiles_are(runners) -> None:  # noqa: ANN001
    """A segment's condition (DuckDB SQL, in a sandbox) picks the same customers on both engines; on Spark
    it is evaluated batch by batch in the executors' Python (`map_arrow`), and a condition that fails on
    the data fails naming the segment, without the value, as on DuckDB."""
    import os

    import pyarrow as pa

    from cdp_assets.segments.assets import select_members
    from resources.conditions import ConditionError

    rng = random.Random(9)
    profiles = pd.DataFrame(
        {
            "customer_id": [f"c{n:05d}" for n in range(3_000)],
            "order_count": [rng.choice([0, 1, 2, 3, 8, None]) for _ in range(3_000)],
            "last_order_at": [datetime(2024, 6, 1) + timedelta(hours=rng.randrange(9_000)) for _ in range(3_000)],
            "email": [rng.choice(["ann@example.org", "Bob@Example.com", None]) for _ in range(3_000)],
        }
    )
    condition = "order_count >= 2 and last_order_at >= timestamp '2025-01-01' and lower(email) like '%example.com'"
    found = {}
    for runner in runners:
        with runner.registered("profiles_frame", profiles):
            runner.create_table_as("cdp.golden_profiles", "select * from profiles_frame")
        runner.create_table_as(
            "scope", "select customer_id from cdp.golden_profiles where order_count = 8", temporary=True
        )
        select_members(runner, condition, "segments[0] (buyers)", "members")
        select_members(runner, condition, "segments[0] (buyers)", "scoped", "scope")
        found[type(runner).__name__] = (
            runner.rows("select customer_id from members order by 1"),
            runner.rows("select customer_id from scoped order by 1"),
        )
        with pytest.raises(ConditionError, match=r"^segments\[1\] \(broken\): the condition failed on the data: Conv"):
            select_members(runner, "cast(email as integer) > 0", "segments[1] (broken)", "never")
        with pytest.raises(SqlError):  # the evaluation's own table is gone, on failure too
            runner.rows("select * from never_evaluated")
        runner.map_arrow(
            "where_run",
            "select customer_id from cdp.golden_profiles",
            lambda t: pa.table({"pid": [str(os.getpid())]}),
            ["pid"],
        )
        pids = {int(pid) for (pid,) in runner.rows("select distinct pid from where_run")}
        assert (pids == {os.getpid()}) == isinstance(runner, Sql), pids
        for table in ("members", "scoped", "scope", "where_run", "cdp.golden_profiles"):
            runner.drop_table(table)
    assert found["Sql"] == found["SparkSql"]
    members, scoped = found["Sql"]
    expected = profiles[
        (profiles["order_count"] >= 2)
        & (profiles["last_order_at"] >= datetime(2025, 1, 1))
        & (profiles["email"] == "Bob@Example.com")
    ]
    assert [c for (c,) in members] == sorted(expected["customer_id"]) and len(members) > 100
    assert [c for (c,) in scoped] == sorted(expected[expected["order_count"] == 8]["customer_id"])


def test_the_session_takes_the_users_spark_settings_over_the_defaults() -> None:
    """`spark_session(conf=...)` (`warehouse.spark.conf`, as its resource passes it): the settings replace the
    platform's defaults, and the driver's memory reaches the JVM's start. A process of its own, as a
    session's JVM starts once per process (the `spark` fixture holds this one's). Without a warehouse folder
    the session gets a temporary one, gone when the process has ended."""
    import subprocess
    import sys

    conf = {"spark.sql.shuffle.partitions": "7", "spark.driver.memory": "2g", "spark.sql.adaptive.enabled": "false"}
    probe = f"""
from resources.spark.runner import spark_session
s = spark_session(conf={conf!r})
print(s.conf.get("spark.sql.shuffle.partitions"), s.conf.get("spark.sql.adaptive.enabled"),
      s.conf.get("spark.sql.session.timeZone"), s.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20,
      s.conf.get("spark.sql.warehouse.dir"))
"""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    partitions, adaptive, zone, heap_mb, folder = done.stdout.split()
    assert (partitions, adaptive, zone) == ("7", "false", "UTC")
    assert 1536 < int(heap_mb) <= 2048  # Spark's default driver (1g) gives a JVM heap of 1024 MB
    folder = folder.removeprefix("file:")
    assert Path(folder).name.startswith("cdp-spark-") and not Path(folder).exists()


def test_a_session_keeping_its_tables_leaves_nothing_in_the_temporary_folder(tmp_path: Path) -> None:
    """A session with the Hive catalogue (the Spark warehouse's) gets its Hive resources folder in the
    warehouse's folder: Hive's default is a new `<session id>_resources` in the JVM's temporary folder for
    every session, which nothing removes. A process of its own with a temporary folder of its own."""
    import subprocess
    import sys

    java_tmp, warehouse = tmp_path / "java_tmp", tmp_path / "warehouse"
    java_tmp.mkdir()
    conf = {"spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={java_tmp} -Dderby.system.home={warehouse}"}
    probe = f"""
from resources.spark.runner import spark_session
s = spark_session(warehouse_dir={str(warehouse)!r}, catalog="hive", conf={conf!r})
s.sql("create table kept as select 1 as a")
print(s.sql("select count(*) from kept").collect()[0][0])
"""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]
    assert not list(java_tmp.glob("*_resources"))
    assert (warehouse / "hive_resources").is_dir()


def test_a_file_export_is_the_same_to_the_byte_and_its_rows_never_gather_on_the_driver(runners, tmp_path: Path) -> None:  # noqa: ANN001
    """Spark's executors write an export's rows as parts, which DuckDB's writer streams into the one file:
    the CSV and Parquet files are byte for byte DuckDB's, in the query's order, and no part is left."""
    rng = random.Random(12)
    n = 5_000
    rows = pd.DataFrame(
        {
            "id": list(range(n)),
            "name": [rng.choice(['Ann "Nan" Lee', "Bo, Jr.", "Zoë\nNew line", "plain", None]) for _ in range(n)],
            "amount": [rng.choice(["12.30", "0.05", "-7.00", None]) for _ in range(n)],
            "score": [rng.choice([0.1, 1 / 3, 2.5e-7, None]) for _ in range(n)],
            "seen_at": [datetime(2024, 1, 1) + timedelta(seconds=rng.randrange(10**8)) for _ in range(n)],
            "flag": [rng.choice([True, False, None]) for _ in range(n)],
        }
    )
    # Several parts, as a large export has: small data would be coalesced into one.
    spark = runners[1].spark
    settings = {"spark.sql.adaptive.coalescePartitions.enabled": "false", "spark.sql.shuffle.partitions": "5"}
    before = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        files = {}
        for runner in runners:
            with runner.registered("export_frame", rows):
                runner.create_table_as(
                    "cdp.export_rows",
                    """select cast(id as integer) as id, name, cast(amount as decimal(12, 2)) as amount, score,
                              cast(seen_at as timestamp) as seen_at, cast(seen_at as date) as seen_on, flag,
                              case when id % 3 = 0 then [name, 'x'] end as tags
                       from export_frame""",
                )
            kind = type(runner).__name__
            for file_format in ("csv", "parquet"):
                for scope, where in (("all", "true"), ("none", "false")):
                    path = tmp_path / kind / f"{scope}.{file_format}"
                    path.parent.mkdir(exist_ok=True)
                    written = runner.export(
                        f"select * from cdp.export_rows where {where} order by seen_at desc, id", str(path), file_format
                    )
                    assert written == (n if scope == "all" else 0)
                    files[kind, scope, file_format] = path.read_bytes()
            # A CSV file for Excel where the decimal separator is a comma: cells separated by ';'.
            semicolons = tmp_path / kind / "semicolons.csv"
            runner.export("select * from cdp.export_rows order by id", str(semicolons), "csv", delimiter=";")
            files[kind, "all", "semicolons"] = semicolons.read_bytes()
            assert sorted(p.name for p in (tmp_path / kind).iterdir()) == [
                "all.csv",
                "all.parquet",
                "none.csv",
                "none.parquet",
                "semicolons.csv",
            ]
            runner.drop_table("cdp.export_rows")
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)
    for scope in ("all", "none"):
        for file_format in ("csv", "parquet"):
            assert files["SparkSql", scope, file_format] == files["Sql", scope, file_format], (scope, file_format)
    lines = files["Sql", "all", "csv"].decode().splitlines()
    assert lines[0] == "id,name,amount,score,seen_at,seen_on,flag,tags" and len(lines) > n
    assert files["SparkSql", "all", "semicolons"] == files["Sql", "all", "semicolons"]
    assert files["Sql", "all", "semicolons"].decode().startswith("id;name;amount;score;seen_at;seen_on;flag;tags\n")


def test_a_plan_spark_runs_interpreted_for_its_size_logs_no_java_stack_trace(spark) -> None:  # noqa: ANN001
    """A CASE of thousands of branches (cleaning's are long) outgrows the JVM's 64 KB method limit: Spark runs
    it interpreted with the same rows, and its logger of generated code, which would print the compile error
    with a Java stack trace of hundreds of lines (read as a failed run), is silent. (The JVM writes to the
    stderr it was started with, which the test cannot capture, so the logger's level is what is asserted.)"""
    cases = " ".join(f"when v = 'x{i}' then regexp_replace(v, 'a{i}', 'b{i}')" for i in range(3000))
    rows = spark.sql(f"select case {cases} else v end as w from (select cast(id as string) as v from range(3))")
    assert [r.w for r in rows.collect()] == ["0", "1", "2"]
    jvm = spark.sparkContext._jvm
    logger = jvm.org.apache.logging.log4j.LogManager.getLogger(CODEGEN_LOGGER)
    assert logger.getLevel().toString() == "OFF"
