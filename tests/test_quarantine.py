"""Hostile values are quarantined with the field and the reason, never passed on or dropped silently; and a
quarantine row keeps the time it was first recorded across re-runs."""

import json
from pathlib import Path

import dagster as dg
import pytest

from cdp_assets.definitions import build_definitions
from resources.config import CDPConfig, load_config
from tests.fixtures import Platform

pytestmark = pytest.mark.dagster

MEGABYTE_NAME = "A" * 1_000_000
LONG_ID = "X" * 300


def _crm_rows() -> str:
    header = "id,first,last,email,street,town\n"
    rows = [
        "P1,-2+3,Lee,p1@example.org,1 Elm St,Boston",
        "P2,Ann\x00e,Chan,p2@example.org,2 Elm St,Boston",
        f"P3,Bo,{MEGABYTE_NAME},p3@example.org,3 Elm St,Boston",
        f"{LONG_ID},Cy,Diaz,p4@example.org,4 Elm St,Boston",
        'P5,Di,Eng,p5@example.org,"5 Elm St\tApt 2","Oslo\nWest"',
        "P6,123,...,p6@example.org,-/-,42",
        "P7,Eve,Fox,p7@exa\x7fmple.org,7 Elm St,Boston",
    ]
    return header + "\n".join(rows) + "\n"


SHOP = [
    {"cid": "S1", "name": "-2+3", "mail": "s1@example.org"},
    {"cid": "S2", "name": "John 3 Smith", "mail": "s2@example.org"},
    {"cid": "S3", "name": "Mr.", "mail": "s3@example.org"},
    {"cid": "S4", "name": "Zoe\u0085Ray", "mail": "s4@example.org"},
]
EVENTS = [
    {"anonymousId": "a1", "event": "Viewed\u0000", "timestamp": "2025-01-01T00:00:00Z"},
    {"anonymousId": LONG_ID, "event": "Viewed", "timestamp": "2025-01-01T00:00:00Z"},
    {"anonymousId": "a3", "event": "Bought", "timestamp": "2025-01-01T00:00:00Z", "messageId": "m" * 257},
    {"anonymousId": "a4", "event": "Left\tpage", "timestamp": "2025-01-01T00:00:00Z"},
]


def _platform(folder: Path, instance: dg.DagsterInstance) -> Platform:
    landing = folder / "landing"
    for sub in ("crm", "shop", "web"):
        (landing / sub).mkdir(parents=True)
    (landing / "crm" / "contacts.csv").write_text(_crm_rows(), encoding="utf-8")
    (landing / "shop" / "customers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SHOP))
    (landing / "web" / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EVENTS))
    (folder / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: crm, format: csv, glob: 'crm/*.csv', role: person, record_id: id,\n"
        "     fields: {first_name: first, last_name: last, email: email, address_line1: street, city: town},\n"
        "     identifiers: [{path: email, type: email}]}\n"
        "  - {name: shop, format: jsonl, glob: 'shop/*.jsonl', role: person, record_id: cid,\n"
        "     fields: {full_name: name, email: mail}, identifiers: [{path: mail, type: email}]}\n"
        "  - {name: web, format: jsonl, glob: 'web/*.jsonl', role: events, record_id: anonymousId,\n"
        "     event_id: messageId, fields: {event: event, occurred_at: timestamp}}\n"
    )
    config: CDPConfig = load_config(folder / "cdp.yaml")
    return Platform(folder, config, build_definitions(config), instance, folder)


@pytest.fixture
def hostile(tmp_path: Path, instance: dg.DagsterInstance) -> tuple[Platform, dg.ExecuteInProcessResult]:
    platform = _platform(tmp_path, instance)
    result = platform.refresh()
    assert result.success
    return platform, result


def _rejects(platform: Platform, source: str) -> list[tuple]:
    return platform.sql(
        "select row_number, field, left(value, 20), reason, scope from cdp.quarantine "
        "where source = ? and stage = 'clean' order by row_number, field, reason",
        [source],
    )


