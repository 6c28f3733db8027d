"""Privacy requests end to end: a demo platform materialized with its destinations, people erased by a requests
file, then every table, file and destination searched for them.

The platform is built once for the module (with its own DAGSTER_HOME, searched too); the tests read it in
order, and the replay test, which loads the original landing files again, runs last.
"""

import csv
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdp_assets.consistency.checks import CHECK_NAME
from cdp_assets.extract.fields import record_id_sql
from cdp_assets.privacy.assets import PRIVACY_JOB
from cdp_assets.privacy.erasure import COVERAGE, coverage_of
from demo.destination_server import DestinationServer
from resources.hashing import normalize_email, sha256_hex
from resources.landing import source_files
from sensors.schedules import REBUILD_CHECK_JOB
from tests.fixtures import REPO, Platform, make_platform

KEY = "0123456789abcdef0123456789abcdef"
# Columns that name a record or a customer: a table holding one must say how erasure finds its rows.
IDENTIFYING = {
    "source_record_id",
    "left_record_id",
    "customer_id",
    "alias_id",
    "key",
    "_row_number",
    "row_number",
    "id_value",
    "email",
    "phone",
}


@dataclass
class Person:
    customer_id: str
    email: str
    phones: list[str]
    names: list[str]
    record_ids: list[tuple[str, str]]


@dataclass
class Erased:
    platform: Platform
    server: DestinationServer
    home: Path
    people: list[Person]
    result: dg.ExecuteInProcessResult
    originals: Path
    held_before: str
    asking: str


def _person(platform: Platform, customer_id: str) -> Person:
    email = platform.scalar("select email from cdp.golden_profiles where customer_id = ?", [customer_id])
    rows = platform.sql(
        """select p.phone, p.first_name, p.last_name from clean.person_records p
           join cdp.identity_map m using (source, source_record_id) where m.customer_id = ?""",
        [customer_id],
    )
    records = platform.sql("select source, source_record_id from cdp.identity_map where customer_id = ?", [customer_id])
    return Person(
        customer_id,
        email,
        sorted({re.sub(r"\D", "", r[0]) for r in rows if r[0]}),
        sorted({n for r in rows for n in r[1:] if n and len(n) >= 5}),
        records,
    )


def _run(platform: Platform, requests_file: str) -> dg.ExecuteInProcessResult:
    return platform.defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
        instance=platform.instance,
        run_config={"ops": {"privacy__requests": {"config": {"requests_file": requests_file}}}},
    )


@pytest.fixture(scope="module")
def erased(tmp_path_factory: pytest.TempPathFactory) -> Erased:
    mp = pytest.MonkeyPatch()
    mp.setenv("CDP_PRIVACY_KEY", KEY)
    folder = tmp_path_factory.mktemp("privacy")
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (REPO / "dagster.yaml").read_text() + f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
    )
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.DagsterInstance.from_config(str(home)) as instance:
        platform = make_platform(folder, instance, server.url, people=150, seed=11)
        assert platform.refresh().success
        # Two people the destinations hold, with several records each: one by e-mail, one by an alias-free id.
        chosen = [
            c
            for (c,) in platform.sql(
                """select p.customer_id from cdp.golden_profiles p
                   where p.email is not null and p.record_count >= 3
                     and exists (select 1 from syncs.destination_state s where s.key = p.customer_id and s.present)
                   order by p.customer_id limit 2"""
            )
        ]
        # A third no destination holds, by one of its source records.
        chosen += [
            c
            for (c,) in platform.sql(
                """select p.customer_id from cdp.golden_profiles p
                   where p.email is not null
                     and not exists (select 1 from syncs.destination_state s where s.key = p.customer_id)
                   order by p.customer_id limit 1"""
            )
        ]
        people = [_person(platform, c) for c in chosen]
        # A file re-sent under another name, which the extract skips as a copy of loaded content: it holds
        # the first person too, and must lose them with the original.
        landing = platform.config.landing_path
        email = people[0].email.encode()
        holding = next(f for f in sorted(landing.rglob("*.*")) if f.is_file() and email in f.read_bytes().lower())
        shutil.copy(holding, holding.with_name(f"resent_{holding.name}"))
        assert platform.refresh().success
        copies = platform.sql("select count(*) from meta.loaded_files where file like '%resent_%'")
        assert copies == [(0,)]  # skipped, not loaded
        originals = folder / "original_landing"
        shutil.copytree(platform.config.landing_path, originals)
        third_source, third_record = people[2].record_ids[0]
        # And one who asks for their data.
        asking = platform.scalar(
            """select customer_id from cdp.golden_profiles where record_count >= 2 and order_count > 0
               and not list_contains(?, customer_id)
               order by customer_id in (select customer_id from cdp.segment_membership where segment = 'high_value')
                        desc, customer_id
               limit 1""",
            [chosen],
        )
        folder_path = platform.config.privacy_requests_path
        folder_path.mkdir(parents=True, exist_ok=True)
        (folder_path / "batch.csv").write_text(
            "type,id_type,value,reference,source\n"
            f"erase,email,{people[0].email.upper()},T-1,\n"
            f"erase,customer_id,{people[1].customer_id},T-2,\n"
            "erase,email,nobody.at.all@example.org,T-3,\n"
            "erase,shoe_size,42,T-4,\n"
            "erase,email\n"
            f"erase,source_record,{third_record},T-5,{third_source}\n"
            f"access,customer_id,{asking},T-6,\n"
        )
        held_before = _destinations_text(server)
        result = _run(platform, "batch.csv")
        yield Erased(platform, server, home, people, result, originals, held_before, asking)
    mp.undo()


