"""Survivorship, provenance, consent, traits and segment history, on small hand-made warehouses.

Each case writes the cleaned tables and the identity map of a real in-memory DuckDB database directly,
then runs the same functions the assets run, so a rule is tested without generating or cleaning data.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from cdp_assets.profiles.assets import build_profiles
from cdp_assets.segments.assets import build_membership
from resources.config import CDPConfig, ConfigError, load_config
from resources.sql import Sql
from resources.warehouse import bootstrap

pytestmark = pytest.mark.stage

AS_OF = datetime(2025, 6, 30)
LOADED = datetime(2025, 7, 1)


def make_config(tmp_path: Path, **profiles: object) -> CDPConfig:
    raw = {
        "sources": [
            {
                "name": n,
                "format": "csv",
                "glob": f"{n}/*.csv",
                "role": "person",
                "trust": t,
                "record_id": "id",
                "consent": {"email_marketing": "optin"},
            }
            for n, t in (("a", 90), ("a1", 50), ("a2", 50), ("b", 50), ("c", 10))
        ],
        "profiles": {"as_of": AS_OF.isoformat(), **profiles},
        "segments": [{"name": "big", "where": "lifetime_revenue >= 500"}],
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def warehouse(
    records: list[dict], transactions: list[tuple] = (), events: list[tuple] = (), consent: list[tuple] = ()
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse holding one customer `C` made of `records`."""
    conn = duckdb.connect(":memory:")
    bootstrap(conn)
    conn.execute(
        "create or replace table cdp.identity_map (source varchar, source_record_id varchar, "
        "customer_id varchar, role varchar)"
    )
    for i, record in enumerate(records):
        row = {
            "source_record_id": f"r{i}",
            "file": "f.csv",
            "row_number": i + 2,
            "loaded_at": LOADED,
            "trust": {"a": 90, "a1": 50, "a2": 50, "b": 50, "c": 10}[record["source"]],
            "is_latest": True,
            **record,
        }
        columns = ", ".join(row)
        conn.execute(
            f"insert into clean.person_records ({columns}) values ({', '.join('?' * len(row))})", list(row.values())
        )
        conn.execute(
            "insert into cdp.identity_map values (?, ?, 'C', 'person')", [row["source"], row["source_record_id"]]
        )
    for i, (occurred_at, amount, status) in enumerate(transactions):
        conn.execute(
            "insert into clean.transactions values ('shop', ?, ?, ?, ?, 'USD', ?, 'o.jsonl', ?, ?)",
            [f"o{i}", f"o{i}", occurred_at, amount, status, i + 1, LOADED],
        )
        conn.execute("insert into cdp.identity_map values ('shop', ?, 'C', 'transactions')", [f"o{i}"])
    for i, (occurred_at, event, source) in enumerate(events):
        conn.execute(
            "insert into clean.events (source, event_id, source_record_id, event, occurred_at, status, file, "
            "row_number, loaded_at) values (?, ?, 'anon', ?, ?, null, 'e.jsonl', ?, ?)",
            [source, f"e{i}", event, occurred_at, i + 1, LOADED],
        )
    if events:
        conn.execute("insert into cdp.identity_map select distinct source, 'anon', 'C', 'events' from clean.events")
    for source, record_id, granted, stated_at in consent:
        conn.execute(
            "insert into clean.consent_statements values (?, ?, 'email_marketing', ?, ?, 'f.csv', 2)",
            [source, record_id, granted, stated_at],
        )
    return conn


def one(conn: duckdb.DuckDBPyConnection, query: str):
    return conn.execute(query).fetchall()


OLD, NEW = datetime(2020, 1, 1), datetime(2025, 1, 1)


