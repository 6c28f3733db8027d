"""The whole graph materialized on generated data into a temporary warehouse, checked through the public tables."""

import csv
import json
import os
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from cdp_assets.extract import assets as extract_assets
from tests.fixtures import CRM_HEADER, Platform, make_platform

pytestmark = pytest.mark.dagster


def test_every_stage_materializes_and_every_check_passes(platform: Platform):
    result = platform.refresh()
    assert result.success
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    names = {e.asset_check_key.name for e in evaluations}
    assert {
        "great_expectations_suite",
        "rows_accounted_for",
        "mapped_fields_have_values",
        "record_ids_name_one_person",
        "cluster_size_within_bound",
        "one_profile_per_customer",
        "members_have_profiles",
    } <= names
    assert [e.asset_check_key.name for e in evaluations if not e.passed] == []
    materialized = {
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        for e in [e.event_specific_data.materialization]
    }
    assert {
        "raw/crm_contacts",
        "clean/person_records",
        "identity/clusters",
        "profiles/golden_profiles",
        *{f"segments/{s.name}" for s in platform.config.segments},
        "segments/removed_segments",
        "syncs/high_value_csv",
    } <= materialized


def test_raw_rows_equal_cleaned_plus_quarantined_for_every_source(platform: Platform):
    for source in platform.config.sources:
        raw = platform.scalar(f"select count(*) from raw.{source.name}")
        table = {
            "person": "clean.person_records",
            "events": "clean.events",
            "transactions": "clean.transactions",
        }[source.role]
        cleaned = platform.scalar(f"select count(*) from {table} where source = ?", [source.name])
        rejected = platform.scalar(
            "select count(distinct (file, row_number)) from cdp.quarantine "
            "where source = ? and stage = 'clean' and scope = 'row'",
            [source.name],
        )
        # The demo data holds no collector traffic (its website events arrive live); tests/test_collector.py
        # checks the accounting of a collector-fed source.
        assert (raw > 0 or source.format == "segment") and raw == cleaned + rejected, source.name


def test_events_keep_their_json_properties_and_sources_without_them_have_null(platform: Platform):
    by_source = dict(platform.sql("select source, count(properties) from clean.events group by source order by source"))
    assert by_source["web_events"] > 0  # mapped `properties: properties`
    assert by_source["support_tickets"] == 0 and by_source["email_engagement"] == 0
    viewed = platform.scalar(
        "select count(*) from clean.events where event = 'Product Viewed' and properties->>'$.sku' is null"
    )
    assert viewed == 0
    # The demo trait sums a JSON property: the checkout values of the last 30 days.
    total = platform.scalar("select sum(checkout_value_last_30_days) from cdp.golden_profiles")
    expected = platform.scalar(
        """select sum(try_cast(properties->>'$.value' as double)) from clean.events e
           join cdp.identity_map using (source, source_record_id)
           where event = 'Checkout Started' and occurred_at > (
               select max(t) - interval 30 day from (select max(occurred_at) t from clean.events
                                                     union all select max(occurred_at) from clean.transactions))"""
    )
    assert total > 0 and total == pytest.approx(expected)


def test_every_line_of_every_file_is_loaded_or_quarantined(platform: Platform):
    for file, rows_loaded, rows_rejected in platform.sql(
        "select file, rows_loaded, rows_rejected from meta.loaded_files"
    ):
        path = platform.config.landing_path / file
        if file.endswith(".jsonl"):
            lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        else:
            # every CSV record of these files is a single line: count non-blank lines minus the header
            lines = sum(1 for line in path.read_bytes().splitlines() if line.strip()) - 1
        assert rows_loaded + rows_rejected == lines, file


