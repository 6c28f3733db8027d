"""Segment and trait conditions can select rows and nothing else: no files, no other tables, no settings.

Load-time tests go through `load_config` with the repository's cdp.yaml changed in one place; run-time
tests use a real DuckDB file and a real materialization of the segment assets.
"""

import re
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.profiles.assets import build_profiles
from cdp_assets.segments.assets import build_membership, build_segment_assets
from resources.config import CDPConfig, ConfigError, load_config
from resources.sql import Sql
from resources.warehouse import Warehouse, bootstrap
from tests.fixtures import REPO
from tests.test_profiles import EVENTS, TRANSACTIONS, make_config, warehouse

SECRET = "root:x:0:0:secret-line"


def _config_file(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "cdp.yaml").read_text())
    mutate(raw)
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def landing_file(tmp_path: Path) -> Path:
    """A landing-style CSV with a readable e-mail and event column, as an attacker would target."""
    path = tmp_path / "landing" / "crm.csv"
    path.parent.mkdir()
    path.write_text(f"Email,event\n{SECRET}@example.com,{SECRET}\n")
    return path


# Each of these bound against the empty profile or events table, so validation accepted it before.
HOSTILE = [
    ("exists (select 1 from read_csv('/etc/passwd'))", r"read_csv\(\.\.\.\)"),
    ("exists (select 1 from glob('/root/**'))", r"glob\(\.\.\.\)"),
    ("(select content from read_text('/etc/passwd')) like '%root%'", r"read_text\(\.\.\.\)"),
    ("exists (select 1 from query('select 42'))", r"query\(\.\.\.\)"),
    ("getenv('HOME') is not null", r"getenv\(\.\.\.\)"),
    ("current_setting('home_directory') is not null", r"current_setting\(\.\.\.\)"),
    ("{column} in (select {column} from {table})", r"a subquery"),
    ("{column} in (select {column} from read_csv('{landing}'))", r"read_csv\(\.\.\.\)"),
]


@pytest.mark.parametrize(("condition", "construct"), HOSTILE)
@pytest.mark.unit
def test_segment_condition_reaching_outside_the_profile_is_refused_at_load(
    tmp_path, landing_file, condition, construct
):
    where = condition.format(column="email", table="golden_profiles", landing=landing_file)
    path = _config_file(tmp_path, lambda c: c["segments"][3].update(where=where))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "segments[3] (champions).where: " in message
    assert re.search(construct + r".* (is|are) not allowed: conditions may only use the profile's", message), message


@pytest.mark.parametrize(("condition", "construct"), HOSTILE)
@pytest.mark.unit
def test_trait_condition_reaching_outside_its_table_is_refused_at_load(tmp_path, landing_file, condition, construct):
    where = condition.format(column="event", table="events", landing=landing_file)
    path = _config_file(tmp_path, lambda c: c["profiles"]["traits"][2].update(where=where))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "profiles.traits[2] (product_views_last_7_days).where: " in message
    assert re.search(construct + r".* (is|are) not allowed: conditions may only use the events", message), message


@pytest.mark.parametrize("name", ["user", "current_role", "current_schema"])
@pytest.mark.unit
def test_a_name_that_is_not_a_column_is_refused_even_where_duckdb_would_call_it(tmp_path, name):
    """DuckDB reads these bare names as functions, so they bind against any table; they are not columns."""
    path = _config_file(tmp_path, lambda c: c["segments"][0].update(where=f"{name} is not null"))
    with pytest.raises(ConfigError, match=rf"segments\[0\] \(high_value\)\.where: unknown column '{name}'"):
        load_config(path)


# The conditions the documentation shows; each must appear there and be accepted.
DOCUMENTED_SEGMENTS = [
    "lifetime_revenue >= 500 and consent_email_marketing",
    "product_views_last_7_days > 0 and coalesce(days_since_last_order > 30, true)",
    "order_count > 0 and days_since_last_order > 90",
    "rfm_recency >= 4 and rfm_frequency >= 4 and rfm_monetary >= 4",
    "region in ('NY', 'NJ') and date_of_birth <= traits_as_of - interval 21 years",
    "len(emails) > 1",
]
DOCUMENTED_TRAITS = ["event = 'Product Viewed'", "source = 'support_tickets' and status in ('open', 'pending')"]


