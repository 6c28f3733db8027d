"""Exports shaped as other systems write them, loaded through the real extract, cleaning and identity
stages: Parquet files written by pandas, whose dates are timestamp columns and whose integer columns with
a missing value are floating-point."""

from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from tests.fixtures import check_evaluation, materialize_stages

pytestmark = pytest.mark.stage


def _config(folder: Path, sources: list[dict]) -> Path:
    """`folder/cdp.yaml` with the sources given, its warehouse and landing folder inside `folder`."""
    raw = {
        "warehouse": {"path": str(folder / "warehouse.duckdb")},
        "landing": {"path": str(folder / "landing"), "settle_seconds": 0},
        "sources": sources,
    }
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_birth_dates_in_a_pandas_parquet_timestamp_column_are_read_as_dates(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # pandas has no date dtype: a birth date column is datetime64, which Parquet stores as a timestamp.
    landing = tmp_path / "landing" / "app"
    landing.mkdir(parents=True)
    pd.DataFrame(
        {
            "user_id": pd.Series([1, 2, 3, 4], dtype="int64"),
            "first_name": ["Ann", "Bob", "Cy", "Di"],
            "birth_date": pd.to_datetime(["1979-06-06", None, "2001-12-31", "1985-03-04 13:30"], format="mixed"),
        }
    ).to_parquet(landing / "users.parquet", index=False)
    config = _config(
        tmp_path,
        [
            {
                "name": "app_users",
                "format": "parquet",
                "glob": "app/*.parquet",
                "role": "person",
                "record_id": "user_id",
                "fields": {"first_name": "first_name", "date_of_birth": "birth_date"},
            }
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        births = dict(conn.execute("select source_record_id, date_of_birth from clean.person_records").fetchall())
        rejects = conn.execute("select row_number, field, value, reason from cdp.quarantine").fetchall()
    assert births == {"1": date(1979, 6, 6), "2": None, "3": date(2001, 12, 31), "4": None}
    # A time of day other than midnight is no birth date: refused, naming the row, field and value.
    assert rejects == [(4, "birth_date", "1985-03-04 13:30:00", "not a valid date in the format(s) %Y-%m-%d")]


@pytest.mark.parametrize("file_format", ["parquet", "jsonl"])
def test_an_integer_id_in_a_pandas_float_column_links_the_records_carrying_it(
    tmp_path: Path, instance: dg.DagsterInstance, file_format: str
) -> None:
    # pandas keeps an integer column with a missing value as float64: the CRM id 1001 is stored as 1001.0,
    # and its JSON lines write it so.
    (tmp_path / "landing" / "app").mkdir(parents=True)
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    users = pd.DataFrame(
        {"user_id": [1, 2, 3], "crm_id": [1001, None, 1003], "points": [2.5, 7.0, None], "note": ["1.0", "", "x"]}
    )
    assert users["crm_id"].dtype == "float64"
    path = tmp_path / "landing" / "app" / f"users.{file_format}"
    if file_format == "parquet":
        users.to_parquet(path, index=False)
    else:
        path.write_text(users.to_json(orient="records", lines=True))
        assert '"crm_id":1001.0' in path.read_text()
    (tmp_path / "landing" / "crm" / "contacts.csv").write_text("id,first\n1001,Ann\n1003,Cy\n")
    config = _config(
        tmp_path,
        [
            {
                "name": "app",
                "format": file_format,
                "glob": f"app/*.{file_format}",
                "role": "person",
                "record_id": "user_id",
                "identifiers": [{"path": "crm_id", "type": "crm_id"}],
            },
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first"},
                "identifiers": [{"path": "id", "type": "crm_id"}],
            },
        ],
    )
    materialize_stages(config, instance, ("raw", "clean", "identity"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        customer = dict(
            conn.execute("select source || '/' || source_record_id, customer_id from cdp.identity_map").fetchall()
        )
        query = "select id_value from clean.person_identifiers where source = 'app' order by 1"
        values = conn.execute(query).fetchall()
        records = conn.execute("select record::varchar from raw.app order by _row_number").fetchall()
    assert values == [("1001",), ("1003",)]
    assert customer["app/1"] == customer["crm/1001"] != customer["app/3"] == customer["crm/1003"]
    assert customer["app/2"] not in (customer["app/1"], customer["app/3"])
    # A whole number reads as the integer it is; a fraction, and a number written inside a string, as written.
    assert [r[0] for r in records] == [
        '{"user_id":1,"crm_id":1001,"points":2.5,"note":"1.0"}',
        '{"user_id":2,"crm_id":null,"points":7,"note":""}',
        '{"user_id":3,"crm_id":1003,"points":null,"note":"x"}',
    ]


def test_an_amount_a_record_holds_as_a_number_is_never_read_as_thousands(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # An API giving a Kuwaiti dinar total (three decimals) as a JSON number, and a client writing one as text.
    orders = tmp_path / "landing" / "orders"
    orders.mkdir(parents=True)
    (orders / "orders.jsonl").write_text(
        '{"id": "o1", "at": "2025-03-01T10:00:00Z", "total": 1.234}\n'
        '{"id": "o2", "at": "2025-03-01T10:00:00Z", "total": "1.234"}\n'
        '{"id": "o3", "at": "2025-03-01T10:00:00Z", "total": 12.5}\n'
        '{"id": "o4", "at": "2025-03-01T10:00:00Z", "total": 250}\n'
    )
    config = _config(
        tmp_path,
        [
            {"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"},
            {
                "name": "orders",
                "format": "jsonl",
                "glob": "orders/*.jsonl",
                "role": "transactions",
                "record_id": "id",
                "event_id": "id",
                "fields": {"occurred_at": "at", "amount": "total"},
            },
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        amounts = dict(conn.execute("select source_record_id, amount::varchar from clean.transactions").fetchall())
        rejects = conn.execute(
            "select row_number, value, reason from cdp.quarantine where source = 'orders'"
        ).fetchall()
    assert amounts == {"o1": "1.23", "o3": "12.50", "o4": "250.00"}
    # The same digits as text may be a decimal-comma system's 1234: refused, saying what to declare.
    [(line, value, reason)] = rejects
    assert (line, value) == (2, "1.234") and reason.startswith("amount is ambiguous") and "decimal_separator" in reason


def test_an_unreadable_timestamp_is_refused_saying_what_a_readable_one_looks_like(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A HubSpot export's German times, an API's Unix seconds and an e-mail's RFC 2822 date.
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    (tmp_path / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "landing" / "crm" / "contacts.csv").write_text(
        "id;modified\n1;12.03.2025 13:43\n2;2025-03-12 13:43\n3;March 12th\n"
    )
    (tmp_path / "landing" / "orders" / "orders.jsonl").write_text(
        '{"id": "o1", "at": 1735725600, "total": "5"}\n'
        '{"id": "o2", "at": "Wed, 01 Jan 2025 10:00:00 GMT", "total": "5"}\n'
        '{"id": "o3", "at": "2025-01-01T10:00:00+01:00", "total": "5"}\n'
    )
    config = _config(
        tmp_path,
        [
            {
                "name": "crm",
                "format": "csv",
                "csv": {"delimiter": ";"},
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"updated_at": {"path": "modified", "formats": ["%d.%m.%Y %H:%M"]}},
            },
            {
                "name": "orders",
                "format": "jsonl",
                "glob": "orders/*.jsonl",
                "role": "transactions",
                "record_id": "id",
                "fields": {"occurred_at": "at", "amount": "total"},
            },
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rejects = conn.execute(
            "select source, row_number, field, value, reason from cdp.quarantine order by source, row_number"
        ).fetchall()
    iso = "ISO 8601 (2025-06-29T23:30:00, with or without an offset)"
    assert rejects == [
        ("crm", 4, "modified", "March 12th", f"not a readable timestamp: expected the formats %d.%m.%Y %H:%M or {iso}"),
        ("orders", 1, "at", "1735725600", f"not a readable timestamp: expected {iso}; declare the field's formats"),
        (
            "orders",
            2,
            "at",
            "Wed, 01 Jan 2025 10:00:00 GMT",
            f"not a readable timestamp: expected {iso}; declare the field's formats",
        ),
    ]


def test_a_birth_date_with_a_two_digit_year_is_in_the_past(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    # A till system's loyalty members in cp1252, birthdays written dd.mm.yy: 55 is 1955, not 2055.
    (tmp_path / "landing" / "pos").mkdir(parents=True)
    lines = ["Karte;Name;Geburtstag", "1;Müller, Jürgen;05.07.55", "2;Weiß, Käthe;29.02.12", "3;Groß, Anna;31.12.99"]
    (tmp_path / "landing" / "pos" / "members.csv").write_bytes("\r\n".join([*lines, ""]).encode("cp1252"))
    config = _config(
        tmp_path,
        [
            {
                "name": "pos",
                "format": "csv",
                "csv": {"delimiter": ";", "encoding": "cp1252"},
                "glob": "pos/*.csv",
                "role": "person",
                "record_id": "Karte",
                "fields": {"full_name": "Name", "date_of_birth": {"path": "Geburtstag", "formats": ["%d.%m.%y"]}},
            }
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "select source_record_id, first_name, last_name, date_of_birth from clean.person_records order by 1"
        ).fetchall()
        rejects = conn.execute("select count(*) from cdp.quarantine").fetchone()[0]
    assert rows == [
        ("1", "Jürgen", "Müller", date(1955, 7, 5)),
        ("2", "Käthe", "Weiß", date(2012, 2, 29)),
        ("3", "Anna", "Groß", date(1999, 12, 31)),
    ]
    assert rejects == 0


def test_a_parquet_file_flattened_by_json_normalize_maps_by_the_dotted_paths(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # pandas' json_normalize turns {"customer": {"email": ...}} into a column named "customer.email".
    (tmp_path / "landing" / "shop").mkdir(parents=True)
    orders = [
        {"id": 1, "customer": {"email": "ann@example.org", "name": {"first": "Ann"}}},
        {"id": 2, "customer": {"email": "bob@example.org", "name": {"first": "Bob"}}},
    ]
    flat = pd.json_normalize(orders)
    assert list(flat.columns) == ["id", "customer.email", "customer.name.first"]
    flat.to_parquet(tmp_path / "landing" / "shop" / "customers.parquet", index=False)
    config = _config(
        tmp_path,
        [
            {
                "name": "shop",
                "format": "parquet",
                "glob": "shop/*.parquet",
                "role": "person",
                "record_id": "id",
                "fields": {"email": "customer.email", "first_name": "customer.name.first"},
                "identifiers": [{"path": "customer.email", "type": "email"}],
            }
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "select source_record_id, email, first_name from clean.person_records order by 1"
        ).fetchall()
        ids = conn.execute("select id_value from clean.person_identifiers order by 1").fetchall()
        rejects = conn.execute("select reason from cdp.quarantine").fetchall()
    assert rows == [("1", "ann@example.org", "Ann"), ("2", "bob@example.org", "Bob")]
    assert ids == [("ann@example.org",), ("bob@example.org",)]
    assert rejects == []


def test_times_given_in_unix_seconds_or_milliseconds_are_read_as_instants(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A help desk API giving Unix seconds (a JSON number or text), an app's events giving milliseconds.
    (tmp_path / "landing" / "desk").mkdir(parents=True)
    (tmp_path / "landing" / "desk" / "tickets.jsonl").write_text(
        '{"id": "t1", "updated_at": 1735725600}\n'
        '{"id": "t2", "updated_at": "1735725600"}\n'
        '{"id": "t3", "updated_at": "2025-01-01 11:00:00"}\n'
        '{"id": "t4", "updated_at": "1.7e9"}\n'
    )
    (tmp_path / "landing" / "app").mkdir(parents=True)
    (tmp_path / "landing" / "app" / "events.jsonl").write_text('{"id": "e1", "ts": 1735725600123}\n')
    desk = {
        "name": "desk",
        "format": "jsonl",
        "glob": "desk/*.jsonl",
        "role": "events",
        "record_id": "id",
        # Berlin's wall clock for the text without an offset; a Unix time is an instant whatever the zone.
        "timezone": "Europe/Berlin",
        "fields": {"occurred_at": {"path": "updated_at", "formats": ["unix_seconds"]}},
    }
    app = {
        "name": "app",
        "format": "jsonl",
        "glob": "app/*.jsonl",
        "role": "events",
        "record_id": "id",
        "fields": {"occurred_at": {"path": "ts", "formats": ["unix_milliseconds"]}},
    }
    crm = {"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"}
    materialize_stages(_config(tmp_path, [crm, desk, app]), instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        times = dict(conn.execute("select source_record_id, occurred_at::varchar from clean.events").fetchall())
        rejects = conn.execute("select row_number, value from cdp.quarantine").fetchall()
    assert times == {
        "t1": "2025-01-01 10:00:00",
        "t2": "2025-01-01 10:00:00",
        "t3": "2025-01-01 10:00:00",
        "e1": "2025-01-01 10:00:00.123",
    }
    assert rejects == [(4, "1.7e9")]


def test_a_cell_holding_several_e_mail_addresses_is_refused_saying_so(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A HubSpot export, semicolon-separated with a byte order mark, whose e-mail cell holds two addresses.
    (tmp_path / "landing" / "hubspot").mkdir(parents=True)
    crm = {
        "name": "hubspot",
        "format": "csv",
        "csv": {"delimiter": ";"},
        "glob": "hubspot/*.csv",
        "role": "person",
        "record_id": "Record ID",
        "fields": {"email": "Email"},
    }
    # The cell is quoted, as HubSpot quotes a value holding the delimiter.
    (tmp_path / "landing" / "hubspot" / "contacts.csv").write_bytes(
        '\ufeffRecord ID;Email\r\n1;"ann@x.org; ann@y.org"\r\n2;bob@\r\n3;cy@x.org\r\n'.encode()
    )
    materialize_stages(_config(tmp_path, [crm]), instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        emails = dict(conn.execute("select source_record_id, email from clean.person_records").fetchall())
        rejects = conn.execute("select file, row_number, field, reason from cdp.quarantine order by 2").fetchall()
    assert emails == {"1": None, "2": None, "3": "cy@x.org"}
    assert rejects == [
        (
            "hubspot/contacts.csv",
            2,
            "Email",
            "holds 2 e-mail addresses separated by ';', where one is expected: export one address per column and "
            "map each (another identifier path of type email links the others)",
        ),
        ("hubspot/contacts.csv", 3, "Email", "not a valid e-mail address"),
    ]


def test_a_file_whose_name_differs_from_the_glob_only_in_case_is_loaded(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A Windows till writes SALES_0701.CSV; the source's glob says *.csv.
    (tmp_path / "landing" / "POS").mkdir(parents=True)
    (tmp_path / "landing" / "POS" / "SALES_0701.CSV").write_text("id,email\r\n1,ann@x.org\r\n")
    (tmp_path / "landing" / "POS" / "sales_0702.csv").write_text("id,email\r\n2,bob@x.org\r\n")
    (tmp_path / "landing" / "POS" / "notes.txt").write_text("not a source file\n")
    crm = {
        "name": "pos",
        "format": "csv",
        "glob": "pos/sales_*.csv",
        "role": "person",
        "record_id": "id",
        "fields": {"email": "email"},
    }
    materialize_stages(_config(tmp_path, [crm]), instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute("select file, email from clean.person_records order by file").fetchall()
    assert rows == [("POS/SALES_0701.CSV", "ann@x.org"), ("POS/sales_0702.csv", "bob@x.org")]


def test_a_mapping_that_reads_nothing_is_named_in_the_checks_description(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # Birth dates written ISO while the mapping declares the German format: every value is refused.
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    (tmp_path / "landing" / "crm" / "contacts.csv").write_text("id,born\n1,1979-06-06\n2,1985-03-04\n")
    crm = {
        "name": "crm",
        "format": "csv",
        "glob": "crm/*.csv",
        "role": "person",
        "record_id": "id",
        "fields": {"date_of_birth": {"path": "born", "formats": ["%d.%m.%Y"]}},
    }
    result, _ = materialize_stages(_config(tmp_path, [crm]), instance, ("raw", "clean"))
    evaluation = check_evaluation(result, "mapped_fields_have_values", "person_records")
    assert not evaluation.passed
    # What a run's log prints beside "did not pass", with no metadata to open.
    assert evaluation.description == (
        "crm date_of_birth (born): no value in any of 2 cleaned rows (quarantined most: not a valid date in the "
        "format(s) %d.%m.%Y (2 rows))"
    )


def test_a_person_row_without_its_record_id_is_refused_naming_the_path(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # Shop customers read from a Shopify orders export: a guest checkout has no customer object.
    (tmp_path / "landing" / "shopify").mkdir(parents=True)
    (tmp_path / "landing" / "shopify" / "orders.jsonl").write_text(
        '{"id": 1, "customer": {"id": 77, "email": "ann@x.org"}}\n{"id": 2, "customer": null, "email": "g@x.org"}\n'
    )
    shop = {
        "name": "shop",
        "format": "jsonl",
        "glob": "shopify/*.jsonl",
        "role": "person",
        "record_id": "customer.id",
        "fields": {"email": "customer.email"},
    }
    materialize_stages(_config(tmp_path, [shop]), instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rejects = conn.execute("select file, row_number, field, reason, scope from cdp.quarantine").fetchall()
    assert rejects == [("shopify/orders.jsonl", 2, "customer.id", "no record id: customer.id is empty", "row")]


def test_a_letter_the_files_encoding_lost_is_quarantined_not_kept_as_a_question_mark(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A Western till system saves in cp1252, which has ó and ü but no Ł, ś or ő: its export writes '?' for them. Such a
    # name would greet "?ukasz" in an e-mail and never equal the CRM's Łukasz; it is quarantined saying how
    # to get the letter back, and the names cp1252 holds (Müller) are read as they are.
    (tmp_path / "landing" / "pos").mkdir(parents=True)
    names = ["Karte;Vorname;Nachname;Ort", "1;Łukasz;Wiśniewski;Kraków", "2;Jürgen;Müller;Köln", "3;Ödön;Erdős;Győr"]
    (tmp_path / "landing" / "pos" / "members.csv").write_bytes(
        "\r\n".join([*names, ""]).encode("cp1252", errors="replace")
    )
    config = _config(
        tmp_path,
        [
            {
                "name": "pos",
                "format": "csv",
                "csv": {"delimiter": ";", "encoding": "cp1252"},
                "glob": "pos/*.csv",
                "role": "person",
                "record_id": "Karte",
                "fields": {"first_name": "Vorname", "last_name": "Nachname", "city": "Ort"},
            }
        ],
    )
    materialize_stages(config, instance, ("raw", "clean"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "select source_record_id, first_name, last_name, city from clean.person_records order by 1"
        ).fetchall()
        rejects = conn.execute("select row_number, field, value, reason from cdp.quarantine order by 1, 2").fetchall()
    assert rows == [("1", None, None, "Kraków"), ("2", "Jürgen", "Müller", "Köln"), ("3", "Ödön", None, None)]
    lost = "a '?' stands for a letter the file's encoding could not hold (M?ller): export the file again as UTF-8"
    assert rejects == [
        (2, "Nachname", "Wi?niewski", lost),
        (2, "Vorname", "?ukasz", lost),
        (4, "Nachname", "Erd?s", lost),
        (4, "Ort", "Gy?r", lost),
    ]
