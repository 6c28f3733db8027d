"""The collector: Segment's tracking API checked and stamped, events durable before the answer, files
published whole, and the real Segment SDK's calls reaching cleaned events and the identity map."""

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import requests
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.extract.readers import jsonl_line
from collector.events import FIELD_LIMITS, MAX_EVENT_BYTES, BadEvent, prepare
from collector.keys import WRITE_KEYS_ENV, WRITE_KEYS_FILE_ENV, WriteKeyError, load_write_keys
from collector.server import CollectorServer
from collector.spool import Spool, SpoolError, recover
from resources.config import CDPConfig, ConfigError, load_config
from resources.config.sources import text_limit
from sensors.schedules import REBUILD_CHECK_JOB

RECEIVED = datetime(2025, 6, 30, 12, 0, 0, tzinfo=UTC)
KEY = "test-write-key"


# --------------------------------------------------------------------------- events (unit)


@pytest.mark.unit
def test_timestamp_is_corrected_for_the_senders_clock_as_segment_documents() -> None:
    # The device's clock is an hour fast: it says the event happened at 13:00:00 and was sent at 13:00:05.
    event = {"type": "track", "userId": "u1", "event": "E", "timestamp": "2025-06-30T13:00:00Z"}
    stored = prepare(event, None, RECEIVED, sent_at="2025-06-30T13:00:05.000Z")
    # receivedAt - (sentAt - timestamp) = 12:00:00 - 5 s
    assert stored["timestamp"] == "2025-06-30T11:59:55.000Z"
    assert stored["originalTimestamp"] == "2025-06-30T13:00:00Z"
    assert stored["receivedAt"] == "2025-06-30T12:00:00.000Z"
    # Without sentAt the sender's timestamp stands; without a timestamp the event happened when received.
    assert prepare(dict(event), None, RECEIVED)["timestamp"] == "2025-06-30T13:00:00.000Z"
    assert prepare({"userId": "u1", "event": "E"}, "track", RECEIVED)["timestamp"] == "2025-06-30T12:00:00.000Z"


@pytest.mark.unit
def test_message_id_is_added_when_missing_and_kept_when_sent_and_the_write_key_never_stored() -> None:
    added = prepare({"userId": "u1", "writeKey": "secret"}, "identify", RECEIVED)
    assert len(added["messageId"]) == 36 and "writeKey" not in added
    assert prepare({"userId": "u1", "messageId": "m-1"}, "identify", RECEIVED)["messageId"] == "m-1"
    assert prepare({"userId": 42}, "identify", RECEIVED)["userId"] == "42"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("event", "call", "reason"),
    [
        ({"event": "E"}, "track", "a track needs userId or anonymousId"),
        ({"userId": "u"}, "track", "a track needs event"),
        ({"userId": "u"}, "alias", "an alias needs previousId"),
        ({"anonymousId": "a"}, "group", "a group needs groupId"),
        ({"type": "click", "userId": "u"}, None, "type must be one of"),
        ({"userId": "u", "timestamp": "yesterday"}, "identify", "timestamp is not an ISO 8601 time"),
        ({"userId": "u", "properties": [1]}, "page", "properties must be a JSON object"),
        ({"userId": ["u"]}, "identify", "userId must be a string"),
    ],
)
def test_an_event_without_what_its_call_needs_is_refused_with_the_reason(event: dict, call: str, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason) as refused:
        prepare(event, call, RECEIVED)
    assert refused.value.status == 400


@pytest.mark.unit
def test_an_event_over_32_kb_is_too_large() -> None:
    with pytest.raises(BadEvent) as refused:
        prepare({"userId": "u", "event": "E", "properties": {"x": "y" * MAX_EVENT_BYTES}}, "track", RECEIVED)
    assert refused.value.status == 413


# --------------------------------------------------------------------------- write keys (unit)


@pytest.mark.unit
def test_write_keys_come_from_the_environment_or_a_file_and_name_known_sources(tmp_path: Path) -> None:
    secrets = tmp_path / "keys"
    secrets.write_text("# rotated on 2025-06-01\napp:k3\n\n")
    keys = load_write_keys({WRITE_KEYS_ENV: "web:k1, web:k2", WRITE_KEYS_FILE_ENV: str(secrets)}, ["web", "app"])
    assert (keys.source_of("k1"), keys.source_of("k2"), keys.source_of("k3")) == ("web", "web", "app")
    assert keys.source_of("k4") is None and keys.source_of(None) is None
    with pytest.raises(WriteKeyError, match="'shop' is not a source with format 'segment'"):
        load_write_keys({WRITE_KEYS_ENV: "shop:k1"}, ["web"])
    with pytest.raises(WriteKeyError, match="already the key of 'web'"):
        load_write_keys({WRITE_KEYS_ENV: "web:k1,app:k1"}, ["web", "app"])
    with pytest.raises(WriteKeyError, match="no write keys"):
        load_write_keys({}, ["web"])
    # A file's mistake is named by its line, as an editor shows it (comments and blank lines counted).
    secrets.write_text("# rotated on 2025-06-01\napp:k3\n\nweb k4\n")
    with pytest.raises(WriteKeyError, match=f"^{secrets}, line 4: expected 'source:key'$"):
        load_write_keys({WRITE_KEYS_FILE_ENV: str(secrets)}, ["web", "app"])
    with pytest.raises(WriteKeyError, match=f"^{WRITE_KEYS_ENV}, entry 2: expected 'source:key'$"):
        load_write_keys({WRITE_KEYS_ENV: "web:k1,web"}, ["web"])


# --------------------------------------------------------------------------- spool (unit)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _visible(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl"))


@pytest.mark.unit
def test_files_are_published_whole_by_rename_when_they_reach_their_size_or_age(tmp_path: Path) -> None:
    clock = _Clock()
    spool = Spool(tmp_path, rotate_bytes=100, rotate_seconds=30, clock=clock)
    spool.append(b'{"n":1}\n')
    # Durable but not yet published: only the hidden file exists, which the landing sensor ignores.
    assert _visible(tmp_path) == []
    (part,) = tmp_path.glob(".*.part")
    assert part.read_bytes() == b'{"n":1}\n'
    assert part.stat().st_mode & 0o777 == 0o600  # customer data: readable by the collector's user alone
    spool.append(b'{"n":2,"pad":"' + b"x" * 100 + b'"}\n')  # over rotate_bytes: published
    (first,) = _visible(tmp_path)
    assert first.read_bytes().count(b"\n") == 2 and not list(tmp_path.glob(".*.part"))
    assert first.stat().st_mode & 0o777 == 0o600
    spool.append(b'{"n":3}\n')
    assert spool.rotate_if_due() is None  # young and small: stays open
    clock.now = 31
    published = spool.rotate_if_due()
    assert published is not None and published.read_bytes() == b'{"n":3}\n'
    assert len(_visible(tmp_path)) == 2 and not list(tmp_path.glob(".*.part"))