@pytest.mark.unit
def test_documented_and_demo_conditions_are_accepted(tmp_path):
    docs = (REPO / "docs" / "configuration.md").read_text() + (REPO / "README.md").read_text()
    for condition in DOCUMENTED_SEGMENTS + DOCUMENTED_TRAITS:
        assert f"`{condition}`" in docs, condition

    def mutate(raw: dict) -> None:
        raw["segments"] += [{"name": f"documented_{i}", "where": w} for i, w in enumerate(DOCUMENTED_SEGMENTS)]
        raw["profiles"]["traits"] += [
            {"name": f"documented_{i}", "from": "events", "aggregate": "count", "where": w}
            for i, w in enumerate(DOCUMENTED_TRAITS)
        ]

    config = load_config(_config_file(tmp_path, mutate))
    assert len(config.segments) == 5 + len(DOCUMENTED_SEGMENTS)


# One condition per allowed function, each true for the first row of `_SAMPLE` only.
FUNCTION_EXAMPLES = {
    "coalesce": "coalesce(consent_email_marketing, false)",
    "ifnull": "ifnull(consent_email_marketing, false)",
    "nullif": "nullif(first_name, 'Bo') is not null",
    "if": "if(order_count > 1, true, false)",
    "lower": "lower(first_name) = 'ann'",
    "upper": "upper(first_name) = 'ANN'",
    "trim": "trim(first_name) = 'Ann'",
    "ltrim": "ltrim(first_name) = 'Ann'",
    "rtrim": "rtrim(first_name) = 'Ann'",
    "length": "length(first_name) = 3",
    "len": "len(emails) > 1",
    "concat": "concat(first_name, region) = 'AnnNY'",
    "concat_ws": "concat_ws('-', first_name, region) = 'Ann-NY'",
    "left": "left(first_name, 1) = 'A'",
    "right": "right(first_name, 2) = 'nn'",
    "substring": "substring(first_name, 2) = 'nn'",
    "substr": "substr(first_name, 1, 1) = 'A'",
    "replace": "replace(email, 'gmail', 'x') = 'ann@x.com'",
    "reverse": "reverse(first_name) = 'nnA'",
    "split_part": "split_part(email, '@', 2) = 'gmail.com'",
    "strpos": "strpos(email, '@') = 4",
    "position": "position('@' in email) = 4",
    "starts_with": "starts_with(email, 'ann')",
    "ends_with": "ends_with(email, 'gmail.com')",
    "prefix": "prefix(email, 'ann')",
    "suffix": "suffix(email, 'gmail.com')",
    "contains": "contains(email, 'gmail')",
    "regexp_matches": "regexp_matches(email, 'gmail')",
    "regexp_full_match": "regexp_full_match(first_name, 'A..')",
    "regexp_extract": "regexp_extract(email, '@(.*)', 1) = 'gmail.com'",
    "regexp_replace": "regexp_replace(email, 'gmail', 'x') = 'ann@x.com'",
    "date_diff": "date_diff('day', last_order_at, traits_as_of) between 20 and 40",
    "datediff": "datediff('year', date_of_birth, traits_as_of) = 45",
    "date_trunc": "date_trunc('month', last_order_at) = timestamp '2025-06-01'",
    "date_part": "date_part('year', date_of_birth) = 1980",
    "datepart": "datepart('month', date_of_birth) = 2",
    "extract": "extract(year from date_of_birth) = 1980",
    "year": "year(date_of_birth) = 1980",
    "quarter": "quarter(date_of_birth) = 1",
    "month": "month(date_of_birth) = 2",
    "week": "week(date_of_birth) = 5",
    "day": "day(date_of_birth) = 3",
    "dayofweek": "dayofweek(date_of_birth) = 0",
    "hour": "hour(last_order_at) = 10",
    "last_day": "last_day(date_of_birth) = date '1980-02-29'",
    "make_date": "make_date(1980, 2, 3) = date_of_birth",
    "age": "age(date_of_birth) > interval 40 years",
    "strftime": "strftime(last_order_at, '%Y') = '2025'",
    "current_date": "current_date > date_of_birth",
    "current_timestamp": "current_timestamp > date_of_birth",
    "now": "now() > date_of_birth",
    "today": "today() > date_of_birth",
    "list_contains": "list_contains(sources, 'crm')",
    "list_has": "list_has(sources, 'crm')",
    "array_contains": "array_contains(sources, 'crm')",
    "array_has": "array_has(sources, 'crm')",
    "array_length": "array_length(emails) = 2",
    "list_has_any": "list_has_any(sources, ['shop', 'web'])",
    "list_has_all": "list_has_all(sources, ['crm', 'shop'])",
    "list_position": "list_position(sources, 'shop') = 2",
    "list_extract": "list_extract(sources, 1) = 'crm'",
    "abs": "abs(-order_count) = 3",
    "round": "round(lifetime_revenue, 1) = 120.5",
    "floor": "floor(lifetime_revenue) = 120",
    "ceil": "ceil(lifetime_revenue) = 121",
    "greatest": "greatest(order_count, 2) = 3",
    "least": "least(order_count, 5) = 3",
    "sign": "sign(order_count) = 1",
}
OPERATOR_EXAMPLES = [
    "case when order_count > 1 then true else false end",
    "try_cast(order_count as varchar) = '3' and cast(lifetime_revenue as decimal(10, 2)) = 120.50",
    "first_name || region = 'AnnNY' and first_name ilike 'a%' and first_name like 'A%'",
    "first_name similar to 'A.*' and first_name ~ '^A'",
    "order_count between 1 and 5 and order_count // 2 = 1 and order_count % 2 = 1 and -order_count < 0",
    "region in ('NY', 'NJ') and region is not null and first_name is distinct from 'Bo'",
    "sources[1] = 'crm' and emails[1:1] = ['ann@gmail.com']",
    "date_of_birth <= traits_as_of - interval 21 years and date '1980-02-03' = date_of_birth",
    "'{\"a\": \"b\"}' ->> '$.a' = 'b' and lifetime_revenue / nullif(order_count, 0) > 40",
]
_SAMPLE = """create table golden_profiles as select * from (values
    ('Ann', 'ann@gmail.com', ['ann@gmail.com', 'a@x.com'], ['crm', 'shop'], date '1980-02-03',
     timestamp '2025-06-01 10:00', 3::bigint, 120.5::double, true, 'NY', timestamp '2025-06-30'),
    ('Bo', null, []::varchar[], ['pos'], null, timestamp '2024-01-31 23:00', 0::bigint, 0::double, null, 'CA',
     timestamp '2025-06-30'))
    t(first_name, email, emails, sources, date_of_birth, last_order_at, order_count, lifetime_revenue,
      consent_email_marketing, region, traits_as_of)"""