pytestmark = pytest.mark.e2e


def test_the_run_succeeds_and_its_receipts_hold_no_personal_value(erased: Erased):
    assert erased.result.success
    receipts = erased.platform.sql(
        "select reference, status, customers, rows_removed, destinations from privacy.requests order by reference"
    )
    by_reference = {r[0]: r for r in receipts}
    assert by_reference["T-1"][1] == "completed" and by_reference["T-1"][2] == [erased.people[0].customer_id]
    assert by_reference["T-2"][1] == "completed"
    assert by_reference["T-3"][1] == "not_found"
    assert by_reference["T-5"][1] == "completed" and by_reference["T-5"][4] == {}
    removed = by_reference["T-1"][3]
    assert removed["cdp.golden_profiles"] == 1 and removed["clean.person_records"] >= 3
    assert removed["cdp.identity_map"] == len(erased.people[0].record_ids)
    assert all(v.startswith("confirmed") for v in by_reference["T-1"][4].values()) and by_reference["T-1"][4]
    text = str(receipts)
    for person in erased.people:
        assert person.email not in text and not any(n in text for n in person.names)
    # The two malformed lines are quarantined on their own, naming line and field, without the value.
    rejects = erased.platform.sql(
        "select row_number, field, value from cdp.quarantine where source = 'privacy_requests' order by 1"
    )
    assert [(r[0], r[1], r[2]) for r in rejects] == [(5, "id_type", None), (6, "line", None)]
    metadata = erased.result.asset_materializations_for_node("privacy__requests")[0].metadata
    assert metadata["requests_completed"].value == 4 and metadata["requests_pending"].value == 0
    # The requests file is replaced by one without the values.
    processed = erased.platform.config.privacy_requests_path / "processed" / "batch.csv"
    assert not (erased.platform.config.privacy_requests_path / "batch.csv").exists()
    header, *lines = csv.reader(io.StringIO(processed.read_text()))
    assert header == ["request_id", "reference", "status"]
    # Each line keeps the requester's reference, to answer them under; the accepted lines come first.
    assert [(reference, status.split(",")[0]) for _, reference, status in lines] == [
        ("T-1", "completed"),
        ("T-2", "completed"),
        ("T-3", "not_found"),
        ("T-5", "completed"),
        ("T-6", "completed"),
        ("T-4", "rejected: line 5"),
        ("", "rejected: line 6"),
    ]
    assert not any(p.email.lower() in processed.read_text().lower() for p in erased.people)