@pytest.mark.unit
def test_concurrent_requests_share_fsyncs_and_every_line_is_stored_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, rotate_bytes=1 << 30, rotate_seconds=3600)
    threads = [
        threading.Thread(target=lambda i=i: [spool.append(f'{{"t":{i},"n":{n}}}\n'.encode()) for n in range(50)])
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    lines = [json.loads(line) for path in _visible(tmp_path) for line in path.read_text().splitlines()]
    assert sorted((x["t"], x["n"]) for x in lines) == [(t, n) for t in range(8) for n in range(50)]
    assert spool.commits <= 400


@pytest.mark.unit
def test_after_a_crash_the_hidden_files_are_published_without_their_torn_last_line(tmp_path: Path) -> None:
    # What kill -9 leaves: an acknowledged line, then part of a line whose request was never answered.
    (tmp_path / ".events-20250630T120000000000-abcdef.jsonl.part").write_bytes(b'{"n":1}\n{"n":')
    (tmp_path / ".events-20250630T120001000000-abcdef.jsonl.part").write_bytes(b'{"n":')
    published = recover(tmp_path)
    assert [p.name for p in published] == ["events-20250630T120000000000-abcdef.jsonl"]
    assert published[0].read_bytes() == b'{"n":1}\n'
    assert list(tmp_path.iterdir()) == published


# --------------------------------------------------------------------------- the HTTP API (stage)


def _config(folder: Path, traits: list[dict] | None = None) -> CDPConfig:
    """A CRM person source and a collector-fed website source, on `folder`."""
    (folder / "landing" / "crm").mkdir(parents=True, exist_ok=True)
    (folder / "landing" / "crm" / "people.csv").write_text("id,first,last,email\nC1,Ann,Lee,ann@example.org\n")
    raw = {
        "warehouse": {"path": str(folder / "warehouse.duckdb")},
        "landing": {"path": str(folder / "landing"), "settle_seconds": 0},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "last_name": "last", "email": "email"},
                "identifiers": [{"path": "email", "type": "email"}],
            },
            {"name": "website", "format": "segment", "segment": {"user_id_type": "shop_customer_id"}},
        ],
        "profiles": {"as_of": "latest_activity", "traits": traits or []},
    }
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[CollectorServer, CDPConfig]]:
    config = _config(
        tmp_path,
        traits=[
            {
                "name": "shoe_revenue",
                "from": "events",
                "aggregate": "sum",
                "column": "properties.revenue",
                "where": "properties.category = 'shoes'",
            },
            {"name": "last_page_path", "from": "events", "aggregate": "last", "column": "context.page.path"},
        ],
    )
    server = _serving(config)
    yield server, config
    server.shutdown()
    server.server_close()