def test_quarantine_holds_the_broken_rows_with_file_row_and_reason(platform: Platform):
    rows = platform.sql(
        "select source, file, row_number, field, reason from cdp.quarantine where stage = 'extract' order by all"
    )
    reasons = {(s, r.split(":")[0]) for s, _, _, _, r in rows}
    assert ("crm_contacts", "unterminated quote") in reasons
    assert ("crm_contacts", "expected 13 fields, found 15") in reasons
    assert ("crm_contacts", "not valid utf-8") in reasons
    assert ("shop_customers", "invalid JSON") in reasons
    assert all(file and row_number for _, file, row_number, _, _ in rows)
    cleaning = {
        (s, f, r) for s, f, r in platform.sql("select source, field, reason from cdp.quarantine where stage = 'clean'")
    }
    assert ("shop_orders", "total_price", "negative amount") in cleaning
    assert ("shop_orders", "total_price", "amount is not a number") in cleaning
    assert any(
        (s, f) == ("shop_orders", "created_at") and r.startswith("not a readable timestamp: expected ")
        for s, f, r in cleaning
    )


def test_known_bad_values_are_quarantined_with_row_field_and_reason(platform: Platform):
    rows = platform.sql(
        """select row_number, field, value, reason, scope from cdp.quarantine
           where source = 'crm_contacts' and file = 'crm/known_bad.csv' order by row_number, field"""
    )
    assert rows == [
        (2, "Email", "ann.lee@", "not a valid e-mail address", "value"),
        (3, "Birthdate", "02/30/1985", "not a valid date in the format(s) %m/%d/%Y, %Y-%m-%d", "value"),
        (4, "Email Opt In", "maybe", "not a yes/no consent statement", "value"),
        (
            4,
            "Mailing Country",
            "Narnia",
            "unknown country: use an ISO code such as US or GB, or the country's name",
            "value",
        ),
        (4, "Phone", "0000000000", "not a phone number (read as US)", "value"),
        (5, "ContactId", None, "no record id: ContactId is empty", "row"),
    ]
    # A refused value leaves the rest of the record in place.
    kept = platform.sql(
        "select source_record_id, email, date_of_birth, phone from clean.person_records "
        "where file = 'crm/known_bad.csv' order by 1"
    )
    assert [(r[0], r[1]) for r in kept] == [("KB-1", None), ("KB-2", "bo@example.org"), ("KB-3", "cy@example.org")]
    assert kept[0][3] == "+12127365000" and kept[1][2] is None and kept[2][3] is None


def test_truth_records_missing_from_identity_map_are_in_quarantine(platform: Platform):
    missing = platform.sql(
        """select t.source, count(*) from read_csv(?, all_varchar = true) t
           anti join cdp.identity_map m using (source, source_record_id) group by 1""",
        [str(platform.truth)],
    )
    for source, count in missing:
        quarantined = platform.scalar(
            "select count(*) from cdp.quarantine where source = ? and scope = 'row'", [source]
        )
        assert count <= quarantined, source


def test_records_sharing_an_identifier_share_a_customer_id(platform: Platform):
    # A value shared by several people links each person's own records (`person_group`), not all of them.
    split = platform.scalar(
        """select count(*) from (
             select l.id_type, l.id_value, l.person_group
             from identity.links l join cdp.identity_map m using (source, source_record_id)
             group by 1, 2, 3 having count(distinct m.customer_id) > 1)"""
    )
    assert split == 0
    # Gmail dot and +tag variants of one address land in one profile.
    variants = platform.scalar(
        """select count(*) from (select customer_id from cdp.golden_profiles, unnest(emails) e(x)
           where x like '%@gmail.com' group by 1
           having count(distinct x) > count(distinct replace(split_part(split_part(x, '@', 1), '+', 1), '.', '')))"""
    )
    assert variants > 0


def test_identity_matches_ground_truth_pairs_precisely(platform: Platform):
    from demo.scoring import score

    scores = score(str(platform.config.warehouse_path), str(platform.truth))
    assert scores["pairwise_precision"] > 0.95
    assert scores["pairwise_recall"] > 0.6


def test_junk_identifiers_link_nobody(platform: Platform):
    blocked = {v for (v,) in platform.sql("select id_value from identity.blocked_identifiers")}
    assert "test@test.com" in blocked or "noemail@noemail.com" in blocked
    assert (
        platform.scalar(
            "select count(*) from identity.links l semi join identity.blocked_identifiers b using (id_type, id_value)"
        )
        == 0
    )