@pytest.mark.parametrize(
    ("rule", "records", "expected", "winner"),
    [
        (
            "source_priority",
            [
                {"source": "a", "email": "a@x.com", "updated_at": OLD},
                {"source": "b", "email": "b@x.com", "updated_at": NEW},
            ],
            "a@x.com",
            "r0",
        ),
        (
            {"rule": "source_priority", "sources": ["b", "a"]},
            [
                {"source": "a", "email": "a@x.com", "updated_at": OLD},
                {"source": "b", "email": "b@x.com", "updated_at": NEW},
            ],
            "b@x.com",
            "r1",
        ),
        (
            "most_recent",
            [
                {"source": "a", "email": "a@x.com", "updated_at": OLD},
                {"source": "b", "email": "b@x.com", "updated_at": NEW},
            ],
            "b@x.com",
            "r1",
        ),
        (
            "most_recent",
            [
                {"source": "b", "email": "b@x.com", "updated_at": NEW},  # same time: priority decides
                {"source": "a", "email": "a@x.com", "updated_at": NEW},
            ],
            "a@x.com",
            "r1",
        ),
        (
            "most_recent",
            [
                # no update time: older than any dated record (its load time is no property of the data)
                {"source": "a", "email": "a@x.com", "updated_at": None},
                {"source": "b", "email": "b@x.com", "updated_at": OLD},
            ],
            "b@x.com",
            "r1",
        ),
        (
            "most_frequent",
            [
                {"source": "a", "email": "a@x.com"},
                {"source": "c", "email": "b@x.com"},
                {"source": "b", "email": "b@x.com"},
            ],
            "b@x.com",
            "r2",
        ),
        ("most_frequent", [{"source": "b", "email": "b@x.com"}, {"source": "a", "email": "a@x.com"}], "a@x.com", "r1"),
        (
            "longest",
            [{"source": "a", "email": "a@x.com"}, {"source": "c", "email": "longer@x.com"}],
            "longer@x.com",
            "r1",
        ),
        (
            "first_seen",
            [
                {"source": "a", "email": "a@x.com", "updated_at": NEW},
                {"source": "c", "email": "c@x.com", "updated_at": OLD},
            ],
            "c@x.com",
            "r1",
        ),
        ("non_null", [{"source": "a", "email": None}, {"source": "c", "email": "c@x.com"}], "c@x.com", "r1"),
        (
            "source_priority",
            [
                {"source": "a2", "email": "two@x.com"},  # everything equal: source name decides
                {"source": "a1", "email": "one@x.com"},
            ],
            "one@x.com",
            "r1",
        ),
        ("source_priority", [{"source": "a", "email": None}], None, None),
    ],
)
def test_email_survivorship(tmp_path, rule, records, expected, winner):
    config = make_config(tmp_path, survivorship={"attributes": {"email": rule}})
    conn = warehouse(records)
    build_profiles(Sql(conn), config)
    assert one(conn, "select email from cdp.golden_profiles") == [(expected,)]
    provenance = one(conn, "select value, source_record_id, rule from cdp.profile_provenance where attribute = 'email'")
    rule_name = rule if isinstance(rule, str) else rule["rule"]
    assert provenance == ([(expected, winner, rule_name)] if expected else [])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("source_priority", ("Jon", None, None, "r0")), ("longest", ("John", "Q", "Smith", "r1"))],
)
def test_name_parts_come_from_one_record(tmp_path, rule, expected):
    config = make_config(tmp_path, survivorship={"attributes": {"name": rule}})
    conn = warehouse(
        [
            {"source": "a", "first_name": "Jon"},
            {"source": "c", "first_name": "John", "middle_name": "Q", "last_name": "Smith"},
        ]
    )
    build_profiles(Sql(conn), config)
    assert one(conn, "select first_name, middle_name, last_name from cdp.golden_profiles")[0] == expected[:3]
    assert one(conn, "select source_record_id from cdp.profile_provenance where attribute = 'name'") == [(expected[3],)]


def test_address_parts_come_from_one_record_and_all_addresses_are_kept(tmp_path):
    config = make_config(tmp_path)
    conn = warehouse(
        [
            {"source": "a", "postal_code": "02134"},
            {"source": "c", "address_line1": "1 Elm St", "city": "Boston", "postal_code": "02135"},
        ]
    )
    build_profiles(Sql(conn), config)
    assert one(conn, "select address_line1, city, postal_code, addresses from cdp.golden_profiles") == [
        (None, None, "02134", ["02134", "1 Elm St, Boston, 02135"])
    ]