def test_the_profiles_and_segments_left_are_what_a_rebuild_gives(erased: Erased):
    """The erased buyers leave the RFM ranking: the others' scores, and the segments reading them, are
    ranked again in the same run, not at the next refresh."""
    removed = [
        r for (r,) in erased.platform.sql("select rows_removed from privacy.requests where status = 'completed'")
    ]
    assert any(r.get("clean.transactions", 0) for r in removed)  # a buyer among them: the ranks move
    check = erased.platform.defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(
        instance=erased.platform.instance, raise_on_error=False
    )
    (evaluation,) = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def test_no_table_holds_the_erased_people(erased: Erased):
    platform = erased.platform
    with duckdb.connect(str(platform.config.warehouse_path), read_only=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables where table_catalog = current_database()"
        ).fetchall()
        for schema, table in tables:
            if schema == "privacy":
                continue
            text = conn.execute(f'select coalesce(string_agg(t::varchar, chr(10)), \'\') from "{schema}"."{table}" t')
            dump = text.fetchone()[0].lower()
            for person in erased.people:
                assert person.email.lower() not in dump, f"{schema}.{table} holds an erased e-mail"
                # The id itself stays where it is marked erased, so it is never issued again.
                if f"{schema}.{table}" not in (
                    "cdp.customer_id_history",
                    "cdp.customer_aliases",
                    "identity.id_registry",
                ):
                    assert person.customer_id not in dump, f"{schema}.{table} holds an erased customer id"
    for person in erased.people:
        assert platform.scalar(
            "select status from identity.id_registry where customer_id = ?", [person.customer_id]
        ) == ("erased")
        assert (
            platform.scalar(
                "select count(*) from cdp.customer_id_history where customer_id = ? and event = 'erased'",
                [person.customer_id],
            )
            == 1
        )


def test_every_table_with_a_record_or_customer_id_is_covered_by_erasure(erased: Erased):
    with duckdb.connect(str(erased.platform.config.warehouse_path), read_only=True) as conn:
        columns = conn.execute(
            """select table_schema || '.' || table_name, list(column_name) from information_schema.columns
               where table_catalog = current_database() group by 1"""
        ).fetchall()
    uncovered = sorted(t for t, cols in columns if IDENTIFYING & set(cols) and coverage_of(t) is None)
    assert not uncovered, f"tables holding record or customer ids that erasure does not cover: {uncovered}"
    assert all(c.by != "kept" or c.note for c in COVERAGE.values())


def _destinations_text(server: DestinationServer) -> str:
    return repr(
        [
            server.state("webhook", "viewed_not_bought"),
            server.state("rest", "crm"),
            server.state("audiences", "champions"),
        ]
    )


def test_the_destinations_no_longer_hold_them(erased: Erased):
    held = _destinations_text(erased.server)
    for person in erased.people:
        assert person.customer_id in erased.held_before or person is erased.people[2]
        assert person.customer_id not in held
        assert sha256_hex(normalize_email(person.email, gmail_dots=True)) not in held


def test_landing_exports_snapshot_warehouse_and_dagster_home_hold_no_byte_of_them(erased: Erased):
    config = erased.platform.config
    paths = [config.warehouse_path, Path(f"{config.warehouse_path}.wal"), config.read_snapshot_path]
    files = [p for p in paths if p.exists()]
    folders = (config.landing_path, erased.platform.folder / "exports", erased.home, config.privacy_requests_path)
    files += [p for folder in folders for p in folder.rglob("*")]
    blob = b"\n".join(p.read_bytes() for p in files if p.is_file())
    lowered = blob.lower()
    digits = re.sub(rb"\D", b"", blob)
    for person in erased.people:
        assert person.email.lower().encode() not in lowered
        for phone in person.phones:
            assert phone.encode() not in digits or _phone_elsewhere(erased, phone), phone
        for name in person.names:
            assert name.encode() not in blob or _name_elsewhere(erased, name), name


