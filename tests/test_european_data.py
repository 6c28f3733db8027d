"""Data from outside the United States: numbers written in a record's own country, names with accents and
their ASCII spellings, street names with ß, decimal commas, consent given in other languages. Each test
cleans (and where it matters resolves) hand-written raw rows in an in-memory warehouse."""

import codecs
import json

import duckdb
import pytest
import yaml

from cdp_assets.clean.assets import PERSON_RECORDS, _mapping_check, clean_activity, clean_person_records
from cdp_assets.clean.rules import fold_accents, fold_accents_sql
from cdp_assets.extract.readers import FileFormatError, read_csv
from cdp_assets.identity.matching.comparisons import vector_sql
from resources.config import load_config
from resources.schema import ConfigError
from tests.fixtures import customers, identity_warehouse, raw_json_warehouse
from tests.test_identity_matching import background

pytestmark = pytest.mark.stage


def _person_source(**extra: object) -> dict:
    return {
        "name": "shop",
        "format": "jsonl",
        "glob": "shop/*.jsonl",
        "role": "person",
        "record_id": "id",
        "default_country": "DE",
        "fields": {"first_name": "first", "last_name": "last", "phone": "phone", "country": "country"},
        "identifiers": [{"path": "phone", "type": "phone"}],
        **extra,
    }


def test_a_phone_identifier_is_read_in_its_records_country_like_its_field(tmp_path):
    """A shop in Germany with French and Dutch customers: a number without a country code is a number of
    the record's country, in the cleaned field and in the identifier identity links by alike, and the
    source's default_country applies only to a record that names no country it knows."""
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source()],
        {
            "shop": [
                {"id": "fr", "first": "Léa", "last": "Moreau", "phone": "06 12 34 56 78", "country": "FR"},
                {"id": "nl", "first": "Daan", "last": "Visser", "phone": "06 12345678", "country": "NL"},
                {"id": "de", "first": "Jürgen", "last": "Kühn", "phone": "030 1234567", "country": "DE"},
                {"id": "none", "first": "Uwe", "last": "Kern", "phone": "030 7654321"},
                {"id": "odd", "first": "Eva", "last": "Roth", "phone": "030 1112223", "country": "Atlantis"},
            ]
        },
    )
    clean_person_records(sql, config)
    fields = dict(sql.rows("select source_record_id, phone from clean.person_records"))
    identifiers = dict(sql.rows("select source_record_id, id_value from clean.person_identifiers"))
    expected = {
        "fr": "+33612345678",
        "nl": "+31612345678",
        "de": "+49301234567",
        "none": "+49307654321",
        "odd": "+49301112223",
    }
    assert fields == expected
    assert identifiers == expected
    assert sql.rows("select field from cdp.quarantine where field = 'phone'") == []


def test_european_titles_and_salutations_are_not_taken_for_names(tmp_path):
    """A loyalty system writing one name field with the salutation its forms asked for: Herr, Frau, Mme,
    Sra., Dr. before the surname of "Surname, Given"; the title goes, and a title with a surname alone
    gives the surname."""
    source = _person_source(fields={"full_name": "name"}, identifiers=[])
    names = {
        "herr": "Herr Hans Müller",
        "frau": "Frau Dr. Anna Schmidt",
        "mme": "Mme Hélène Lefèvre",
        "sra": "Sra. María López",
        "ing": "Dipl.-Ing. Karl Huber",
        "comma": "Dr. Müller, Hans",
        "surname": "Frau Müller",
    }
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": [{"id": k, "name": v} for k, v in names.items()]})
    clean_person_records(sql, config)
    rows = {
        r[0]: r[1:]
        for r in sql.rows("select source_record_id, first_name, middle_name, last_name from clean.person_records")
    }
    assert rows == {
        "herr": ("Hans", None, "Müller"),
        "frau": ("Anna", None, "Schmidt"),
        "mme": ("Hélène", None, "Lefèvre"),
        "sra": ("María", None, "López"),
        "ing": ("Karl", None, "Huber"),
        "comma": ("Hans", None, "Müller"),
        "surname": (None, None, "Müller"),
    }
    assert sql.rows("select field from cdp.quarantine") == []