def test_one_golden_profile_per_customer_with_traits(platform: Platform):
    profiles, customers = platform.sql(
        "select (select count(*) from cdp.golden_profiles), (select count(distinct customer_id) from cdp.identity_map)"
    )[0]
    assert profiles == customers
    orders, revenue = platform.sql(
        """select (select sum(order_count) from cdp.golden_profiles),
                  (select round(sum(lifetime_revenue), 2) from cdp.golden_profiles)"""
    )[0]
    # Refunded orders are no orders (profiles.excluded_order_statuses); the demo refunds some.
    paid = "from clean.transactions where status not in ('refunded')"
    assert (
        orders
        == platform.scalar(f"select count(*) {paid}")
        < platform.scalar("select count(*) from clean.transactions")
    )
    assert revenue == platform.scalar(f"select round(sum(amount), 2) {paid}")


def test_segments_hold_exactly_the_matching_profiles(platform: Platform):
    for segment in platform.config.segments:
        expected = platform.scalar(f"select count(*) from cdp.golden_profiles where {segment.where}")
        actual = platform.scalar("select count(*) from cdp.segment_membership where segment = ?", [segment.name])
        assert actual == expected, segment.name
    assert platform.scalar("select count(*) from cdp.segment_membership") > 0
    # Re-runs with the same data open no new stays: the history's open rows are exactly the members.
    assert platform.sql(
        "select segment, customer_id from cdp.segment_membership_history where exited_at is null order by all"
    ) == platform.sql("select segment, customer_id from cdp.segment_membership order by all")


def test_file_destinations_write_the_segment(platform: Platform):
    for destination in [d for d in platform.config.destinations if d.type == "file"]:
        folder = platform.config.resolve(destination.path) / destination.name
        latest = sorted(folder.glob(f"*.{destination.format}"))[-1]
        members = platform.scalar(
            "select count(*) from cdp.segment_membership where segment = ?", [destination.segment]
        )
        if destination.format == "csv":
            with latest.open() as handle:
                rows = list(csv.DictReader(handle))
            assert list(rows[0]) == destination.fields if rows else True
            count = len(rows)
        else:
            table = pq.read_table(latest)
            assert table.column_names == destination.fields
            count = table.num_rows
        assert count == members


@pytest.fixture
def small(tmp_path: Path, instance: dg.DagsterInstance, destination_server) -> Platform:
    built = make_platform(tmp_path, instance, destination_server.url, people=120, seed=3)
    assert built.refresh().success
    return built


def test_rerun_is_idempotent_and_loads_no_file_twice(small: Platform):
    before = small.sql("select * from cdp.identity_map order by all")
    raw_before = small.scalar("select count(*) from raw.web_events")
    result = small.refresh()
    assert result.success
    assert small.sql("select * from cdp.identity_map order by all") == before
    assert small.scalar("select count(*) from raw.web_events") == raw_before
    extract = [
        m
        for m in result.get_asset_materialization_events()
        if m.event_specific_data.materialization.asset_key == dg.AssetKey(["raw", "web_events"])
    ][0]
    assert extract.event_specific_data.materialization.metadata["files_loaded"].value == 0


def test_changed_file_replaces_its_rows_and_renamed_copy_is_skipped(small: Platform):
    path = small.config.landing_path / "support" / "tickets.csv"
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    with path.open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(
            ["T-999999", "new.person@example.org", "New Person", "Hi", "open", "low", "2025-06-30T10:00:00Z"]
        )
    (small.config.landing_path / "support" / "tickets_copy.csv").write_bytes(path.read_bytes())
    assert small.refresh().success
    assert small.scalar("select count(*) from raw.support_tickets") == len(rows)  # header replaced by new row
    assert (
        small.scalar(
            "select count(*) from cdp.identity_map where source = 'support_tickets' and source_record_id = 'T-999999'"
        )
        == 1
    )


