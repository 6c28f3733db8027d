"""No customer value reaches Dagster's storage: a full refresh and a failing step on a persistent instance,
then every file under DAGSTER_HOME read as bytes and searched for the demo's e-mails, phones and names.

Dagster's storage (event log, run history, compute logs) is readable by everyone with UI access and kept
for as long as run history is; the warehouse is where customer data lives.
"""

import random
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.clean.assets import value_sql
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.identity.matching.blocking import BlockingRuleTooBroad
from cdp_assets.metadata import RedactedError, mask, redact_errors
from cdp_assets.segments.assets import segment_key
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CDPConfig, FieldSpec, load_config
from tests.fixtures import REPO, write_config

_EMAIL_TOKEN = re.compile(r"[^\s\"'<>|\\,;()\[\]{}]*@[^\s\"'<>|\\,;()\[\]{}]*")
_DIGIT_RUN = re.compile(r"\+?\d[\d ().-]{5,}\d")
_WORD = re.compile(r"[^\W\d_]+")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _customer_values(config: CDPConfig) -> tuple[set[str], set[str], set[str], set[str], set[str]]:
    """E-mails (lower-cased, every one in the landing files), phone digits (as landed and in E.164), names,
    birth dates (ISO) and street addresses (as cleaned)."""
    landed = "\n".join(p.read_text(errors="replace") for p in config.landing_path.rglob("*") if p.is_file())
    emails = {m.lower().strip(".") for m in _EMAIL_TOKEN.findall(landed) if "." in m.partition("@")[2]}
    phones: set[str] = set()
    names: set[str] = set()
    births: set[str] = set()
    streets: set[str] = set()
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        for source in config.sources:
            specs = [source.fields["phone"]] if "phone" in source.fields else []
            specs += [FieldSpec(path=[i.path]) for i in source.identifiers if i.type == "phone"]
            for spec in specs:
                query = f"select distinct {value_sql(source, spec)} from raw.{source.name}"
                phones |= {_digits(v) for (v,) in conn.execute(query).fetchall() if v}
        for email, phone, first, last, birth, street in conn.execute(
            "select email, phone, first_name, last_name, date_of_birth, address_line1 from clean.person_records"
        ).fetchall():
            emails |= {email} if email else set()
            phones |= {_digits(phone)} if phone else set()
            names |= {n for n in (first, last) if n}
            births |= {birth.isoformat()} if birth else set()
            streets |= {street} if street else set()
    phones = {p for p in phones if len(p) >= 7}
    return emails, phones, names, births, streets


def _storage_text(home: Path) -> str:
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), "expected Dagster's sqlite storage on disk"
    # Event records are JSON: non-ASCII letters are stored escaped, so decode those escapes too.
    text = "\n".join(p.read_bytes().decode("utf-8", errors="replace") for p in files)
    return text + "\n" + text.encode("utf-8").decode("unicode_escape", errors="replace")