@pytest.mark.parametrize(
    ("statements", "expected", "source"),
    [
        ([("a", "r0", True, OLD), ("b", "r1", False, NEW)], False, "b"),  # latest statement wins
        ([("a", "r0", False, OLD), ("b", "r1", True, NEW)], True, "b"),
        ([("a", "r0", True, NEW), ("b", "r1", False, NEW)], False, "b"),  # a revocation wins a tie
        ([], None, None),  # unknown is not consent
    ],
)
def test_consent_precedence_with_its_source(tmp_path, statements, expected, source):
    config = make_config(tmp_path)
    conn = warehouse([{"source": "a"}, {"source": "b"}], consent=statements)
    build_profiles(Sql(conn), config)
    assert one(conn, "select consent_email_marketing from cdp.golden_profiles") == [(expected,)]
    provenance = one(conn, "select source, value_at from cdp.profile_provenance where attribute like 'consent_%'")
    assert provenance == ([(source, NEW if expected is not None else None)] if expected is not None else [])


EDGE = AS_OF - timedelta(days=90)
TRANSACTIONS = [
    (EDGE, 100.0, "paid"),  # exactly 90 days before: outside a 90-day window
    (EDGE + timedelta(seconds=1), 50.0, "paid"),  # just inside
    (AS_OF, 25.0, "refunded"),  # at the as-of time: inside
    (AS_OF + timedelta(seconds=1), 1000.0, "paid"),  # after the as-of time: never counted
]
EVENTS = [
    (AS_OF - timedelta(days=8), "Product Viewed", "web"),
    (AS_OF - timedelta(days=6), "Product Viewed", "web"),
    (AS_OF - timedelta(days=2), "Product Viewed", "web"),
    (AS_OF - timedelta(days=1), "Page", "web"),
    (AS_OF - timedelta(days=1), "open", "email"),
]


@pytest.mark.parametrize(
    ("trait", "expected"),
    [
        ({"from": "transactions", "aggregate": "count", "window": "90 days"}, 2),
        ({"from": "transactions", "aggregate": "count"}, 3),
        ({"from": "transactions", "aggregate": "sum", "column": "amount", "window": "90 days"}, 75.0),
        ({"from": "transactions", "aggregate": "sum", "column": "amount", "where": "status = 'paid'"}, 150.0),
        # money is exact: the average is rounded to the cent (175 / 3 = 58.333...)
        ({"from": "transactions", "aggregate": "avg", "column": "amount"}, Decimal("58.33")),
        ({"from": "transactions", "aggregate": "min", "column": "amount"}, 25.0),
        ({"from": "transactions", "aggregate": "max", "column": "occurred_at"}, AS_OF),
        ({"from": "transactions", "aggregate": "first", "column": "amount"}, 100.0),
        ({"from": "transactions", "aggregate": "last", "column": "status"}, "refunded"),
        ({"from": "transactions", "aggregate": "count_distinct", "column": "status"}, 2),
        ({"from": "transactions", "aggregate": "unique_list", "column": "status"}, ["paid", "refunded"]),
        ({"from": "events", "aggregate": "count", "where": "event = 'Product Viewed'", "window": "7 days"}, 2),
        ({"from": "events", "aggregate": "most_frequent", "column": "event"}, "Product Viewed"),
        ({"from": "events", "aggregate": "most_frequent", "column": "event", "window": "3 days"}, "Page"),
        ({"from": "events", "aggregate": "count", "where": "source = 'nowhere'"}, 0),
        ({"from": "events", "aggregate": "max", "column": "occurred_at", "where": "source = 'nowhere'"}, None),
        ({"from": "events", "aggregate": "unique_list", "column": "event", "where": "false"}, []),
    ],
)
def test_trait_kinds_and_window_edges(tmp_path, trait, expected):
    config = make_config(tmp_path, traits=[{"name": "t", **trait}])
    conn = warehouse([{"source": "a"}], transactions=TRANSACTIONS, events=EVENTS)
    build_profiles(Sql(conn), config)
    assert one(conn, "select t from cdp.golden_profiles") == [(expected,)]


def test_builtin_traits_respect_the_as_of_time(tmp_path):
    config = make_config(tmp_path)
    conn = warehouse([{"source": "a"}], transactions=TRANSACTIONS, events=EVENTS)
    build_profiles(Sql(conn), config)
    row = one(
        conn,
        """select order_count, lifetime_revenue, average_order_value, first_order_at, last_order_at,
                              days_since_last_order, event_count, last_seen_at, traits_as_of, rfm_score
                       from cdp.golden_profiles""",
    )[0]
    # The refunded transaction is no order: two orders, 150 of revenue, the last one 90 days back.
    assert row == (
        2,
        150,
        Decimal("75.00"),
        EDGE,
        EDGE + timedelta(seconds=1),
        90,
        5,
        AS_OF - timedelta(days=1),
        AS_OF,
        "111",
    )


