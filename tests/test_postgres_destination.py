"""The PostgreSQL destination against a real server: what it writes, what it refuses, how it fails.

The server comes from tests/postgres_server.py (a throw-away cluster, or $CDP_TEST_POSTGRES_DSN); every test
writes its own table, so tests share no state.
"""

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from resources.destinations import Change, RejectedError, TransientError, deliver
from resources.postgres_destination import PostgresClient

pytestmark = pytest.mark.e2e


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    name = f"segment_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def client(dsn: str, table: str) -> Iterator[PostgresClient]:
    made = PostgresClient(dsn, table)
    yield made
    made.close()


def upsert(key: str, **row: Any) -> Change:
    return Change(key, "update", row)


def remove(key: str) -> Change:
    return Change(key, "remove", {})


def query(dsn: str, statement: str, *params: Any) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, params).fetchall()


def contents(dsn: str, table: str, columns: str = "*") -> list[tuple]:
    return query(dsn, f'SELECT {columns} FROM "{table}" ORDER BY id')


def column_types(dsn: str, table: str) -> dict[str, str]:
    rows = query(
        dsn,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
        table,
    )
    return dict(rows)


# ---------------------------------------------------------------- upserts


def test_upsert_creates_a_typed_table_and_updates_by_key(dsn: str, table: str, client: PostgresClient) -> None:
    first = [
        upsert(
            "c1",
            name="Ann",
            orders=3,
            spend=12.5,
            vip=True,
            tags=["a", "b"],
            traits={"tier": "gold"},
            signed_up="2025-01-02T03:04:05Z",
            note=None,
        ),
        upsert("c2", name="Bo", orders=None, spend=0.0, vip=False, tags=[], traits={}, signed_up=None),
    ]
    client.send(first, "b1")

    assert column_types(dsn, table) == {
        "id": "text",
        "name": "text",
        "orders": "bigint",
        "spend": "double precision",
        "vip": "boolean",
        "tags": "jsonb",
        "traits": "jsonb",
        "signed_up": "text",
        "note": "text",
        "_cdp_synced_at": "timestamp with time zone",
    }
    primary = query(
        dsn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
        table,
    )
    assert primary == [("id",)]
    assert contents(dsn, table, "id, name, orders, spend, vip, tags, traits, signed_up, note") == [
        ("c1", "Ann", 3, 12.5, True, ["a", "b"], {"tier": "gold"}, "2025-01-02T03:04:05Z", None),
        ("c2", "Bo", None, 0.0, False, [], {}, None, None),
    ]
    assert all(synced is not None for (synced,) in contents(dsn, table, "_cdp_synced_at"))

    client.send([upsert("c2", name="Bo", orders=7, spend=1.25, vip=True, tags=["x"], traits={}, signed_up=None)], "b2")
    assert contents(dsn, table, "id, orders, spend, vip, tags") == [
        ("c1", 3, 12.5, True, ["a", "b"]),
        ("c2", 7, 1.25, True, ["x"]),
    ]


def test_money_from_the_warehouse_is_written_exactly(dsn: str, table: str, client: PostgresClient) -> None:
    from decimal import Decimal

    # The payloads as the warehouse writes them (to_json of DECIMAL money and of a DOUBLE score).
    payloads = {
        "c1": '{"lifetime_revenue":0.10,"score":0.3,"orders":3,"history":[{"amount":19.99}]}',
        "c2": '{"lifetime_revenue":1234567890123.47,"score":100.0,"orders":1,"history":[]}',
    }
    client.send([Change(key, "add", payload=text) for key, text in payloads.items()], "b1")
    assert column_types(dsn, table)["lifetime_revenue"] == "numeric"
    assert contents(dsn, table, "id, lifetime_revenue, score, orders, history") == [
        ("c1", Decimal("0.10"), Decimal("0.3"), 3, [{"amount": 19.99}]),
        ("c2", Decimal("1234567890123.47"), Decimal("100.0"), 1, []),
    ]
    total = query(dsn, f'SELECT sum(lifetime_revenue) FROM "{table}"')
    assert total == [(Decimal("1234567890123.57"),)]  # a double would give ...123.56999...