def test_dutch_german_portuguese_and_swedish_particles_stay_with_the_surname(tmp_path):
    """A full name split into its parts keeps ter, zu, dos, af with the surname they begin, as it keeps
    van der: the surname another source gives as "ter Horst" is then the same surname."""
    source = _person_source(fields={"full_name": "name"}, identifiers=[])
    names = {
        "nl": "Pieter ter Horst",
        "nl_caps": "JAN TEN BRINK",
        "de": "Elisabeth zu Guttenberg",
        "pt": "ANNA DOS SANTOS",
        "se": "Hilma af Klint",
    }
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": [{"id": k, "name": v} for k, v in names.items()]})
    clean_person_records(sql, config)
    rows = {
        r[0]: r[1:]
        for r in sql.rows("select source_record_id, first_name, middle_name, last_name from clean.person_records")
    }
    assert rows == {
        "nl": ("Pieter", None, "ter Horst"),
        "nl_caps": ("Jan", None, "Ten Brink"),
        "de": ("Elisabeth", None, "zu Guttenberg"),
        "pt": ("Anna", None, "Dos Santos"),
        "se": ("Hilma", None, "af Klint"),
    }


def test_a_country_given_as_an_alpha3_code_is_the_records_country_and_reads_its_phone(tmp_path):
    """An ERP export writing countries as ISO alpha-3 codes: POL, SWE and ITA are Poland, Sweden and Italy,
    in the cleaned country and in reading the national numbers of their records."""
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source()],
        {
            "shop": [
                {"id": "pl", "first": "Zofia", "last": "Wójcik", "phone": "512 345 678", "country": "POL"},
                {"id": "se", "first": "Åsa", "last": "Åberg", "phone": "070-123 45 67", "country": "SWE"},
                {"id": "it", "first": "Chiara", "last": "Rossi", "phone": "333 1234567", "country": "ita"},
            ]
        },
    )
    clean_person_records(sql, config)
    rows = {r[0]: r[1:] for r in sql.rows("select source_record_id, country, phone from clean.person_records")}
    assert rows == {
        "pl": ("PL", "+48512345678"),
        "se": ("SE", "+46701234567"),
        "it": ("IT", "+393331234567"),
    }
    assert sql.rows("select field, value from cdp.quarantine") == []