@pytest.mark.parametrize("condition", [*FUNCTION_EXAMPLES.values(), *OPERATOR_EXAMPLES])
@pytest.mark.unit
def test_allowed_conditions_mean_what_they_say_after_the_check(condition):
    """What runs is SQL regenerated from the checked tree; it must select what the text as written does."""
    from resources.conditions import check_condition

    conn = duckdb.connect(":memory:")
    conn.execute(_SAMPLE)
    checked = check_condition(condition, conn.sql("select * from golden_profiles").columns, "the profile's")
    query = "select first_name from golden_profiles where ({}) order by 1"
    assert conn.execute(query.format(checked)).fetchall() == [("Ann",)]
    assert conn.execute(query.format(condition)).fetchall() == [("Ann",)]


@pytest.mark.unit
def test_every_allowed_function_has_an_example_and_is_documented():
    from resources.conditions import ALLOWED_FUNCTIONS

    assert sorted(FUNCTION_EXAMPLES) == sorted(ALLOWED_FUNCTIONS)
    docs = (REPO / "docs" / "configuration.md").read_text()
    assert [name for name in ALLOWED_FUNCTIONS if f"`{name}`" not in docs] == []


def _profiles_warehouse(path: Path) -> Warehouse:
    """A warehouse file with three hand-made golden profiles (only the columns the segments read)."""
    with duckdb.connect(str(path)) as conn:
        bootstrap(conn)
        conn.execute(
            """create table cdp.golden_profiles (customer_id varchar, first_name varchar, email varchar,
                   emails varchar[], sources varchar[], date_of_birth date, traits_as_of timestamp,
                   consent_email_marketing boolean)"""
        )
        conn.executemany(
            "insert into cdp.golden_profiles values (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("C1", "Ann", "ANN@Gmail.com", ["ann@gmail.com", "a@x.com"], ["crm", "shop"], date(1980, 1, 1),
                 datetime(2025, 6, 30), True),
                ("C2", "Bo", "bo@x.com", ["bo@x.com"], ["crm"], date(2010, 1, 1), datetime(2025, 6, 30), None),
                ("C3", "Cy", "cy@gmail.com", ["cy@gmail.com", "c@y.com"], ["pos"], date(1990, 5, 5),
                 datetime(2025, 6, 30), None),
            ],
        )  # fmt: skip
    return Warehouse(database=str(path))