def _serving(config: CDPConfig, **options: Any) -> CollectorServer:
    """A collector of the website source on a free port, serving in a thread; the caller shuts it down."""
    keys = load_write_keys({WRITE_KEYS_ENV: f"website:{KEY}"}, ["website"])
    server = CollectorServer(
        ("127.0.0.1", 0),
        keys,
        {"website": config.collector_folder(config.sources[1])},
        rotate_bytes=1 << 20,
        rotate_seconds=3600,
        **options,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stored(config: CDPConfig) -> list[dict]:
    folder = config.collector_folder(config.sources[1])
    files = sorted(folder.glob("*.jsonl")) + sorted(folder.glob(".*.part"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


@pytest.mark.stage
def test_bad_requests_get_their_status_and_reason_and_nothing_is_written(collector) -> None:
    server, config = collector
    url, auth = server.url, (KEY, "")
    invalid = requests.post(f"{url}/v1/track", data=b"{not json", auth=auth)
    assert invalid.status_code == 400 and "invalid JSON" in invalid.json()["reason"]
    missing = requests.post(f"{url}/v1/track", json={"userId": "u1"}, auth=auth)
    assert missing.status_code == 400 and missing.json()["reason"] == "a track needs event (the event's name)"
    numbered = requests.post(f"{url}/v1/track", json={"userId": "u1", "event": 42}, auth=auth)
    assert numbered.status_code == 400
    assert numbered.json()["reason"] == "event must be a string (the event's name), found int"
    wrong_and_invalid = requests.post(f"{url}/v1/track", data=b"{not json", auth=("wrong-key", ""))
    assert wrong_and_invalid.status_code == 401 and "unknown write key" in wrong_and_invalid.json()["reason"]
    for wrong in ((("wrong-key", ""),), ()):
        refused = requests.post(
            f"{url}/v1/track", json={"userId": "u1", "event": "E"}, auth=wrong[0] if wrong else None
        )
        assert refused.status_code == 401 and "write key" in refused.json()["reason"]
    # Nested past what the extract reads (a few kilobytes of brackets): refused, alone or in a batch.
    deep = '{"userId": "u1", "event": "E", "properties": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
    nested = requests.post(f"{url}/v1/track", data=deep, auth=auth)
    assert nested.status_code == 400 and "nested more than 100 levels deep" in nested.json()["reason"]
    nested_batch = requests.post(f"{url}/v1/batch", data='{"batch": [' + deep[:-1] + ', "type": "track"}]}', auth=auth)
    assert nested_batch.status_code == 400 and "nested more than 100 levels" in nested_batch.json()["reason"]
    big = {"userId": "u1", "event": "E", "properties": {"x": "y" * MAX_EVENT_BYTES}}
    assert requests.post(f"{url}/v1/track", json=big, auth=auth).status_code == 413
    batch = {"batch": [{"type": "track", "userId": "u1", "event": "E", "properties": {"x": "y" * 30_000}}] * 20}
    assert requests.post(f"{url}/v1/batch", json=batch, auth=auth).status_code == 413
    assert requests.post(f"{url}/v1/batch", json={"batch": [{"type": "track"}]}, auth=auth).status_code == 400
    assert requests.post(f"{url}/v1/nothing", json={}, auth=auth).status_code == 404
    assert _stored(config) == []


@pytest.mark.stage
def test_an_id_cleaning_would_refuse_is_refused_and_every_event_accepted_is_cleaned(
    collector, instance: dg.DagsterInstance
) -> None:
    """Stored, an event whose messageId, anonymousId, userId, previousId or groupId is over cleaning's limit
    for what it is read as, or holds a control character, would be quarantined (or lose the id) after the SDK
    was told it arrived: the call is refused instead, and inside a batch the event is one of its rejected.
    Every event accepted at the limits is cleaned with none of its ids refused."""
    server, config = collector
    events = {
        "messageId": {"type": "track", "userId": "u1", "event": "E"},
        "anonymousId": {"type": "track", "event": "E"},
        "userId": {"type": "identify", "anonymousId": "a1"},
        "previousId": {"type": "alias", "userId": "u1"},
        "groupId": {"type": "group", "userId": "u1"},
    }
    accepted = []
    for field, event in events.items():
        limit = FIELD_LIMITS[field]
        # Each event's messageId names it, unless the messageId is what is tried.
        longest = {**event, "messageId": f"{field}-ok", field: "i" * limit}
        too_long = {**event, "messageId": f"{field}-long", field: "i" * (limit + 1)}
        control = {**event, "messageId": f"{field}-control", field: "i\x0bi"}
        reasons = [
            f"{field} is {limit + 1} characters long; at most {limit} are accepted",
            f"{field} contains control character U+000B",
        ]
        for refused, reason in zip((too_long, control), reasons, strict=True):
            one = requests.post(f"{server.url}/v1/{event['type']}", json=refused, auth=(KEY, ""))
            assert one.status_code == 400 and one.json()["reason"] == reason
        answer = requests.post(f"{server.url}/v1/batch", json={"batch": [too_long, longest, control]}, auth=(KEY, ""))
        assert answer.status_code == 200
        assert answer.json()["rejected"] == [{"index": 0, "reason": reasons[0]}, {"index": 2, "reason": reasons[1]}]
        accepted.append(longest["messageId"])
    assert sorted(e["messageId"] for e in _stored(config)) == sorted(accepted)
    cleaned, refused = _published_and_cleaned(server, config, instance, "event_id")
    assert sorted(e for (e,) in cleaned) == sorted(accepted) and refused == []


@pytest.mark.stage
def test_a_browser_on_another_origin_may_send_and_read_the_answer(collector) -> None:
    """analytics.js on the shop's pages posts to the collector's host: the preflight is answered, and every
    answer carries the header without which the browser hides it (and the library sends the events again)."""
    server, config = collector
    origin = {"Origin": "https://shop.example.com"}
    preflight = requests.options(
        f"{server.url}/v1/batch",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    # As analytics.js sends it: text/plain (no preflight), the write key in the body, a short path.
    body = json.dumps({"writeKey": KEY, "type": "track", "event": "Viewed", "anonymousId": "a1"})
    sent = requests.post(f"{server.url}/v1/t", data=body, headers={**origin, "Content-Type": "text/plain"})
    assert sent.status_code == 200 and sent.headers["Access-Control-Allow-Origin"] == "*"
    refused = requests.post(f"{server.url}/v1/t", data="{", headers={**origin, "Content-Type": "text/plain"})
    assert refused.status_code == 400 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert [e["event"] for e in _stored(config)] == ["Viewed"]
    server.allowed_origins = frozenset({"https://shop.example.com"})
    other = requests.post(
        f"{server.url}/v1/t", data=body, headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    listed = requests.post(f"{server.url}/v1/t", data=body, headers={**origin, "Content-Type": "text/plain"})
    assert listed.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"


@pytest.mark.stage
def test_a_batch_keeps_its_valid_events_and_reports_the_others(collector) -> None:
    server, config = collector
    batch = {
        "sentAt": "2025-06-30T12:00:05Z",
        "context": {"library": {"name": "test"}},
        "batch": [
            {"type": "track", "userId": "u1", "event": "A", "messageId": "m1", "timestamp": "2025-06-30T12:00:00Z"},
            {"type": "track", "userId": "u1"},
            {"type": "identify", "anonymousId": "a1", "traits": {"email": "ann@example.org"}},
            {"type": "alias", "userId": "u1"},
        ],
    }
    # gzip, as SDKs may send it.
    answer = requests.post(
        f"{server.url}/v1/b",
        data=gzip.compress(json.dumps(batch).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=(KEY, ""),
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "a track needs event (the event's name)"),
        (3, "an alias needs previousId"),
    ]
    stored = _stored(config)
    assert [e["type"] for e in stored] == ["track", "identify"]
    assert stored[0]["messageId"] == "m1" and stored[1]["messageId"]
    assert all(e["context"]["library"] == {"name": "test"} for e in stored)


# --------------------------------------------------------------------------- through the pipeline (dagster)


def _refresh(config: CDPConfig, instance: dg.DagsterInstance) -> None:
    result = build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert result.success


def _land_calls_and_refresh(config: CDPConfig, instance: dg.DagsterInstance, calls: list[dict]) -> None:
    """Write `calls` as the collector stores them (a messageId each, a second apart from 2026-11-30 10:00 UTC)
    into the second source's collector folder, and run a full refresh."""
    folder = config.collector_folder(config.sources[1])
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({**call, "messageId": f"m{i}", "timestamp": f"2026-11-30T10:00:{i:02d}Z"})
        for i, call in enumerate(calls)
    ]
    (folder / "events-1.jsonl").write_text("\n".join(lines) + "\n")
    _refresh(config, instance)


def _published_and_cleaned(
    server: CollectorServer, config: CDPConfig, instance: dg.DagsterInstance, columns: str
) -> tuple[list[tuple], list[tuple]]:
    """Publish what the collector holds for the website, run a full refresh, and read the website's cleaned
    events (`columns`, in the order of the first) and its quarantine rows (field and reason)."""
    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        cleaned = conn.execute(f"select {columns} from clean.events where source = 'website' order by 1").fetchall()
        refused = conn.execute("select field, reason from cdp.quarantine where source = 'website'").fetchall()
    return cleaned, refused


@pytest.mark.dagster
def test_the_segment_sdks_calls_reach_cleaned_events_the_identity_map_and_traits(
    collector, instance: dg.DagsterInstance
) -> None:
    from segment.analytics import Client

    server, config = collector
    errors: list[Exception] = []
    sdk = Client(KEY, host=server.url, sync_mode=True, on_error=lambda error, batch: errors.append(error))
    # One second apart, so the order below is the calls' order: calls made within one clock tick would tie.
    start = datetime.now(UTC) - timedelta(minutes=1)
    at = iter(start + timedelta(seconds=second) for second in range(8))
    sdk.identify("u1", {"email": "Ann@Example.org"}, anonymous_id="anon-1", timestamp=next(at))
    sdk.track(
        anonymous_id="anon-1",
        event="Product Viewed",
        properties={"category": "shoes", "revenue": 40},
        timestamp=next(at),
    )
    sdk.track(
        "u1",
        "Order Completed",
        {"category": "shoes", "revenue": 59.5},
        context={"page": {"path": "/cart"}},
        timestamp=next(at),
    )
    sdk.track("u1", "Order Completed", {"category": "hats", "revenue": 1000}, timestamp=next(at))
    sdk.page("u1", "Shop", "Checkout", {"path": "/checkout"}, timestamp=next(at))
    sdk.alias("anon-0", "u1", timestamp=next(at))
    sdk.track(anonymous_id="anon-0", event="Product Viewed", properties={"category": "hats"}, timestamp=next(at))
    sdk.group("u1", "acct-1", {"name": "Acme", "email": "info@acme.example"}, timestamp=next(at))
    assert errors == []
    server.spools["website"].close()  # publish now rather than at rotate_seconds
    _refresh(config, instance)

    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        events = conn.execute(
            "select event, source_record_id, group_id, properties->>'$.category', traits->>'$.name' "
            "from clean.events where source = 'website' order by occurred_at"
        ).fetchall()
        assert [e[0] for e in events] == [
            "identify", "Product Viewed", "Order Completed", "Order Completed", "page", "alias", "Product Viewed",
            "group",
        ]  # fmt: skip
        assert events[1][3] == "shoes" and events[7][2:] == ("acct-1", None, "Acme")
        # A page's name and category are properties too, as analytics.js sends them.
        page = conn.execute("select properties from clean.events where event = 'page'").fetchone()[0]
        assert json.loads(page) == {"name": "Checkout", "category": "Shop", "path": "/checkout"}
        # One customer: the CRM person, found by e-mail through identify, and every browser the user used.
        customers = conn.execute(
            "select source, source_record_id, customer_id from cdp.identity_map order by all"
        ).fetchall()
        assert {c[2] for c in customers} == {customers[0][2]}
        assert {(c[0], c[1]) for c in customers} >= {("crm", "C1"), ("website", "anon-0"), ("website", "anon-1")}
        # A group's traits describe the account: its e-mail links nobody.
        assert not conn.execute("select * from clean.events_identifiers where id_value like '%acme%'").fetchall()
        shoes, path = conn.execute("select shoe_revenue, last_page_path from cdp.golden_profiles").fetchone()
        assert shoes == pytest.approx(99.5) and path is not None


@pytest.mark.dagster
def test_a_visitor_who_identified_with_an_email_only_has_it_on_the_profile(
    collector, instance: dg.DagsterInstance
) -> None:
    """Segment's way of giving a profile an e-mail is identify's traits: a visitor no person source knows
    gets it as the profile's e-mail, so e-mail segments and destinations reach them."""
    from segment.analytics import Client

    server, config = collector
    errors: list[Exception] = []
    sdk = Client(KEY, host=server.url, sync_mode=True, on_error=lambda error, batch: errors.append(error))
    at = datetime.now(UTC) - timedelta(minutes=1)
    sdk.identify("u9", {"email": "Newbie+Tea@Example.net"}, anonymous_id="anon-9", timestamp=at)
    sdk.track("u9", "Product Viewed", {"category": "tea"}, timestamp=at + timedelta(seconds=1))
    assert errors == []
    server.spools["website"].close()
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        [(customer, email, emails)] = conn.execute(
            """select p.customer_id, p.email, p.emails from cdp.golden_profiles p
               join cdp.identity_map m using (customer_id) where m.source_record_id = 'anon-9'"""
        ).fetchall()
        assert (email, emails) == ("newbie@example.net", ["newbie@example.net"])
        assert conn.execute(
            "select source, rule from cdp.profile_provenance where customer_id = ? and attribute = 'email'", [customer]
        ).fetchall() == [("website", "latest_activity")]


@pytest.mark.dagster
def test_the_name_a_visitor_gave_in_an_identify_is_their_profile_name(collector, instance: dg.DagsterInstance) -> None:
    """A visitor no person source knows takes the name of their latest identify (firstName and lastName,
    else name, cleaned as a person record's); a CRM person keeps the CRM's name, an account's name in a
    group call names nobody, and a shared device's identifies give neither person's name to the device."""
    from segment.analytics import Client

    server, config = collector
    errors: list[Exception] = []
    sdk = Client(KEY, host=server.url, sync_mode=True, on_error=lambda error, batch: errors.append(error))
    start = datetime.now(UTC) - timedelta(minutes=1)
    at = iter(start + timedelta(seconds=second) for second in range(12))
    sdk.identify("u1", {"firstName": "bea", "lastName": "KOWALSKI"}, anonymous_id="anon-1", timestamp=next(at))
    sdk.identify("u1", {"firstName": "Beata", "lastName": "Kowalska"}, anonymous_id="anon-1", timestamp=next(at))
    sdk.identify("u1", {"plan": "gold"}, anonymous_id="anon-1", timestamp=next(at))  # no name: the last one holds
    sdk.identify("u2", {"name": "Dr. Carl van Dyke"}, anonymous_id="anon-2", timestamp=next(at))
    sdk.identify("u3", {"firstName": 42, "lastName": "?!"}, anonymous_id="anon-3", timestamp=next(at))
    # Known to the CRM as Ann Lee: what she calls herself on the website does not replace it.
    sdk.identify("u4", {"email": "ann@example.org", "firstName": "Annie"}, anonymous_id="anon-4", timestamp=next(at))
    sdk.group("u5", "acme", {"name": "Acme Corp"}, anonymous_id="anon-5", timestamp=next(at))
    # A shop kiosk where two CRM customers signed in, one after the other.
    people = config.landing_path / "crm" / "people.csv"
    people.write_text(people.read_text() + "C2,Bo,Chan,bo@example.org\n")
    sdk.identify("u6", {"email": "ann@example.org", "firstName": "Ann"}, anonymous_id="kiosk", timestamp=next(at))
    sdk.identify("u7", {"email": "bo@example.org", "firstName": "Bo"}, anonymous_id="kiosk", timestamp=next(at))
    assert errors == []
    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        names = dict(
            conn.execute(
                """select m.source_record_id, (p.first_name, p.middle_name, p.last_name) from cdp.golden_profiles p
                   join cdp.identity_map m using (customer_id) where m.source = 'website'"""
            ).fetchall()
        )
        provenance = conn.execute(
            """select m.source_record_id, v.source, v.source_record_id, v.rule from cdp.profile_provenance v
               join cdp.identity_map m using (customer_id) where v.attribute = 'name' and m.source = 'website'
               order by 1"""
        ).fetchall()
    assert names == {
        "anon-1": ("Beata", None, "Kowalska"),
        "anon-2": ("Carl", None, "van Dyke"),
        "anon-3": (None, None, None),
        "anon-4": ("Ann", None, "Lee"),
        "anon-5": (None, None, None),
        "kiosk": (None, None, None),
    }
    assert provenance == [
        ("anon-1", "website", "anon-1", "latest_activity"),
        ("anon-2", "website", "anon-2", "latest_activity"),
        ("anon-4", "crm", "C1", "source_priority"),
    ]

    # A later identify reaches the profile through an incremental run, as a rebuild gives it.
    sdk.identify("u3", {"first_name": "Dana", "last_name": "Ng"}, anonymous_id="anon-3", timestamp=next(at))
    assert errors == []
    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        assert conn.execute(
            """select p.first_name, p.last_name, r.mode from cdp.golden_profiles p
               join cdp.identity_map m using (customer_id), (select mode from meta.profile_runs order by run_seq desc
               limit 1) r where m.source_record_id = 'anon-3'"""
        ).fetchall() == [("Dana", "Ng", "incremental")]
    check = build_definitions(config).resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    [evaluation] = [e for e in check.get_asset_check_evaluations() if e.check_name == "equals_a_rebuild"]
    assert evaluation.passed, evaluation.metadata


@pytest.mark.dagster
def test_events_delivered_again_are_cleaned_once_and_their_copies_quarantined(
    collector, instance: dg.DagsterInstance
) -> None:
    server, config = collector
    spool = server.spools["website"]
    batch = [{"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m{i}"} for i in range(3)]
    assert requests.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(KEY, "")).status_code == 200
    first = spool.rotate_if_due(force=True)
    # An SDK that never heard the answer sends the batch again: same messageIds, a later file.
    again = [*batch, {"type": "track", "userId": "u9", "event": "E", "messageId": "m9"}]
    assert requests.post(f"{server.url}/v1/batch", json={"batch": again}, auth=(KEY, "")).status_code == 200
    second = spool.rotate_if_due(force=True)
    assert first is not None and second is not None and first.name < second.name
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        cleaned = conn.execute("select event_id, file from clean.events where source = 'website' order by 1").fetchall()
        reasons = conn.execute(
            "select value, file, reason from clean.events_quarantine where source = 'website' order by value"
        ).fetchall()
        raw = conn.execute("select count(*) from raw.website").fetchone()
    assert raw == (7,)  # every copy is loaded; cleaning accounts for each: 4 events + 3 quarantined copies
    first_rel, second_rel = (p.relative_to(config.landing_path).as_posix() for p in (first, second))
    assert cleaned == [("m0", first_rel), ("m1", first_rel), ("m2", first_rel), ("m9", second_rel)]
    assert [(r[0], r[1]) for r in reasons] == [("m0", second_rel), ("m1", second_rel), ("m2", second_rel)]
    assert all(r[2].startswith(f"duplicate event id: already delivered in {first_rel} line ") for r in reasons)


# --------------------------------------------------------------------------- configuration (unit)


@pytest.mark.unit
def test_a_trait_reads_json_paths_checked_at_load(tmp_path: Path) -> None:
    bad_compare = {"name": "t", "from": "events", "aggregate": "count", "where": "properties.revenue > 100"}
    with pytest.raises(ConfigError, match="explicit cast"):
        _config(tmp_path, [bad_compare])
    bad_root = {"name": "t", "from": "events", "aggregate": "count", "where": "payload.revenue = '1'"}
    with pytest.raises(ConfigError, match=r"payload\.revenue \(a column of another table\)"):
        _config(tmp_path, [bad_root])
    bad_column = {"name": "t", "from": "events", "aggregate": "sum", "column": "properties."}
    with pytest.raises(ConfigError, match="unknown column 'properties.'"):
        _config(tmp_path, [bad_column])
    good = {
        "name": "t",
        "from": "events",
        "aggregate": "sum",
        "column": "properties.revenue",
        "where": "try_cast(properties.revenue as double) > 100 and context.page.path like '/shop%'",
    }
    assert _config(tmp_path, [good]).profiles.traits[0].column == "properties.revenue"


@pytest.mark.unit
def test_a_segment_source_refuses_the_keys_its_format_fixes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
    raw["sources"][1]["glob"] = "web/*.jsonl"
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"sources\[1\] \(website\): glob: fixed by format 'segment'"):
        load_config(tmp_path / "cdp.yaml")
    assert config.sources[1].glob == "collector/website/*.jsonl"
    raw["sources"][1].pop("glob")
    raw["sources"][1]["timezone"] = "Europe/Berlin"
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"sources\[1\] \(website\): timezone: the collector stores every timestamp"):
        load_config(tmp_path / "cdp.yaml")


# --------------------------------------------------------------------------- the landing sensor (dagster)


@pytest.mark.dagster
def test_the_landing_sensor_ignores_the_open_file_and_loads_it_once_published(collector) -> None:
    server, config = collector
    sensor = build_definitions(config).resolve_sensor_def("landing_files_sensor")
    event = {"userId": "u1", "event": "E"}
    assert requests.post(f"{server.url}/v1/track", json=event, auth=(KEY, "")).status_code == 200
    with dg.instance_for_test() as instance:
        before = sensor(dg.build_sensor_context(instance=instance))
        # Acknowledged and durable, but still the hidden open file: only the CRM file is loaded.
        assert [r.asset_selection for r in before.run_requests] == [[dg.AssetKey(["raw", "crm"])]]
        server.spools["website"].rotate_if_due(force=True)
        after = sensor(dg.build_sensor_context(instance=instance, cursor=before.cursor))
    assert [r.asset_selection for r in after.run_requests] == [[dg.AssetKey(["raw", "website"])]]


# --------------------------------------------------------------------------- kill -9 (e2e)


@pytest.mark.e2e
def test_no_acknowledged_event_is_lost_when_the_collector_is_killed(tmp_path: Path) -> None:
    """The collector as `make dev` runs it, in its own process, killed with SIGKILL between requests that
    were answered and one left half-sent; restarted, it publishes every acknowledged event."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    _config(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, WRITE_KEYS_ENV: f"website:{KEY}", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "collector", "--config", str(tmp_path / "cdp.yaml"), "--port", str(port)]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        for line in process.stderr:
            if "listening on" in line:
                return process
        raise AssertionError(f"the collector exited with {process.wait()}")

    process = start()
    url = f"http://127.0.0.1:{port}"
    acknowledged = []
    for n in range(20):
        batch = [{"type": "track", "userId": "u", "event": "E", "messageId": f"m{n}-{i}"} for i in range(10)]
        assert requests.post(f"{url}/v1/batch", json={"batch": batch}, auth=(KEY, "")).status_code == 200
        acknowledged += [e["messageId"] for e in batch]
    # A request in flight: headers and part of the body sent, never answered.
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b'POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"userId":')
    process.send_signal(signal.SIGKILL)
    process.wait()
    half.close()
    folder = tmp_path / "landing" / "collector" / "website"
    assert not list(folder.glob("*.jsonl"))  # nothing was published: all of it is in the hidden file
    restarted = start()
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(timeout=30) == 0
    stored = [json.loads(line)["messageId"] for p in sorted(folder.glob("*.jsonl")) for line in p.open()]
    assert sorted(stored) == sorted(acknowledged)
    assert not list(folder.glob(".*.part"))


@pytest.mark.unit
def test_a_second_collector_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first = Spool(tmp_path, rotate_bytes=1 << 20, rotate_seconds=30)
    with pytest.raises(SpoolError, match="another collector is writing to"):
        Spool(tmp_path, rotate_bytes=1 << 20, rotate_seconds=30)
    first.release()
    Spool(tmp_path, rotate_bytes=1 << 20, rotate_seconds=30).release()


@pytest.mark.dagster
def test_a_shared_device_or_someone_elses_email_does_not_merge_two_people(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A kiosk where Fay and then Gus logged in, and an identify giving Ivy's userId with Jon's e-mail,
    would each make two CRM people one customer: the activity record keeps only the links it can vouch
    for, and says so in identity.separated_links. Ann, who browsed and then logged in, still joins."""
    config = _config(tmp_path)
    raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
    raw["sources"][0]["identifiers"] = [{"path": "email", "type": "email"}, {"path": "id", "type": "shop_customer_id"}]
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(tmp_path / "cdp.yaml")
    (tmp_path / "landing" / "crm" / "people.csv").write_text(
        "id,first,last,email\n"
        "C-001,Ann,Lee,ann@example.org\n"
        "C-010,Fay,Wong,fay.wong@example.org\n"
        "C-011,Gus,Berg,gus.berg@example.org\n"
        "C-020,Ivy,Chen,ivy.chen@example.org\n"
        "C-021,Jon,Chen,jon.chen@example.org\n"
    )
    calls = [
        {"type": "track", "event": "Product Viewed", "anonymousId": "anon-ann"},
        {"type": "identify", "anonymousId": "anon-ann", "userId": "C-001"},
        {"type": "identify", "anonymousId": "anon-kiosk", "userId": "C-010"},
        {"type": "track", "event": "Product Viewed", "anonymousId": "anon-kiosk", "userId": "C-010"},
        {"type": "identify", "anonymousId": "anon-kiosk", "userId": "C-011"},
        {"type": "identify", "userId": "C-020", "traits": {"email": "jon.chen@example.org"}},
        {"type": "track", "event": "Order Completed", "userId": "C-020", "properties": {"revenue": 20}},
    ]
    _land_calls_and_refresh(config, instance, calls)

    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        customer = {
            (source if source == "website" else "") + record: c
            for source, record, c in conn.execute(
                "select source, source_record_id, customer_id from cdp.identity_map"
            ).fetchall()
        }
        separated = conn.execute(
            "select source_record_id, id_type, id_value, people, reason from identity.separated_links order by all"
        ).fetchall()
        links = conn.execute("select count(*) from identity.links where source_record_id = 'anon-kiosk'").fetchone()
    assert customer["websiteanon-ann"] == customer["C-001"]  # browsed, then logged in: one person
    assert len({customer[r] for r in ("C-010", "C-011", "websiteanon-kiosk")}) == 3  # the kiosk joins neither
    assert customer["C-020"] != customer["C-021"]  # Ivy and Jon stay two people
    assert customer["websiteC-020"] == customer["C-020"]  # Ivy's own events stay hers
    assert [(r, t, v, n) for r, t, v, n, _ in separated] == [
        ("C-020", "email", "jon.chen@example.org", 2),
        ("anon-kiosk", "shop_customer_id", "C-010", 2),
        ("anon-kiosk", "shop_customer_id", "C-011", 2),
    ]
    assert "kept only the links to the person its own id names" in separated[0][4]
    assert "links none of them" in separated[1][4]
    assert links == (1,)  # its anonymousId alone


@pytest.mark.dagster
def test_text_cut_inside_an_emoji_is_stored_as_utf8_and_cleaned_and_deep_nesting_is_answered(
    collector, instance: dg.DagsterInstance
) -> None:
    """A browser cutting a string inside an emoji sends half a surrogate pair (`"\\ud83c"`): acknowledged and
    stored as such, the line failed the source's whole load. It is stored as U+FFFD, as a browser's UTF-8
    encoder writes it, and cleaned with the rest. A body nested past what the collector reads is answered
    with a 400 instead of a dropped connection, which an SDK would send again."""
    server, config = collector
    half = '{"userId": "u1", "event": "Viewed", "messageId": "m-half", "properties": {"title": "hat \\ud83c"}}'
    whole = '{"userId": "u1", "event": "Viewed", "messageId": "m-whole", "properties": {"title": "\\ud83c\\udfa9"}}'
    for body in (half, whole):
        answer = requests.post(f"{server.url}/v1/track", data=body.encode(), auth=(KEY, ""))
        assert answer.status_code == 200
    deep = '{"userId": "u1", "event": "Deep", "properties": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    answer = requests.post(f"{server.url}/v1/track", data=deep.encode(), auth=(KEY, ""))
    assert answer.status_code == 400
    assert answer.json()["reason"] == "invalid JSON: arrays and objects nested more than 100 levels deep"
    cleaned, refused = _published_and_cleaned(server, config, instance, "event_id, properties ->> '$.title'")
    assert cleaned == [("m-half", "hat \ufffd"), ("m-whole", "\U0001f3a9")] and refused == []


@pytest.mark.dagster
def test_an_event_cleaning_would_quarantine_or_strip_of_its_name_is_refused(
    collector, instance: dg.DagsterInstance
) -> None:
    """Acknowledged, a track whose only id is blank lost its row in cleaning (no record id), one dated more
    than a day ahead of the collector's clock with no sentAt to correct it lost its row (a time in the
    future), and an event name over cleaning's limit or holding a control character was cleaned without its
    name: each is refused with its reason, and each event accepted beside them is cleaned whole."""
    server, config = collector
    now = datetime.now(UTC)
    limit = text_limit("event")
    refused = [
        ({"type": "track", "userId": "  ", "event": "E", "messageId": "blank"}, "a track needs userId or anonymousId"),
        (
            {"type": "track", "userId": "u1", "event": "E" * (limit + 1), "messageId": "long"},
            f"event is {limit + 1} characters long; at most {limit} are accepted",
        ),
        (
            {"type": "track", "userId": "u1", "event": "Viewed\x00", "messageId": "control"},
            "event contains control character U+0000",
        ),
        (
            {"type": "track", "userId": "u1", "event": "E", "messageId": "ahead", "timestamp": "2099-01-01T00:00:00Z"},
            "timestamp 2099-01-01T00:00:00Z is more than 1 day after the collector received it",
        ),
    ]
    accepted = [
        {"type": "track", "userId": " ", "anonymousId": "a1", "event": "Viewed", "messageId": "ok-blank-user"},
        {"type": "track", "userId": "u1", "event": "E" * limit, "messageId": "ok-longest"},
        {
            "type": "track",
            "userId": "u1",
            "event": "Later",
            "messageId": "ok-ahead-corrected",
            "timestamp": "2099-01-01T00:00:00Z",
            "sentAt": "2099-01-01T00:00:05Z",
        },
        {
            "type": "track",
            "userId": "u1",
            "event": "Soon",
            "messageId": "ok-ahead",
            "timestamp": (now + timedelta(hours=20)).isoformat(),
        },
    ]
    answer = requests.post(
        f"{server.url}/v1/batch", json={"batch": [e for e, _ in refused] + accepted}, auth=(KEY, "")
    ).json()
    assert [r["index"] for r in answer["rejected"]] == [0, 1, 2, 3] and answer["accepted"] == len(accepted)
    for (event, reason), rejected in zip(refused, answer["rejected"], strict=True):
        assert rejected["reason"].startswith(reason)
        one = requests.post(f"{server.url}/v1/track", json=event, auth=(KEY, ""))
        assert one.status_code == 400 and one.json()["reason"].startswith(reason)
    cleaned, quarantined = _published_and_cleaned(server, config, instance, "event_id, source_record_id, event")
    assert cleaned == [
        ("ok-ahead", "u1", "Soon"),
        ("ok-ahead-corrected", "u1", "Later"),
        ("ok-blank-user", "a1", "Viewed"),
        ("ok-longest", "u1", "E" * limit),
    ]
    assert quarantined == []


@pytest.mark.dagster
def test_rudderstacks_browser_sdk_may_send_from_another_origin_and_its_device_time_is_kept(
    collector, instance: dg.DagsterInstance
) -> None:
    """RudderStack's JavaScript SDK posts JSON with its own `AnonymousId` header, so the browser asks in its
    preflight to send that header: allowed, or the browser drops every event. Its events carry the device's
    time as `originalTimestamp` and `sentAt`, no `timestamp`: corrected for the device's clock as a
    `timestamp` is, not replaced by the time the collector received them (an event queued offline for
    days would otherwise count as today's)."""
    import base64

    server, config = collector
    origin = {"Origin": "https://shop.example.com"}
    asked = "authorization,anonymousid,content-type"
    preflight = requests.options(
        f"{server.url}/v1/track",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked},
    )
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"authorization", "anonymousid", "content-type"}
    # The device's clock is an hour fast, and the event waited three days in its queue.
    now = datetime.now(UTC)
    device = now + timedelta(hours=1)
    event = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "r-anon-1",
        "messageId": "r-1",
        "channel": "web",
        "context": {"library": {"name": "RudderLabs JavaScript SDK"}},
        "originalTimestamp": (device - timedelta(days=3)).isoformat(),
        "sentAt": device.isoformat(),
        "integrations": {"All": True},
    }
    headers = {
        **origin,
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
        "AnonymousId": base64.b64encode(b"r-anon-1").decode(),
    }
    answer = requests.post(f"{server.url}/v1/track", data=json.dumps(event), headers=headers)
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
    [stored] = _stored(config)
    received = datetime.fromisoformat(stored["receivedAt"])
    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        [(occurred,)] = conn.execute("select occurred_at from clean.events where event_id = 'r-1'").fetchall()
    # Three days before it was sent, by the collector's clock: receivedAt - (sentAt - originalTimestamp).
    assert occurred == (received - timedelta(days=3)).replace(tzinfo=None)


