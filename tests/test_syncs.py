"""Destination syncs against a real HTTP server that fails, rate-limits and times out on purpose.

The warehouse is a real DuckDB database holding golden profiles and segment membership written
directly; the destination is the demo destination server on a free port, reached over real HTTP.
"""

import hashlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import requests
import yaml

import cdp_assets.syncs.state as sync_state
from cdp_assets.metadata import redact
from cdp_assets.syncs.assets import make_client, run_sync
from cdp_assets.syncs.state import plan_sync
from demo.destination_server import DestinationServer, Faults
from resources.config import CDPConfig, load_config
from resources.destinations import Change, RefusedError, RejectedError, RetryPolicy, deliver
from resources.schema import profile_columns
from resources.sql import Sql
from resources.warehouse import bootstrap

FAST_RETRY = {"max_attempts": 8, "base_delay_seconds": 0.01, "max_delay_seconds": 0.05, "timeout_seconds": 0.2}


def sha(text: str) -> str:
    """What an audience holds for a normalised identifier: its SHA-256, lower-case hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def audience(server: DestinationServer, **extra: object) -> dict:
    """A mirror hashed-audience destination on the demo server's audience `a`."""
    return {"type": "hashed_audience", "mode": "mirror", "url": f"{server.url}/audiences/a/members", **extra}


def make_config(tmp_path: Path, destination: dict) -> CDPConfig:
    raw = {
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "*.csv",
                "role": "person",
                "record_id": "id",
                "consent": {"email_marketing": "optin"},
            }
        ],
        "segments": [{"name": "vip", "where": "lifetime_revenue >= 100"}],
        "destinations": [
            {
                "name": "dest",
                "segment": "vip",
                "purpose": "email_marketing",
                **({} if destination.get("type") == "file" else {"retry": FAST_RETRY}),  # a file is not retried
                **destination,
            }
        ],
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


class Warehouse:
    """Profiles and membership written by hand, so each test states exactly who should be where."""

    def __init__(self, config: CDPConfig, path: Path | None = None) -> None:
        self.config = config
        self.conn = duckdb.connect(str(path) if path else ":memory:")
        bootstrap(self.conn)
        ddl = ", ".join(f'"{c}" {t}' for c, t in profile_columns(config).items())
        self.conn.execute(f"create table cdp.golden_profiles ({ddl})")
        self.conn.execute("delete from cdp.segment_membership")

    def set_members(self, members: dict[str, dict]) -> None:
        """members: customer_id -> {email, phone, first_name, consent}."""
        self.conn.execute("delete from cdp.golden_profiles")
        self.conn.execute("delete from cdp.segment_membership")
        for customer, fields in members.items():
            self.conn.execute(
                "insert into cdp.golden_profiles (customer_id, email, phone, first_name, lifetime_revenue, "
                "consent_email_marketing) values (?, ?, ?, ?, 500, ?)",
                [
                    customer,
                    fields.get("email"),
                    fields.get("phone"),
                    fields.get("first_name"),
                    fields.get("consent", True),
                ],
            )
            self.conn.execute("insert into cdp.segment_membership (segment, customer_id) values ('vip', ?)", [customer])

    def add(self, customer: str, **columns: object) -> None:
        """One more member of 'vip', with the profile columns given (the others NULL)."""
        names = ", ".join(["customer_id", *columns])
        marks = ", ".join("?" * (len(columns) + 1))
        self.conn.execute(f"insert into cdp.golden_profiles ({names}) values ({marks})", [customer, *columns.values()])
        self.conn.execute("insert into cdp.segment_membership (segment, customer_id) values ('vip', ?)", [customer])

    def sync(self, run_id: str, client=None) -> dict:
        destination = self.config.destinations[0]
        # Backoff and Retry-After waits are computed and honoured by delivery; the test does not wait them out.
        return run_sync(Sql(self.conn), self.config, destination, run_id, client=client, sleep=lambda seconds: None)

    def changelog(self) -> list[tuple]:
        return self.conn.execute(
            "select run_id, key, operation, status from syncs.changelog order by logged_at, key"
        ).fetchall()


def people(n: int, **extra) -> dict[str, dict]:
    return {f"c{i:04d}": {"email": f"person{i}@example.org", "first_name": f"P{i}", **extra} for i in range(n)}


def state(server: DestinationServer, kind: str, name: str) -> dict:
    return requests.get(f"{server.url}/state/{kind}/{name}", timeout=5).json()


@pytest.fixture
def flaky_server():
    """30% 500s, 10% 429 with Retry-After, 5% slow answers past the client's timeout, seeded."""
    faults = Faults(fail_rate=0.3, rate_limit_rate=0.1, timeout_rate=0.05, timeout_seconds=0.4)
    with DestinationServer(port=0, faults=faults, seed=7) as server:
        yield server


@pytest.mark.stage
def test_flaky_destination_ends_equal_to_the_segment_without_duplicates(tmp_path, flaky_server):
    config = make_config(
        tmp_path,
        {
            "type": "rest",
            "mode": "mirror",
            "batch_size": 10,
            "upsert_url": f"{flaky_server.url}/rest/crm/upsert",
            "delete_url": f"{flaky_server.url}/rest/crm/delete",
            "fields": {"email": "email", "first_name": "first_name"},
        },
    )
    warehouse = Warehouse(config)
    members = people(200)
    warehouse.set_members(members)
    first = warehouse.sync("run-1")
    second = warehouse.sync("run-2")  # the one retry run
    records = state(flaky_server, "rest", "crm")["records"]
    assert set(records) == set(members)
    assert all(records[k]["email"] == v["email"] for k, v in members.items())
    log = warehouse.changelog()
    sent = [key for _, key, _, status in log if status == "sent"]
    assert sorted(sent) == sorted(members)  # each row acknowledged exactly once
    # Every failure or deferral of the first run is accounted for, and delivered by the second.
    troubled = {key for run, key, _, status in log if run == "run-1" and status in ("failed", "deferred")}
    assert troubled == {key for run, key, _, status in log if run == "run-2" and status == "sent"}
    assert first["requests"] > 20 and first["request_retries"] > 0
    assert second["added"] == len(troubled)
    assert warehouse.sync("run-3")["requests"] == 0  # nothing changed: nothing sent
    statuses = [r["status"] for r in requests.get(f"{flaky_server.url}/requests", timeout=5).json()["requests"]]
    assert {500, 429} <= set(statuses)


class CrashingClient:
    """The real REST client, with the process 'dying' before the third batch is sent."""

    def __init__(self, inner, crash_on: int) -> None:
        self.inner, self.calls, self.crash_on = inner, 0, crash_on

    def send(self, changes, batch):
        self.calls += 1
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("simulated crash between batches")
        self.inner.send(changes, batch)

    def close(self):
        self.inner.close()


@pytest.mark.stage
def test_a_crash_between_batches_loses_nothing(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path, {"type": "rest", "mode": "upsert", "batch_size": 5, "upsert_url": f"{server.url}/rest/crm/upsert"}
        )
        warehouse = Warehouse(config)
        members = people(23)
        warehouse.set_members(members)
        with pytest.raises(KeyboardInterrupt):
            warehouse.sync("crashed", CrashingClient(make_client(config.destinations[0]), crash_on=3))
        acknowledged = warehouse.conn.execute("select count(*) from syncs.destination_state").fetchone()[0]
        assert acknowledged == 10  # the two batches the destination accepted, not one row more
        report = warehouse.sync("after")
        assert report["added"] == 13
        assert set(state(server, "rest", "crm")["records"]) == set(members)


@pytest.mark.stage
def test_batch_numbers_are_reserved_a_block_at_a_time_and_never_given_twice(monkeypatch, tmp_path):
    monkeypatch.setattr(sync_state, "RESERVED_NUMBERS", 2)
    warehouse = Warehouse(make_config(tmp_path, {"type": "webhook", "url": "http://127.0.0.1:9/unused"}))
    sql = Sql(warehouse.conn)
    sync_state.ensure_tables(sql)
    change = [Change("c1", "add", row_hash="h", payload="{}")]
    first = sync_state.BatchOpener(sql, "dest")
    keys = [first.open(change) for _ in range(5)]
    # Two more runs, one batch each, each with its opener: the numbers reserved and not used (6, 8) are skipped.
    keys += [sync_state.BatchOpener(sql, "dest").open(change) for _ in range(2)]
    numbers = warehouse.conn.execute("select sequence, batch_id from syncs.in_flight order by sequence").fetchall()
    assert [n for n, _ in numbers] == [1, 2, 3, 4, 5, 7, 9]
    assert len({k for _, k in numbers}) == 7 and {k for _, k in numbers} == set(keys)
    assert warehouse.conn.execute("select last_sequence from syncs.batch_sequence").fetchone() == (10,)


