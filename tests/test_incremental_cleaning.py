"""Cleaning reads only the raw rows of new and changed files, and leaves the tables a full cleaning gives."""

import json

import dagster as dg
import duckdb
import pytest

from cdp_assets.clean.assets import PERSON_RECORDS, clean_activity, clean_person_records
from resources.sql import Sql
from resources.warehouse import copy_database
from tests.fixtures import CRM_HEADER, make_platform, materialize_stages

pytestmark = pytest.mark.dagster

TABLES = {
    "clean.person_records": "* exclude (loaded_at)",
    "clean.consent_statements": "*",
    "clean.person_identifiers": "*",
    "clean.person_quarantine": "* exclude (quarantined_at)",
}


def _rows(conn: duckdb.DuckDBPyConnection, schema: str = "") -> dict[str, list[tuple]]:
    return {t: conn.execute(f"select {c} from {schema}{t} order by all").fetchall() for t, c in TABLES.items()}


def _cleaned_now(result: dg.ExecuteInProcessResult) -> int:
    (materialization,) = result.asset_materializations_for_node("clean__person_records")
    return materialization.metadata["raw_rows_cleaned_now"].value


def test_only_new_and_changed_files_are_cleaned_and_the_result_is_a_full_cleaning(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=300)
    first = platform.refresh()
    assert first.success
    raw_person_rows = platform.scalar(
        "select count(*) from (select _file from raw.crm_contacts union all select _file from raw.shop_customers "
        "union all select _file from raw.pos_loyalty)"
    )
    assert _cleaned_now(first) == raw_person_rows

    # A new CRM file (one new contact, one later version of a known one, one bad e-mail) and a changed
    # copy of the known-bad file: only their rows are read.
    known = platform.scalar("select min(source_record_id) from clean.person_records where source = 'crm_contacts'")
    crm = platform.folder / "landing" / "crm"
    (crm / "delta.csv").write_text(
        CRM_HEADER
        + "NEW-1,Zed,Quill,zed.quill@example.org,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        + f"{known},Ann,Changed,ann.changed@example.org,,,,,,US,,true,2026-02-01T00:00:00Z\n"
        + "NEW-2,Ivy,Ng,not-an-email,,,,,,US,,true,2026-01-01T00:00:00Z\n"
    )
    (crm / "known_bad.csv").write_text((crm / "known_bad.csv").read_text().replace("Ann,Lee", "Anne,Lee"))
    second = platform.refresh()
    assert second.success
    assert _cleaned_now(second) == 3 + 4
    assert (
        platform.scalar("select last_name from clean.person_records where source_record_id = ? and is_latest", [known])
        == "Changed"
    )

    # The same tables a full cleaning of every raw row gives.
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        incremental = _rows(conn)
        copy = tmp_path / "full.duckdb"
        copy_database(Sql(conn), copy)
        with duckdb.connect(str(copy)) as full_conn:
            counts = clean_person_records(Sql(full_conn), platform.config, full=True)
            assert counts["raw_rows_cleaned_now"] == raw_person_rows + 3
            assert _rows(full_conn) == incremental

    # Nothing new: nothing read.
    again = platform.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[PERSON_RECORDS]
    )
    assert _cleaned_now(again) == 0


EVENT_TABLES = {
    "clean.events": "* exclude (loaded_at)",
    "clean.events_identifiers": "*",
    "clean.events_quarantine": "* exclude (quarantined_at)",
}