def test_every_transaction_is_an_order_when_no_status_is_excluded(tmp_path):
    config = make_config(tmp_path, excluded_order_statuses=[])
    conn = warehouse([{"source": "a"}], transactions=TRANSACTIONS, events=EVENTS)
    build_profiles(Sql(conn), config)
    row = one(conn, "select order_count, lifetime_revenue, average_order_value, last_order_at from cdp.golden_profiles")
    assert row == [(3, 175, Decimal("58.33"), AS_OF)]


def test_statuses_are_excluded_in_any_case_and_a_customer_with_only_refunds_has_no_order(tmp_path):
    config = make_config(tmp_path, excluded_order_statuses=[" Refunded "])
    assert config.profiles.excluded_order_statuses == ["refunded"]
    conn = warehouse([{"source": "a"}], transactions=[(AS_OF, 25.0, "REFUNDED")], events=[])
    build_profiles(Sql(conn), config)
    row = one(conn, "select order_count, lifetime_revenue, average_order_value, last_order_at from cdp.golden_profiles")
    assert row == [(0, 0, None, None)]


def test_rfm_quintiles_rank_customers(tmp_path):
    config = make_config(tmp_path)
    conn = warehouse([{"source": "a"}])
    for i in range(10):
        conn.execute(
            "insert into clean.transactions values ('shop', ?, ?, ?, ?, 'USD', 'paid', 'o', 1, ?)",
            [f"x{i}", f"x{i}", AS_OF - timedelta(days=10 * i), 10.0 * (i + 1), LOADED],
        )
        conn.execute("insert into cdp.identity_map values ('shop', ?, ?, 'transactions')", [f"x{i}", f"K{i}"])
    build_profiles(Sql(conn), config)
    scores = dict(one(conn, "select customer_id, rfm_score from cdp.golden_profiles where customer_id like 'K%'"))
    assert scores["K0"] == "511"  # most recent, smallest spender
    assert scores["K9"] == "115"  # least recent, biggest spender
    assert one(conn, "select rfm_score from cdp.golden_profiles where customer_id = 'C'") == [(None,)]