def test_resending_a_batch_changes_nothing(dsn: str, table: str, client: PostgresClient) -> None:
    batch = [upsert(f"c{i}", name=f"n{i}", orders=i, tags=[i]) for i in range(5)]
    client.send(batch, "b1")
    before = contents(dsn, table)
    client.send(batch, "b1")
    fresh = PostgresClient(dsn, table)
    fresh.send(batch, "b1")
    fresh.close()
    assert contents(dsn, table) == before
    assert len(before) == 5


def test_rows_with_different_columns_fill_the_gaps_with_null(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([upsert("c1", a=1), upsert("c2", b="x"), upsert("c3")], "b1")
    assert contents(dsn, table, "id, a, b") == [("c1", 1, None), ("c2", None, "x"), ("c3", None, None)]


def test_the_last_change_to_a_key_in_a_batch_wins(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([Change("c1", "add", {"orders": 1}), Change("c1", "update", {"orders": 2})], "b1")
    assert contents(dsn, table, "id, orders") == [("c1", 2)]


def test_a_new_field_adds_a_column(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([upsert("c1", name="Ann")], "b1")
    client.send([upsert("c1", name="Ann", score=0.75, badges=["early"]), upsert("c2", name="Bo", score=None)], "b2")
    assert column_types(dsn, table)["score"] == "double precision"
    assert column_types(dsn, table)["badges"] == "jsonb"
    assert contents(dsn, table, "id, name, score, badges") == [("c1", "Ann", 0.75, ["early"]), ("c2", "Bo", None, None)]


def test_an_existing_table_is_written_in_its_own_types(dsn: str, table: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (customer text PRIMARY KEY, seen timestamptz, profile jsonb)").format(
                sql.Identifier(table)
            )
        )
    writer = PostgresClient(dsn, table, key_column="customer")
    try:
        writer.send([upsert("c1", seen="2025-01-02T03:04:05Z", profile="plain", customer="ignored")], "b1")
    finally:
        writer.close()
    rows = query(dsn, f'SELECT customer, seen::text, profile, _cdp_synced_at IS NOT NULL FROM "{table}"')
    assert rows == [("c1", "2025-01-02 03:04:05+00", "plain", True)]


# ---------------------------------------------------------------- removes


def test_remove_deletes_exactly_the_given_keys(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([upsert(f"c{i}", orders=i) for i in range(4)], "b1")
    client.send([remove("c1"), remove("c3"), remove("absent")], "b2")
    assert contents(dsn, table, "id") == [("c0",), ("c2",)]
    client.send([remove("c1"), remove("c3")], "b2")
    assert contents(dsn, table, "id") == [("c0",), ("c2",)]


def test_remove_before_any_upsert_is_fine(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([remove("c1")], "b1")
    assert contents(dsn, table) == []


# ---------------------------------------------------------------- rejections


def test_a_value_the_table_refuses_rejects_the_whole_batch(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([upsert("c1", orders=1)], "b1")
    before = contents(dsn, table)
    batch = [upsert("c1", orders=2), upsert("c2", orders="many", extra="x"), upsert("c3", orders=3)]
    with pytest.raises(RejectedError, match="bigint") as raised:
        client.send(batch, "b2")
    assert raised.value.row_errors == {}
    assert contents(dsn, table) == before
    assert "extra" not in column_types(dsn, table)
    client.send([upsert("c3", orders=3)], "b3")  # the connection is still usable
    assert contents(dsn, table, "id, orders") == [("c1", 1), ("c3", 3)]


def test_a_single_bad_row_is_blamed_by_position(dsn: str, table: str, client: PostgresClient) -> None:
    client.send([upsert("c1", orders=1)], "b1")
    with pytest.raises(RejectedError) as raised:
        client.send([upsert("c2", orders="many")], "b2")
    assert list(raised.value.row_errors) == [0]
    assert "bigint" in raised.value.row_errors[0]


def test_deliver_isolates_the_bad_row_of_a_batch(dsn: str, table: str, client: PostgresClient) -> None:
    changes = [upsert(f"c{i}", orders=i) for i in range(8)]
    changes[5] = upsert("c5", orders="not a number")
    result = deliver(client, "postgres", changes, batch_size=8, sleep=lambda seconds: None)
    assert [change.key for change, _ in result.failed] == ["c5"]
    assert "bigint" in result.failed[0][1]
    assert sorted(change.key for change in result.accepted) == ["c0", "c1", "c2", "c3", "c4", "c6", "c7"]
    assert contents(dsn, table, "id, orders") == [(f"c{i}", i) for i in range(8) if i != 5]
    assert result.requests > 2


# ---------------------------------------------------------------- transient failures


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_server_is_transient_and_the_message_hides_the_password() -> None:
    secret_dsn = f"postgresql://cdp:s3cr3t-Pw@127.0.0.1:{closed_port()}/cdp"
    unreachable = PostgresClient(secret_dsn, "segment", connect_timeout=2)
    with pytest.raises(TransientError) as raised:
        unreachable.send([upsert("c1", orders=1)], "b1")
    assert "s3cr3t-Pw" not in str(raised.value)
    assert secret_dsn not in str(raised.value)
    assert "s3cr3t-Pw" not in repr(unreachable)
    unreachable.close()


def test_a_failure_names_the_server_even_once_masked() -> None:
    from cdp_assets.metadata import redact

    port = closed_port()
    unreachable = PostgresClient(f"host=localhost port={port} user=cdp password=s3cr3t-Pw dbname=cdp", "segment")
    with pytest.raises(TransientError) as raised:
        unreachable.send([upsert("c1", orders=1)], "b1")
    shown = redact(str(raised.value))  # as the sync's failure stores it
    assert shown.startswith(f"PostgreSQL table public.segment on localhost:{port}: could not connect")
    assert "s3cr3t-Pw" not in shown
    unreachable.close()


def test_a_lost_connection_is_transient_and_the_next_batch_reconnects(dsn: str, table: str) -> None:
    name = f"cdp-test-{uuid.uuid4().hex[:8]}"
    writer = PostgresClient(make_conninfo(dsn, application_name=name), table)
    try:
        writer.send([upsert("c1", orders=1)], "b1")
        terminated = query(
            dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", name
        )
        assert terminated == [(True,)]
        with pytest.raises(TransientError):
            writer.send([upsert("c2", orders=2)], "b2")
        writer.send([upsert("c2", orders=2)], "b2")
    finally:
        writer.close()
    assert contents(dsn, table, "id, orders") == [("c1", 1), ("c2", 2)]


def test_a_serialization_failure_is_transient(dsn: str, table: str) -> None:
    """A concurrent writer commits a change to the same row after the batch's snapshot was taken."""
    name = f"cdp-test-{uuid.uuid4().hex[:8]}"
    serializable = make_conninfo(dsn, application_name=name, options="-c default_transaction_isolation=serializable")
    writer = PostgresClient(serializable, table)
    try:
        writer.send([upsert("c1", orders=1)], "b1")
        outcome: list[BaseException | None] = []
        with psycopg.connect(dsn) as other:
            other.execute(sql.SQL("UPDATE {} SET orders = 99 WHERE id = 'c1'").format(sql.Identifier(table)))

            def send() -> None:
                try:
                    writer.send([upsert("c1", orders=2)], "b2")
                    outcome.append(None)
                except Exception as exc:
                    outcome.append(exc)

            sending = threading.Thread(target=send)
            sending.start()
            deadline = time.monotonic() + 10
            while not query(
                dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'", name
            ):
                assert time.monotonic() < deadline, "the batch never waited for the other writer's lock"
                time.sleep(0.02)
            other.commit()
            sending.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], TransientError), outcome
        assert "serialize" in str(outcome[0])
        writer.send([upsert("c1", orders=2)], "b2")  # the retry succeeds
    finally:
        writer.close()
    assert contents(dsn, table, "id, orders") == [("c1", 2)]