def test_a_city_written_in_capitals_keeps_its_particles_lower_case(tmp_path):
    """A CRM exporting addresses in capitals: the cities are title-cased with the particles inside them
    lower case, as the post writes them, while a person's name with the same words keeps its capitals."""
    source = _person_source(fields={"first_name": "first", "last_name": "last", "city": "city"}, identifiers=[])
    rows = [
        {"id": "de", "first": "UWE", "last": "AN", "city": "MÜLHEIM AN DER RUHR"},
        {"id": "fr", "first": "LÉA", "last": "LA ROSE", "city": "AIX-EN-PROVENCE"},
        {"id": "nl", "first": "DAAN", "last": "OP TEN NOORT", "city": "'S-HERTOGENBOSCH"},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    clean_person_records(sql, config)
    got = {r[0]: r[1:] for r in sql.rows("select source_record_id, last_name, city from clean.person_records")}
    assert got == {
        "de": ("An", "Mülheim an der Ruhr"),
        "fr": ("La Rose", "Aix-en-Provence"),
        "nl": ("Op ten Noort", "'s-Hertogenbosch"),
    }


def test_a_postcode_with_an_old_country_prefix_is_the_same_postcode(tmp_path):
    """An old CRM writing D-10115 and a shop writing 10115 for one address in Berlin: the cleaned postcodes
    are one, so the records meet on it."""
    fields = {"first_name": "first", "last_name": "last", "postal_code": "zip", "country": "country"}
    source = _person_source(fields=fields, identifiers=[])
    rows = [
        {"id": "crm", "first": "Uwe", "last": "Kern", "zip": "D-10115", "country": "Deutschland"},
        {"id": "shop", "first": "Uwe", "last": "Kern", "zip": "10115", "country": "DE"},
        {"id": "at", "first": "Eva", "last": "Gruber", "zip": "A-1010", "country": "AT"},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    clean_person_records(sql, config)
    got = dict(sql.rows("select source_record_id, postal_code from clean.person_records"))
    assert got == {"crm": "10115", "shop": "10115", "at": "1010"}


def test_an_address_at_a_domain_in_another_script_is_kept_and_matches_its_ascii_form(tmp_path):
    """A Russian customer's address at a .рф domain, typed in Cyrillic in one source and in its ASCII
    (punycode) form in another: both are kept, with the one match key identity links them by."""
    source = _person_source(
        fields={"first_name": "first", "last_name": "last", "email": "email"},
        identifiers=[{"path": "email", "type": "email"}],
    )
    rows = [
        {"id": "crm", "first": "Olga", "last": "Smirnova", "email": "olga@пример.рф"},
        {"id": "shop", "first": "Olga", "last": "Smirnova", "email": "olga@xn--e1afmkfd.xn--p1ai"},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    clean_person_records(sql, config)
    got = {r[0]: r[1:] for r in sql.rows("select source_record_id, email, email_match_key from clean.person_records")}
    assert got == {
        "crm": ("olga@пример.рф", "olga@xn--e1afmkfd.xn--p1ai"),
        "shop": ("olga@xn--e1afmkfd.xn--p1ai", "olga@xn--e1afmkfd.xn--p1ai"),
    }
    assert sql.rows("select field from cdp.quarantine") == []


def test_an_address_exported_with_its_display_name_is_read(tmp_path):
    """A CRM filled from a mail program holds "Schmidt, Anna" <anna@gmx.de>: the address is the one in the
    angle brackets, the same as the shop's anna@gmx.de."""
    source = _person_source(
        fields={"first_name": "first", "email": "email"}, identifiers=[{"path": "email", "type": "email"}]
    )
    rows = [
        {"id": "crm", "first": "Anna", "email": '"Schmidt, Anna" <Anna@GMX.de>'},
        {"id": "shop", "first": "Anna", "email": "anna@gmx.de"},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    clean_person_records(sql, config)
    assert dict(sql.rows("select source_record_id, email from clean.person_records")) == {
        "crm": "anna@gmx.de",
        "shop": "anna@gmx.de",
    }
    assert sql.rows("select field from cdp.quarantine") == []


def test_a_name_with_and_without_its_accents_is_one_persons(tmp_path):
    """Twelve people each written Jürgen in one system and Jurgen in another, under one e-mail: both
    spellings are common, so only folding the accents tells that they are one name. Each e-mail then
    stays one person's (not blocked as shared by two), and each pair is one customer."""
    records = []
    for i in range(12):
        for n, first in enumerate(["Jürgen", "Jurgen"]):
            records.append(
                {"id": f"p{i}-{n}", "first": first, "last": f"Kühn{i}", "dob": f"1980-01-{i + 1:02d}",
                 "email": f"jk{i}@example.de"}
            )  # fmt: skip
    conn = identity_warehouse(tmp_path, records)
    assert conn.execute("select count(*) from identity.blocked_identifiers").fetchone() == (0,)
    ids = customers(conn)
    assert all(ids[f"p{i}-0"] == ids[f"p{i}-1"] for i in range(12))
    assert len(set(ids.values())) == 12


def test_accents_fold_alike_in_python_and_in_duckdb():
    """One fold, two implementations: cleaning's address keys and the sharing check use Python's, the
    matching features DuckDB's; they must spell every name alike."""
    names = ["Sören", "Françoise", "Dvořák", "Ångström", "Straße", "STRASSE", "Ørsted", "Łódź", "Æsa", "Œuvre",
             "Þór", "Đorđe", "Ħal", "Ίρις", "Йозеф", "हिंदी", "e\u0301mile", "Plain", "", "😀 Zoë"]  # fmt: skip
    conn = duckdb.connect()
    folded = conn.execute(f"select v, {fold_accents_sql('v')} from unnest(?::varchar[]) t(v)", [names]).fetchall()
    assert {v: fold_accents(v) for v in names} == dict(folded)
    assert fold_accents("Sören Straße Ørsted") == "Soren Strasse Orsted"


def test_customer_numbers_one_source_gave_in_turn_are_no_evidence_of_one_person(tmp_path):
    """A couple signs up one after the other and gets S5820 and S5821: the shop's own numbers for its own
    records differ by design, so "one character off" says nothing there; the same slip between a number
    the shop gave and one another system copied is still a keying slip."""
    home = {"last": "Lehmann", "address": "Gartenweg 4", "zip": "10115", "city": "berlin", "dob": "1970-01-01"}
    records = [
        {"id": "S5820", "first": "Emma", **home, "ids": {"customer_id": "S5820"}},
        {"id": "S5821", "first": "Stefan", **home, "ids": {"customer_id": "S5821"}},
        {"id": "C-17", "first": "Stefan", **home, "ids": {"customer_id": "S5822"}},
    ]
    conn = identity_warehouse(tmp_path, background() + records)
    features = "(select * from identity.match_features where source_record_id in ('S5820', 'S5821', 'C-17'))"
    owners = dict(conn.execute(f"select source_record_id, identifier_owner from {features}").fetchall())
    assert owners == {"S5820": "crm", "S5821": "crm", "C-17": None}
    pairs = "(select 0 as l, 1 as r union all select 1, 2)"
    node = "case source_record_id when 'S5820' then 0 when 'S5821' then 1 else 2 end"
    numbered = f"(select {node} as node_id, * exclude (node_id) from {features})"
    levels = conn.execute(
        f"select l, r, identifier from ({vector_sql(numbered, pairs, ['identifier'])}) order by l"
    ).fetchall()
    assert levels == [(0, 1, -1), (1, 2, 1)]


def test_consent_in_other_languages_is_read_and_a_mapping_with_no_statement_is_named(tmp_path):
    """Ja, nein, oui, non are yes and no; a purpose whose every value is refused leaves the source saying
    nothing about consent, and the mapped-fields check names it instead of passing."""
    source = _person_source(consent={"newsletter": "newsletter", "sms": "sms"})
    config, sql = raw_json_warehouse(
        tmp_path,
        [source],
        {
            "shop": [
                {"id": "a", "first": "Anna", "last": "Vogel", "newsletter": "Ja", "sms": "vielleicht"},
                {"id": "b", "first": "Paul", "last": "Roux", "newsletter": "non", "sms": "peut-être"},
                {"id": "c", "first": "Daan", "last": "Bos", "newsletter": "nee"},
            ]
        },
    )
    clean_person_records(sql, config)
    assert sql.rows("select source_record_id, purpose, granted from clean.consent_statements order by 1") == [
        ("a", "newsletter", True),
        ("b", "newsletter", False),
        ("c", "newsletter", False),
    ]
    check = _mapping_check(sql, PERSON_RECORDS, "clean.person_records", "clean.person_quarantine", config.sources)
    assert not check.passed
    details = check.metadata["details"].value
    assert "consent sms (sms)" in details and "not a yes/no consent statement" in details
    assert "newsletter" not in details


def _orders_source(name: str, separator: str | None) -> dict:
    return {
        "name": name,
        "format": "jsonl",
        "glob": f"{name}/*.jsonl",
        "role": "transactions",
        "record_id": "customer",
        "event_id": "id",
        **({"decimal_separator": separator} if separator else {}),
        "fields": {"occurred_at": "at", "amount": "total"},
    }


def test_amounts_with_a_decimal_comma_are_read_when_declared_and_never_guessed(tmp_path):
    at = "2025-06-01T10:00:00+02:00"
    german = ["1.234,56", "12,50 €", "1 234,5", "1.234", "7"]
    plain = ["1,234.56", "$12.50", "12.50 EUR", "1'234.50", "12,50", "1,234"]
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source(), _orders_source("marktplatz", ","), _orders_source("webshop", ".")],
        {
            "marktplatz": [{"id": f"m{i}", "customer": "c", "at": at, "total": t} for i, t in enumerate(german)],
            "webshop": [{"id": f"s{i}", "customer": "c", "at": at, "total": t} for i, t in enumerate(plain)],
        },
    )
    clean_activity(sql, config, "transactions")
    amounts = {e: str(a) for e, a in sql.rows("select event_id, amount from clean.transactions")}
    assert amounts == {
        "m0": "1234.56", "m1": "12.50", "m2": "1234.50", "m3": "1234.00", "m4": "7.00",
        "s0": "1234.56", "s1": "12.50", "s2": "12.50", "s3": "1234.50",
    }  # fmt: skip
    refused = sql.rows("select value, reason from cdp.quarantine where source = 'webshop' order by value")
    assert [value for value, _ in refused] == ["1,234", "12,50"]
    assert all("set the source's decimal_separator" in reason for _, reason in refused)


def test_amounts_with_europes_other_currency_signs_are_read(tmp_path):
    """A shop selling in Poland, Sweden, Czechia, Hungary and Romania writes its totals with the local sign:
    zł, kr, Kč, Ft, lei are dropped like € and £; a word that merely starts like one is not a sign."""
    at = "2025-06-01T10:00:00+02:00"
    totals = ["1 234,56 zł", "199,00 kr", "kr 49,50", "1.299,00 Kč", "12 500 Ft", "49,90 lei", "100 zl", "krone 5"]
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source(), _orders_source("marktplatz", ",")],
        {"marktplatz": [{"id": f"m{i}", "customer": "c", "at": at, "total": t} for i, t in enumerate(totals)]},
    )
    clean_activity(sql, config, "transactions")
    amounts = {e: str(a) for e, a in sql.rows("select event_id, amount from clean.transactions")}
    assert amounts == {
        "m0": "1234.56", "m1": "199.00", "m2": "49.50", "m3": "1299.00", "m4": "12500.00", "m5": "49.90",
        "m6": "100.00",
    }  # fmt: skip
    assert sql.rows("select value from cdp.quarantine where source = 'marktplatz'") == [("krone 5",)]