# A sync process that kills itself (SIGKILL: no `finally` runs) as it is about to send its third batch: the
# destination has accepted two batches, the third is in flight, and nothing was folded into the state.
_KILLED_SYNC = """
import os, signal, sys
import duckdb
from pathlib import Path
from cdp_assets.syncs.assets import make_client, run_sync
from resources.config import load_config
from resources.sql import Sql
from resources.warehouse import bootstrap

config = load_config(Path(sys.argv[1]))
destination = config.destinations[0]
inner = make_client(destination)


class Dying:
    calls = 0

    def send(self, changes, batch):
        Dying.calls += 1
        if Dying.calls == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return inner.send(changes, batch)

    def close(self):
        inner.close()


conn = duckdb.connect(sys.argv[2])
bootstrap(conn)
run_sync(Sql(conn), config, destination, "killed", client=Dying(), sleep=lambda seconds: None)
"""


@pytest.mark.e2e  # a sync in a process of its own, killed
def test_a_sync_killed_before_it_folded_what_was_accepted_sends_nothing_twice(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path, {"type": "rest", "mode": "upsert", "batch_size": 5, "upsert_url": f"{server.url}/rest/crm/upsert"}
        )
        path = tmp_path / "warehouse.duckdb"
        warehouse = Warehouse(config, path)
        members = people(23)
        warehouse.set_members(members)
        warehouse.conn.close()
        killed = subprocess.run(
            [sys.executable, "-c", _KILLED_SYNC, str(config.base_dir / "cdp.yaml"), str(path)],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            timeout=120,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")[-2000:]
        conn = duckdb.connect(str(path))
        bootstrap(conn)
        # Two answered batches, journaled and not yet folded; the third in flight.
        assert conn.execute("select count(*) from syncs.acknowledged").fetchone()[0] == 10
        assert conn.execute("select count(*) from syncs.destination_state").fetchone()[0] == 0
        assert conn.execute("select count(*) from syncs.in_flight").fetchone()[0] == 1
        report = run_sync(Sql(conn), config, config.destinations[0], "after", sleep=lambda seconds: None)
        assert report["added"] == 13 and report["resent_batches"] == 1
        assert conn.execute("select count(*) from syncs.acknowledged").fetchone()[0] == 0
        held = conn.execute("select key from syncs.destination_state where present order by key").fetchall()
        assert [k for (k,) in held] == sorted(members)
        conn.close()
        sent = [r for r in requests.get(f"{server.url}/requests", timeout=5).json()["requests"] if r["batch_id"]]
        # Five batches of 23 rows, each sent once: the accepted rows were not sent again.
        assert len(sent) == len({r["batch_id"] for r in sent}) == 5
        assert not any(r["duplicate"] for r in sent)
        assert set(state(server, "rest", "crm")["records"]) == set(members)


@pytest.mark.stage
def test_consent_is_required_and_revocation_removes_from_a_mirror(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w"})
        warehouse = Warehouse(config)
        members = people(5)
        members["c0003"]["consent"] = None  # unknown is not consent
        members["c0004"]["consent"] = False
        warehouse.set_members(members)
        report = warehouse.sync("r1")
        assert report["added"] == 3 and report["skipped_for_consent"] == 2
        assert set(state(server, "webhook", "w")["audiences"]["vip"]) == {"c0000", "c0001", "c0002"}
        members["c0001"]["consent"] = False
        warehouse.set_members(members)
        report = warehouse.sync("r2")
        assert report["removed"] == 1
        assert set(state(server, "webhook", "w")["audiences"]["vip"]) == {"c0000", "c0002"}


@pytest.mark.stage
def test_a_member_without_a_required_field_is_not_sent_and_leaves_a_mirror_when_it_is_gone(tmp_path):
    """An SMS tool has no use for a member without a phone: with `required: [phone]` such members are counted,
    not sent (blank text is no phone either), and one whose phone goes leaves a mirror as a member leaving
    the segment does."""
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path,
            {
                "type": "rest",
                "mode": "mirror",
                "upsert_url": f"{server.url}/rest/sms/upsert",
                "delete_url": f"{server.url}/rest/sms/delete",
                "fields": {"phone": "phone", "first_name": "first_name"},
                "required": ["phone"],
            },
        )
        warehouse = Warehouse(config)
        members = people(4)
        members["c0000"]["phone"] = "+14155550100"
        members["c0001"]["phone"] = "+14155550101"
        members["c0002"]["phone"] = "   "
        warehouse.set_members(members)
        report = warehouse.sync("r1")
        assert report["added"] == 2 and report["missing_required"] == 2 and report["rejected"] == 0
        records = state(server, "rest", "sms")["records"]
        assert set(records) == {"c0000", "c0001"} and all(r["phone"] for r in records.values())
        members["c0001"]["phone"] = None
        members["c0003"]["phone"] = "+14155550103"
        warehouse.set_members(members)
        report = warehouse.sync("r2")
        assert report["added"] == 1 and report["removed"] == 1 and report["missing_required"] == 2
        assert set(state(server, "rest", "sms")["records"]) == {"c0000", "c0003"}


@pytest.mark.unit
def test_a_required_field_the_destination_does_not_receive_is_refused_at_load(tmp_path):
    with pytest.raises(ValueError, match=r"required: \['phone'\] not among the destination's fields"):
        make_config(tmp_path, {"type": "webhook", "url": "http://127.0.0.1:9/w", "required": ["phone"]})
    with pytest.raises(ValueError, match=r"required: \['phone'\] not among"):
        make_config(tmp_path, {"type": "file", "fields": ["customer_id", "email"], "required": ["phone"]})


@pytest.mark.parametrize(
    ("destination", "held"),
    [
        (
            {"type": "webhook", "url": "{url}/webhook/w"},
            lambda server: state(server, "webhook", "w")["audiences"]["vip"],
        ),
        (
            {"type": "rest", "upsert_url": "{url}/rest/r/upsert", "delete_url": "{url}/rest/r/delete"},
            lambda server: state(server, "rest", "r")["records"],
        ),
    ],
)
@pytest.mark.parametrize("mode", ["insert", "update", "upsert"])
@pytest.mark.stage
def test_a_revoked_consent_removes_the_member_whatever_the_mode(tmp_path, destination, held, mode):
    """Only mirror removes members who left the segment; a revocation removes them in every mode that adds,
    since the tool would otherwise keep contacting someone who said no."""
    with DestinationServer(port=0) as server:
        spec = {k: v.format(url=server.url) if isinstance(v, str) else v for k, v in destination.items()}
        config = make_config(tmp_path, {**spec, "mode": mode})
        warehouse = Warehouse(config)
        members = people(3)
        warehouse.set_members(members)
        warehouse.sync("r1")
        assert set(held(server)) == {"c0000", "c0001", "c0002"}
        members["c0001"]["consent"] = False
        del members["c0002"]  # left the segment: kept, as this mode does not mirror
        warehouse.set_members(members)
        report = warehouse.sync("r2")
        assert report["removed"] == 1
        assert set(held(server)) == {"c0000", "c0002"}
        # Consent granted again: sent again.
        members["c0001"]["consent"] = True
        warehouse.set_members(members)
        assert warehouse.sync("r3")["removed"] == 0
        assert set(held(server)) == {"c0000", "c0001", "c0002"}


@pytest.mark.stage
def test_a_revoked_consent_leaves_an_upsert_audience(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server, mode="upsert"))
        warehouse = Warehouse(config)
        members = people(3)
        warehouse.set_members(members)
        warehouse.sync("r1")
        members["c0001"]["consent"] = False
        warehouse.set_members(members)
        assert warehouse.sync("r2")["removed"] == 1
        held = {m["email_sha256"] for m in state(server, "audiences", "a")["members"]}
        assert held == {sha("person0@example.org"), sha("person2@example.org")}


@pytest.mark.stage
def test_a_revoked_consent_is_not_sent_to_a_rest_destination_that_cannot_delete(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, {"type": "rest", "mode": "upsert", "upsert_url": f"{server.url}/rest/r/upsert"})
        warehouse = Warehouse(config)
        members = people(2)
        warehouse.set_members(members)
        warehouse.sync("r1")
        members["c0001"]["consent"] = False
        warehouse.set_members(members)
        report = warehouse.sync("r2")
        assert report["removed"] == 0 and report["failed"] == 0 and report["rejected"] == 0