def test_control_characters_and_long_values_are_quarantined_naming_the_field(hostile):
    platform, result = hostile
    crm = _rejects(platform, "crm")
    assert (3, "first", "Ann\x00e", "first contains control character U+0000", "value") in crm
    assert (4, "last", "A" * 20, "last is longer than 200 characters (1000000)", "value") in crm
    assert (5, "id", "X" * 20, "id is longer than 256 characters (300)", "row") in crm
    assert (9, "email", "p7@exa\x7fmple.org", "email contains control character U+007F", "value") in crm
    shop = _rejects(platform, "shop")
    assert (4, "name", "Zoe\x85Ray", "name contains control character U+0085", "value") in shop
    web = _rejects(platform, "web")
    assert (1, "event", "Viewed\x00", "event contains control character U+0000", "value") in web
    assert (2, "anonymousId", "X" * 20, "anonymousId is longer than 256 characters (300)", "row") in web
    assert (3, "messageId", "m" * 20, "messageId is longer than 256 characters (257)", "row") in web

    # The refused values are nowhere downstream; the rest of each record is kept.
    assert platform.sql(
        "select source_record_id, first_name, last_name, address_line1, city from clean.person_records "
        "where source = 'crm' order by 1"
    ) == [
        ("P1", None, "Lee", "1 Elm St", "Boston"),
        ("P2", None, "Chan", "2 Elm St", "Boston"),
        ("P3", "Bo", None, "3 Elm St", "Boston"),
        ("P5", "Di", "Eng", "5 Elm St Apt 2", "Oslo West"),
        ("P6", None, None, None, None),
        ("P7", "Eve", "Fox", "7 Elm St", "Boston"),
    ]
    assert platform.sql("select event_id, event from clean.events order by 1") == [
        ("web/events.jsonl:1", None),
        ("web/events.jsonl:4", "Left page"),
    ]
    longest = platform.scalar(
        "select max(greatest(length(first_name), length(last_name), length(coalesce(email, '')))) "
        "from cdp.golden_profiles"
    )
    assert longest < 200
    assert platform.scalar("select count(*) from clean.person_records where email like '%\x7f%'") == 0

    # Raw rows = cleaned rows + rows quarantined whole, for every source.
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == "rows_accounted_for"
    ]
    assert len(checks) == 2 and all(c.passed for c in checks)


def test_every_value_cleaning_turns_into_null_has_a_quarantine_row(hostile):
    platform, _ = hostile
    crm = _rejects(platform, "crm")
    no_letters = "no letters: only digits, punctuation or symbols"
    assert (2, "first", "-2+3", no_letters, "value") in crm
    assert (8, "first", "123", no_letters, "value") in crm
    assert (8, "last", "...", no_letters, "value") in crm
    assert (8, "town", "42", no_letters, "value") in crm
    assert (8, "street", "-/-", "no letters or digits", "value") in crm
    shop = _rejects(platform, "shop")
    assert (1, "name", "-2+3", "no name: no letters", "value") in shop
    assert (2, "name", "John 3 Smith", "part(s) without letters dropped: '3'", "value") in shop
    assert (3, "name", "Mr.", "no name: only a title or suffix", "value") in shop
    assert platform.sql(
        "select source_record_id, first_name, last_name from clean.person_records where source = 'shop' order by 1"
    ) == [("S1", None, None), ("S2", "John", "Smith"), ("S3", None, None), ("S4", None, None)]

    # Audit: every mapped person value present in raw but NULL after cleaning has a quarantine row.
    silent = platform.sql(
        """with staged as (
               select 'crm' as source, _file as file, _row_number as row_number, f.field, f.label,
                      nullif(trim(record ->> ('$."' || f.label || '"')), '') as raw
               from raw.crm, (values ('first_name', 'first'), ('last_name', 'last'), ('email', 'email'),
                                     ('address_line1', 'street'), ('city', 'town')) f(field, label))
           select s.row_number, s.label from staged s
           join clean.person_records c on c.source = s.source and c.file = s.file and c.row_number = s.row_number
           where s.raw is not null
             and (case s.field when 'first_name' then c.first_name when 'last_name' then c.last_name
                  when 'email' then c.email when 'address_line1' then c.address_line1 else c.city end) is null
             and not exists (select 1 from cdp.quarantine q where q.source = s.source and q.file = s.file
                             and q.row_number = s.row_number and q.field = s.label)"""
    )
    assert silent == []


def test_quarantine_rows_keep_their_first_time_across_reruns(hostile):
    platform, _ = hostile
    stamped = "select * from cdp.quarantine order by all"
    # A file refused whole and a row unreadable at extract join the value and row rejects of cleaning.
    landing = platform.config.landing_path
    (landing / "crm" / "broken.csv").write_text("id;first;last;email\nB1;Dee;Eng;dee@example.org\n")
    (landing / "crm" / "ragged.csv").write_text("id,first,last,email,street,town\nR1,Ann\nR2,Bo,Lee,,,\n")
    assert platform.refresh().success
    before = platform.sql(stamped)
    assert {r[-2] for r in before} == {"file", "row", "value"} and {r[0] for r in before} == {"extract", "clean"}

    assert platform.refresh().success
    assert platform.sql(stamped) == before

    # A new file's rejects get a new time; the earlier rows keep theirs.
    (landing / "crm" / "later.csv").write_text("id,first,last,email,street,town\nL1,???,Lee,,,\n")
    assert platform.refresh().success
    after = platform.sql(stamped)
    old = [r for r in after if r[2] != "crm/later.csv"]
    assert old == before
    [new] = [r for r in after if r[2] == "crm/later.csv"]
    assert new[-1] > max(r[-1] for r in before)
