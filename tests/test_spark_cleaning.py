"""The cleaning stage through `Sql` on DuckDB and through `SparkSql` on Spark, over the same raw rows of JSON
sources whose mapped values are not all what the mapping expects: the same cleaned rows, identifiers and
quarantine on both engines."""

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml

from cdp_assets.clean.assets import clean_activity, clean_person_records
from resources.config import CDPConfig, load_config
from resources.spark.runner import SparkSql
from resources.sql import Sql
from resources.warehouse import SCHEMAS, bootstrap, create_shared

pytestmark = pytest.mark.spark

AT = "2025-06-01T10:00:00Z"
SOURCES = [
    {
        "name": "shop",
        "format": "jsonl",
        "glob": "shop/*.jsonl",
        "role": "person",
        "record_id": "id",
        "fields": {
            "first_name": {"path": ["given", "first_name"]},
            "last_name": "last_name",
            "email": "email",
            "city": "address.city",
        },
        "consent": {"email_marketing": "opt_in"},
        "attributes": {"lifecycle_stage": "stage"},
        "identifiers": [{"path": "email", "type": "email"}, {"path": "loyalty", "type": "loyalty_card"}],
    },
    {
        "name": "web",
        "format": "jsonl",
        "glob": "web/*.jsonl",
        "role": "events",
        "record_id": "user",
        "event_id": "mid",
        "fields": {"occurred_at": "at", "event": "name", "status": "state", "properties": "data.props"},
        "consent": {"advertising": "ad"},
    },
    {
        "name": "orders",
        "format": "jsonl",
        "glob": "orders/*.jsonl",
        "role": "transactions",
        "record_id": "customer",
        "event_id": "id",
        "fields": {"occurred_at": "at", "amount": "total", "currency": "currency"},
    },
]
RAW = {
    "shop": [
        {
            "id": "c1",
            "first_name": ["Ann", "Bob"],
            "last_name": "Lee",
            "email": "ann@example.org",
            "opt_in": "yes",
            "stage": "  Sales   Qualified ",
        },
        {"id": "c2", "given": "Cy", "last_name": {"family": "Diaz"}, "email": ["cy@example.org"]},
        {"id": ["c3", "c4"], "first_name": "Di", "email": "di@example.org"},
        {"id": "c5", "first_name": "Eve", "address": "Oslo", "opt_in": ["yes"], "loyalty": {"n": 7}, "stage": "n/a"},
        {
            "id": "c6",
            "given": ["Fay"],
            "address": {"city": "Rome"},
            "email": "fay@example.org",
            "loyalty": 7,
            "stage": "customer",
        },
        {"id": "c7", "first_name": "Gus", "address": None, "email": "gus@example.org", "stage": ["lead"]},
        {"id": "c8", "first_name": True, "email": "hal@example.org", "opt_in": False, "loyalty": True},
    ],
    "web": [
        {"user": "u1", "mid": "m1", "at": AT, "name": ["Viewed", "Clicked"], "state": "ok", "ad": "yes"},
        {"user": "u2", "mid": ["m2"], "at": AT, "name": "Viewed"},
        {"user": "u3", "mid": "m3", "at": {"utc": AT}, "name": "Viewed"},
        {"user": "u4", "mid": "m4", "at": AT, "name": "Viewed", "data": "none", "state": {"code": 1}, "ad": False},
        {"user": "u5", "mid": "m5", "at": AT, "name": "Bought", "data": {"props": {"sku": "A1"}}, "ad": "sometimes"},
    ],
    "orders": [
        {"customer": "c1", "id": "o1", "at": AT, "total": [12.5], "currency": "EUR"},
        {"customer": "c2", "id": "o2", "at": AT, "total": "7.00", "currency": ["EUR", "USD"]},
        {"customer": ["c3"], "id": "o3", "at": AT, "total": "8.00"},
        {"customer": "c4", "id": "o4", "at": AT, "total": "9.50", "currency": "usd"},
        {"customer": "c5", "id": "o5", "at": AT, "total": True, "currency": "usd"},
    ],
}
COMPARED = {
    "clean.person_records": "source_record_id, first_name, last_name, email, city",
    "clean.person_identifiers": "source_record_id, id_type, id_value",
    "clean.consent_statements": "source_record_id, purpose, granted",
    "clean.person_attributes": "source_record_id, attribute, value",
    "clean.events_consent_statements": "source_record_id, purpose, granted",
    "clean.events": "event_id, source_record_id, event, status, properties::varchar",
    "clean.transactions": "event_id, source_record_id, amount::varchar, currency",
    "cdp.quarantine": "source, row_number, field, value, reason, scope",
}


def _config(tmp_path: Path) -> CDPConfig:
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump({"sources": SOURCES}))
    return load_config(path)