@pytest.mark.e2e
def test_dagster_storage_holds_no_customer_values(tmp_path: Path, destination_server: DestinationServer):
    folder = tmp_path / "platform"
    generate(people=1000, seed=7, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    config = load_config(write_config(folder, destination_server.url))
    # A segment condition that binds against the profile schema but fails on real data, so DuckDB's error
    # would quote a customer's first name: the realistic way a data value reaches a step failure.
    segments = yaml.safe_load((REPO / "cdp.yaml").read_text())["segments"]
    name_as_number = {"name": "name_as_number", "where": "first_name::integer > 0"}
    failing = load_config(write_config(folder, destination_server.url, segments=[*segments, name_as_number]))

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (REPO / "dagster.yaml").read_text() + f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        refreshed = build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
        assert refreshed.success
        emails, phones, names, births, streets = _customer_values(config)
        assert len(emails) > 1000 and len(phones) > 500 and len(names) > 300
        assert len(births) > 300 and len(streets) > 300
        failed = (
            build_definitions(failing)
            .resolve_job_def(FULL_REFRESH)
            .execute_in_process(
                instance=instance, asset_selection=[segment_key("name_as_number")], raise_on_error=False
            )
        )
        assert not failed.success
        [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        error = failure.event_specific_data.error
        message = error.message + "".join(c.message for c in (error.cause, error.context) if c)
        assert "Conversion Error" in message  # still says what went wrong

    stored = _storage_text(home)

    tokens = set(_EMAIL_TOKEN.findall(stored.lower()))
    leaked_emails = {e for e in emails if any(e in token for token in tokens)}
    assert not leaked_emails, sorted(leaked_emails)[:10]
    runs = {_digits(run) for run in _DIGIT_RUN.findall(stored)}
    leaked_phones = {p for p in phones if any(p in run for run in runs)}
    assert not leaked_phones, sorted(leaked_phones)[:10]
    words = set(_WORD.findall(stored))
    leaked_names = {n for n in names if len(n) >= 4 and set(n.split()) <= words}
    assert not leaked_names, sorted(leaked_names)[:10]
    # Birth dates as stored (ISO) or as landed (MM/DD/YYYY); the demo's other dates are all in 2025.
    dates = set(re.findall(r"\d{4}-\d{2}-\d{2}", stored))
    dates |= {f"{y}-{m}-{d}" for m, d, y in re.findall(r"(\d{2})/(\d{2})/(\d{4})", stored)}
    assert not births & dates, sorted(births & dates)[:10]
    leaked_streets = {s for s in random.Random(7).sample(sorted(streets), 200) if s in stored}
    assert not leaked_streets, sorted(leaked_streets)[:10]


def _duckdb_error(statement: str) -> duckdb.Error:
    with duckdb.connect() as conn:
        conn.execute("create table people as select 'Ann O''Brien' as name, 'ann.obrien@example.org' as email")
        try:
            conn.execute(statement)
        except duckdb.Error as exc:
            return exc
    raise AssertionError(f"expected {statement!r} to fail")


@pytest.mark.parametrize(
    ("statement", "kept"),
    [
        ("select email::integer from people", "Conversion Error: Could not convert string 'a***@e***.org' to INT32"),
        ("select name::integer from people", "Conversion Error: Could not convert string 'A***' to INT32"),
        # DuckDB repeats this value unquoted on the next line; only the first line is kept.
        ("select strptime(name, '%d/%m/%Y') from people", 'Could not parse string "A***" according to format'),
        ("select '+14155550147 1980-02-19'::date", "Conversion Error: invalid date field format"),
    ],
)
@pytest.mark.unit
def test_an_error_leaving_an_asset_keeps_its_kind_and_place_but_no_value(statement: str, kept: str):
    @redact_errors
    def body() -> None:
        raise _duckdb_error(statement)

    with pytest.raises(RedactedError) as raised:
        body()
    message = str(raised.value)
    assert message.startswith(type(_duckdb_error(statement)).__name__ + ": ") and kept in message
    assert "tests/test_dagster_storage_privacy.py" in message  # where it was raised
    for value in ("Ann", "Brien", "ann.obrien", "4155550147", "1980-02-19"):
        assert value not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # Dagster stores causes too


@pytest.mark.unit
def test_the_platforms_own_failures_pass_unchanged_and_generators_are_guarded():
    for own in (
        dg.Failure("Source 'crm_contacts': file crm/a.csv has no column(s) ['Email']"),
        BlockingRuleTooBroad("identity.matching.blocking_rules: rule 'city' would make 44,850 pairs"),
    ):

        @redact_errors
        def failing(error: Exception) -> None:
            raise error

        with pytest.raises(type(own)) as raised:
            failing(own)
        assert raised.value is own

    @redact_errors
    def extract() -> Iterator[int]:
        yield 1
        raise ValueError("invalid literal for int() with base 10: 'ann@example.org'")

    with pytest.raises(RedactedError, match=r"ValueError: .*'a\*\*\*@e\*\*\*\.org'"):
        list(extract())


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("jane.doe@example.com", "j***@e***.com"),
        ("+14155550147", "+1********47"),
        ("Jane", "J***"),
        ("1980-02-19", "1***"),
        (None, ""),
    ],
)
@pytest.mark.unit
def test_one_masking_rule_for_every_preview(value: object, masked: str):
    assert mask(value) == masked