@pytest.mark.parametrize(
    ("mode", "expected_first", "expected_second"),
    [
        ("insert", {"added": 3}, {"added": 1, "updated": 0, "removed": 0}),
        ("upsert", {"added": 3}, {"added": 1, "updated": 1, "removed": 0}),
        ("update", {"updated": 3}, {"updated": 2, "removed": 0}),
        ("mirror", {"added": 3}, {"added": 1, "updated": 1, "removed": 1}),
        ("delete", {"removed": 3}, {"removed": 1, "added": 0}),
    ],
)
@pytest.mark.stage
def test_sync_modes_send_only_what_the_mode_calls_for(tmp_path, mode, expected_first, expected_second):
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path,
            {
                "type": "rest",
                "mode": mode,
                "upsert_url": f"{server.url}/rest/r/upsert",
                "delete_url": f"{server.url}/rest/r/delete",
            },
        )
        warehouse = Warehouse(config)
        members = people(3)
        warehouse.set_members(members)
        first = warehouse.sync("r1")
        assert {k: first[k] for k in expected_first} == expected_first
        members["c0000"]["first_name"] = "Changed"  # changed
        del members["c0001"]  # left
        members["c0009"] = {"email": "new@example.org"}  # new
        warehouse.set_members(members)
        second = warehouse.sync("r2")
        assert {k: second[k] for k in expected_second} == expected_second


@pytest.mark.stage
def test_dry_run_reports_the_diff_and_sends_nothing(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, {"type": "webhook", "url": f"{server.url}/webhook/w", "dry_run": True})
        warehouse = Warehouse(config)
        warehouse.set_members(people(4))
        report = warehouse.sync("r1")
        assert report["added"] == 4 and report["requests"] == 0
        assert requests.get(f"{server.url}/requests", timeout=5).json()["requests"][:-1] == []
        assert warehouse.conn.execute("select count(*) from syncs.destination_state").fetchone()[0] == 0


@pytest.mark.stage
def test_hashed_audience_hashes_once_and_drops_only_the_bad_row(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server, gmail_dots=True))
        warehouse = Warehouse(config)
        prehashed = "A" * 64
        warehouse.set_members(
            {
                "c1": {"email": " Jane.Doe@Gmail.com ", "phone": "+1 (415) 555-0123"},
                "c2": {"email": "not an email"},  # nothing usable: rejected, the batch goes on
                "c3": {"email": prehashed},  # already hashed upstream: passed through, not hashed again
                "c4": {"email": "bad@", "phone": "2127365000"},  # bad e-mail dropped, phone kept
            }
        )
        report = warehouse.sync("r1")
        assert report["added"] == 3 and report["rejected"] == 1
        members = state(server, "audiences", "a")["members"]

        emails = {m.get("email_sha256") for m in members}
        assert {sha("janedoe@gmail.com"), prehashed.lower()} <= emails
        assert sha("+12127365000") in {m.get("phone_sha256") for m in members}
        rejected = warehouse.conn.execute("select key, error from syncs.changelog where status = 'rejected'").fetchall()
        assert rejected[0][0] == "c2" and "not a valid e-mail address" in rejected[0][1]


@pytest.mark.stage
def test_a_hashed_audience_hashes_again_only_the_rows_whose_clear_values_or_settings_changed(tmp_path, monkeypatch):
    """Hashing runs in Python (a phone number is parsed), so each member's outcome is kept with the digest of
    its clear row: a later run hashes only the members that changed, and sends and rejects what a run
    hashing everyone would."""

    from cdp_assets.syncs import state as sync_state

    hashed: list[list[str]] = []

    def counting(rows, *args, **kwargs):
        rows = list(rows)
        hashed.append(sorted(str(r.get("email_sha256")) for r in rows))
        return real(rows, *args, **kwargs)

    real = sync_state.hash_rows
    monkeypatch.setattr(sync_state, "hash_rows", counting)

    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server, gmail_dots=True))
        warehouse = Warehouse(config)
        members = {
            "c1": {"email": "Jane.Doe@Gmail.com"},
            "c2": {"email": "not an email"},
            "c3": {"email": "ann@example.org", "phone": "+1 (415) 555-0123"},
        }
        warehouse.set_members(members)
        assert warehouse.sync("r1")["added"] == 2 and len(hashed[-1]) == 3

        # Nothing changed: nothing is hashed, nothing sent, and the bad row is rejected again, for the same reason.
        calls = len(hashed)
        report = warehouse.sync("r2")
        assert len(hashed) == calls and report["added"] + report["updated"] + report["removed"] == 0
        rejected = "select run_id, key, error from syncs.changelog where status = 'rejected' order by run_id"
        (first, second) = warehouse.conn.execute(rejected).fetchall()
        assert (
            first[1:] == second[1:] == ("c2", "no usable identifier: email_sha256: not a valid e-mail address (n***)")
        )

        # One member's e-mail changed and one joined: only they are hashed; the others' rows are read back.
        members["c3"]["email"] = "ann@example.com"
        members["c4"] = {"email": "bob@example.org"}
        warehouse.set_members(members)
        report = warehouse.sync("r3")
        assert len(hashed[-1]) == 2 and (report["added"], report["updated"]) == (1, 1)
        held = {m["email_sha256"] for m in state(server, "audiences", "a")["members"]}
        assert {sha("janedoe@gmail.com"), sha("ann@example.com"), sha("bob@example.org")} <= held

        # Other hashing settings: every row is hashed again, and the Gmail address's digest changes.
        warehouse.config = make_config(tmp_path, audience(server, gmail_dots=False))
        report = warehouse.sync("r4")
        assert len(hashed[-1]) == 4 and report["updated"] == 1
        held = {m["email_sha256"] for m in state(server, "audiences", "a")["members"]}
        assert sha("jane.doe@gmail.com") in held

        # A member who left takes their kept row with them.
        del members["c4"]
        warehouse.set_members(members)
        calls = len(hashed)
        assert warehouse.sync("r5")["removed"] == 1 and len(hashed) == calls
        kept = warehouse.conn.execute("select key from syncs.hashed_rows order by key").fetchall()
        assert kept == [("c1",), ("c2",), ("c3",)]


@pytest.mark.stage
def test_a_merged_customer_leaves_a_hashed_audience_without_taking_the_survivor_with_it(tmp_path):
    """An audience knows members by their hashed identifiers. A customer merged into another leaves with the
    identifiers the audience holds for it, never with a `merged_into` field (the audience would refuse the
    row); and when those are exactly a member still wanted (two records of one person, now one customer),
    nothing is removed: the old key is only marked gone."""

    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server))
        warehouse = Warehouse(config)
        members = {
            "c1": {"email": "ann@example.org"},
            "c2": {"email": "ann@example.org"},  # the same person, not yet resolved as such
            "c3": {"email": "bob@example.org"},
            "c4": {"email": "robert@example.org"},
        }
        warehouse.set_members(members)
        assert warehouse.sync("r1")["added"] == 4
        # Identity merges c2 into c1 and c4 into c3: the old ids leave the profiles and become aliases.
        del members["c2"], members["c4"]
        warehouse.set_members(members)
        warehouse.conn.execute("insert into cdp.customer_aliases values ('c2', 'c1', 'merged'), ('c4', 'c3', 'merged')")
        report = warehouse.sync("r2")
        assert (report["removed"], report["failed"], report["absorbed"]) == (1, 0, 1), report
        held = {m["email_sha256"] for m in state(server, "audiences", "a")["members"]}
        assert held == {sha("ann@example.org"), sha("bob@example.org")}
        outcomes = warehouse.conn.execute(
            "select key, operation, status from syncs.changelog where run_id = 'r2' order by key"
        ).fetchall()
        assert outcomes == [("c2", "remove", "absorbed"), ("c4", "remove", "sent")]
        present = warehouse.conn.execute(
            "select key from syncs.destination_state where present order by key"
        ).fetchall()
        assert present == [("c1",), ("c3",)]
        # Settled: the next run has nothing to send or mark.
        report = warehouse.sync("r3")
        assert report["removed"] + report["absorbed"] + report["added"] + report["updated"] == 0


def hook_events(server: DestinationServer) -> list[dict]:
    """The webhook events the destination received, each with its type, key and previous keys."""
    return [event for entry in posts(server) for event in entry.get("events", [])]


def merge_into_survivor(warehouse: Warehouse) -> dict[str, dict]:
    """c1, c2 and c3 synced, then identity merges c2 and c3 into c1, whose phone changes with it."""
    members = {c: {"email": f"{c}@example.org", "phone": f"+1555000000{c[-1]}"} for c in ("c1", "c2", "c3")}
    warehouse.set_members(members)
    assert warehouse.sync("r1")["added"] == 3
    merged = {"c1": {"email": "c1@example.org", "phone": "+15550000009"}}
    warehouse.set_members(merged)
    warehouse.conn.execute("insert into cdp.customer_aliases values ('c2', 'c1', 'merged'), ('c3', 'c1', 'merged')")
    return merged


def acknowledged(warehouse: Warehouse) -> list[tuple]:
    return warehouse.conn.execute("select key, present from syncs.destination_state order by key").fetchall()


WEBHOOK_FIELDS = {"email": "email", "phone": "phone"}