def _event_rows(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {t: conn.execute(f"select {c} from {t} order by all").fetchall() for t, c in EVENT_TABLES.items()}


def _events_cleaned_now(result: dg.ExecuteInProcessResult) -> int:
    (materialization,) = result.asset_materializations_for_node("clean__events")
    return materialization.metadata["raw_rows_cleaned_now"].value


def test_events_are_cleaned_by_file_and_a_repeated_message_id_reads_only_the_files_it_changes(
    tmp_path, instance, destination_server
):
    """A new web-events file is read alone. A retry of an event already cleaned, in a file after the one
    holding its first copy, is read alone too and quarantined naming that copy: no kept row changes, so
    no file of history is read again. A copy in a file before it displaces the first copy, so the kept
    files holding a copy are read with it (and those sharing an event with them), not every file. Either
    way the tables are those of a full cleaning."""
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    assert platform.refresh().success
    all_rows = platform.scalar(
        "select sum(n) from (select count(*) n from raw.web_events union all select count(*) from raw.support_tickets "
        "union all select count(*) from raw.email_engagement union all select count(*) from raw.website)"
    )
    web = platform.folder / "landing" / "web"
    kept_file = sorted(web.glob("*.jsonl"))[0]
    first, second_event = (json.loads(line) for line in kept_file.open().readlines()[:2])
    fresh = {**first, "messageId": "msg-new-1", "timestamp": "2025-06-29T10:00:00Z"}
    (web / "zz_delta_1.jsonl").write_text(json.dumps(fresh) + "\n")
    second = platform.refresh()
    assert second.success and _events_cleaned_now(second) == 1

    (web / "zz_delta_2.jsonl").write_text(json.dumps(first) + "\n")  # delivered again, later
    third = platform.refresh()
    assert third.success and _events_cleaned_now(third) == 1
    assert platform.sql("select file, reason from clean.events_quarantine where file like '%zz_delta_2.jsonl'") == [
        ("web/zz_delta_2.jsonl", f"duplicate event id: already delivered in web/{kept_file.name} line 1")
    ]

    def assert_full_cleaning(name: str) -> None:
        with duckdb.connect(str(platform.config.warehouse_path)) as conn:
            incremental = _event_rows(conn)
            copy = tmp_path / f"{name}.duckdb"
            copy_database(Sql(conn), copy)
        with duckdb.connect(str(copy)) as full_conn:
            clean_activity(Sql(full_conn), platform.config, "events", full=True)
            assert _event_rows(full_conn) == incremental

    assert_full_cleaning("retried")

    # A copy in a file that comes first: the kept first copy becomes the duplicate, so its file is read again.
    (web / "aa_early.jsonl").write_text(json.dumps(second_event) + "\n")
    holding = platform.scalar(
        "select count(*) from raw.web_events where _file in "
        "(select _file from raw.web_events where record ->> '$.messageId' = ?)",
        [second_event["messageId"]],
    )
    fourth = platform.refresh()
    assert fourth.success and holding + 1 <= _events_cleaned_now(fourth) < all_rows + 3
    assert platform.sql(
        "select file, row_number, reason from clean.events_quarantine where reason like '%aa_early.jsonl%'"
    ) == [(f"web/{kept_file.name}", 2, "duplicate event id: already delivered in web/aa_early.jsonl line 1")]
    assert_full_cleaning("repeated")

    # The file holding an event's first copy gone (its raw rows removed): the later copy is the event.
    # Another copy of the new event (written compactly: a file of the same content is the same file).
    (web / "zz_delta_3.jsonl").write_text(json.dumps(fresh, separators=(",", ":")) + "\n")
    assert platform.refresh().success
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute("delete from raw.web_events where _file like '%zz_delta_1.jsonl'")
        clean_activity(Sql(conn), platform.config, "events")
    assert platform.sql("select file from clean.events where event_id = 'msg-new-1'") == [("web/zz_delta_3.jsonl",)]
    assert_full_cleaning("first_copy_gone")


TRANSACTION_TABLES = {
    "clean.transactions": "* exclude (loaded_at)",
    "clean.transactions_identifiers": "*",
    "clean.transactions_quarantine": "* exclude (quarantined_at)",
}


def test_an_order_sent_again_under_its_id_replaces_the_earlier_row_and_links_nobody_else(
    tmp_path, instance, destination_server
):
    """A transaction's id names one order: sent again (refunded, in a later file) its last row counts and
    the earlier ones are quarantined naming it; two rows of one id in one file (two customers) do not make
    the order a link between them. A full cleaning gives the same tables."""
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    assert platform.refresh().success
    shop = platform.folder / "landing" / "shop"
    orders = [json.loads(line) for line in (shop / "orders.jsonl").read_text().splitlines()]
    order = orders[0]
    refunded = {**order, "financial_status": "refunded", "total_price": "0.00"}
    (shop / "orders_zz_update.jsonl").write_text(json.dumps(refunded) + "\n")
    # A new order id twice in one file, each row naming another customer of the demo.
    with_customer = [o for o in orders if o.get("customer")]
    first = with_customer[0]
    other = next(o for o in with_customer if o["customer"]["id"] != first["customer"]["id"])
    twice = [{**first, "id": 99000001}, {**other, "id": 99000001}]
    (shop / "orders_zz_twice.jsonl").write_text("".join(json.dumps(row) + "\n" for row in twice))
    assert platform.refresh().success

    kept = platform.sql(
        "select file, status, amount from clean.transactions where source = 'shop_orders' and event_id = ?",
        [str(order["id"])],
    )
    assert [(f, s, float(a)) for f, s, a in kept] == [("shop/orders_zz_update.jsonl", "refunded", 0.0)]
    assert platform.sql(
        "select file, row_number, field, reason from clean.transactions_quarantine where value = ?", [str(order["id"])]
    ) == [("shop/orders.jsonl", 1, "id", "duplicate event id: replaced by shop/orders_zz_update.jsonl line 1")]
    assert platform.sql("select row_number from clean.transactions where event_id = '99000001'") == [(2,)]
    carried = platform.sql(
        "select id_value from clean.transactions_identifiers where source_record_id = '99000001' and id_type = ?",
        ["shop_customer_id"],
    )
    assert carried == [(str(other["customer"]["id"]),)]
    customers = {
        row[0]
        for row in platform.sql(
            "select m.customer_id from cdp.identity_map m join clean.person_identifiers i "
            "using (source, source_record_id) where i.id_type = 'shop_customer_id' and i.id_value in (?, ?)",
            [str(first["customer"]["id"]), str(other["customer"]["id"])],
        )
    }
    assert len(customers) == 2
    # Raw = cleaned + quarantined, row for row.
    raw = platform.scalar("select count(*) from raw.shop_orders")
    cleaned = platform.scalar("select count(*) from clean.transactions where source = 'shop_orders'")
    quarantined = platform.scalar(
        "select count(distinct (file, row_number)) from clean.transactions_quarantine "
        "where source = 'shop_orders' and scope = 'row' and stage = 'clean'"
    )
    assert raw == cleaned + quarantined

    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        incremental = {
            t: conn.execute(f"select {c} from {t} order by all").fetchall() for t, c in TRANSACTION_TABLES.items()
        }
        copy = tmp_path / "full.duckdb"
        copy_database(Sql(conn), copy)
    with duckdb.connect(str(copy)) as full_conn:
        clean_activity(Sql(full_conn), platform.config, "transactions", full=True)
        for table, columns in TRANSACTION_TABLES.items():
            assert full_conn.execute(f"select {columns} from {table} order by all").fetchall() == incremental[table]


PERSON_TABLES_STAMPED = {**TABLES, "clean.person_quarantine": "*"}


def _equals_full_cleaning(platform, tmp_path, name: str) -> dict[str, list[tuple]]:
    """The person tables now, asserted equal to a full cleaning of a copy of the warehouse (quarantine
    stamps included: a full cleaning keeps every stamp a file loaded before it was given)."""
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        incremental = {
            t: conn.execute(f"select {c} from {t} order by all").fetchall() for t, c in PERSON_TABLES_STAMPED.items()
        }
        copy = tmp_path / f"{name}.duckdb"
        copy_database(Sql(conn), copy)
    with duckdb.connect(str(copy)) as full_conn:
        clean_person_records(Sql(full_conn), platform.config, full=True)
        full = {
            t: full_conn.execute(f"select {c} from {t} order by all").fetchall()
            for t, c in PERSON_TABLES_STAMPED.items()
        }
    for table in PERSON_TABLES_STAMPED:
        assert incremental[table] == full[table], table
    return incremental


def test_record_decisions_across_files_are_those_of_a_full_cleaning(tmp_path, instance, destination_server):
    """Latest versions, identifiers recorded once and quarantine stamps are decided again for the records
    a run's files touch: a later version in a new file, one update time in two files, a file gone whose
    record's older version is latest again, an identifier whose first row goes, a changed file's rejects."""
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    person_sources = [dg.AssetKey(["raw", s.name]) for s in platform.config.sources_with_role("person")]
    job = platform.defs.resolve_implicit_global_asset_job_def()

    def clean_new_files() -> None:
        assert job.execute_in_process(instance=instance, asset_selection=[*person_sources, PERSON_RECORDS]).success

    def clean_without(file: str) -> None:
        """The file's raw rows gone (as retention removes them), then cleaning run."""
        with duckdb.connect(str(platform.config.warehouse_path)) as conn:
            conn.execute("delete from raw.crm_contacts where _file = ?", [file])
            clean_person_records(Sql(conn), platform.config)

    def latest(record: str) -> tuple:
        return platform.sql(
            "select last_name, file from clean.person_records where source = 'crm_contacts' "
            "and source_record_id = ? and is_latest",
            [record],
        )[0]

    def email_rows(record: str) -> list[tuple]:
        return platform.sql(
            "select file from clean.person_identifiers where source = 'crm_contacts' and source_record_id = ? "
            "and id_type = 'email' order by all",
            [record],
        )

    clean_new_files()
    crm = platform.folder / "landing" / "crm"
    row = "{id},{first},{last},{email},,,,,,US,,true,{at}\n"
    (crm / "a_first.csv").write_text(
        CRM_HEADER
        + row.format(id="X-1", first="Xu", last="Older", email="xu@example.org", at="2026-01-01T00:00:00Z")
        + row.format(id="T-1", first="Tia", last="InA", email="tia@example.org", at="2026-01-05T00:00:00Z")
        + row.format(id="Q-1", first="Quin", last="Bad", email="quin@", at="2026-01-01T00:00:00Z")
    )
    (crm / "b_second.csv").write_text(
        CRM_HEADER
        + row.format(id="X-1", first="Xu", last="Newer", email="xu@example.org", at="2026-02-01T00:00:00Z")
        + row.format(id="T-1", first="Tia", last="InB", email="tia@example.org", at="2026-01-05T00:00:00Z")
    )
    clean_new_files()
    assert latest("X-1") == ("Newer", "crm/b_second.csv")
    assert latest("T-1") == ("InB", "crm/b_second.csv")  # one update time: the later file
    assert email_rows("X-1") == [("crm/a_first.csv",)]  # recorded once, from its first row
    stamps = _equals_full_cleaning(platform, tmp_path, "both")["clean.person_quarantine"]

    # The later version's file gone: the older version is latest again.
    clean_without("crm/b_second.csv")
    assert latest("X-1") == ("Older", "crm/a_first.csv")
    assert latest("T-1") == ("InA", "crm/a_first.csv")
    _equals_full_cleaning(platform, tmp_path, "without_b")

    # Back, then the first file gone: the identifier is recorded from the row that is now its first.
    (crm / "b_second.csv").write_text((crm / "b_second.csv").read_text())
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute("delete from meta.loaded_files where file = 'crm/b_second.csv'")
    clean_new_files()
    clean_without("crm/a_first.csv")
    assert email_rows("X-1") == [("crm/b_second.csv",)]
    assert email_rows("T-1") == [("crm/b_second.csv",)]
    _equals_full_cleaning(platform, tmp_path, "without_a")

    # A changed file's rejects are stamped again; every other reject keeps its stamp.
    (crm / "a_first.csv").write_text(
        CRM_HEADER + row.format(id="Q-1", first="Quin", last="Bad", email="quin@@", at="2026-03-01T00:00:00Z")
    )
    clean_new_files()
    now = _equals_full_cleaning(platform, tmp_path, "changed")["clean.person_quarantine"]
    before = {r[:-1]: r[-1] for r in stamps if r[2] != "crm/a_first.csv"}
    after = {r[:-1]: r[-1] for r in now if r[2] != "crm/a_first.csv"}
    assert after == before
    (changed,) = [r for r in now if r[2] == "crm/a_first.csv" and r[5] == "quin@@"]
    assert changed[-1] > max(before.values())


def test_a_file_replaced_by_an_empty_one_withdraws_its_rows(tmp_path, instance, destination_server):
    """A loaded file keeps its rows when it leaves the landing folder; an empty file in its place withdraws
    them from the raw and cleaned tables (README, "Same data, same tables")."""
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    assert platform.refresh().success
    rows = "select count(*) from {} where {} = 'crm/known_bad.csv'"
    assert platform.scalar(rows.format("raw.crm_contacts", "_file")) == 4
    assert platform.scalar(rows.format("clean.person_records", "file")) > 0
    known_bad = platform.folder / "landing" / "crm" / "known_bad.csv"
    known_bad.unlink()
    assert platform.refresh().success
    assert platform.scalar(rows.format("raw.crm_contacts", "_file")) == 4
    known_bad.write_bytes(b"")
    assert platform.refresh().success
    assert platform.scalar(rows.format("raw.crm_contacts", "_file")) == 0
    assert platform.scalar(rows.format("clean.person_records", "file")) == 0
    assert platform.scalar(rows.format("clean.person_quarantine", "file")) == 0
    assert platform.sql("select status from meta.loaded_files where file = 'crm/known_bad.csv'") == [("empty",)]


def test_a_source_key_cleaning_never_reads_changes_nothing_cleaned(tmp_path, instance):
    """Declaring when a source's files are expected, or how long its rows are kept, cleans no row again (nor
    recomputes every profile); a key cleaning reads, such as the source's trust, cleans its role's rows again."""
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "crm.csv").write_text("id,first,email\nA1,Ann,ann@example.org\nB1,Bo,bo@example.org\n")
    (tmp_path / "landing" / "web.jsonl").write_text('{"id": "w1", "uid": "A1", "t": "2025-06-01T10:00:00Z"}\n')

    def clean(crm: str, web: str) -> tuple[int, int]:
        (tmp_path / "cdp.yaml").write_text(
            "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
            f"  - {{name: crm, format: csv, glob: crm.csv, role: person, record_id: id, fields: {{first_name: first, "
            f"email: email}}{crm}}}\n"
            f"  - {{name: web, format: jsonl, glob: web.jsonl, role: events, record_id: uid, event_id: id, "
            f"fields: {{occurred_at: t}}{web}}}\n"
        )
        result, _ = materialize_stages(tmp_path / "cdp.yaml", instance, ("raw", "clean"))
        return _cleaned_now(result), _events_cleaned_now(result)

    assert clean("", "") == (2, 1)
    assert clean(", expected_every: 1 day, retain: 730 days", ", expected_every: 12 hours") == (0, 0)
    assert clean(", expected_every: 2 days, trust: 80", ", expected_every: 12 hours") == (2, 0)