def test_rows_left_in_a_rewritten_landing_file_name_their_lines_in_it(erased: Erased):
    """Lineage stays true after a rewrite: every raw, cleaned and quarantined row of a rewritten text file is
    renumbered to its line in the new file (the raw row's record id is on that line)."""
    platform = erased.platform
    rewritten = 0
    for source in platform.config.sources:
        if source.format not in ("csv", "jsonl"):
            continue
        for path in source_files(platform.config, source):
            file = str(path.relative_to(platform.config.landing_path))
            if path.read_bytes() == (erased.originals / file).read_bytes():
                continue
            rewritten += 1
            if path.name.startswith("resent_"):  # the skipped copy: rewritten as its original was
                assert path.read_bytes() == path.with_name(path.name.removeprefix("resent_")).read_bytes()
                continue
            lines = path.read_bytes().decode("latin-1").splitlines()
            rows = platform.sql(
                f"select _row_number, {record_id_sql(source)} from raw.{source.name} where _file = ?", [file]
            )
            assert rows
            for row_number, record_id in rows:
                assert record_id in lines[row_number - 1], (file, row_number)
            raw_lines = {n for n, _ in rows}
            cleaned = {
                n
                for table in ("clean.person_records", "clean.events", "clean.transactions", "clean.person_quarantine")
                for (n,) in platform.sql(f"select row_number from {table} where source = ? and file = ?",
                                         [source.name, file])
            }  # fmt: skip
            assert cleaned <= raw_lines | set(range(1, len(lines) + 1))
            assert cleaned and max(cleaned) <= len(lines)
            # The file's record says what it now is and holds: the next extract neither hashes nor reloads it.
            [(loaded, size, mtime)] = platform.sql(
                "select rows_loaded, size_bytes, mtime_ns from meta.loaded_files where source = ? and file = ?",
                [source.name, file],
            )
            assert (loaded, size, mtime) == (len(rows), path.stat().st_size, path.stat().st_mtime_ns)
    assert rewritten


def _phone_elsewhere(erased: Erased, phone: str) -> bool:
    """A phone another, not erased, person also has (a shared household number) may stay."""
    return bool(
        erased.platform.scalar(
            "select count(*) from clean.person_records where regexp_replace(phone, '\\D', '', 'g') = ?", [phone]
        )
    )


def _name_elsewhere(erased: Erased, name: str) -> bool:
    """A name other, not erased, people also have may stay, as may one inside another person's e-mail
    address (Susan in Susanbryant@gmail.com)."""
    return bool(
        erased.platform.scalar(
            """select count(*) from clean.person_records
               where first_name = ? or last_name = ? or contains(lower(email), lower(?))""",
            [name, name, name],
        )
    )


def test_an_access_request_gets_everything_held_about_the_person(erased: Erased):
    platform = erased.platform
    [(note, customers)] = platform.sql("select note, customers from privacy.requests where reference = 'T-6'")
    assert customers == [erased.asking]
    path = platform.config.privacy_requests_path / note.removeprefix("written to ")
    assert path.stat().st_mode & 0o777 == 0o600
    document = json.loads(path.read_text())
    records = platform.sql(
        "select source, source_record_id from cdp.identity_map where customer_id = ?", [erased.asking]
    )
    assert {(r["source"], r["source_record_id"]) for r in document["cleaned_records"] + document["events"]
            + document["transactions"]} <= set(records)  # fmt: skip
    assert len(document["source_records"]) >= len(records)
    assert all(isinstance(r["record"], dict) for r in document["source_records"])
    [profile] = document["profile"]
    assert profile["customer_id"] == erased.asking
    assert document["transactions"] and document["profile_provenance"]
    assert {p["customer_id"] for p in document["profile_provenance"]} == {erased.asking}
    stays = platform.scalar(
        "select count(*) from cdp.segment_membership_history where customer_id = ?", [erased.asking]
    )
    assert len(document["segment_stays"]) == stays
    assert len(document["consent_history"]) == len(document["consent_statements"])
    bundle = path.with_suffix("")
    assert (bundle / "profile.csv").read_text().count("\n") == 2 and (
        bundle / "profile.csv"
    ).stat().st_mode & 0o077 == 0
    sent = platform.scalar("select count(*) from syncs.changelog where key = ?", [erased.asking])
    assert len(document["sent_to_destinations"]) == sent
    # Every export file holding them, with their row as exported.
    exports = sorted((platform.folder / "exports").rglob("*.*"))
    held = [
        path.name
        for path in exports
        for _ in range(
            platform.scalar(
                f"select count(*) from '{path}' where customer_id::varchar = ?",  # noqa: S608 - a test's own file
                [erased.asking],
            )
        )
    ]
    assert held and sorted(e["file"] for e in document["in_file_exports"]) == sorted(held)
    assert all(e["row"]["customer_id"] == erased.asking for e in document["in_file_exports"])
    # The receipt and Dagster's metadata name the file, not its content.
    assert erased.asking not in str(erased.result.asset_materializations_for_node("privacy__requests")[0].metadata)