def test_an_amount_that_may_be_thousands_grouping_is_refused_unless_the_separator_is_declared(tmp_path):
    """A German shop exporting 1.234 (1234) from a source left at its default would load a thousand times too
    little: refused with the fix named, as are points grouping thousands twice; a declared '.' reads them."""
    at = "2025-06-01T10:00:00Z"
    totals = ["1.234", "12.500", "0.125", "1234.567", "12.50", "1.234.567", "12.3456"]
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source(), _orders_source("unset", None), _orders_source("declared", ".")],
        {
            name: [{"id": f"{name}{i}", "customer": "c", "at": at, "total": t} for i, t in enumerate(totals)]
            for name in ("unset", "declared")
        },
    )
    clean_activity(sql, config, "transactions")
    amounts = {e: str(a) for e, a in sql.rows("select event_id, amount from clean.transactions")}
    assert amounts == {
        "unset2": "0.13", "unset3": "1234.57", "unset4": "12.50", "unset6": "12.35",
        "declared0": "1.23", "declared1": "12.50", "declared2": "0.13", "declared3": "1234.57",
        "declared4": "12.50", "declared6": "12.35",
    }  # fmt: skip
    refused = dict(sql.rows("select value, reason from cdp.quarantine where source = 'unset' order by value"))
    assert sorted(refused) == ["1.234", "1.234.567", "12.500"]
    assert all("set the source's decimal_separator" in reason for reason in refused.values())
    assert refused["1.234"].startswith("amount is ambiguous")
    declared = sql.rows("select value, reason from cdp.quarantine where source = 'declared'")
    assert [(v, "set the source's decimal_separator" in r) for v, r in declared] == [("1.234.567", True)]