def test_a_resent_copy_beside_its_emptied_original_loads_in_the_same_run(small: Platform):
    """A vendor re-sends a file under a new name and withdraws the old name with an empty file: the copy's
    content is no longer loaded once this run replaces the original, so it loads now (it used to be
    skipped as a copy of the original's old content, leaving the source empty until a later run)."""
    path = small.config.landing_path / "support" / "tickets.csv"
    content = path.read_bytes()
    before = small.sql("select record from raw.support_tickets order by all")
    assert before
    (path.parent / "tickets-resent.csv").write_bytes(content)  # sorts before tickets.csv
    path.write_bytes(content.splitlines(keepends=True)[0])  # the header alone: its rows withdrawn
    result = small.refresh()
    assert result.success
    assert small.sql("select record from raw.support_tickets order by all") == before
    assert small.scalar("select count(distinct _file) from raw.support_tickets") == 1
    # The same content under a third name is now a copy of what tickets-resent.csv loaded, and says so.
    (path.parent / "tickets-again.csv").write_bytes(content)
    result = small.refresh()
    extract = [
        m.event_specific_data.materialization
        for m in result.get_asset_materialization_events()
        if m.event_specific_data.materialization.asset_key == dg.AssetKey(["raw", "support_tickets"])
    ][0]
    assert extract.metadata["copies_skipped"].value == "support/tickets-again.csv (as support/tickets-resent.csv)"
    assert small.sql("select record from raw.support_tickets order by all") == before


