"""Identity does no work when nothing it reads has changed since its last run, and resolves again (to what
a rebuild gives) when the cleaned records, the configuration or its own map changed."""

import csv
import json

import dagster as dg
import duckdb
import pytest

from benchmarks.deltas import _contacts_sent_once
from benchmarks.id_stability import _hold_back, _release
from cdp_assets.consistency.checks import CHECK_NAME
from cdp_assets.identity.assets import IDENTITY_CLUSTERS, resolve
from cdp_assets.privacy.assets import PRIVACY_JOB
from resources.sql import Sql
from resources.warehouse import copy_database
from sensors.schedules import REBUILD_CHECK_JOB, RETRAIN_JOB
from tests.fixtures import CRM_HEADER, make_platform

pytestmark = pytest.mark.dagster


def _identity(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    assert result.success
    (materialization,) = result.asset_materializations_for_node("identity__clusters")
    return {k: v.value for k, v in materialization.metadata.items()}


def _identity_checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key == IDENTITY_CLUSTERS}


# Identity's tables as a delta and a full resolution are compared.
RESOLVED_TABLES = (
    "cdp.identity_map",
    "identity.evidence",
    "identity.review",
    "identity.blocked_identifiers",
    "identity.shared_identifiers",
    "identity.shared_identifier_groups",
    "identity.separated_links",
    # The features kept for the next run, but for their node ids (stale in kept rows, which nothing reads).
    "(select * exclude (node_id) from identity.match_features)",
    # The clustering decisions kept for the next run, under their groups' signatures.
    "identity.cluster_decisions",
)


def _assert_a_full_resolution_gives_the_same(platform, copy) -> dict[str, object]:
    """Resolve everything again on a copy of the platform's warehouse (`copy`), with the kept model, and
    assert every table of RESOLVED_TABLES is as the platform's runs left it; returns the resolution's summary."""
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        kept = {t: conn.execute(f"select * from {t} order by all").fetchall() for t in RESOLVED_TABLES}
        copy_database(Sql(conn), copy)
    with duckdb.connect(str(copy)) as conn:
        summary = resolve(Sql(conn), platform.config)
        full = {t: conn.execute(f"select * from {t} order by all").fetchall() for t in RESOLVED_TABLES}
    for table in RESOLVED_TABLES:
        assert kept[table] == full[table], table
    return summary