@pytest.mark.stage
def test_customers_merged_into_one_reach_a_webhook_as_one_update_of_the_survivor(tmp_path):
    """The survivor changed and two ids merged into it: one event for the surviving key, naming both."""
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w", "fields": WEBHOOK_FIELDS}
        )
        warehouse = Warehouse(config)
        merged = merge_into_survivor(warehouse)
        heard = len(hook_events(server))
        report = warehouse.sync("r2")
        assert (report["updated"], report["removed"], report["requests"]) == (1, 0, 1), report
        assert hook_events(server)[heard:] == [
            {"type": "audience_updated", "key": "c1", "previous_key": "c2", "previous_keys": ["c2", "c3"]}
        ]
        assert state(server, "webhook", "w")["audiences"]["vip"] == merged
        assert acknowledged(warehouse) == [("c1", True), ("c2", False), ("c3", False)]
        outcomes = warehouse.conn.execute(
            "select key, operation, status from syncs.changelog where run_id = 'r2' order by key"
        ).fetchall()
        assert outcomes == [("c1", "update", "sent"), ("c2", "remove", "sent"), ("c3", "remove", "sent")]
        held = warehouse.conn.execute("select row_json from syncs.destination_state where key = 'c1'").fetchone()[0]
        assert json.loads(held) == merged["c1"]
        assert warehouse.sync("r3")["requests"] == 0


@pytest.mark.stage
@pytest.mark.parametrize("fault", ["down", "lost answer", "refused"])
def test_a_merge_a_webhook_did_not_take_is_sent_whole_once_by_a_later_sync(tmp_path, fault):
    """Down (deferred), applied with its answer lost (resent with its key) or refused (retried from
    syncs.pending): the merge still reaches the destination as one update, applied once, and the
    acknowledged state ends as the destination's."""
    attempts = FAST_RETRY["max_attempts"]
    script = {"down": ["ok"] + ["500"] * attempts, "lost answer": ["ok", "drop"] + ["500"] * (attempts - 1)}
    with DestinationServer(port=0, faults=Faults(script=script.get(fault, []))) as server:
        config = make_config(
            tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w", "fields": WEBHOOK_FIELDS}
        )
        warehouse = Warehouse(config)
        merged = merge_into_survivor(warehouse)
        client = RefusingClient(make_client(config.destinations[0]), "c1", always=True) if fault == "refused" else None
        first = warehouse.sync("r2", client)
        assert first["updated"] == 0 and first["deferred" if fault != "refused" else "failed"] == 1, first
        assert acknowledged(warehouse) == [("c1", True), ("c2", True), ("c3", True)]
        heard = len(posts(server))
        second = warehouse.sync("r3")
        assert (second["updated"], second["removed"], second["unavailable"]) == (1, 0, None), second
        later = posts(server)[heard:]
        assert len(later) == 1 and later[0]["duplicate"] is (fault == "lost answer")
        assert [e for e in hook_events(server) if e["key"] == "c1" and e["type"] != "audience_entered"] == [
            {"type": "audience_updated", "key": "c1", "previous_key": "c2", "previous_keys": ["c2", "c3"]}
        ] * (2 if fault == "lost answer" else 1)
        assert state(server, "webhook", "w")["audiences"]["vip"] == merged
        assert acknowledged(warehouse) == [("c1", True), ("c2", False), ("c3", False)]
        assert warehouse.conn.execute("select count(*) from syncs.pending").fetchone()[0] == 0
        assert warehouse.conn.execute("select count(*) from syncs.in_flight").fetchone()[0] == 0
        assert warehouse.sync("r4")["requests"] == 0


@pytest.mark.stage
def test_a_member_whose_email_changed_leaves_no_old_hash_in_the_audience(tmp_path):
    """An audience holds members by their hashes: when a member's e-mail changes, the old e-mail's hash is
    removed (before the new one is added) and the phone that stayed is kept, so the old address is no
    longer targeted; nothing else is sent, and the next run has nothing to do."""

    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server, fields={"email_sha256": "email", "phone_sha256": "phone"}))
        warehouse = Warehouse(config)
        members = {
            "c1": {"email": "ann@example.org", "phone": "+14155550123"},
            "c2": {"email": "bob@example.org", "phone": "+14155550124"},
        }
        warehouse.set_members(members)
        assert warehouse.sync("r1")["added"] == 2
        members["c1"] = {"email": "ann.new@example.org", "phone": "+14155550123"}
        warehouse.set_members(members)
        report = warehouse.sync("r2")
        assert (report["updated"], report["removed"], report["failed"]) == (1, 1, 0), report
        held = state(server, "audiences", "a")["members"]
        assert {m["email_sha256"] for m in held} == {sha("ann.new@example.org"), sha("bob@example.org")}
        assert {m["phone_sha256"] for m in held} == {sha("+14155550123"), sha("+14155550124")}
        report = warehouse.sync("r3")
        assert report["removed"] + report["added"] + report["updated"] == 0, report


@pytest.mark.stage
def test_a_hashed_field_is_hashed_as_the_kind_of_the_column_it_maps_to(tmp_path):
    """The kind comes from the profile column a field maps to, not from the field's name: with the columns
    crossed, `email_sha256` carries the phone's hash and `phone_sha256` the e-mail's."""

    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server, fields={"email_sha256": "phone", "phone_sha256": "email"}))
        warehouse = Warehouse(config)
        warehouse.set_members({"c1": {"email": " Ann@Example.org ", "phone": "+1 (415) 555-0123"}})
        report = warehouse.sync("r1")
        assert report["added"] == 1, report
        (member,) = state(server, "audiences", "a")["members"]
        assert member["email_sha256"] == sha("+14155550123")
        assert member["phone_sha256"] == sha("ann@example.org")


@pytest.mark.stage
def test_duplicate_and_missing_primary_keys_are_rejected_rows(tmp_path):
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path, {"type": "rest", "upsert_url": f"{server.url}/rest/r/upsert", "primary_key": "email"}
        )
        warehouse = Warehouse(config)
        warehouse.set_members(
            {
                "c1": {"email": "same@x.org"},
                "c2": {"email": "same@x.org"},
                "c3": {"email": None},
                "c4": {"email": "ok@x.org"},
            }
        )
        report = warehouse.sync("r1")
        assert report["added"] == 1 and report["rejected"] == 3
        reasons = sorted(
            r
            for (r,) in warehouse.conn.execute("select error from syncs.changelog where status = 'rejected'").fetchall()
        )
        assert reasons == ["duplicate primary key", "duplicate primary key", "missing primary key"]


@pytest.mark.stage
def test_retry_after_is_honoured_and_a_resent_batch_keeps_its_idempotency_key(tmp_path):
    with DestinationServer(port=0, faults=Faults(script=["429", "500", "ok"])) as server:
        config = make_config(tmp_path, {"type": "webhook", "url": f"{server.url}/webhook/w"})
        client = make_client(config.destinations[0])
        changes = [Change("k1", "add", {"a": 1}, "h1")]
        slept: list[float] = []
        result = deliver(client, "dest", changes, batch_size=10, policy=RetryPolicy(5, 0.01, 0.05), sleep=slept.append)
        assert [c.key for c in result.accepted] == ["k1"] and result.retries == 2
        assert slept[0] >= 1.0  # Retry-After: 1
        log = requests.get(f"{server.url}/requests", timeout=5).json()["requests"]
        keys = [entry["batch_id"] for entry in log if entry["method"] == "POST"]
        assert len(keys) == 3 and len(set(keys)) == 1  # one batch, one key, however often it is sent


@pytest.mark.stage
def test_a_retry_after_longer_than_a_run_waits_defers_the_changes_to_a_later_run(tmp_path):
    with DestinationServer(port=0, faults=Faults(script=["429"])) as server:
        config = make_config(tmp_path, {"type": "webhook", "url": f"{server.url}/webhook/w"})
        client = make_client(config.destinations[0])
        changes = [Change(f"k{i}", "add", {"a": i}, f"h{i}") for i in range(15)]
        slept: list[float] = []
        policy = RetryPolicy(5, 0.01, 0.05, longest_retry_after=0.5)
        result = deliver(client, "dest", changes, batch_size=10, policy=policy, sleep=slept.append)
        assert slept == [] and result.requests == 1 and result.accepted == [] and len(result.deferred) == 15
        assert "again in 1 s, longer than the 0.5 s a run waits" in str(result.unavailable)
        assert len(posts(server)) == 1


@pytest.mark.stage
def test_a_destination_refusing_the_caller_stops_the_sync_without_splitting_or_retrying(tmp_path):
    """A 401 is the same answer for every row: the sync sends one request, not two per row, defers every
    change to the next run (as for an outage), and says to check the credentials."""
    with DestinationServer(port=0, faults=Faults(script=["401"] * 50)) as server:
        config = make_config(tmp_path, {"type": "webhook", "url": f"{server.url}/webhook/w"})
        client = make_client(config.destinations[0])
        changes = [Change(f"k{i}", "add", {"a": i}, f"h{i}") for i in range(40)]
        result = deliver(
            client, "dest", changes, batch_size=10, policy=RetryPolicy(5, 0.01, 0.05), sleep=lambda _: None
        )
        assert result.requests == 1 and result.retries == 0
        assert result.accepted == [] and result.failed == [] and len(result.deferred) == 40
        assert "HTTP 401" in str(result.unavailable) and "check its credentials" in str(result.unavailable)
        assert len(posts(server)) == 1