def _segments_config(tmp_path: Path, segments: list[dict]) -> CDPConfig:
    raw = {
        "sources": [
            {"name": "a", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id",
             "consent": {"email_marketing": "optin"}},
        ],
        "segments": segments,
    }  # fmt: skip
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@pytest.mark.dagster
def test_segments_with_allowed_functions_materialize(tmp_path):
    config = _segments_config(
        tmp_path,
        [
            {"name": "gmail_crm", "where": "lower(email) like '%@gmail.com' and list_contains(sources, 'crm')"},
            {
                "name": "adults_opted_in",
                "where": "date_diff('year', date_of_birth, traits_as_of) >= 21 "
                "and coalesce(consent_email_marketing, false)",
            },
            {"name": "several_emails", "where": "len(emails) > 1 and not starts_with(first_name, 'B')"},
        ],
    )
    result = dg.materialize(
        build_segment_assets(config), resources={"warehouse": _profiles_warehouse(tmp_path / "w.duckdb")}
    )
    assert result.success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        members = conn.execute("select segment, customer_id from cdp.segment_membership order by 1, 2").fetchall()
    assert members == [
        ("adults_opted_in", "C1"),
        ("gmail_crm", "C1"),
        ("several_emails", "C1"),
        ("several_emails", "C3"),
    ]