def test_a_file_is_read_to_hash_it_only_when_its_size_or_time_changed(small: Platform, monkeypatch):
    """Hashing every landing file on every run would cost what the folder holds; a file keeps the hash it
    had while its size and modification time are those recorded (as the landing sensor judges files)."""
    hashed: list[str] = []
    real = extract_assets.file_sha256
    monkeypatch.setattr(extract_assets, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    tickets = small.config.landing_path / "support" / "tickets.csv"
    assert small.refresh().success
    assert hashed == []
    stat = tickets.stat()
    os.utime(tickets, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, not changed
    assert small.refresh().success
    assert hashed == ["tickets.csv"]
    assert small.scalar("select mtime_ns from meta.loaded_files where file = 'support/tickets.csv'") == (
        stat.st_mtime_ns + 10**9
    )
    hashed.clear()
    assert small.refresh().success
    assert hashed == []
    # Changed in place, same size: its new time has it hashed and loaded again.
    content = tickets.read_bytes()
    tickets.write_bytes(content.replace(b",closed,", b",CLOSED,", 1))
    assert small.refresh().success
    assert hashed == ["tickets.csv"]
    assert small.scalar("select count(*) from raw.support_tickets where record ->> '$.status' = 'CLOSED'") == 1


def test_malformed_files_do_not_stop_other_sources(small: Platform):
    landing = small.config.landing_path
    (landing / "support" / "empty.csv").write_bytes(b"")
    (landing / "web" / "garbage.jsonl").write_bytes(b"\x00\x01\x02 not json\n")
    assert small.refresh().success
    reasons = dict(
        small.sql(
            "select file, reason from cdp.quarantine where stage = 'extract' "
            "and file in ('support/empty.csv', 'web/garbage.jsonl')"
        )
    )
    assert reasons["support/empty.csv"].startswith("empty file")
    assert reasons["web/garbage.jsonl"].startswith("file web/garbage.jsonl is not JSON lines: no line is a JSON object")


def test_missing_mapped_column_quarantines_only_that_file_naming_file_and_column(small: Platform):
    path = small.config.landing_path / "pos" / "loyalty_members_2.csv"
    path.write_text("card_number,name,postal_code,birth_date,enrolled_at,marketing_ok\n1,A B,02134,,,\n")
    raw_before = small.scalar("select count(*) from raw.pos_loyalty")
    result = small.refresh()
    assert result.success
    [(reason, scope, field)] = small.sql(
        "select reason, scope, field from cdp.quarantine where file = 'pos/loyalty_members_2.csv'"
    )
    assert scope == "file" and field == "phone"
    assert reason.startswith("file pos/loyalty_members_2.csv has no column(s) ['phone']")
    assert small.scalar("select count(*) from raw.pos_loyalty") == raw_before
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_key == dg.AssetKey(["raw", "pos_loyalty"])
    ]
    assert not check.passed and "pos/loyalty_members_2.csv" in check.metadata["files"].value


def test_survivorship_prefers_trust_then_recency_and_keeps_address_parts_together(tmp_path, instance):
    landing = tmp_path / "landing"
    (landing / "a").mkdir(parents=True)
    (landing / "b").mkdir()
    (landing / "a" / "a.csv").write_text(
        "id,first,last,email,street,zip,updated,optin\n"
        "1,Jon,Smith,JOHN@x.org,1 Elm St,02134,2024-01-01T00:00:00Z,yes\n"
        "2,,,zed@x.org,,,2024-01-01T00:00:00Z,\n"
    )
    (landing / "b" / "b.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "cid": "b1",
                    "name": "SMITH, JOHNNY",
                    "mail": "john@x.org",
                    "addr": {"line": "9 Oak Ave", "zip": "10001"},
                    "ts": "2025-01-01T00:00:00Z",
                    "ok": "no",
                },
                {
                    "cid": "b2",
                    "name": "Zed Z",
                    "mail": "zed@x.org",
                    "addr": {"line": "5 Pine Rd", "zip": "60601"},
                    "ts": "2025-01-01T00:00:00Z",
                    "ok": "yes",
                },
            ]
        )
        + "\n"
    )
    config_path = tmp_path / "cdp.yaml"
    config_path.write_text(f"""
warehouse: {{path: wh.duckdb}}
landing: {{path: {landing}}}
sources:
  - name: src_a
    format: csv
    glob: a/*.csv
    role: person
    trust: 90
    record_id: id
    fields: {{first_name: first, last_name: last, email: email, address_line1: street, postal_code: zip,
              updated_at: updated}}
    consent: {{email_marketing: optin}}
    identifiers: [{{path: email, type: email}}]
  - name: src_b
    format: jsonl
    glob: b/*.jsonl
    role: person
    trust: 10
    record_id: cid
    fields: {{full_name: name, email: mail, address_line1: addr.line, postal_code: addr.zip, updated_at: ts}}
    consent: {{email_marketing: ok}}
    identifiers: [{{path: mail, type: email}}]
segments:
  - {{name: opted_in, where: consent_email_marketing}}
""")
    from cdp_assets.definitions import build_definitions
    from resources.config import load_config

    config = load_config(config_path)
    assert build_definitions(config).resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    john = platform.sql(
        """select first_name, last_name, email, address_line1, postal_code, emails, consent_email_marketing
           from cdp.golden_profiles where list_contains(emails, 'john@x.org')"""
    )
    # Trusted source wins the name and the whole address; newer revocation from the other source wins consent.
    assert john == [("Jon", "Smith", "john@x.org", "1 Elm St", "02134", ["john@x.org"], False)]
    zed = platform.sql(
        "select first_name, last_name, address_line1, postal_code from cdp.golden_profiles where email = 'zed@x.org'"
    )
    # Nothing in the trusted record, so the other source fills name and address, as one unit.
    assert zed == [("Zed", "Z", "5 Pine Rd", "60601")]
    assert platform.sql("select count(*) from cdp.segment_membership") == [(1,)]


def test_a_person_source_without_record_ids_is_identified_by_file_and_line(tmp_path, instance):
    from cdp_assets.definitions import build_definitions
    from resources.config import load_config

    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "leads.csv").write_text("name,mail\nAnn Lee,ann@x.org\nAnne Lee,ann@x.org\nCy Diaz,\n")
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing}\nsources:\n"
        "  - {name: leads, format: csv, glob: '*.csv', role: person, fields: {full_name: name, email: mail},\n"
        "     identifiers: [{path: mail, type: email}]}\n"
    )
    config = load_config(tmp_path / "cdp.yaml")
    assert build_definitions(config).resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    rows = Platform(tmp_path, config, None, instance, tmp_path).sql(
        "select source_record_id, count(*) over (partition by customer_id) from cdp.identity_map order by 1"
    )
    assert rows == [("leads.csv:2", 2), ("leads.csv:3", 2), ("leads.csv:4", 1)]