def posts(server: DestinationServer) -> list[dict]:
    """The mutating requests the destination received, in order, with their key and whether it applied them."""
    log = requests.get(f"{server.url}/requests", timeout=5).json()["requests"]
    return [entry for entry in log if entry["method"] == "POST"]


@pytest.mark.stage
def test_opt_out_opt_in_opt_out_leaves_the_person_removed(tmp_path):
    # The second opt-out is the same removal as the first; a destination that honours idempotency keys
    # (the demo destination does) must still see it as a new change.
    with DestinationServer(port=0) as server:
        config = make_config(
            tmp_path,
            {
                "type": "rest",
                "mode": "mirror",
                "upsert_url": f"{server.url}/rest/crm/upsert",
                "delete_url": f"{server.url}/rest/crm/delete",
            },
        )
        warehouse = Warehouse(config)
        members = people(3)
        history = []
        for run, consent in enumerate([True, False, True, False]):
            members["c0001"]["consent"] = consent
            warehouse.set_members(members)
            report = warehouse.sync(f"r{run}")
            assert report["requests"] == 1 and report["unavailable"] is None
            history.append("c0001" in state(server, "rest", "crm")["records"])
        assert history == [True, False, True, False]
        assert set(state(server, "rest", "crm")["records"]) == {"c0000", "c0002"}
        sent = posts(server)
        assert len({entry["batch_id"] for entry in sent}) == 4 and not any(entry["duplicate"] for entry in sent)