@pytest.mark.dagster
def test_a_segment_failing_on_the_data_is_named_without_the_data(tmp_path):
    config = _segments_config(
        tmp_path,
        [{"name": "fine", "where": "len(emails) > 1"}, {"name": "numeric_names", "where": "first_name::integer > 0"}],
    )
    result = dg.materialize(
        build_segment_assets(config),
        resources={"warehouse": _profiles_warehouse(tmp_path / "w.duckdb")},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error.to_string()  # the message and every cause, as the event log keeps it
    assert "segments[1] (numeric_names): the condition failed on the data: Conversion Error" in error
    for value in ("Ann", "Bo", "Cy"):
        assert value not in error


@pytest.mark.stage
def test_a_trait_failing_on_the_data_is_named_without_the_data(tmp_path):
    from resources.conditions import ConditionError

    config = make_config(tmp_path, traits=[{"name": "numeric_events", "from": "events", "aggregate": "count",
                                             "where": "event::integer > 0"}])  # fmt: skip
    conn = warehouse([{"source": "a"}], transactions=TRANSACTIONS, events=EVENTS)
    with pytest.raises(ConditionError) as info:
        build_profiles(Sql(conn), config)
    message = str(info.value)
    assert message.startswith("profiles.traits[0] (numeric_events): the condition failed on the data: Conversion")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    for value in ("Product Viewed", "Page", "'open'"):
        assert value not in message


@pytest.mark.stage
def test_a_condition_bypassing_load_is_refused_at_run_time(tmp_path, landing_file):
    """A configuration built without load_config still cannot run a forbidden condition."""
    from resources.conditions import ConditionError

    config = _segments_config(tmp_path, [{"name": "leak", "where": "email is not null"}])
    hostile = f"email in (select lower(Email) from read_csv('{landing_file}'))"
    config = config.model_copy(update={"segments": [config.segments[0].model_copy(update={"where": hostile})]})
    _profiles_warehouse(tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        with pytest.raises(ConditionError, match=r"segments\[0\] \(leak\)\.where: .*read_csv\(\.\.\.\)"):
            build_membership(Sql(conn), config)


@pytest.mark.parametrize(
    "condition",
    [
        "exists (select 1 from read_csv('{file}'))",
        "exists (select 1 from glob('{folder}/*'))",
        "exists (select 1 from read_text('{file}'))",
        "exists (select 1 from read_csv('{file}', header = true) where Email like '%secret%')",
    ],
)
@pytest.mark.stage
def test_segment_conditions_run_where_no_file_can_be_read(tmp_path, landing_file, condition):
    """Past the allow-list (called directly), a condition still cannot read the file it names."""
    from cdp_assets.segments.assets import select_members
    from resources.conditions import ConditionError, sandbox

    sql = condition.format(file=landing_file, folder=landing_file.parent)
    _profiles_warehouse(tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        # On the warehouse connection the same condition reads the file (every profile matches): that is
        # what the sandbox prevents.
        assert conn.execute(f"select count(*) from cdp.golden_profiles where {sql}").fetchall() == [(3,)]
        with pytest.raises(ConditionError, match=r"segments\[0\] \(leak\): the condition failed on the data: Perm"):
            select_members(Sql(conn), sql, "segments[0] (leak)", "current_members")
    box = sandbox("America/New_York")
    assert box.value("select current_setting('TimeZone')") == "America/New_York"
    for statement in (
        "set enable_external_access = true",
        "set lock_configuration = false",
        "set TimeZone = 'UTC'",
        f"attach '{tmp_path / 'other.duckdb'}'",
        "install httpfs",
    ):
        with pytest.raises(duckdb.Error):
            box.execute(statement)
    box.close()


@pytest.mark.unit
def test_failure_messages_lose_quoted_values_and_numbers():
    from resources.conditions import failure_message

    error = duckdb.ConversionException(
        "Conversion Error: Could not convert string 'Ann O''Neil' to INT32 when casting\nLINE 1: Ann O'Neil"
    )
    assert failure_message(error) == "Conversion Error: Could not convert string '…' to INT32 when casting"
    error = duckdb.InvalidInputException('Invalid Input Error: Could not parse string "Ann" according to "%Y" 1250.5')
    assert failure_message(error) == "Invalid Input Error: Could not parse string '…' according to '…' …"


@pytest.mark.stage
def test_column_names_match_whatever_their_case(tmp_path):
    config = _segments_config(tmp_path, [{"name": "shouting", "where": "LOWER(EMAIL) like '%@gmail.com'"}])
    _profiles_warehouse(tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        build_membership(Sql(conn), config)
        members = conn.execute("select customer_id from cdp.segment_membership order by 1").fetchall()
    assert members == [("C1",), ("C3",)]


@pytest.mark.unit
def test_a_json_path_becomes_a_read_of_that_key_and_cannot_leave_its_string() -> None:
    from resources.conditions import ConditionError, check_condition

    columns, json_columns = ["event", "properties", "context"], ["properties", "context"]
    checked = check_condition(
        """properties."it's'; select 1 --" = 'x' and context.page.path like '/shop%'""",
        columns,
        "the events table's",
        json_columns,
    )
    # The key is inside the JSON path literal, its quote doubled: one string, whatever the key holds.
    assert checked == (
        """JSON_EXTRACT_STRING("properties", '$."it''s''; select 1 --"') = 'x' """
        """AND JSON_EXTRACT_STRING("context", '$."page"."path"') LIKE '/shop%'"""
    )
    with duckdb.connect() as conn:
        conn.execute(
            """create table t as
               select '{"it''s''; select 1 --": "x"}'::json as properties, null::json context, null event"""
        )
        assert conn.execute(f"select count(*) from t where {checked.split(' AND ')[0]}").fetchone() == (1,)
    # Profile columns hold no JSON: a dotted name there is a column of another table.
    with pytest.raises(ConditionError, match=r"email\.domain \(a column of another table\)"):
        check_condition("email.domain = 'x'", ["email"], "the profile's")


@pytest.mark.parametrize(
    ("where", "kind"), [("email", "VARCHAR"), ("first_seen_at", "TIMESTAMP"), ("order_count", "BIGINT")]
)
@pytest.mark.unit
def test_a_condition_that_is_not_true_or_false_is_refused_at_load(tmp_path, where, kind):
    """A row of NULLs casts to BOOLEAN, so binding alone passed these; the first real value fails or is truthy."""

    def mutate(raw: dict) -> None:
        raw["segments"][0]["where"] = where
        raw["profiles"]["traits"][2]["where"] = "event"

    with pytest.raises(ConfigError) as info:
        load_config(_config_file(tmp_path, mutate))
    message = str(info.value)
    assert f"segments[0] (high_value).where: the condition gives a {kind} value, not true or false" in message
    assert "profiles.traits[2] (product_views_last_7_days).where: the condition gives a VARCHAR value" in message


@pytest.mark.parametrize("where", ["(" * 3000 + "order_count > 0" + ")" * 3000, "not " * 5000 + "order_count > 0"])
@pytest.mark.unit
def test_a_condition_nested_past_what_the_parser_can_read_is_refused_naming_the_segment(tmp_path, where):
    path = _config_file(tmp_path, lambda c: c["segments"][3].update(where=where))
    with pytest.raises(ConfigError, match=r"segments\[3\] \(champions\)\.where: nested too deeply to read"):
        load_config(path)