@pytest.fixture()
def engines(spark) -> Iterator[tuple[Sql, SparkSql]]:  # noqa: ANN001 - the session fixture of tests/conftest.py
    conn = duckdb.connect()
    bootstrap(conn)
    duck, on_spark = Sql(conn), SparkSql(spark)
    create_shared(on_spark.execute)
    for runner, record in ((duck, "record::json"), (on_spark, "record")):
        for source, rows in RAW.items():
            values = ", ".join(f"('{source}/a.jsonl', {i + 1}, {_text(json.dumps(r))})" for i, r in enumerate(rows))
            runner.create_table_as(
                f"raw.{source}",
                f"""select _file, _row_number::bigint as _row_number,
                           timestamp '2025-06-02 00:00:00' as _loaded_at, {record} as record
                    from (values {values}) t(_file, _row_number, record)""",
            )
    yield duck, on_spark
    conn.close()
    for schema in SCHEMAS:
        on_spark.execute(f"drop database if exists {schema} cascade")


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def test_a_full_clean_and_an_incremental_one_quarantine_alike_on_both_engines(engines, tmp_path) -> None:  # noqa: ANN001
    """A full clean of every role, then an incremental clean of two new event files: a retry of m1 in a file
    after the kept one (quarantined naming the kept copy, which stays) and a copy of m5 in a file before it
    (which displaces the kept copy). One test, as the Spark tables' set-up is most of its cost."""
    config = _config(tmp_path)
    tables = []
    for runner in engines:
        clean_person_records(runner, config)
        clean_activity(runner, config, "events")
        clean_activity(runner, config, "transactions")
        tables.append(
            {
                table: sorted(runner.rows(f"select {columns} from {table}"), key=repr)
                for table, columns in COMPARED.items()
            }
        )
    on_duckdb, on_spark = tables
    for table in COMPARED:
        assert on_duckdb[table] == on_spark[table], table
    reasons = [reason for *_, reason, _ in on_duckdb["cdp.quarantine"]]
    assert sum("where a single value is expected" in reason for reason in reasons) == 15
    assert sorted(on_duckdb["clean.events_consent_statements"]) == [
        ("u1", "advertising", True),
        ("u4", "advertising", False),
    ]
    assert sum(reason.startswith("not a yes/no consent statement") for reason in reasons) == 1
    assert sorted(on_duckdb["clean.person_attributes"]) == [
        ("c1", "lifecycle_stage", "Sales Qualified"),
        ("c6", "lifecycle_stage", "customer"),
    ]
    assert sorted(r for r in reasons if "true or false where" in r) == [
        f"{path} is true or false where text or a number is expected" for path in ("first_name", "loyalty", "total")
    ]
    assert sorted(r for r in reasons if "cannot be read" in r) == [
        "address.city cannot be read: address is a string, not an object",
        "data.props cannot be read: data is a string, not an object",
    ]

    later = {"user": "u1", "mid": "m1", "at": AT, "name": "Viewed", "state": "ok"}
    earlier = {"user": "u5", "mid": "m5", "at": AT, "name": "Bought"}
    tables = []
    for runner, record in zip(engines, ("record::json", "record"), strict=True):
        states = []
        for file, row in (("web/b.jsonl", later), ("web/0.jsonl", earlier)):
            runner.execute(
                f"""insert into raw.web select '{file}', 1::bigint, timestamp '2025-06-03 00:00:00', {record}
                    from (values ({_text(json.dumps(row))})) t(record)"""
            )
            counts = clean_activity(runner, config, "events")
            events = sorted(runner.rows("select event_id, file, row_number from clean.events"), key=repr)
            rejects = sorted(runner.rows("select file, row_number, reason from clean.events_quarantine"), key=repr)
            states.append((counts["raw_rows_cleaned_now"], events, rejects))
        tables.append(states)
    on_duckdb, on_spark = tables
    assert on_duckdb == on_spark
    (retried_read, retried_events, retried_rejects), (earlier_read, earlier_events, earlier_rejects) = on_duckdb
    # The retry is read alone; its kept first copy stays the event.
    assert retried_read == 1
    assert ("m1", "web/a.jsonl", 1) in retried_events
    assert ("web/b.jsonl", 1, "duplicate event id: already delivered in web/a.jsonl line 1") in retried_rejects
    # The earlier copy displaces the kept one, whose file is read again with it, and so is the retry's file,
    # which held a copy quarantined naming a row of that file.
    assert earlier_read == 1 + len(RAW["web"]) + 1
    assert ("m5", "web/0.jsonl", 1) in earlier_events
    assert ("web/a.jsonl", 5, "duplicate event id: already delivered in web/0.jsonl line 1") in earlier_rejects