@pytest.mark.stage
def test_a_batch_whose_answer_is_lost_is_retried_with_its_key_and_applied_once(tmp_path):
    with DestinationServer(port=0, faults=Faults(script=["drop"])) as server:
        config = make_config(tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w"})
        warehouse = Warehouse(config)
        warehouse.set_members(people(3))
        report = warehouse.sync("r1")
        assert (report["added"], report["requests"], report["request_retries"]) == (3, 2, 1)
        first, retry = posts(server)
        assert (first["fault"], first["status"], first["duplicate"]) == ("drop", None, False)  # applied, unanswered
        assert retry["batch_id"] == first["batch_id"] and retry["duplicate"] is True  # recognised, not reapplied
        assert set(state(server, "webhook", "w")["audiences"]["vip"]) == {"c0000", "c0001", "c0002"}
        assert warehouse.sync("r2")["requests"] == 0


@pytest.mark.stage
def test_a_destination_nobody_listens_on_is_named_with_the_reason_and_without_its_path(tmp_path):
    """The reason an operator acts on (the server and the operating system's words), not requests' nested
    repr of it, and never the URL's path or query, which may carry a token."""
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/secret-token-123?key=abc"
    warehouse = Warehouse(make_config(tmp_path, {"type": "webhook", "mode": "mirror", "url": url}))
    warehouse.set_members(people(2))
    report = warehouse.sync("r1")
    assert report["unavailable"] == f"ConnectionError: cannot connect to http://127.0.0.1:{port}: Connection refused"
    assert report["deferred"] == 2
    assert redact(report["unavailable"]) == report["unavailable"]  # as Dagster's event log then shows it


@pytest.mark.stage
def test_a_batch_left_unanswered_is_resent_next_run_with_its_key(tmp_path):
    attempts = FAST_RETRY["max_attempts"]
    # The batch is applied but its answer is lost, then the destination goes down for the rest of the run.
    with DestinationServer(port=0, faults=Faults(script=["drop"] + ["500"] * (attempts - 1))) as server:
        config = make_config(tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w"})
        warehouse = Warehouse(config)
        members = people(3)
        warehouse.set_members(members)
        first = warehouse.sync("r1")
        assert first["unavailable"] == "HTTP 500" and first["deferred"] == 3
        assert warehouse.conn.execute("select count(*) from syncs.destination_state").fetchone()[0] == 0
        [key] = {entry["batch_id"] for entry in posts(server)}
        members["c0009"] = {"email": "new@example.org"}  # this run has more to send than the lost batch
        warehouse.set_members(members)
        second = warehouse.sync("r2")
        later = posts(server)[attempts:]
        assert (later[0]["batch_id"], later[0]["duplicate"]) == (key, True)  # the destination drops the replay
        assert [(entry["batch_id"] == key, entry["duplicate"]) for entry in later[1:]] == [(False, False)]
        assert (second["added"], second["resent_batches"], second["unavailable"]) == (4, 1, None)
        assert set(state(server, "webhook", "w")["audiences"]["vip"]) == set(members)
        assert warehouse.conn.execute("select count(*) from syncs.in_flight").fetchone()[0] == 0
        assert warehouse.sync("r3")["requests"] == 0


class RefusingClient:
    """The real client, except that a batch of more than one row holding `refused` (of any size, when
    `always`) is refused (a 4xx without row detail) before it reaches the destination."""

    def __init__(self, inner, refused: str, always: bool = False) -> None:
        self.inner, self.refused, self.smallest = inner, refused, 1 if always else 2

    def send(self, changes, batch):
        if len(changes) >= self.smallest and any(c.key == self.refused for c in changes):
            raise RejectedError("HTTP 422")
        self.inner.send(changes, batch)

    def close(self):
        self.inner.close()


@pytest.mark.stage
def test_only_the_unanswered_part_of_a_split_batch_is_resent(tmp_path):
    attempts = FAST_RETRY["max_attempts"]
    # [c0..c3] is refused and split: [c0, c1] is accepted, [c2, c3] refused again, [c2] applied but
    # unanswered and then the destination is down; [c3] is never sent.
    with DestinationServer(port=0, faults=Faults(script=["ok", "drop"] + ["500"] * (attempts - 1))) as server:
        config = make_config(tmp_path, {"type": "webhook", "mode": "mirror", "url": f"{server.url}/webhook/w"})
        warehouse = Warehouse(config)
        members = people(4)
        warehouse.set_members(members)
        first = warehouse.sync("r1", RefusingClient(make_client(config.destinations[0]), "c0002"))
        assert (first["added"], first["deferred"], first["unavailable"]) == (2, 2, "HTTP 500")
        [(key, rows)] = warehouse.conn.execute(
            "select batch_id, [c.key for c in changes] from syncs.in_flight"
        ).fetchall()
        assert rows == ["c0002"]
        second = warehouse.sync("r2")
        resent, rest = posts(server)[1 + attempts :]
        assert (resent["batch_id"], resent["duplicate"]) == (key, True)
        assert rest["batch_id"] != key and rest["duplicate"] is False
        assert (second["added"], second["resent_batches"]) == (2, 1)
        assert set(state(server, "webhook", "w")["audiences"]["vip"]) == set(members)


class KeyRecordingClient:
    """Refuses any batch of more than one row holding 'bad', like a 4xx without row detail; records keys."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []

    def send(self, changes, batch):
        self.sent.append((batch, tuple(c.key for c in changes)))
        if len(changes) > 1 and any(c.key == "bad" for c in changes):
            raise RejectedError("HTTP 400")

    def close(self):
        pass


@pytest.mark.unit
def test_each_part_of_a_split_batch_is_a_new_batch_with_its_own_key():
    client = KeyRecordingClient()
    changes = [Change(k, "add", {}, k) for k in ("a", "b", "bad", "c")]
    result = deliver(client, "d", changes, batch_size=10, policy=RetryPolicy(2, 0, 0), sleep=lambda s: None)
    assert len(result.accepted) == 4
    keys = [key for key, _ in client.sent]
    assert [rows for _, rows in client.sent] == [("a", "b", "bad", "c"), ("a", "b"), ("bad", "c"), ("bad",), ("c",)]
    assert len(set(keys)) == len(keys)


@pytest.mark.dagster
def test_a_destination_failing_part_way_says_what_was_sent_and_what_was_deferred(tmp_path):
    import dagster as dg

    from cdp_assets.syncs.assets import build_row_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource

    attempts = FAST_RETRY["max_attempts"]
    # Run 1 adds 30 rows in 3 batches; run 2 sends two batches of upserts, then the removals meet a dead server.
    script = ["ok"] * 3 + ["ok"] * 2 + ["500"] * attempts
    with DestinationServer(port=0, faults=Faults(script=script)) as server:
        config = make_config(
            tmp_path,
            {
                "type": "rest",
                "mode": "mirror",
                "batch_size": 10,
                "upsert_url": f"{server.url}/rest/crm/upsert",
                "delete_url": f"{server.url}/rest/crm/delete",
            },
        )
        database = tmp_path / "warehouse.duckdb"
        warehouse = Warehouse(config, database)
        members = people(30)
        warehouse.set_members(members)
        assert warehouse.sync("r1")["added"] == 30
        for i in range(12):
            members[f"c{i:04d}"]["first_name"] = "Changed"
        for i in range(25, 30):
            del members[f"c{i:04d}"]
        members.update({f"n{i:04d}": {"email": f"new{i}@example.org"} for i in range(8)})
        warehouse.set_members(members)
        warehouse.conn.close()

        result = dg.materialize(
            [build_row_sync_asset(config, config.destinations[0])],
            resources={"warehouse": WarehouseResource(database=str(database))},
            raise_on_error=False,
        )
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert "20 changes were sent and acknowledged (8 added, 12 updated)" in message
    assert "5 changes were deferred to the next run (5 to remove)" in message
    assert "syncs.changelog" in message and "nothing was marked as sent" not in message
    with duckdb.connect(str(database), read_only=True) as conn:
        statuses = dict(
            conn.execute(
                "select status, count(*) from syncs.changelog where run_id = ? group by status", [result.run_id]
            ).fetchall()
        )
    assert statuses == {"sent": 20, "deferred": 5}


class PickyClient:
    """Rejects any batch containing a key starting with 'bad', like a 4xx without row detail."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def send(self, changes, batch):
        if any(c.key.startswith("bad") for c in changes):
            raise RejectedError("HTTP 400")
        self.applied += [c.key for c in changes]

    def close(self):
        pass


@pytest.mark.unit
def test_a_rejected_batch_is_split_until_the_bad_rows_are_isolated():
    client = PickyClient()
    keys = [f"k{i}" for i in range(13)] + ["bad1", "bad2"]
    changes = [Change(k, "add", {}, k) for k in keys]
    result = deliver(client, "d", changes, batch_size=15, policy=RetryPolicy(2, 0, 0), sleep=lambda s: None)
    assert sorted(client.applied) == sorted(k for k in keys if not k.startswith("bad"))
    assert sorted(c.key for c, _ in result.failed) == ["bad1", "bad2"]


class AudienceRecorder:
    """Takes every batch like a hashed audience (removals first), recording each; refuses the caller from
    batch `down_from` on, as a destination whose credentials expired mid-run."""

    removals_first = True

    def __init__(self, down_from: int | None = None) -> None:
        self.batches: list[tuple[tuple[str, str, str | None], ...]] = []
        self.down_from = down_from

    def send(self, changes, batch):
        if self.down_from is not None and len(self.batches) >= self.down_from:
            raise RefusedError("HTTP 401")
        self.batches.append(tuple((c.operation, c.key, c.payload) for c in changes))

    def close(self):
        pass


def _paged_sync(tmp_path: Path, monkeypatch, pages: int | None, down_from: int | None) -> tuple:
    """Two syncs of one audience, the second with e-mails changed (retractions), members gone (removals),
    new ones and rows failed before (sent first); with plans read `pages` rows at a time and handed to
    delivery in chunks of 4 rows (6 with batches of 3), or whole. Returns what the second sync sent and
    reported, the largest list delivery was handed and the acknowledged state."""
    import cdp_assets.syncs.assets as sync_assets

    if pages is not None:
        monkeypatch.setattr(sync_state, "PAGE_ROWS", pages)
        monkeypatch.setattr(sync_assets, "CHUNK_ROWS", 4)
    handed: list[int] = []
    real_deliver = sync_assets.deliver

    def counting(client, destination, changes, **options):
        handed.append(len(changes))
        return real_deliver(client, destination, changes, **options)

    monkeypatch.setattr(sync_assets, "deliver", counting)
    fields = {"email_sha256": "email", "phone_sha256": "phone"}
    tmp_path.mkdir()
    unused = "http://127.0.0.1:9/audiences/a/members"  # the recorder answers instead
    config = make_config(
        tmp_path, {"type": "hashed_audience", "mode": "mirror", "url": unused, "batch_size": 3, "fields": fields}
    )
    warehouse = Warehouse(config)
    members = {f"c{i:04d}": {"email": f"p{i}@example.org", "phone": f"+1415555{i:04d}"} for i in range(40)}
    warehouse.set_members(members)
    warehouse.sync("r1", AudienceRecorder())
    for i in range(7):
        members[f"c{i:04d}"]["email"] = f"new{i}@example.org"
    for i in range(30, 35):
        del members[f"c{i:04d}"]
    members.update({f"c{i:04d}": {"email": f"q{i}@example.org"} for i in range(100, 111)})
    warehouse.set_members(members)
    for key, operation in (("c0105", "add"), ("c0033", "remove"), ("c0002", "update")):
        warehouse.conn.execute(
            "insert into syncs.pending values ('dest', ?, ?, 'HTTP 400', 1, now(), now())", [key, operation]
        )
    handed.clear()
    client = AudienceRecorder(down_from)
    report = warehouse.sync("r2", client)
    acknowledged = warehouse.conn.execute(
        "select key, row_hash, present from syncs.destination_state order by key"
    ).fetchall()
    pending = warehouse.conn.execute("select key from syncs.pending order by key").fetchall()
    return client.batches, report, max(handed), acknowledged, pending


@pytest.mark.stage
@pytest.mark.parametrize("down_from", [None, 7])
def test_a_plan_sent_a_page_at_a_time_sends_the_batches_it_would_send_whole(tmp_path, monkeypatch, down_from):
    """A sync reads its plan a page at a time and hands delivery a chunk at a time, so a first sync of
    millions of members never holds them all in this process; the batches, their order (removals and
    retractions first, rows failed before first within each kind) and the outcome are those of the plan
    sent whole, also when the destination refuses the caller part-way."""
    whole = _paged_sync(tmp_path / "whole", monkeypatch, None, down_from)
    paged = _paged_sync(tmp_path / "paged", monkeypatch, 4, down_from)
    assert paged[0] == whole[0] and paged[1] == whole[1] and paged[3:] == whole[3:]
    assert (whole[2], paged[2]) == (18, 6)  # the whole plan: its 18 upserts, its 12 removals
    report, batches = paged[1], paged[0]
    removals = [{op for op, _, _ in batch} == {"remove"} for batch in batches]
    assert removals == sorted(removals, reverse=True) and removals.count(True) == 4  # the 12 removals first
    assert batches[0][0][1] == "c0000"  # the first retraction: old e-mail hashes, before any removal
    assert [key for _, key, _ in batches[4][:2]] == ["c0002", "c0105"]  # the upserts failed before go first
    if down_from is None:
        assert (report["added"], report["updated"], report["removed"], report["retried"]) == (11, 7, 12, 3)
        assert paged[4] == []  # the rows failed before were accepted: none waits any more
    else:
        assert report["deferred"] == 30 - sum(len(b) for b in batches) and report["unavailable"]


@pytest.mark.stage
def test_plan_puts_rows_failed_earlier_first(tmp_path):
    config = make_config(tmp_path, {"type": "webhook", "url": "http://127.0.0.1:9/unused"})
    warehouse = Warehouse(config)
    warehouse.set_members(people(5))
    warehouse.conn.execute("insert into syncs.pending values ('dest', 'c0003', 'add', 'HTTP 400', 1, now(), now())")
    with plan_sync(Sql(warehouse.conn), config, config.destinations[0]) as plan:
        assert next(plan.changes()).key == "c0003" and plan.retrying == {"c0003"}


@pytest.mark.e2e
def test_postgres_destination_mirrors_the_segment_into_a_table(tmp_path, dsn, monkeypatch):
    import psycopg

    monkeypatch.setenv("CDP_TEST_APP_DSN", dsn)
    table = f"vip_{tmp_path.name[-8:].replace('-', '_')}".lower()
    config = make_config(
        tmp_path,
        {
            "type": "postgres",
            "mode": "mirror",
            "dsn_env": "CDP_TEST_APP_DSN",
            "table": table,
            "fields": {"email": "email", "first_name": "first_name"},
        },
    )
    warehouse = Warehouse(config)
    members = people(12)
    warehouse.set_members(members)
    assert warehouse.sync("r1")["added"] == 12
    del members["c0000"]
    members["c0001"]["first_name"] = "Renamed"
    warehouse.set_members(members)
    report = warehouse.sync("r2")
    assert (report["added"], report["updated"], report["removed"]) == (0, 1, 1)
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute(f'select id, first_name from "{table}"').fetchall())
    assert set(rows) == set(members) and rows["c0001"] == "Renamed"
    assert warehouse.sync("r3")["requests"] == 0


@pytest.mark.e2e
def test_a_postgres_table_that_is_not_there_receives_every_member_again(tmp_path, dsn, monkeypatch):
    """Its acknowledged rows were delivered to a table that is gone (dropped, or `table` changed): sending
    only the changes since would leave the new table without the members that did not change."""
    import psycopg

    monkeypatch.setenv("CDP_TEST_APP_DSN", dsn)
    table = f"vip_{tmp_path.name[-8:].replace('-', '_')}".lower()
    destination = {"type": "postgres", "mode": "mirror", "dsn_env": "CDP_TEST_APP_DSN", "table": table}
    warehouse = Warehouse(make_config(tmp_path, destination))
    members = people(6)
    warehouse.set_members(members)
    assert warehouse.sync("r1")["added"] == 6

    def keys(name: str) -> set[str]:
        with psycopg.connect(dsn) as conn:
            return {key for (key,) in conn.execute(f'select id from "{name}"').fetchall()}

    # The table is pointed elsewhere, and one member changed meanwhile.
    warehouse.config = make_config(tmp_path, {**destination, "table": f"{table}_v2"})
    members["c0002"]["first_name"] = "Renamed"
    warehouse.set_members(members)
    report = warehouse.sync("r2")
    assert report["table_missing_rows_sent_again"] == 6 and report["added"] == 6
    assert keys(f"{table}_v2") == set(members)
    # Dropped by hand: the next sync fills it again; with it there, a sync sends nothing.
    with psycopg.connect(dsn) as conn:
        conn.execute(f'drop table "{table}_v2"')
    assert warehouse.sync("r3")["added"] == 6 and keys(f"{table}_v2") == set(members)
    assert warehouse.sync("r4")["requests"] == 0


@pytest.mark.stage
def test_credentials_come_from_the_environment_and_are_required(tmp_path, monkeypatch):
    import dagster as dg

    with DestinationServer(port=0, token="s3cret-token") as server:
        config = make_config(
            tmp_path, {"type": "webhook", "url": f"{server.url}/webhook/w", "auth": {"env": "CDP_TEST_HOOK_TOKEN"}}
        )
        warehouse = Warehouse(config)
        warehouse.set_members(people(2))
        monkeypatch.delenv("CDP_TEST_HOOK_TOKEN", raising=False)
        with pytest.raises(dg.Failure, match="CDP_TEST_HOOK_TOKEN"):
            warehouse.sync("r0")
        monkeypatch.setenv("CDP_TEST_HOOK_TOKEN", "s3cret-token")
        assert warehouse.sync("r1")["added"] == 2
        assert "s3cret-token" not in str(warehouse.conn.execute("select * from syncs.changelog").fetchall())


@pytest.mark.dagster
def test_every_sync_waits_for_blocking_checks_upstream():
    from cdp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.path[0] != "syncs":
            continue
        for parent in graph.get(key).parent_keys:
            specs = graph.get(parent).check_keys
            blocking = [s for s in graph.get(parent).assets_def.check_specs if s.blocking]
            assert specs and blocking, f"{key.to_user_string()} depends on {parent.to_user_string()} without a gate"


HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example/x","click")',
    "+cmd|' /C calc'!A0",
    "@Sum(1+1)",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
]
ORDINARY = {"first_name": "Anne-Marie", "last_name": "Smith-Jones", "email": "jean-luc.picard@example.org"}


