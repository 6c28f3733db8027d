"""Consent stated on events and orders (a consent banner's choice stamped on each web event, a checkout's
marketing box on an order), through the real extract, cleaning, identity and profile stages: dated by when
they happened, weighed against person records' statements by the one rule, latest wins."""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from tests.fixtures import check_evaluation, materialize_stages

pytestmark = pytest.mark.stage


def _event(user: str, email: str, at: str, advertising: object, n: int) -> dict:
    return {
        "messageId": f"m{n}",
        "userId": user,
        "event": "Page Viewed",
        "timestamp": at,
        "traits": {"email": email},
        "context": {"consent": {"categoryPreferences": {"advertising": advertising}}},
    }


def _config(tmp_path: Path) -> Path:
    raw = {
        "warehouse": {"path": str(tmp_path / "warehouse.duckdb")},
        "landing": {"path": str(tmp_path / "landing"), "settle_seconds": 0},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "email": "email", "updated_at": "updated"},
                "consent": {"email_marketing": "opt_in"},
            },
            {
                "name": "web",
                "format": "jsonl",
                "glob": "web/*.jsonl",
                "role": "events",
                "record_id": "userId",
                "event_id": "messageId",
                "fields": {"occurred_at": "timestamp", "event": "event", "context": "context"},
                "consent": {"advertising": "context.consent.categoryPreferences.advertising"},
                "identifiers": [{"path": "traits.email", "type": "email"}],
            },
            {
                "name": "orders",
                "format": "jsonl",
                "glob": "orders/*.jsonl",
                "role": "transactions",
                "record_id": "id",
                "event_id": "id",
                "fields": {"occurred_at": "created_at", "amount": "total"},
                "consent": {"email_marketing": "buyer_accepts_marketing"},
                "identifiers": [{"path": "email", "type": "email"}],
            },
        ],
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_consent_on_events_and_orders_is_dated_by_when_they_happened_and_the_latest_wins(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    config = _config(tmp_path)
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    (tmp_path / "landing" / "crm" / "c.csv").write_text(
        "id,first,email,updated,opt_in\n"
        "c1,Ann,ann@example.org,2025-01-01T00:00:00,yes\n"
        "c2,Bo,bo@example.org,2025-01-01T00:00:00,yes\n"
    )
    # Ann's banner choice on every page: granted, then withdrawn; one event's value cannot be read.
    _lines(
        tmp_path / "landing" / "web" / "day1.jsonl",
        [
            _event("u1", "ann@example.org", "2025-02-01T10:00:00Z", True, 1),
            _event("u1", "ann@example.org", "2025-02-05T10:00:00Z", False, 2),
            _event("u1", "ann@example.org", "2025-02-03T10:00:00Z", "maybe", 3),
            _event("u2", "bo@example.org", "2025-02-01T10:00:00Z", True, 4),
        ],
    )
    # Ann unticked the marketing box at a checkout after her CRM opt-in; Bo's order says nothing.
    _lines(
        tmp_path / "landing" / "orders" / "o.jsonl",
        [
            {
                "id": "o1",
                "email": "ann@example.org",
                "created_at": "2025-03-01T00:00:00Z",
                "total": "10.00",
                "buyer_accepts_marketing": False,
            },
            {"id": "o2", "email": "bo@example.org", "created_at": "2025-03-01T00:00:00Z", "total": "12.00"},
        ],
    )
    result, _ = materialize_stages(config, instance, ("raw", "clean", "identity", "profiles"))
    # Each source's consent mapping found statements: the mapped-fields warning is silent.
    assert all(
        check_evaluation(result, "mapped_fields_have_values", role).passed for role in ("events", "transactions")
    )
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        profiles = conn.execute(
            "select first_name, consent_email_marketing, consent_advertising from cdp.golden_profiles "
            "where first_name is not null order by 1"
        ).fetchall()
        provenance = conn.execute(
            "select p.first_name, v.attribute, v.value, v.source, v.source_record_id, v.value_at::varchar "
            "from cdp.profile_provenance v join cdp.golden_profiles p using (customer_id) "
            "where v.attribute like 'consent_%' order by 1, 2"
        ).fetchall()
        kept = conn.execute(
            "select source_record_id, granted from clean.events_consent_statements order by 1"
        ).fetchall()
        rejects = conn.execute("select source, row_number, field, value, reason from cdp.quarantine").fetchall()
    assert profiles == [("Ann", False, False), ("Bo", True, True)]
    assert provenance == [
        ("Ann", "consent_advertising", "false", "web", "u1", "2025-02-05 10:00:00"),
        ("Ann", "consent_email_marketing", "false", "orders", "o1", "2025-03-01 00:00:00"),
        ("Bo", "consent_advertising", "true", "web", "u2", "2025-02-01 10:00:00"),
        ("Bo", "consent_email_marketing", "true", "crm", "c2", "2025-01-01 00:00:00"),
    ]
    assert kept == [("u1", False), ("u2", True)]  # a record's latest statement per file, not one per event
    [(source, row, field, value, reason)] = rejects
    assert (source, row, field, value) == ("web", 3, "context.consent.categoryPreferences.advertising", "maybe")
    assert reason.startswith("not a yes/no consent statement")

    # A later visit where Ann accepts advertising again: the next refresh, reading that file alone, takes it.
    _lines(
        tmp_path / "landing" / "web" / "day2.jsonl",
        [_event("u1", "ann@example.org", "2025-04-01T10:00:00Z", "true", 5)],
    )
    materialize_stages(config, instance, ("raw", "clean", "identity", "profiles"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute(
            "select consent_advertising, consent_email_marketing from cdp.golden_profiles where first_name = 'Ann'"
        ).fetchall() == [(True, False)]
        history = conn.execute(
            "select source_record_id, granted, stated_at::varchar from cdp.consent_history "
            "where purpose = 'advertising' order by 3"
        ).fetchall()
    assert history == [
        ("u2", True, "2025-02-01 10:00:00"),
        ("u1", False, "2025-02-05 10:00:00"),
        ("u1", True, "2025-04-01 10:00:00"),
    ]


def test_an_erasure_removes_the_consent_their_events_and_orders_stated(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from cdp_assets.privacy.assets import PRIVACY_JOB
    from resources.config import load_config

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    config_path = _config(tmp_path)
    raw = yaml.safe_load(config_path.read_text())
    raw["privacy"] = {"requests_path": "requests"}
    config_path.write_text(yaml.safe_dump(raw))
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    (tmp_path / "landing" / "crm" / "c.csv").write_text("id,first,email,updated,opt_in\nc1,Ann,ann@example.org,,\n")
    _lines(
        tmp_path / "landing" / "web" / "day1.jsonl",
        [
            _event("u1", "ann@example.org", "2025-02-01T10:00:00Z", True, 1),
            _event("u2", "bo@example.org", "2025-02-01T10:00:00Z", True, 2),
        ],
    )
    _lines(
        tmp_path / "landing" / "orders" / "o.jsonl",
        [
            {
                "id": "o1",
                "email": "ann@example.org",
                "created_at": "2025-03-01T00:00:00Z",
                "total": "1.00",
                "buyer_accepts_marketing": True,
            }
        ],
    )
    defs = build_definitions(load_config(config_path))
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "e.csv").write_text("type,id_type,value,reference\nerase,email,ann@example.org,E-1\n")
    run_config = {"ops": {"privacy__requests": {"config": {"requests_file": "e.csv"}}}}
    assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("select source_record_id from clean.events_consent_statements").fetchall() == [("u2",)]
        assert conn.execute("select count(*) from clean.transactions_consent_statements").fetchone() == (0,)
        assert conn.execute("select distinct source_record_id from cdp.consent_history").fetchall() == [("u2",)]