@pytest.mark.stage
def test_an_error_answer_carries_the_code_and_message_the_sdks_read(collector) -> None:
    """Segment's SDKs read an error's `code` and `message` (Segment's Python SDK falls back to `unknown`
    and the raw body; RudderStack's, which has no fallback, sent a refused batch again for a quarter of an
    hour): both are in every error answer, beside `reason`."""
    from segment.analytics.request import APIError, post

    server, _ = collector
    too_large = {"type": "track", "userId": "u1", "event": "E", "properties": {"x": "y" * MAX_EVENT_BYTES}}
    for key, batch, status, code in (
        (KEY, [too_large], 400, "invalid_request"),
        ("wrong-key", [{"type": "track", "userId": "u1", "event": "E"}], 401, "invalid_write_key"),
    ):
        with pytest.raises(APIError) as refused:
            post(key, host=server.url, batch=batch)
        assert (refused.value.status, refused.value.code) == (status, code)
        assert refused.value.message == refused.value.response.json()["reason"]


@pytest.mark.stage
def test_a_body_sent_in_chunks_is_read(collector) -> None:
    """A client that streams its body without knowing its length (a gzip stream, a generator) sends it
    with Transfer-Encoding: chunked and no Content-Length: such a batch was refused with a 411 and never
    stored. It is read, within the same limits as any body."""
    server, config = collector
    batch = {"batch": [{"type": "track", "userId": "u1", "event": "Viewed", "messageId": f"c-{n}"} for n in range(50)]}
    data = gzip.compress(json.dumps(batch).encode())

    def pieces(blob: bytes, size: int = 100) -> Iterator[bytes]:
        yield from (blob[at : at + size] for at in range(0, len(blob), size))

    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    answer = requests.post(f"{server.url}/v1/batch", data=pieces(data), headers=headers, auth=(KEY, ""))
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert answer.status_code == 200 and answer.json()["accepted"] == 50
    one = json.dumps({"userId": "u2", "event": "Plain", "messageId": "c-plain"}).encode()
    assert requests.post(f"{server.url}/v1/track", data=pieces(one, 7), auth=(KEY, "")).status_code == 200
    big = json.dumps({"userId": "u3", "event": "E", "properties": {"x": "y" * MAX_EVENT_BYTES}}).encode()
    too_large = requests.post(f"{server.url}/v1/track", data=pieces(big, 4096), auth=(KEY, ""))
    assert too_large.status_code == 413
    assert sorted(e["messageId"] for e in _stored(config)) == sorted([f"c-{n}" for n in range(50)] + ["c-plain"])