@pytest.mark.dagster
def test_csv_exports_neutralise_formulas_in_text_cells_only(tmp_path):
    import csv

    import dagster as dg

    from cdp_assets.syncs.assets import build_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource

    fields = ["customer_id", "first_name", "last_name", "email", "phone", "days_since_last_order"]
    raw = {
        "sources": [{"name": "crm", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id"}],
        "segments": [{"name": "vip", "where": "lifetime_revenue >= 100"}],
        "destinations": [{"name": "vip_csv", "type": "file", "segment": "vip", "path": "exports", "fields": fields}],
    }
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(tmp_path / "cdp.yaml")
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as conn:
        bootstrap(conn)
        ddl = ", ".join(f'"{c}" {t}' for c, t in profile_columns(config).items())
        conn.execute(f"create table cdp.golden_profiles ({ddl})")
        conn.execute("delete from cdp.segment_membership")
        rows = [(f"h{i}", name, name, f"h{i}@example.org", "+14155550123", -2) for i, name in enumerate(HOSTILE_NAMES)]
        rows.append(("ok", ORDINARY["first_name"], ORDINARY["last_name"], ORDINARY["email"], "+442071838750", 3))
        for row in rows:
            conn.execute(
                "insert into cdp.golden_profiles (customer_id, first_name, last_name, email, phone, "
                "days_since_last_order, lifetime_revenue) values (?, ?, ?, ?, ?, ?, 500)",
                list(row),
            )
            conn.execute("insert into cdp.segment_membership (segment, customer_id) values ('vip', ?)", [row[0]])

    result = dg.materialize(
        [build_sync_asset(config, config.destinations[0])],
        resources={"warehouse": WarehouseResource(database=str(database))},
    )
    assert result.success
    [export] = (tmp_path / "exports" / "vip_csv").glob("*.csv")
    with export.open(newline="") as handle:
        read = {row["customer_id"]: row for row in csv.DictReader(handle)}
    for i, name in enumerate(HOSTILE_NAMES):
        row = read[f"h{i}"]
        assert row["first_name"] == row["last_name"] == "'" + name  # the whole value kept, behind a quote
        assert row["days_since_last_order"] == "-2"  # a number column is not text
        assert row["phone"] == "+14155550123"  # a plain signed number is no formula
    assert {k: read["ok"][k] for k in ORDINARY} == ORDINARY
    assert read["ok"]["phone"] == "+442071838750"
    assert len(read) == len(HOSTILE_NAMES) + 1


@pytest.mark.dagster
def test_a_file_export_with_a_purpose_holds_only_members_who_granted_it(tmp_path):
    """A file is a delivery like any other: with `purpose`, a member whose consent is false or unknown is
    left out, as every row destination leaves them out."""
    import csv

    import dagster as dg

    from cdp_assets.syncs.assets import build_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource

    config = make_config(tmp_path, {"type": "file", "fields": ["customer_id"]})
    database = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(config, database)
    for customer, consent in [("yes", True), ("no", False), ("unknown", None)]:
        warehouse.add(customer, consent_email_marketing=consent, lifetime_revenue=500)
    warehouse.conn.close()
    # What an export killed half-way left (a partial file; on Spark, the parts beside it): members' rows in
    # no recorded file, which an erasure would not find. The next export removes them.
    folder = tmp_path / "exports" / "dest"
    (folder / "..dest-old.csv.partial.parts" / "rows").mkdir(parents=True)
    (folder / "..dest-old.csv.partial.parts" / "rows" / "part-00000.parquet").write_text("no")
    (folder / ".dest-old.csv.partial").write_text("customer_id\nno\n")
    result = dg.materialize(
        [build_sync_asset(config, config.destinations[0])],
        resources={"warehouse": WarehouseResource(database=str(database))},
    )
    assert result.success
    [export] = folder.iterdir()
    with export.open(newline="") as handle:
        assert [row["customer_id"] for row in csv.DictReader(handle)] == ["yes"]


@pytest.mark.stage
def test_a_csv_export_for_european_excel_keeps_its_separator_and_mark_when_an_erasure_rewrites_it(tmp_path):
    """Excel in a decimal-comma locale splits cells on ';' and reads UTF-8 as such only after a byte order
    mark: both are the destination's settings, and the rewrite that takes an erased customer out of the
    file keeps them, or the file a marketer opened yesterday would open as one column of MÃ¼ller today."""
    from cdp_assets.privacy.files import _rewrite_exports, file_sql
    from cdp_assets.syncs.assets import export_file

    config = make_config(
        tmp_path,
        {"type": "file", "fields": ["customer_id", "last_name", "lifetime_revenue"], "delimiter": ";"}
        | {"byte_order_mark": True},
    )
    warehouse = Warehouse(config)
    for customer, name in [("c1", "Müller"), ("c2", "Dupont; Fils"), ("c3", "Øster")]:
        warehouse.add(customer, last_name=name, consent_email_marketing=True, lifetime_revenue=1234.5)
    outcome = export_file(Sql(warehouse.conn), config, config.destinations[0], "r1")
    export = Path(str(outcome["file"]))
    written = export.read_bytes()
    assert written.startswith(b"\xef\xbb\xbfcustomer_id;last_name;lifetime_revenue\n")
    assert written.decode("utf-8-sig").splitlines()[1:] == [
        "c1;Müller;1234.50",
        'c2;"Dupont; Fils";1234.50',
        "c3;Øster;1234.50",
    ]
    with file_sql() as files:
        assert _rewrite_exports(files, config, b"k" * 32, ["c2"], set()) == 1
    rewritten = export.read_bytes()
    assert rewritten.startswith(b"\xef\xbb\xbfcustomer_id;last_name;lifetime_revenue\n")
    assert rewritten.decode("utf-8-sig").splitlines()[1:] == ["c1;Müller;1234.50", "c3;Øster;1234.50"]
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.unit
def test_a_separator_or_mark_for_a_parquet_export_is_refused_at_load(tmp_path):
    with pytest.raises(ValueError, match="delimiter: only for format csv"):
        make_config(tmp_path, {"type": "file", "format": "parquet", "delimiter": ";"})


@pytest.mark.dagster
def test_a_file_export_leaves_out_members_without_a_required_field_and_counts_them(tmp_path):
    import csv

    import dagster as dg

    from cdp_assets.syncs.assets import build_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource

    config = make_config(tmp_path, {"type": "file", "fields": ["customer_id", "phone"], "required": ["phone"]})
    database = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(config, database)
    for customer, phone in [("with", "+14155550100"), ("without", None), ("blank", "")]:
        warehouse.add(customer, phone=phone, consent_email_marketing=True, lifetime_revenue=500)
    warehouse.conn.close()
    result = dg.materialize(
        [build_sync_asset(config, config.destinations[0])],
        resources={"warehouse": WarehouseResource(database=str(database))},
    )
    assert result.success
    [export] = (tmp_path / "exports" / "dest").iterdir()
    with export.open(newline="") as handle:
        assert [row["customer_id"] for row in csv.DictReader(handle)] == ["with"]
    [materialization] = result.asset_materializations_for_node("syncs__dest")
    assert materialization.metadata["missing_required"].value == 2


@pytest.mark.dagster
def test_a_sync_whose_destination_was_down_is_retried_with_growing_waits_until_it_gets_through(tmp_path):
    import dagster as dg

    from cdp_assets.syncs.assets import build_row_sync_asset
    from resources.config.refresh import RETRY_ATTEMPT_TAG
    from resources.warehouse import Warehouse as WarehouseResource
    from sensors.deliveries import build_destination_retry_sensor

    attempts = FAST_RETRY["max_attempts"]
    # The first run and the first retry meet a dead server; the second retry gets through.
    script = ["500"] * attempts * 2
    with DestinationServer(port=0, faults=Faults(script=script)) as server:
        config = make_config(
            tmp_path,
            {"type": "rest", "mode": "mirror", "batch_size": 10, "upsert_url": f"{server.url}/rest/crm/upsert"},
        )
        database = tmp_path / "warehouse.duckdb"
        warehouse = Warehouse(config, database)
        warehouse.set_members(people(12))
        warehouse.conn.close()
        sync = build_row_sync_asset(config, config.destinations[0])
        resources = {"warehouse": WarehouseResource(database=str(database))}
        instance = dg.DagsterInstance.ephemeral()
        now = [0.0]
        sensor = build_destination_retry_sensor(config, clock=lambda: now[0])
        assert sensor is not None

        def tick() -> dg.SensorResult:
            return sensor(dg.build_sensor_context(instance=instance))

        def failed_at() -> float:
            [record] = instance.get_asset_records([sync.key])
            return instance.get_run_record_by_id(record.asset_entry.last_run_id).end_time

        assert not tick().run_requests  # nothing has failed
        first = dg.materialize([sync], resources=resources, instance=instance, raise_on_error=False)
        assert not first.success
        now[0] = failed_at() + 299
        waiting = tick()
        assert not waiting.run_requests and "'dest' retries at" in waiting.skip_reason.skip_message
        now[0] = failed_at() + 301
        [request] = tick().run_requests
        assert request.asset_selection == [sync.key] and request.tags == {RETRY_ATTEMPT_TAG: "1"}
        assert tick().run_requests[0].run_key == request.run_key  # the same failure gives the same run key

        again = dg.materialize([sync], resources=resources, instance=instance, tags=request.tags, raise_on_error=False)
        assert not again.success and state(server, "rest", "crm")["records"] == {}
        now[0] = failed_at() + 599  # the wait doubles after a failed retry
        assert not tick().run_requests
        now[0] = failed_at() + 601
        [second] = tick().run_requests
        assert second.tags == {RETRY_ATTEMPT_TAG: "2"} and second.run_key != request.run_key

        assert dg.materialize([sync], resources=resources, instance=instance, tags=second.tags).success
        assert len(state(server, "rest", "crm")["records"]) == 12
        now[0] += 86_400
        assert not tick().run_requests  # it got through: nothing more to retry


@pytest.mark.dagster
def test_a_sync_that_failed_for_another_reason_is_not_retried(tmp_path, monkeypatch):
    import dagster as dg

    from cdp_assets.syncs.assets import build_row_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource
    from sensors.deliveries import build_destination_retry_sensor

    config = make_config(
        tmp_path, {"type": "rest", "mode": "mirror", "upsert_url": "http://127.0.0.1:9/rest/crm/upsert"}
    )
    database = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(config, database)
    warehouse.set_members(people(3))
    warehouse.conn.close()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the plan")

    monkeypatch.setattr("cdp_assets.syncs.assets.plan_sync", broken)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [build_row_sync_asset(config, config.destinations[0])],
        resources={"warehouse": WarehouseResource(database=str(database))},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    sensor = build_destination_retry_sensor(config, clock=lambda: 10**12)
    assert not sensor(dg.build_sensor_context(instance=instance)).run_requests


@pytest.mark.unit
def test_destination_retry_waits_are_validated_and_can_be_turned_off(tmp_path):
    from resources.config import ConfigError
    from sensors.deliveries import build_destination_retry_sensor

    config = make_config(tmp_path, {"type": "rest", "mode": "mirror", "upsert_url": "http://127.0.0.1:9/u"})
    retry = config.refresh.destination_retry
    assert [retry.wait(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [300, 600, 1200, 2400, 3600]
    raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
    raw["refresh"] = {"destination_retry": {"first_after": "1 month"}}
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"refresh\.destination_retry\.first_after: '1 month' must look like"):
        load_config(tmp_path / "cdp.yaml")
    raw["refresh"] = {"destination_retry": None}
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
    assert build_destination_retry_sensor(load_config(tmp_path / "cdp.yaml")) is None


@pytest.mark.dagster
def test_an_audience_member_with_no_identifier_is_counted_and_a_bad_value_warned_of(tmp_path):
    """A member with no e-mail or phone at all cannot be in an audience and there is nothing to fix: the sync's
    `every_change_delivered` passes, counting them. A value that cannot be read is a data problem to fix at the
    source: the check warns of it."""
    import dagster as dg

    from cdp_assets.definitions import FULL_REFRESH, build_definitions

    def synced(config: CDPConfig, members: dict[str, dict]) -> tuple[bool, dict]:
        """Write the members into the warehouse file, then materialize the sync alone, as a run does."""
        warehouse.conn = duckdb.connect(str(config.warehouse_path))
        warehouse.set_members(members)
        warehouse.conn.close()
        result = (
            build_definitions(config)
            .resolve_job_def(FULL_REFRESH)
            .execute_in_process(
                instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey(["syncs", "dest"])]
            )
        )
        [check] = result.get_asset_check_evaluations()
        return check.passed, {k: v.value for k, v in check.metadata.items()}

    with DestinationServer(port=0) as server:
        config = make_config(tmp_path, audience(server))
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        warehouse = Warehouse(config, config.warehouse_path)
        warehouse.conn.close()
        members = {"c1": {"email": "ann@example.org"}, "c2": {"first_name": "Bo"}}
        passed, figures = synced(config, members)
        assert passed and (figures["rejected"], figures["without_identifiers"]) == (1, 1)
        passed, figures = synced(config, {**members, "c3": {"email": "not an email"}})
        assert not passed and (figures["rejected"], figures["without_identifiers"]) == (2, 1)
        assert len(state(server, "audiences", "a")["members"]) == 1
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        reasons = conn.execute(
            "select distinct key, error from syncs.changelog where status = 'rejected' order by key"
        ).fetchall()
    assert reasons == [
        ("c2", sync_state.NO_IDENTIFIER),
        ("c3", "no usable identifier: email_sha256: not a valid e-mail address (n***)"),
    ]


@pytest.mark.dagster
def test_a_file_destination_keeps_only_its_latest_files_when_told(tmp_path):
    """Each export is a copy of its members; with keep_files the older copies, which hold people who may since
    have left or said no, are deleted after each export."""
    import dagster as dg

    from cdp_assets.syncs.assets import build_sync_asset
    from resources.warehouse import Warehouse as WarehouseResource

    config = make_config(tmp_path, {"type": "file", "fields": ["customer_id"], "keep_files": 2})
    database = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(config, database)
    warehouse.add("c1", consent_email_marketing=True)
    warehouse.conn.close()
    written, removed = [], []
    for _ in range(3):
        result = dg.materialize(
            [build_sync_asset(config, config.destinations[0])],
            resources={"warehouse": WarehouseResource(database=str(database))},
        )
        [materialization] = result.asset_materializations_for_node("syncs__dest")
        written.append(Path(materialization.metadata["file"].value).name)
        removed.append(materialization.metadata["files_removed"].value)
    assert removed == [0, 0, 1]
    assert sorted(p.name for p in (tmp_path / "exports" / "dest").iterdir()) == written[1:]