def test_great_expectations_is_imported_during_cleaning_only_when_the_suite_follows(tmp_path, instance, monkeypatch):
    from cdp_assets.clean import assets as clean_assets
    from cdp_assets.clean.assets import PERSON_RECORDS

    started: list[str] = []
    monkeypatch.setattr(clean_assets, "start_importing_great_expectations", lambda: started.append("import"))
    small = make_platform(tmp_path / "small", instance, "http://127.0.0.1:9", people=30)
    raw = [dg.AssetKey(["raw", s.name]) for s in small.config.sources_with_role("person")]
    job = small.defs.resolve_job_def("full_refresh")
    result = job.execute_in_process(instance=instance, asset_selection=[*raw, PERSON_RECORDS])
    suite = [e for e in result.get_asset_check_evaluations() if e.check_name == "great_expectations_suite"]
    assert result.success and [e.passed for e in suite] == [True] and started == ["import"]
    # Without the suite in the run (the assets alone), nothing is imported ahead.
    assets = [small.defs.resolve_assets_def(key) for key in [*raw, PERSON_RECORDS]]
    alone = dg.materialize(assets, instance=instance)
    assert alone.success and started == ["import"]


def _suite_outcome(result: dg.ExecuteInProcessResult) -> tuple[bool, dict[str, object]]:
    (suite,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "great_expectations_suite"]
    return suite.passed, {k: v.value for k, v in suite.metadata.items()}


def test_the_suite_reads_a_file_again_only_when_its_rows_changed_and_a_failing_file_on_every_run(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=40)
    passed, first = _suite_outcome(platform.refresh())
    files = platform.scalar("select count(distinct (source, file)) from clean.person_records")
    rows = platform.scalar("select count(*) from clean.person_records")
    assert passed and (first["files_validated_this_run"], first["rows_validated_this_run"]) == (files, rows)

    # A new file: its two rows are validated, the others are known as they were.
    (platform.folder / "landing" / "crm" / "later.csv").write_text(
        CRM_HEADER
        + "LT-1,Lia,Later,lia.later@example.org,(212) 736-5100,2 Oak St,Boston,MA,02134,US,03/04/1979,true,2025-03-01\n"
        + "LT-2,Max,Later,max.later@example.org,(212) 736-5101,2 Oak St,Boston,MA,02134,US,04/05/1978,true,2025-03-01\n"
    )
    passed, second = _suite_outcome(platform.refresh())
    assert passed and (second["files_validated_this_run"], second["rows_validated_this_run"]) == (1, 2)
    assert second["files_unchanged_since_validated"] == files and second["rows_validated"] == rows + 2

    # An earlier file's row spoilt in the warehouse, as a faulty rule would leave it: the file is read again
    # and fails, on this run and the next, until the row is mended.
    source, file, line, email = platform.sql(
        "select source, file, row_number, email from clean.person_records "
        "where email is not null and file <> 'crm/later.csv' order by all limit 1"
    )[0]
    spoil = "update clean.person_records set email = ? where source = ? and file = ? and row_number = ?"
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute(spoil, ["not an e-mail", source, file, line])
    job = platform.defs.resolve_job_def("full_refresh")
    for _ in range(2):
        passed, failed = _suite_outcome(job.execute_in_process(instance=instance, raise_on_error=False))
        assert not passed and failed["expectations_failed"] == 1 and failed["files_validated_this_run"] == 1
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute(spoil, [email, source, file, line])
    passed, mended = _suite_outcome(job.execute_in_process(instance=instance, raise_on_error=False))
    assert passed and mended["files_validated_this_run"] == 1 and mended["rows_validated"] == rows + 2