def test_identity_skips_a_run_with_nothing_changed_and_resolves_changes_as_a_rebuild(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    first = _identity(platform.refresh())
    assert first["mode"] == "full" and first["reason"] == "no earlier identity run is recorded"
    runs = platform.scalar("select count(*) from identity.id_runs")
    map_before = platform.sql("select * from cdp.identity_map order by all")

    # Nothing new: no matching work (no id run recorded, no candidate pairs), the tables as they were, the
    # checks reported all the same.
    refresh = platform.refresh()
    unchanged = _identity(refresh)
    assert unchanged["mode"] == "unchanged" and unchanged["records_affected"] == 0
    assert "candidate_pairs" not in unchanged and "seconds_by_step" not in unchanged
    assert unchanged["customers"] == first["customers"]
    assert unchanged["model_training"] == "kept" and unchanged["model_trained_at"] == first["model_trained_at"]
    assert platform.scalar("select count(*) from identity.id_runs") == runs
    assert platform.sql("select * from cdp.identity_map order by all") == map_before
    assert _identity_checks(refresh) == dict.fromkeys(_identity_checks(refresh), True)
    assert len(_identity_checks(refresh)) == 4

    # A delta file with a new contact and a later version of a known one: resolved again, and the map
    # is the one a rebuild from the raw rows gives, with the same ids.
    known = platform.scalar("select min(source_record_id) from clean.person_records where source = 'crm_contacts'")
    (platform.folder / "landing" / "crm" / "delta.csv").write_text(
        CRM_HEADER
        + "NEW-1,Zed,Quill,zed.quill@example.org,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        + f"{known},Ann,Changed,ann.changed@example.org,,,,,,US,,true,2026-02-01T00:00:00Z\n"
    )
    changed = _identity(platform.refresh())
    assert changed["mode"] == "incremental" and changed["reason"] == "the cleaned records changed"
    assert platform.scalar("select count(*) from identity.id_runs") == runs + 1
    assert platform.scalar("select count(*) from cdp.identity_map where source_record_id = 'NEW-1'") == 1
    check = platform.defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    (evaluation,) = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["differing rows in cdp.identity_map"].value == 0

    # A map changed behind identity's back is not trusted: the next run resolves again and restores it.
    resolved = platform.sql("select * from cdp.identity_map order by all")
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute("delete from cdp.identity_map where source_record_id = 'NEW-1'")
    restored = _identity(platform.refresh())
    assert restored["mode"] == "incremental"  # the scored pairs are as they were; the map is made again
    assert restored["reason"] == "cdp.identity_map changed since the last identity run"
    assert platform.sql("select * from cdp.identity_map order by all") == resolved


def test_records_sent_again_with_changes_identity_does_not_read_leave_it_as_it_was(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    first = _identity(platform.refresh())
    assert first["mode"] == "full"
    runs = platform.scalar("select count(*) from identity.id_runs")
    map_before = platform.sql("select * from cdp.identity_map order by all")

    # Three known contacts exported again, every field as it was but the e-mail opt-in (withdrawn) and the
    # modification time (later): new latest versions of them, in a new file, with their identifiers.
    crm = platform.folder / "landing" / "crm"
    sent_once = _contacts_sent_once(platform.folder / "landing")
    rows = [r for r in sent_once if r["Email"] and r["Email Opt In"] == "true"][:3]
    assert len(rows) == 3
    with (crm / "optouts.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "Email Opt In": "false", "Last Modified": "2026-06-01T00:00:00Z"} for r in rows)
    refresh = platform.refresh()
    again = _identity(refresh)
    assert again["mode"] == "unchanged", again["reason"]
    assert platform.scalar("select count(*) from identity.id_runs") == runs
    assert platform.sql("select * from cdp.identity_map order by all") == map_before
    # The profiles took the change: each contact's customer has withdrawn its consent.
    ids = ", ".join(f"'{r['ContactId']}'" for r in rows)
    latest = f"select count(*) from clean.person_records where source_record_id in ({ids}) and is_latest"
    assert platform.scalar(f"{latest} and file like '%optouts.csv'") == 3
    consenting = f"""select count(*) from cdp.golden_profiles p join cdp.identity_map m using (customer_id)
                     where m.source_record_id in ({ids}) and p.consent_email_marketing"""
    assert platform.scalar(consenting) == 0

    # New events of browsers already known, with no identifier they had not given: the same activity
    # records, so identity is left as it was, and the profiles count the events.
    web = platform.folder / "landing" / "web"
    known_events = [json.loads(line) for line in sorted(web.glob("*.jsonl"))[0].read_text().splitlines()[:5]]
    assert all(e["anonymousId"] and not e.get("traits") for e in known_events)
    customer = platform.scalar(
        f"select customer_id from cdp.identity_map where source_record_id = '{known_events[0]['anonymousId']}'"
    )
    events_before = platform.scalar(f"select event_count from cdp.golden_profiles where customer_id = '{customer}'")
    (web / "events_2026-06-01.jsonl").write_text(
        "".join(json.dumps({**e, "messageId": f"again-{n}", "timestamp": "2026-06-01T10:00:00Z"}) + "\n"
                for n, e in enumerate(known_events))
    )  # fmt: skip
    refresh = platform.refresh()
    assert _identity(refresh)["mode"] == "unchanged"
    assert platform.sql("select * from cdp.identity_map order by all") == map_before
    browsers = ", ".join(f"'{e['anonymousId']}'" for e in known_events)
    customers = dict(
        platform.sql(
            f"select source_record_id, customer_id from cdp.identity_map "
            f"where source = 'web_events' and source_record_id in ({browsers})"
        )
    )
    same_customer = sum(customers[e["anonymousId"]] == customer for e in known_events)
    events_after = platform.scalar(f"select event_count from cdp.golden_profiles where customer_id = '{customer}'")
    assert events_after == events_before + same_customer

    # A change identity reads (one of them moves house) is resolved again.
    moved = {**rows[0], "Mailing Street": "99 Elsewhere Rd", "Last Modified": "2026-07-01T00:00:00Z"}
    with (crm / "moved.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(moved)
    assert _identity(platform.refresh())["mode"] == "incremental"


def test_a_delta_scores_only_the_pairs_of_changed_records_and_gives_what_a_full_resolution_gives(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=600)
    held = _hold_back(platform.folder / "landing", share=0.1)
    # Two records of one person with one mailbox user at two providers: only a rare-key rule (blocks of at
    # most 5 records) pairs them, until the delta below brings five more holders of that user.
    crm = platform.folder / "landing" / "crm"
    (crm / "slip.csv").write_text(
        CRM_HEADER
        + "SLIP-1,Quentin,Zyxwell,quentin.zyxwell@gmail.com,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        + "SLIP-2,Quentin,Zyxwell,quentin.zyxwell@yahoo.com,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        # Two addresses a letter apart, paired only by the block of their shared deletion form (zorblat@…).
        + "SLIPX-1,Quinby,Zorblat,zorblatq@gmail.com,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        + "SLIPX-2,Quinby,Zorblat,zorblatx@gmail.com,,,,,,US,,true,2026-01-01T00:00:00Z\n"
    )
    first = _identity(platform.refresh())
    slip_pair = "select count(*) from identity.evidence where left_record_id = 'SLIP-1' and right_record_id = 'SLIP-2'"
    assert platform.scalar(slip_pair) == 1
    form_pair = slip_pair.replace("SLIP-", "SLIPX-")
    assert platform.scalar(form_pair) == 1
    assert first["mode"] == "full"

    # New records (the held-back lines) and changed ones (a known contact's new surname, which moves it out
    # of its blocks and into others); rare-key blocks (capped at 5 records) cross their cap on the way.
    _release(held, 1, 1)
    known = platform.sql(
        "select source_record_id from clean.person_records where source = 'crm_contacts' and is_latest "
        "order by source_record_id limit 3"
    )
    (platform.folder / "landing" / "crm" / "renamed.csv").write_text(
        CRM_HEADER + "".join(f"{rid},Ann,Renamed,,,,,,,US,,true,2026-03-01T00:00:00Z\n" for (rid,) in known)
    )
    (crm / "slip_more.csv").write_text(
        CRM_HEADER
        + "".join(
            f"SLIP-{n},{name},Other,quentin.zyxwell@{domain},,,,,,US,,true,2026-01-01T00:00:00Z\n"
            for n, name, domain in [
                (3, "Ada", "outlook.com"),
                (4, "Bo", "aol.com"),
                (5, "Cy", "icloud.com"),
                (6, "Di", "proton.me"),
                (7, "Ed", "example.net"),
            ]
        )
        # Four more addresses in that deletion form's block take it over its cap of five addresses.
        + "".join(
            f"SLIPX-{n},{name},Other,zorblat{n}@gmail.com,,,,,,US,,true,2026-01-01T00:00:00Z\n"
            for n, name in [(3, "Ada"), (4, "Bo"), (5, "Cy"), (6, "Di")]
        )
    )
    delta = _identity(platform.refresh())
    assert platform.scalar(slip_pair) == 0  # their blocks are over the cap now
    assert platform.scalar(form_pair) == 0
    assert delta["mode"] == "incremental", delta["reason"]
    assert 0 < delta["records_rescored"] < first["person_records"] / 2
    assert delta["scored_pairs_kept"] > 0
    # The deterministic layer resolved only the islands the delta reached.
    assert 0 < delta["deterministic_records"] < first["deterministic_records"] / 2
    # Clustering decided again only the groups of customers whose rows changed.
    assert first["linked_groups_kept"] == 0
    assert 0 < delta["linked_groups_kept"] < delta["linked_groups"]

    # A full resolution with the same kept model, on a copy: the same scored pairs with the same weights
    # and decisions, the same review list, the same customers, the same tables of the deterministic layer.
    summary = _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full.duckdb")
    assert summary["pairs"] == "all made" and summary["model_training"] == "kept"

    # Records leaving a block take it back under its cap: its pairs are made again, found through the kept
    # rows of the records that left.
    (crm / "slip_moved.csv").write_text(
        CRM_HEADER
        + "".join(
            f"SLIPX-{n},{name},Other,{name.lower()}.moved@example.net,,,,,,US,,true,2026-04-01T00:00:00Z\n"
            for n, name in [(3, "Ada"), (4, "Bo"), (5, "Cy"), (6, "Di")]
        )
    )
    back = _identity(platform.refresh())
    assert back["mode"] == "incremental" and back["scored_pairs_kept"] > 0
    assert platform.scalar(form_pair) == 1
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full_again.duckdb")

    # A contact sent again with only its postal address new: nothing the deterministic layer judges by,
    # but its matching features change, so it is among the records whose features are made again.
    address = "select address, postal_code, city from identity.match_features where source_record_id = 'SLIPX-1'"
    assert platform.sql(address) == [(None, None, None)]
    (crm / "slip_address.csv").write_text(
        CRM_HEADER + "SLIPX-1,Quinby,Zorblat,zorblatq@gmail.com,,12 Elm Street,Springfield,IL,62701,US,,true,"
        "2026-05-01T00:00:00Z\n"
    )
    moved = _identity(platform.refresh())
    assert platform.sql(address) == [("12 elm st", "62701", "springfield")]
    assert moved["mode"] == "incremental" and 0 < moved["deterministic_records"] < first["deterministic_records"] / 2
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full_moved.duckdb")

    # Rows of the kept features removed by anything but identity (an erasure removes a person's) took the
    # old sizes of their blocks with them: the next run makes every pair again.
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute("delete from identity.match_features where source_record_id = 'SLIP-3'")
    (crm / "one_more.csv").write_text(CRM_HEADER + "NEW-9,Zoe,Quill,,,,,,,US,,true,2026-01-01T00:00:00Z\n")
    after_removal = _identity(platform.refresh())
    assert after_removal["mode"] == "full" and after_removal["scored_pairs_kept"] == 0


def test_how_common_a_first_name_is_comes_with_the_kept_model_until_it_is_trained_again(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    crm = platform.folder / "landing" / "crm"
    # One person's two records under one e-mail, the first name once mistyped: a rare spelling beside
    # another rare one is a slip, so the e-mail is one person's and links them.
    (crm / "slip.csv").write_text(
        CRM_HEADER
        + "ZAD-1,Zadislava,Quorn,zad.quorn@example.org,,,,,,US,1980-04-02,true,2026-01-01T00:00:00Z\n"
        + "ZAD-2,Zadislawa,Quorn,zad.quorn@example.org,,,,,,US,1980-04-02,true,2026-01-01T00:00:00Z\n"
    )
    first = _identity(platform.refresh())
    assert first["model_training"] != "kept"
    blocked = "select count(*) from identity.blocked_identifiers where id_value = 'zad.quorn@example.org'"
    assert platform.scalar(blocked) == 0

    # Two more of each spelling arrive, elsewhere: counted afresh, both names would now be too common to
    # be one another's slip, and the e-mail would be two people's. The kept model's counts say it is one
    # person's still, as a rebuild with that model says.
    (crm / "more.csv").write_text(
        CRM_HEADER
        + "".join(
            f"ZAD-{n}{k},{name},Other{n}{k},other{n}{k}@example.org,,,,,,US,,true,2026-01-01T00:00:00Z\n"
            for n, name in [(3, "Zadislava"), (4, "Zadislawa")]
            for k in "ab"
        )
    )
    delta = _identity(platform.refresh())
    assert delta["mode"] == "incremental" and delta["model_training"] == "kept"
    assert platform.scalar(blocked) == 0
    check = platform.defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    (evaluation,) = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata

    # Trained again, the model counts names again: two common spellings are two people.
    retrained = platform.defs.resolve_job_def(RETRAIN_JOB).execute_in_process(instance=instance)
    assert _identity(retrained)["model_training"] == "retrained: requested"
    assert platform.scalar(blocked) == 1


def test_a_delta_resolves_the_deterministic_layer_only_over_the_islands_it_reaches_as_a_full_run_would(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    crm, web = platform.folder / "landing" / "crm", platform.folder / "landing" / "web"

    def contact(rid: str, first: str, last: str, email: str, phone: str, born: str, modified: str) -> str:
        return f"{rid},{first},{last},{email},{phone},,,,,US,{born},true,{modified}\n"

    def identify(n: str, anonymous_id: str, email: str) -> str:
        event = {"type": "identify", "messageId": f"isl-{n}", "anonymousId": anonymous_id, "userId": None,
                 "timestamp": "2025-06-30T10:00:00Z", "traits": {"email": email}}  # fmt: skip
        return json.dumps(event) + "\n"

    # Three people under one landline (a value shared by several people), two under a junk e-mail (blocked
    # by pattern, in two islands), two people a later e-mail will join, and a browser on which two people
    # gave their e-mail (an activity record bridging them).
    (crm / "islands.csv").write_text(
        CRM_HEADER
        + contact("HH-1", "Hana", "Oakridge", "hana.oakridge@example.org", "(617) 555-0101", "01/01/1970", "2025-01-01")
        + contact("HH-2", "Ivan", "Oakridge", "", "(617) 555-0101", "02/02/1972", "2025-01-01")
        + contact("HH-3", "Juno", "Oakridge", "", "(617) 555-0101", "03/03/2001", "2025-01-01")
        + contact("TT-1", "Kai", "Testerly", "test@test.com", "", "04/04/1980", "2025-01-01")
        + contact("TT-2", "Lou", "Testerly", "test@test.com", "", "05/05/1981", "2025-01-01")
        + contact("JA-1", "Nia", "Alphaway", "nia.alphaway@example.org", "", "06/06/1982", "2025-01-01")
        + contact("JB-1", "Ola", "Betamore", "ola.betamore@example.org", "", "07/07/1983", "2025-01-01")
        # Islands the delta leaves alone: another shared landline, another bridging browser.
        + contact("QH-1", "Uma", "Pinecrest", "", "(617) 555-0202", "01/02/1960", "2025-01-01")
        + contact("QH-2", "Vic", "Pinecrest", "", "(617) 555-0202", "02/03/1961", "2025-01-01")
        + contact("QH-3", "Wes", "Pinecrest", "", "(617) 555-0202", "03/04/1999", "2025-01-01")
        + contact("QA-1", "Rey", "Quietly", "rey.quietly@example.org", "", "04/05/1985", "2025-01-01")
        + contact("QB-1", "Sol", "Quietson", "sol.quietson@example.org", "", "05/06/1986", "2025-01-01")
        + contact("XA-1", "Tam", "Stillwater", "tam.stillwater@example.org", "", "06/07/1987", "2025-01-01")
        + contact("XB-1", "Ulf", "Stillman", "ulf.stillman@example.org", "", "07/08/1988", "2025-01-01")
    )
    (web / "events_islands.jsonl").write_text(
        identify("1", "anon-bridge", "hana.oakridge@example.org")
        + identify("2", "anon-bridge", "nia.alphaway@example.org")
        + identify("3", "anon-quiet", "rey.quietly@example.org")
        + identify("4", "anon-quiet", "sol.quietson@example.org")
        + identify("6", "anon-still", "tam.stillwater@example.org")
        + identify("7", "anon-still", "ulf.stillman@example.org")
    )
    first = _identity(platform.refresh())
    assert first["deterministic_records"] == platform.scalar("select count(*) from cdp.identity_map")
    junk = "select records from identity.blocked_identifiers where id_value = 'test@test.com'"
    junk_records = platform.scalar(junk)
    assert junk_records >= 2
    for browser in ("anon-bridge", "anon-quiet", "anon-still"):
        assert platform.scalar(f"select count(*) from identity.separated_links where source_record_id = '{browser}'")
    landline = "select count(*) from identity.{} where id_value = '+16175550202'"
    assert platform.scalar(landline.format("shared_identifiers")) + platform.scalar(
        landline.format("blocked_identifiers")
    )

    # The islands file sent again without one of the people a browser bridged (a record gone), a fourth
    # person under the landline, a third under the junk e-mail, a contact sent again with the other
    # one's e-mail, and the browser giving a third person's e-mail.
    (crm / "islands_delta.csv").write_text(
        CRM_HEADER
        + contact("HH-4", "Pia", "Oakridge", "", "(617) 555-0101", "08/08/1990", "2025-02-01")
        + contact("TT-3", "Quin", "Testerly", "test@test.com", "", "09/09/1984", "2025-02-01")
        + contact("JA-1", "Nia", "Alphaway", "ola.betamore@example.org", "", "06/06/1982", "2025-02-01")
    )
    sent = (crm / "islands.csv").read_text()
    (crm / "islands.csv").write_text("".join(line for line in sent.splitlines(True) if not line.startswith("QA-1,")))
    (web / "events_islands_2.jsonl").write_text(identify("5", "anon-bridge", "pia.oakridge@example.org"))
    (crm / "islands_pia.csv").write_text(
        CRM_HEADER + contact("HH-5", "Pia", "Oakridge", "pia.oakridge@example.org", "", "08/08/1990", "2025-02-01")
    )
    delta = _identity(platform.refresh())
    assert delta["mode"] == "incremental", delta["reason"]
    assert 0 < delta["deterministic_records"] < first["deterministic_records"] / 4
    assert platform.scalar(junk) == junk_records + 1  # counted over every record, not only the scope's
    assert not platform.scalar("select count(*) from cdp.identity_map where source_record_id = 'QA-1'")

    # What a full resolution with the same kept model gives, on a copy: every table of the layer, the map.
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full.duckdb")


def test_the_run_after_an_erasure_resolves_the_deterministic_layer_over_every_record(
    tmp_path, instance, destination_server, monkeypatch
):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "0123456789abcdef0123456789abcdef")
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    # Two people under a junk e-mail (blocked by pattern): erasing one removes the value's row from
    # identity.blocked_identifiers, which the other still carries.
    (platform.folder / "landing" / "crm" / "junk.csv").write_text(
        CRM_HEADER
        + "JK-1,Kai,Junkett,test@test.com,,,,,,US,04/04/1980,true,2025-01-01T00:00:00Z\n"
        + "JK-2,Lou,Junkmore,test@test.com,,,,,,US,05/05/1981,true,2025-01-01T00:00:00Z\n"
    )
    assert platform.refresh().success
    junk = "select records from identity.blocked_identifiers where id_value = 'test@test.com'"
    carried = platform.scalar(junk)
    requests = platform.config.privacy_requests_path
    requests.mkdir(parents=True, exist_ok=True)
    (requests / "erase.csv").write_text(
        "type,id_type,value,reference,source\nerase,source_record,JK-1,E-1,crm_contacts\n"
    )
    erasure = platform.defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests_file": "erase.csv"}}}}
    )
    assert erasure.success
    assert not platform.scalar(junk.replace("records", "count(*)"))  # the erasure took the value's row

    after = _identity(platform.refresh())
    assert after["mode"] == "full", after["reason"]
    assert after["deterministic_records"] == platform.scalar("select count(*) from cdp.identity_map")
    assert platform.scalar(junk) == carried - 1
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full.duckdb")


def test_records_whose_keys_hash_alike_are_joined_by_their_text_and_keep_no_islands(
    tmp_path, instance, destination_server, monkeypatch
):
    # Two records' keys hashing alike cannot be made to happen; the run is told they did.
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    assert platform.refresh().success
    assert platform.scalar("select count(*) from identity.islands")
    monkeypatch.setattr("cdp_assets.identity.assets.keys_unique", lambda sql, nodes: False)
    copy = tmp_path / "collided.duckdb"
    _assert_a_full_resolution_gives_the_same(platform, copy)
    with duckdb.connect(str(copy)) as conn:
        kept = "select count(*) from duckdb_tables() where schema_name = 'identity' and table_name like 'islands%'"
        assert conn.execute(kept).fetchall() == [(0,)]


def test_a_name_new_since_training_weighs_by_how_many_records_hold_it_in_a_delta_as_in_a_full_run(
    tmp_path, instance, destination_server
):
    """A name the kept model never saw weighs as common as the records holding it make it, not as the
    rarest name there is; as more arrive, the records already holding it are scored again, so every
    delta gives what a full resolution with the kept model gives."""
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    assert platform.refresh().success
    crm = platform.folder / "landing" / "crm"

    def copies(first: int, count: int) -> str:  # one person's records, under a name never seen before
        return CRM_HEADER + "".join(
            f"HM-{n},Hannelore,Quastenberg,,,1 Elm St,Springfield,MA,01101,US,04/05/1970,true,2025-03-01\n"
            for n in range(first, first + count)
        )

    (crm / "quastenberg_1.csv").write_text(copies(0, 3))
    assert _identity(platform.refresh())["mode"] == "incremental"
    weights = "select match_weight from identity.evidence where left_record_id like 'HM-%' order by all"
    three = platform.sql(weights)
    assert three
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full_1.duckdb")
    # One more (a block of four stays under every rule's cap, so blocking alone rescores none of the three).
    (crm / "quastenberg_2.csv").write_text(copies(3, 1))
    delta = _identity(platform.refresh())
    assert delta["mode"] == "incremental" and delta["records_rescored"] >= 4
    # Four hold the name now: their agreement on it weighs less than three's did.
    assert max(w for (w,) in platform.sql(weights)) < max(w for (w,) in three)
    _assert_a_full_resolution_gives_the_same(platform, tmp_path / "full_2.duckdb")