@pytest.mark.parametrize(
    ("traits", "segments", "expected"),
    [
        (
            [{"name": "t", "from": "events", "aggregate": "sum", "column": "event"}],
            [],
            r"profiles.traits\[0\] \(t\).aggregate: 'sum' needs a numeric column",
        ),
        (
            [{"name": "t", "from": "events", "aggregate": "max", "column": "amount"}],
            [],
            r"profiles.traits\[0\] \(t\).column: unknown column 'amount'",
        ),
        (
            [{"name": "t", "from": "events", "aggregate": "count", "where": "evnt = 'x'"}],
            [],
            r"profiles.traits\[0\] \(t\).where: .*evnt",
        ),
        (
            [{"name": "t", "from": "events", "aggregate": "count", "window": "ninety days"}],
            [],
            r"profiles.traits\[0\] \(t\).window: window must look like",
        ),
        ([{"name": "order_count", "from": "events", "aggregate": "count"}], [], r"already a golden-profile column"),
        (
            [{"name": "views", "from": "events", "aggregate": "count"}],
            [{"name": "s", "where": "views > 'many'"}],
            r"segments\[0\] \(s\).where",
        ),
        ([], [{"name": "s", "where": "unknown_trait > 1"}], r"segments\[0\] \(s\).where: .*unknown_trait"),
    ],
)
def test_trait_and_segment_errors_name_the_key(tmp_path, traits, segments, expected):
    raw = {
        "sources": [{"name": "a", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id"}],
        "profiles": {"traits": traits},
        "segments": segments,
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_segment_membership_history_over_runs(tmp_path):
    config = make_config(tmp_path)
    conn = duckdb.connect(":memory:")
    bootstrap(conn)

    def run(day: int, revenues: dict[str, float]) -> dict[str, int]:
        conn.execute(
            "create or replace table cdp.golden_profiles "
            "(customer_id varchar, lifetime_revenue decimal(38, 2), traits_as_of timestamp)"
        )
        as_of = datetime(2025, 6, day)
        rows = [(customer, revenue, as_of) for customer, revenue in revenues.items()]
        conn.executemany("insert into cdp.golden_profiles values (?, ?, ?)", rows)
        return build_membership(Sql(conn), config)["big"]

    assert run(1, {"C1": 600, "C2": 10}) == {"size": 1, "entered": 1, "exited": 0}
    assert run(2, {"C1": 700, "C2": 10}) == {"size": 1, "entered": 0, "exited": 0}  # stays: no new row
    assert run(3, {"C1": 100, "C2": 900}) == {"size": 1, "entered": 1, "exited": 1}
    assert run(3, {"C1": 100, "C2": 900}) == {"size": 1, "entered": 0, "exited": 0}  # same as-of: nothing new
    assert run(4, {"C1": 650, "C2": 900}) == {"size": 2, "entered": 1, "exited": 0}  # C1 comes back
    history = one(
        conn,
        """select customer_id, entered_at, exited_at
                           from cdp.segment_membership_history order by customer_id, entered_at""",
    )
    # Stays are stamped with the profiles' as-of time, not the wall clock: the same data, the same history.
    assert history == [
        ("C1", datetime(2025, 6, 1), datetime(2025, 6, 3)),
        ("C1", datetime(2025, 6, 4), None),
        ("C2", datetime(2025, 6, 3), None),
    ]
    members = one(conn, "select customer_id, entered_at from cdp.segment_membership order by 1")
    open_rows = one(
        conn, "select customer_id, entered_at from cdp.segment_membership_history where exited_at is null order by 1"
    )
    assert members == open_rows


def _activity_identifiers(conn: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, str, str]]) -> None:
    """Identifiers of activity records: (role, source, record id, e-mail match key), and each record's id."""
    for role, source, record_id, email in rows:
        conn.execute(
            f"insert into clean.{role}_identifiers values (?, ?, 'email', ?, 'a.jsonl', 1)", [source, record_id, email]
        )
        conn.execute(
            "insert into cdp.identity_map select ?, ?, 'C', ? where not exists "
            "(select 1 from cdp.identity_map where source = ? and source_record_id = ?)",
            [source, record_id, role, source, record_id],
        )


def test_a_customer_whose_person_records_have_no_email_takes_the_latest_one_activity_carries(tmp_path):
    """A visitor who gave an e-mail only to the website (a Segment identify) or with an order can be
    reached: the profile takes the e-mail of the activity record active last, says so in the provenance,
    and lists every one."""
    config = make_config(tmp_path)
    conn = warehouse(
        [{"source": "a", "email": None, "first_name": "Ann"}],
        transactions=[(datetime(2025, 5, 1), Decimal("10"), "paid")],
        events=[(datetime(2025, 6, 1), "Signed Up", "web")],
    )
    _activity_identifiers(
        conn, [("events", "web", "anon", "ann@web.example"), ("transactions", "shop", "o0", "ann@shop.example")]
    )
    build_profiles(Sql(conn), config)
    assert one(conn, "select email, emails from cdp.golden_profiles") == [
        ("ann@web.example", ["ann@shop.example", "ann@web.example"])
    ]
    assert one(conn, "select value, source, source_record_id, value_at, rule from cdp.profile_provenance "
                     "where attribute = 'email'") == [
        ("ann@web.example", "web", "anon", datetime(2025, 6, 1), "latest_activity")
    ]  # fmt: skip


def test_an_email_of_the_person_records_wins_over_activity_and_is_listed_once_in_its_typed_form(tmp_path):
    config = make_config(tmp_path)
    conn = warehouse(
        [{"source": "a", "email": "jane.doe+shop@gmail.com", "email_match_key": "janedoe@gmail.com"}],
        events=[(datetime(2025, 6, 1), "Signed Up", "web")],
    )
    _activity_identifiers(conn, [("events", "web", "anon", "janedoe@gmail.com")])
    build_profiles(Sql(conn), config)
    assert one(conn, "select email, emails from cdp.golden_profiles") == [
        ("jane.doe+shop@gmail.com", ["jane.doe+shop@gmail.com"])
    ]
    assert one(conn, "select rule from cdp.profile_provenance where attribute = 'email'") == [("source_priority",)]
