"""The demo generator is the yardstick for matching quality, so its output and truth must agree exactly."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest

import demo.generate as generate_module
from demo.generate import generate, main

pytestmark = pytest.mark.unit

SMALL = 300
SOURCES = {
    "crm_contacts",
    "shop_customers",
    "shop_orders",
    "pos_loyalty",
    "support_tickets",
    "web_events",
    "email_engagement",
}
JUNK_PHONES = {"0000000000", "1234567890", "5555555555"}


def _run(root: Path, people: int = SMALL, seed: int = 7) -> tuple[Path, Path, dict[str, int]]:
    landing, truth = root / "landing", root / "truth" / "ground_truth.csv"
    return landing, truth, generate(people, seed, landing, truth)


def _snapshot(landing: Path, truth: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(landing.rglob("*")):
        if path.is_file():
            files[path.relative_to(landing).as_posix()] = path.read_bytes()
    files["ground_truth"] = truth.read_bytes()
    return files


def _truth(truth: Path) -> dict[str, dict[str, str]]:
    by_source: dict[str, dict[str, str]] = defaultdict(dict)
    with truth.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            assert row["source_record_id"] not in by_source[row["source"]], row
            by_source[row["source"]][row["source_record_id"]] = row["person_id"]
    return by_source


def _lines(path: Path) -> list[bytes]:
    """Data lines of a file as bytes, header excluded: some lines are deliberately not valid UTF-8."""
    return path.read_bytes().split(b"\n")[1:-1]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _jsonl(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _crm_rows(landing: Path) -> list[list[str]]:
    """CRM rows parsed line by line, so that one unterminated quote cannot swallow the lines after it."""
    rows = []
    for name in ("contacts_2025-01.csv", "contacts_2025-06.csv", "contacts_hard_cases.csv"):
        for line in _lines(landing / "crm" / name):
            rows.append(next(csv.reader([line.decode("utf-8", errors="replace")])))
    return rows


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    return _run(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    return _run(tmp_path_factory.mktemp("medium"), people=3000, seed=11)


def test_same_seed_gives_identical_files_and_another_seed_does_not(small, tmp_path: Path) -> None:
    landing, truth, counts = small
    again = _run(tmp_path / "again")
    assert again[2] == counts
    assert _snapshot(again[0], again[1]) == _snapshot(landing, truth)
    other = _run(tmp_path / "other", seed=8)
    assert _snapshot(other[0], other[1]) != _snapshot(landing, truth)


def test_all_files_are_written_with_the_counted_rows(small) -> None:
    landing, truth, counts = small
    expected = {
        "crm/contacts_2025-01.csv",
        "crm/contacts_2025-06.csv",
        "crm/contacts_hard_cases.csv",
        "shop/customers.jsonl",
        "shop/orders.jsonl",
        "pos/loyalty_members.csv",
        "support/tickets.csv",
        "email/engagement.csv",
        "ground_truth",
        *(f"web/events_2025-06-{day}.jsonl" for day in range(24, 31)),
    }
    assert set(counts) == expected
    for name, rows in counts.items():
        path = truth if name == "ground_truth" else landing / name
        lines = [line for line in path.read_bytes().split(b"\n") if line]
        header = 0 if name.endswith(".jsonl") else 1
        assert len(lines) - header == rows, name
        assert rows > 0, name


def test_every_record_is_in_the_truth_exactly_once(small) -> None:
    landing, truth_path, _ = small
    truth = _truth(truth_path)
    assert set(truth) == SOURCES

    assert {row[0] for row in _crm_rows(landing)} == set(truth["crm_contacts"])

    customers = _jsonl(landing / "shop" / "customers.jsonl")
    parsed_ids = {str(record["id"]) for record in customers}
    text = (landing / "shop" / "customers.jsonl").read_text(encoding="utf-8")
    all_ids = set(re.findall(r'^\{"id":(\d+),', text, re.M))  # includes the truncated line
    assert set(truth["shop_customers"]) == all_ids
    assert len(all_ids - parsed_ids) == 1

    orders = _jsonl(landing / "shop" / "orders.jsonl")
    assert [str(order["id"]) for order in orders] == list(truth["shop_orders"])
    referenced = {str(order["customer"]["id"]) for order in orders if order["customer"]}
    assert referenced <= set(truth["shop_customers"])

    cards = [row["card_number"] for row in _csv_rows(landing / "pos" / "loyalty_members.csv")]
    assert sorted(cards) == sorted(truth["pos_loyalty"])
    tickets = [row["ticket_id"] for row in _csv_rows(landing / "support" / "tickets.csv")]
    assert sorted(tickets) == sorted(truth["support_tickets"])

    events = [event for path in sorted((landing / "web").glob("events_*.jsonl")) for event in _jsonl(path)]
    assert {event["anonymousId"] for event in events} == set(truth["web_events"])
    assert len({event["messageId"] for event in events}) == len(events)
    for event in events:
        if event["userId"] is not None:  # logged in: the shop account is the same person as the device
            person = truth["web_events"][event["anonymousId"]]
            assert truth["shop_customers"][event["userId"]] == person

    emails = {row["email"] for row in _csv_rows(landing / "email" / "engagement.csv")}
    assert emails == set(truth["email_engagement"])

    person_ids = {pid for records in truth.values() for pid in records.values()}
    people = {pid for pid in person_ids if pid.startswith("P")}
    visitors = {pid for pid in person_ids if pid.startswith("V")}
    hard_cases = {pid for pid in person_ids if pid.startswith("H")}  # people of the hard cases
    assert people | visitors | hard_cases == person_ids
    assert people <= {f"P{number:07d}" for number in range(1, SMALL + 1)}
    assert visitors == {f"V{number:07d}" for number in range(1, len(visitors) + 1)}
    assert visitors, "anonymous-only visitors are expected among web devices"
    for source, records in truth.items():  # visitors exist only as web devices
        if source != "web_events":
            assert all(pid[0] in "PH" for pid in records.values()), source


def test_crm_june_export_has_exactly_three_broken_lines(small) -> None:
    landing, truth_path, _ = small
    truth = _truth(truth_path)
    lines = _lines(landing / "crm" / "contacts_2025-06.csv")
    not_utf8, odd_quotes, too_many_fields = [], [], []
    for index, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(index)
            text = line.decode("latin-1")
            assert "\u00e9" in next(csv.reader([text]))[2]  # the accent sits in Last Name
        if text.count('"') % 2:
            odd_quotes.append(index)
        elif len(next(csv.reader([text]))) == 15:
            too_many_fields.append(index)
        else:
            assert len(next(csv.reader([text]))) == 13, text
    assert len(not_utf8) == len(odd_quotes) == len(too_many_fields) == 1
    broken = not_utf8 + odd_quotes + too_many_fields
    for index in broken:
        assert lines[index].split(b",")[0].decode() in truth["crm_contacts"]
        assert index + 1 < len(lines) and index + 1 not in broken  # a normal line follows
    january = (landing / "crm" / "contacts_2025-01.csv").read_text(encoding="utf-8")
    assert {len(row) for row in csv.reader(io.StringIO(january))} == {13}


def test_shop_files_carry_exactly_the_planted_defects(small) -> None:
    landing, _, _ = small
    lines = (landing / "shop" / "customers.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    assert sum(1 for line in lines if not line) == 1
    failures = 0
    for line in lines:
        if line:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                failures += 1
    assert failures == 1

    bad_prices, bad_dates = [], []
    for order in _jsonl(landing / "shop" / "orders.jsonl"):
        if not re.fullmatch(r"\d+\.\d{2}", order["total_price"]):
            bad_prices.append(order["total_price"])
        try:
            datetime.fromisoformat(order["created_at"])
        except ValueError:
            bad_dates.append(order["created_at"])
    assert sorted(bad_prices) == ["-12.00", "abc"]
    assert sorted(bad_dates) == ["2025-13-45T99:00:00Z", "not a date"]


def _digits(phone: str) -> str | None:
    digits = re.sub(r"\D", "", phone)
    digits = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
    return digits if len(digits) == 10 and digits not in JUNK_PHONES else None


def _birth_date(value: str) -> str | None:
    for pattern in ("%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(value.strip(), pattern).date().isoformat()
        except ValueError:
            continue
    return None


def _shared(keys: dict[object, set[str]]) -> list[object]:
    return [key for key, people in keys.items() if len(people) >= 2]


def test_households_and_twins_show_up_across_sources(medium) -> None:
    landing, truth_path, _ = medium
    truth = _truth(truth_path)
    crm_person, pos_person = truth["crm_contacts"], truth["pos_loyalty"]
    phones: dict[object, set[str]] = defaultdict(set)
    addresses: dict[object, set[str]] = defaultdict(set)
    birth_names: dict[object, set[str]] = defaultdict(set)

    for row in _crm_rows(landing):
        if len(row) != 13:
            continue
        person = crm_person[row[0]]
        if phone := _digits(row[4]):
            phones[phone].add(person)
        if row[5].strip() and row[8].strip():
            addresses[(" ".join(row[5].lower().split()), row[8].strip())].add(person)
        if (born := _birth_date(row[10])) and row[2].strip():
            birth_names[(born, row[2].strip().lower())].add(person)

    for row in _csv_rows(landing / "pos" / "loyalty_members.csv"):
        person = pos_person[row["card_number"]]
        if phone := _digits(row["phone"]):
            phones[phone].add(person)
        name = row["name"].strip()
        last = name.split(",")[0] if "," in name else name.split()[-1]
        if born := _birth_date(row["birth_date"]):
            birth_names[(born, last.strip().lower())].add(person)

    assert _shared(phones), "no landline shared by two people"
    assert _shared(addresses), "no address shared by two people"
    assert _shared(birth_names), "no twins (same birth date and last name, different people)"


def test_command_line_writes_to_the_given_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth = tmp_path / "out", tmp_path / "gt" / "truth.csv"
    assert main(["--people", "50", "--seed", "3", "--out", str(out), "--truth", str(truth)]) == 0
    assert truth.read_text(encoding="utf-8").startswith("source,source_record_id,person_id\n")
    assert (out / "web" / "events_2025-06-30.jsonl").exists()
    assert "ground_truth" in capsys.readouterr().out


def test_hard_cases_are_listed_and_look_as_described(small) -> None:
    """Family mailboxes shared by two or three people of one surname, e-mails one slip away from the
    person's own, requesters known by a first name: each record listed with its case and its person."""
    from demo.generate import hard_cases_path

    landing, truth_path, _ = small
    with hard_cases_path(truth_path).open() as handle:
        listed = list(csv.DictReader(handle))
    assert {row["case"] for row in listed} == {"family_mailbox", "mistyped_email", "first_name_only"}
    truth = _truth(truth_path)["crm_contacts"]
    assert all(truth[row["source_record_id"]] == row["person_id"] for row in listed)
    rows = {r[0]: r for r in _crm_rows(landing)}
    boxes: dict[str, set[str]] = {}
    for row in listed:
        if row["case"] == "family_mailbox":
            boxes.setdefault(rows[row["source_record_id"]][3], set()).add(row["person_id"])
    assert boxes and all(2 <= len(people) <= 3 for people in boxes.values())
    slipped = [row for row in listed if row["case"] == "mistyped_email"]
    own = {}
    for row in slipped:
        own.setdefault(row["person_id"], set()).add(rows[row["source_record_id"]][3])
    assert all(len(emails) >= 2 for emails in own.values())  # the contact's own and a slipped one


def test_one_name_gets_a_mailbox_of_its_own_after_its_thousand_numbered_ones_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a few million people, one common name's thousand numbered mailboxes at a domain fill up: 8,000
    James Smiths born the same day (free mail) fill them and must still each get a mailbox of their own,
    where drawing from the thousand alone went on for ever. Lookups are counted so a loop that cannot
    end fails instead of hanging."""
    lookups = 0
    mailbox = generate_module._mailbox

    def counted(email: str) -> str:
        nonlocal lookups
        lookups += 1
        if lookups > 5_000_000:
            raise AssertionError("no free mailbox found in 5,000,000 draws")
        return mailbox(email)

    monkeypatch.setattr(generate_module, "_mailbox", counted)
    builder = generate_module._PeopleBuilder(generate_module.SeededRandom(7))
    emails = [builder.email("James", "Smith", "", date(1980, 1, 1), work=False) for _ in range(8_000)]
    assert len({mailbox(email) for email in emails}) == 8_000