def test_an_amount_in_exponent_notation_is_refused_naming_its_field_and_value(tmp_path):
    """1e3 is how a spreadsheet shows (and saves) a long number, never how a system writes money: the row is
    quarantined, whatever the source's decimal separator, and the amounts written in digits read as before."""
    at = "2025-06-01T10:00:00Z"
    exponents = ["1e3", "1.23457E+11", "-2e2", "1.5e-2 EUR"]
    plain = {"webshop": ["12.50", "-3", "1,234.50", "$7", "0"], "marktplatz": ["12,50", "1.234,50", "7 €", "0"]}
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source(), _orders_source("webshop", "."), _orders_source("marktplatz", ",")],
        {
            name: [
                {"id": f"{name}{i}", "customer": "c", "at": at, "total": t} for i, t in enumerate(totals + exponents)
            ]
            for name, totals in plain.items()
        },
    )
    clean_activity(sql, config, "transactions")
    amounts = {e: str(a) for e, a in sql.rows("select event_id, amount from clean.transactions")}
    assert amounts == {
        "webshop0": "12.50", "webshop2": "1234.50", "webshop3": "7.00", "webshop4": "0.00",
        "marktplatz0": "12.50", "marktplatz1": "1234.50", "marktplatz2": "7.00", "marktplatz3": "0.00",
    }  # fmt: skip
    refused = sql.rows(
        "select source, field, value, reason, scope from cdp.quarantine where source <> 'shop' "
        "order by source, row_number"
    )
    why = (
        "amount is in exponent notation (total is {}): a spreadsheet writes a long number so and may have dropped "
        "its digits; write the amount in plain digits"
    )
    assert refused == [("marktplatz", "total", value, why.format(value), "row") for value in exponents] + [
        ("webshop", "total", "-3", "negative amount", "row")
    ] + [("webshop", "total", value, why.format(value), "row") for value in exponents]