@pytest.mark.dagster
def test_a_shared_device_profile_takes_no_email_identity_set_aside(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A kiosk where Fay and then Gus identified with their e-mails joins neither of them; its customer's
    profile took the e-mail of the last one, so a segment sent to an e-mail tool reached Gus as a second
    profile, with Fay's browsing. The e-mails identity set aside are nobody's contact on the kiosk's profile;
    a visitor who identified alone still gets theirs."""
    config = _config(tmp_path)
    (tmp_path / "landing" / "crm" / "people.csv").write_text(
        "id,first,last,email\nC-010,Fay,Wong,fay.wong@example.org\nC-011,Gus,Berg,gus.berg@example.org\n"
    )
    calls = [
        {"type": "identify", "anonymousId": "anon-kiosk", "userId": "S-1", "traits": {"email": "fay.wong@example.org"}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "anon-kiosk", "userId": "S-1"},
        {"type": "identify", "anonymousId": "anon-kiosk", "userId": "S-2", "traits": {"email": "gus.berg@example.org"}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "anon-kiosk", "userId": "S-2"},
        {"type": "identify", "anonymousId": "anon-eve", "traits": {"email": "eve@example.org"}},
    ]
    _land_calls_and_refresh(config, instance, calls)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        emails = dict(
            conn.execute(
                """select m.source_record_id, p.email from cdp.identity_map m
                   join cdp.golden_profiles p using (customer_id) where m.source = 'website'"""
            ).fetchall()
        )
        separated = conn.execute("select count(*) from identity.separated_links where id_type = 'email'").fetchone()
        gus = conn.execute("select count(*) from cdp.golden_profiles where email = 'gus.berg@example.org'").fetchone()
    assert separated == (2,)  # the kiosk joins neither Fay nor Gus
    assert emails["anon-kiosk"] is None and gus == (1,)
    assert emails["anon-eve"] == "eve@example.org"


@pytest.mark.stage
def test_the_senders_address_fills_context_ip_when_configured(collector, tmp_path: Path) -> None:
    """Segment's API puts the sender's address in `context.ip` when the event has none there; server-side
    SDKs never send one. With `collector.client_ip` the collector does the same: the peer, or behind a
    proxy the last X-Forwarded-For address (the one the proxy saw); an address the event gives is kept, and
    by default none is added."""
    from segment.analytics import Client

    server, config = collector

    def send(message_id: str, headers: dict | None = None, context: dict | None = None) -> None:
        event = {"type": "track", "userId": "u1", "event": "E", "messageId": message_id, "context": context}
        answer = requests.post(f"{server.url}/v1/batch", json={"batch": [event]}, auth=(KEY, ""), headers=headers)
        assert answer.status_code == 200

    send("default")
    server.client_ip = "peer"
    client = Client(KEY, host=server.url, sync_mode=True)
    client.track("u1", "E", message_id="sdk")
    send("given", context={"ip": "198.51.100.4"})
    server.client_ip = "forwarded"
    send("proxied", headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"})
    send("not-an-address", headers={"X-Forwarded-For": "unknown"})
    ips = {e["messageId"]: (e.get("context") or {}).get("ip") for e in _stored(config)}
    assert ips == {
        "default": None,
        "sdk": "127.0.0.1",
        "given": "198.51.100.4",
        "proxied": "203.0.113.7",
        "not-an-address": "127.0.0.1",
    }
    path = tmp_path / "bad.yaml"
    raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
    path.write_text(yaml.safe_dump({**raw, "collector": {"client_ip": "always"}}, sort_keys=False))
    with pytest.raises(ConfigError, match="collector.client_ip"):
        load_config(path)


@pytest.mark.stage
def test_rudderstacks_beacon_batch_with_the_write_key_in_the_query_is_stored(collector) -> None:
    """As a page closes, RudderStack's browser SDK hands its queue to `navigator.sendBeacon`, which cannot set
    headers: a text/plain batch to `/beacon/v1/batch?writeKey=<key>`. It got a 404 and the events were lost.
    It is a batch like any other, and a wrong key in the query is refused as unknown."""
    server, config = collector
    batch = {
        "batch": [
            {
                "type": "page",
                "name": "Checkout",
                "anonymousId": "r-anon-2",
                "messageId": "beacon-1",
                "originalTimestamp": "2026-11-30T10:00:00.000Z",
                "sentAt": "2026-11-30T10:00:01.000Z",
            }
        ],
        "sentAt": "2026-11-30T10:00:01.000Z",
    }
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example.com"}
    sent = requests.post(f"{server.url}/beacon/v1/batch?writeKey={KEY}", data=json.dumps(batch), headers=headers)
    assert sent.status_code == 200 and sent.json()["accepted"] == 1
    wrong = requests.post(f"{server.url}/beacon/v1/batch?writeKey=nope", data=json.dumps(batch), headers=headers)
    assert wrong.status_code == 401 and wrong.json()["reason"].startswith("unknown write key")
    assert [(e["messageId"], e["type"]) for e in _stored(config)] == [("beacon-1", "page")]


@pytest.mark.stage
def test_events_a_stored_batch_refused_are_logged(collector, caplog: pytest.LogCaptureFixture) -> None:
    """A batch with one bad event is answered 200 with the event among its `rejected`, which no SDK reads:
    Segment's SDK reported success and the event was gone without a trace. The collector logs each refusal
    with the event's index, messageId and reason."""
    from segment.analytics.request import post

    server, config = collector
    caplog.set_level("WARNING", logger="collector")
    batch = [
        {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "good"},
        {"type": "track", "userId": "u1", "event": "E" * 300, "messageId": "too-long-name"},
    ]
    # The SDK's own upload of a batch: a 200 is success to it, whatever the answer's body says.
    assert post(KEY, host=server.url, batch=batch).status_code == 200
    assert [e["messageId"] for e in _stored(config)] == ["good"]
    [record] = [r for r in caplog.records if r.name == "collector"]
    assert record.getMessage() == (
        "website: 1 of a batch's 2 events refused, the others stored: event 1 (messageId too-long-name): "
        "event is 300 characters long; at most 200 are accepted"
    )


@pytest.mark.stage
def test_an_event_nested_to_the_limit_is_stored_alone_and_in_a_batch(collector) -> None:
    server, config = collector
    properties = json.loads("[" * 98 + "]" * 98)  # with the event and `properties`, 100 levels
    event = {"userId": "u1", "event": "E", "properties": {"x": properties}}
    assert requests.post(f"{server.url}/v1/track", json=event, auth=(KEY, "")).status_code == 200
    batch = {"batch": [{**event, "type": "track", "messageId": "m2"}]}
    answer = requests.post(f"{server.url}/v1/batch", json=batch, auth=(KEY, ""))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    stored = _stored(config)
    assert [e["properties"]["x"] == properties for e in stored] == [True, True]
    # What the collector stored, the extract reads: the same rule decides both.
    folder = config.collector_folder(config.sources[1])
    lines = [line for path in sorted(folder.glob(".*.part")) for line in path.read_bytes().splitlines()]
    assert [jsonl_line(n, line)[1] for n, line in enumerate(lines, start=1)] == [None, None]


@pytest.mark.dagster
def test_events_acknowledged_before_an_erasure_and_published_after_it_leave_no_trace_in_the_landing_folder(
    collector, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector holds what it acknowledged in a hidden file until it rotates: an erasure in between cannot
    rewrite it, so the extract that loads it refuses the person's lines as an erased person's and empties
    them in the file, which no source will ever send again without them."""
    from segment.analytics import Client

    from cdp_assets.privacy.assets import PRIVACY_JOB

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    server, config = collector
    errors: list[Exception] = []
    sdk = Client(KEY, host=server.url, sync_mode=True, on_error=lambda error, batch: errors.append(error))
    start = datetime.now(UTC) - timedelta(minutes=1)
    sdk.identify("u1", {"email": "ann@example.org"}, anonymous_id="anon-1", timestamp=start)
    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    # Acknowledged, still in the collector's hidden file, when the erasure runs: Ann again, and a stranger.
    sdk.track("u1", "Order Completed", {"revenue": 5}, anonymous_id="anon-1", timestamp=start + timedelta(seconds=1))
    sdk.track(anonymous_id="anon-2", event="Product Viewed", timestamp=start + timedelta(seconds=2))
    assert errors == []
    folder = config.privacy_requests_path
    folder.mkdir(parents=True)
    (folder / "r.csv").write_text("type,id_type,value,reference\nerase,email,ann@example.org,T-1\n")
    run_config = {"ops": {"privacy__requests": {"config": {"requests_file": "r.csv"}}}}
    defs = build_definitions(config)
    assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success

    server.spools["website"].rotate_if_due(force=True)
    _refresh(config, instance)
    landed = config.collector_folder(config.sources[1])
    text = "".join(path.read_text() for path in sorted(landed.glob("*.jsonl")))
    assert "anon-1" not in text and "ann@example.org" not in text and '"u1"' not in text
    assert "anon-2" in text
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        assert conn.execute(
            "select row_number, reason from cdp.quarantine where source = 'website' order by 1"
        ).fetchall() == [(1, "erased person")]
        # The stranger's event keeps its line, and the file, recorded as it now is, is not loaded again.
        assert conn.execute("select row_number from clean.events where source = 'website'").fetchall() == [(2,)]
    _refresh(config, instance)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        assert conn.execute("select count(*) from cdp.quarantine where source = 'website'").fetchone()[0] == 1


@pytest.mark.stage
def test_connections_that_stall_are_bounded_and_closed_and_the_collector_keeps_serving(tmp_path: Path) -> None:
    """Clients that open connections and send half a request (slowloris) hold a thread each: beyond
    max_connections one more is answered 503 at once, and a stalled one is closed after timeout_seconds,
    after which an SDK's request is served again."""
    server = _serving(_config(tmp_path), max_connections=2, timeout_seconds=0.5)
    host, port = server.server_address[:2]
    try:
        stalled = []
        for _ in range(2):
            connection = socket.create_connection((host, port), timeout=10)
            connection.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\nContent-Le")
            stalled.append(connection)
        with socket.create_connection((host, port), timeout=10) as third:
            third.sendall(b"GET /health HTTP/1.1\r\nHost: collector\r\n\r\n")
            answer = b"".join(iter(lambda: third.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.1 503 ") and b"collector.max_connections" in answer
        for connection in stalled:
            assert connection.recv(4096) == b""  # closed by the collector, not by this test
            connection.close()
        # Each slot is freed as its thread ends, just after the close: an SDK retries a 503 as this does.
        for _ in range(100):
            sent = requests.post(
                f"{server.url}/v1/track", auth=(KEY, ""), json={"userId": "u1", "event": "Viewed"}, timeout=10
            )
            if sent.status_code != 503:
                break
        assert sent.status_code == 200
    finally:
        server.shutdown()
        server.server_close()