def test_replayed_landing_files_do_not_bring_them_back(erased: Erased):
    platform = erased.platform
    shutil.rmtree(platform.config.landing_path)
    shutil.copytree(erased.originals, platform.config.landing_path)
    assert platform.refresh().success
    for person in erased.people:
        assert not platform.sql(
            "select 1 from cdp.golden_profiles where email = ? or customer_id = ?", [person.email, person.customer_id]
        )
        for source, record in person.record_ids:
            assert not platform.sql(
                "select 1 from cdp.identity_map where source = ? and source_record_id = ?", [source, record]
            )
    quarantined = platform.sql("select field, value from cdp.quarantine where reason = 'erased person'")
    assert len(quarantined) >= sum(len(p.record_ids) for p in erased.people) // 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for _, value in quarantined)


def test_erasing_a_person_removes_the_access_documents_made_for_them(erased: Erased):
    """An access document holds everything about the person: left in the requests folder after their
    erasure, it would be a copy of what was erased."""
    platform = erased.platform
    [(note,)] = platform.sql("select note from privacy.requests where reference = 'T-6'")
    document = platform.config.privacy_requests_path / note.removeprefix("written to ")
    assert document.exists() and document.with_suffix("").is_dir()
    (platform.config.privacy_requests_path / "later.csv").write_text(
        f"type,id_type,value,reference,source\nerase,customer_id,{erased.asking},T-7,\n"
    )
    result = _run(platform, "later.csv")
    assert result.success
    assert not document.exists() and not document.with_suffix("").exists()
    assert platform.sql("select status, note from privacy.requests where reference = 'T-6'") == [
        ("completed", "document removed: the person was erased since")
    ]
    metadata = result.asset_materializations_for_node("privacy__requests")[0].metadata
    assert metadata["access_documents_removed"].value == 1


def test_a_warehouse_lost_and_rebuilt_from_the_landing_files_keeps_them_out(erased: Erased):
    """The tombstones are kept beside the requests too (keyed hashes only): a warehouse lost and built again
    from the landing folder, here from the original files that still hold the erased people, keeps them out."""
    platform = erased.platform
    ledger = platform.config.privacy_requests_path / "tombstones.jsonl"
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entries and all(re.fullmatch(r"[0-9a-f]{64}", e["hash"]) for e in entries)
    assert ledger.stat().st_mode & 0o777 == 0o600
    held = platform.sql("select hash from privacy.tombstones order by hash")
    assert [(e["hash"],) for e in entries] == held
    for path in platform.config.warehouse_path.parent.glob(f"{platform.config.warehouse_path.name}*"):
        path.unlink()
    shutil.rmtree(platform.config.landing_path)
    shutil.copytree(erased.originals, platform.config.landing_path)
    assert platform.refresh().success
    assert platform.sql("select hash from privacy.tombstones order by hash") == held
    for person in erased.people:
        assert not platform.sql("select 1 from cdp.golden_profiles where email = ?", [person.email])
        for source, record in person.record_ids:
            assert not platform.sql(
                "select 1 from cdp.identity_map where source = ? and source_record_id = ?", [source, record]
            )
    assert platform.sql("select count(*) from cdp.quarantine where reason = 'erased person'")[0][0] > 0
