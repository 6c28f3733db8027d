"""One CSV of customer records with duplicates, and its ground truth kept aside, for end-to-end comparisons.

The people come from the demo generator (`build_people`: households sharing an address and landline,
twins, Zipf-common first and last names, movers with an old address and e-mail) and each record is
damaged by the demo's own mess (nicknames, typos, case and spacing, junk and missing values, phone
formats, ZIP+4). Where the demo spreads a person over seven systems with their own formats, this is the
single-table export a new user starts from: one header, one date format, one person per record.
The truth (`source,source_record_id,person_id`, the shape `demo.scoring` reads) is written next to the
CSV, never into it, so no pipeline can see it.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from demo.generate import CITIES, DATA_VERSION, Person, SeededRandom, _Mess, build_people

SOURCE = "customers"
COLUMNS = (
    "record_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "city",
    "postal_code",
    "date_of_birth",
)
# Records per person: most people once, some entered again by another channel or a later visit.
RECORDS_PER_PERSON = ((1, 0.55), (2, 0.28), (3, 0.12), (4, 0.05))
MEAN_RECORDS = sum(n * share for n, share in RECORDS_PER_PERSON)


def _record_count(rng: SeededRandom) -> int:
    roll = rng.random()
    for count, share in RECORDS_PER_PERSON:
        if roll < share:
            return count
        roll -= share
    return RECORDS_PER_PERSON[-1][0]


def _birth_date(rng: SeededRandom, person: Person) -> str:
    """ISO date; missing on some records, a keying slip (day and month swapped, a day off) on a few."""
    dob = person.dob
    roll = rng.random()
    if roll < 0.12:
        return ""
    if roll < 0.13 and dob.day <= 12 and dob.day != dob.month:
        return f"{dob.year}-{dob.day:02d}-{dob.month:02d}"
    if roll < 0.14:
        day = dob.day + 1 if dob.day < 28 else dob.day - 1
        return f"{dob.year}-{dob.month:02d}-{day:02d}"
    return dob.isoformat()


def _record(rng: SeededRandom, mess: _Mess, person: Person) -> tuple[str, ...]:
    """One view of `person` as a sales or service channel keyed it in."""
    home = person.old_home if person.old_home is not None and rng.random() < 0.4 else person.home
    email = person.email
    if home is person.old_home and person.old_email and rng.random() < 0.7:
        email = person.old_email
    elif person.email2 and rng.random() < 0.3:
        email = person.email2
    number = person.landline if person.landline and rng.random() < 0.4 else person.mobile
    city = CITIES[home.city]
    return (
        mess.first_name(person, nickname_rate=0.15),
        mess.name(person.last),
        mess.email(email, missing=0.10),
        mess.phone(number, missing=0.15),
        mess.street(home),
        city.name,
        mess.zip_code(city.zip),
        _birth_date(rng, person),
    )


def write_customer_file(records: int, seed: int, csv_path: Path, truth_path: Path) -> dict[str, int]:
    """Write exactly `records` shuffled records of about records / 1.65 people, and their truth."""
    rng = SeededRandom(seed)
    people = build_people(rng, math.ceil(records / MEAN_RECORDS * 1.02))
    mess = _Mess(rng)
    rows: list[tuple[str, tuple[str, ...]]] = []
    for person in people:
        for _ in range(_record_count(rng)):
            rows.append((person.pid, _record(rng, mess, person)))
        if len(rows) >= records:
            break
    del rows[records:]
    rng.shuffle(rows)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        csv_path.open("w", newline="", encoding="utf-8") as data,
        truth_path.open("w", newline="", encoding="utf-8") as truth,
    ):
        data_writer, truth_writer = csv.writer(data), csv.writer(truth)
        data_writer.writerow(COLUMNS)
        truth_writer.writerow(("source", "source_record_id", "person_id"))
        for number, (pid, values) in enumerate(rows, start=1):
            record_id = f"R{number:08d}"
            data_writer.writerow((record_id, *values))
            truth_writer.writerow((SOURCE, record_id, pid))
    return {"records": len(rows), "people": len({pid for pid, _ in rows})}


def customer_file(records: int, seed: int, workdir: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The CSV and truth for `records` and `seed`, generated once and reused from the work folder."""
    folder = workdir / f"customers-records{records}-seed{seed}-v{DATA_VERSION}"
    csv_path, truth_path, marker = folder / "customers.csv", folder / "truth.csv", folder / "generated.json"
    if marker.exists():
        return csv_path, truth_path, {**json.loads(marker.read_text()), "cached": True}
    started = time.perf_counter()
    counts = write_customer_file(records, seed, csv_path, truth_path)
    info = {**counts, "generate_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info))
    return csv_path, truth_path, {**info, "cached": False}