def test_a_utf8_file_declared_cp1252_is_refused_whole_and_a_cp1252_file_is_read(tmp_path):
    """Every byte is a cp1252 character, so a UTF-8 export read as cp1252 would load as "JosÃ© MÃ¼ller"
    without one error: it is refused whole, naming the line and what to set, as is one with UTF-8's byte
    order mark; the same text really in cp1252 loads."""
    text = "id;name;city\r\n1;José Müller;München\r\n2;Ann Lee;Paris\r\n"
    utf8, bom, cp1252 = tmp_path / "utf8.csv", tmp_path / "bom.csv", tmp_path / "cp1252.csv"
    utf8.write_bytes(text.encode("utf-8"))
    bom.write_bytes(codecs.BOM_UTF8 + b"id;name\r\n1;Ann\r\n")
    cp1252.write_bytes(text.encode("cp1252"))
    for path, why in [(utf8, "line 2 is the first"), (bom, "byte order mark")]:
        with pytest.raises(FileFormatError, match=why) as refused:
            read_csv(path, delimiter=";", encoding="cp1252")
        assert "set csv.encoding: utf-8" in str(refused.value)
        assert "José" not in str(refused.value)
    _, rows = read_csv(cp1252, delimiter=";", encoding="cp1252")
    records = [json.loads(r["record"]) for batch in rows.batches() for r in batch.to_pylist()]
    assert records[0] == {"id": "1", "name": "José Müller", "city": "München"}


def test_timestamps_without_an_offset_are_wall_clock_times_in_the_sources_time_zone(tmp_path):
    """A Berlin marketplace writes local times without an offset: 23:30 on 29 June is 21:30 UTC (summer)
    and 12:00 on 15 January 11:00 UTC; a timestamp that carries an offset or Z keeps it, in any source."""
    source = {**_orders_source("marktplatz", ","), "timezone": "Europe/Berlin"}
    source["fields"] = {"occurred_at": {"path": "at", "formats": ["%d.%m.%Y %H:%M:%S"]}, "amount": "total"}
    config, sql = raw_json_warehouse(
        tmp_path,
        [_person_source(), source],
        {
            "marktplatz": [
                {"id": "local", "customer": "c", "at": "29.06.2025 23:30:00", "total": "1"},
                {"id": "winter", "customer": "c", "at": "2025-01-15 12:00:00", "total": "1"},
                {"id": "offset", "customer": "c", "at": "2025-06-29T23:30:00+01:00", "total": "1"},
                {"id": "utc", "customer": "c", "at": "2025-06-29T23:30:00Z", "total": "1"},
            ]
        },
    )
    clean_activity(sql, config, "transactions")
    times = {e: t.isoformat() for e, t in sql.rows("select event_id, occurred_at from clean.transactions")}
    assert times == {
        "local": "2025-06-29T21:30:00",
        "winter": "2025-01-15T11:00:00",
        "offset": "2025-06-29T22:30:00",
        "utc": "2025-06-29T23:30:00",
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sources": [{**_person_source(), "timezone": "CET+1"}]}))
    with pytest.raises(ConfigError, match=r"sources\[0\] \(shop\)\.timezone: .*'CET\+1' is not an IANA time zone"):
        load_config(path)


def test_a_date_format_written_without_strptime_codes_is_refused_at_load(tmp_path):
    source = _person_source()
    source["fields"] = {**source["fields"], "date_of_birth": {"path": "born", "formats": ["DD/MM/YYYY"]}}
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump({"sources": [source]}))
    with pytest.raises(ConfigError, match=r"date_of_birth.*'DD/MM/YYYY' has no strptime directive.*'%d/%m/%Y'"):
        load_config(path)
