"""Access requests: everything the platform holds about a person, as one JSON document.

The person is found as for an erasure (cdp_assets/privacy/erasure.py: every record of the customer through
the identity map and the aliases); the document gathers, from the same tables erasure covers, their source
records as loaded, cleaned records, activity, consent statements and their history, the golden profile with
its traits and the provenance of each value, segment stays, the id's history, what was sent to which
destination when, and what the platform quarantined of their rows. It is written, readable by its owner
only, to `<requests folder>/access/<request id>.json`, with the same sections as CSV files in
`<request id>/`, for the operator to hand over; its content never reaches Dagster's storage.
"""

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cdp_assets.privacy.erasure import profiles_hold_contacts, stage_person
from cdp_assets.privacy.files import export_reader, file_sql, literal_list
from cdp_assets.profiles.assets import CONSENT_SOURCES
from cdp_assets.syncs.assets import export_files, spreadsheet_safe_text
from cdp_assets.syncs.state import fold_acknowledged
from resources.config import CDPConfig, FileDestinationConfig
from resources.durable import replace_atomically
from resources.sql import Sql
from resources.tables import (
    CONSENT_HISTORY,
    DESTINATION_STATE,
    EVENTS,
    ID_HISTORY,
    PERSON_ATTRIBUTES,
    PERSON_RECORDS,
    PRIVACY_REQUESTS,
    SEGMENT_HISTORY,
    SEGMENT_MEMBERSHIP,
    TRANSACTIONS,
)
from resources.warehouse import sql_literal


def _rows(sql: Sql, query: str) -> list[dict[str, Any]]:
    """The query's rows as JSON values. A date stays a date (`1990-04-12`): the frame holds it as a timestamp,
    which would hand the person their birth date as `1990-04-12T00:00:00.000`."""
    frame = sql.frame(query)
    for name, kind in sql.column_types(query):
        if kind == "DATE" and name in frame.columns:
            dates = pd.to_datetime(frame[name])
            frame[name] = dates.dt.strftime("%Y-%m-%d").astype(object).where(dates.notna(), None)
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def access_document(sql: Sql, config: CDPConfig, request_id: str, customers: Sequence[str]) -> dict[str, Any]:
    """The person's data, section by section; every section a list of rows as the warehouse holds them."""
    fold_acknowledged(sql)  # what destinations hold, with what a killed sync left unfolded
    with sql.scratch("access") as tables:
        stage_person(sql, config, tables, {request_id: customers})
        ids, records, raw_rows = tables("ids"), tables("records"), tables("raw_rows")
        by_record = f"join {records} e using (source, source_record_id)"
        by_customer = f"where customer_id in (select customer_id from {ids})"
        raw = []
        for source in config.sources:
            raw += _rows(
                sql,
                f"""select {sql_literal(source.name)} as source, r._file as file, r._row_number as row_number,
                           r._loaded_at as loaded_at, r.record::varchar as record
                    from raw.{source.name} r join {raw_rows} e on e.source = {sql_literal(source.name)}
                     and e.file = r._file and e.row_number = r._row_number order by 2, 3""",
            )
        for row in raw:
            row["record"] = json.loads(row["record"])
        keys = f"select customer_id::varchar from {ids}"
        document = {
            "request_id": request_id,
            "customer_ids": sorted({c for (c,) in sql.rows(f"select distinct customer_id from {ids}")}),
            "source_records": raw,
            "cleaned_records": _rows(sql, f"select t.* from {PERSON_RECORDS.name} t {by_record} order by all"),
            "events": _rows(sql, f"select t.* from {EVENTS.name} t {by_record} order by all"),
            "transactions": _rows(sql, f"select t.* from {TRANSACTIONS.name} t {by_record} order by all"),
            "consent_statements": _rows(sql, f"select t.* from ({CONSENT_SOURCES}) t {by_record} order by all"),
            "consent_history": _rows(sql, f"select t.* from {CONSENT_HISTORY.name} t {by_record} order by all"),
            "attributes": _rows(sql, f"select t.* from {PERSON_ATTRIBUTES.name} t {by_record} order by all"),
            "profile": _rows(sql, f"select * from cdp.golden_profiles {by_customer}"),
            "profile_provenance": _rows(sql, f"select * from cdp.profile_provenance {by_customer} order by all"),
            "segment_membership": _rows(sql, f"select * from {SEGMENT_MEMBERSHIP.name} {by_customer} order by all"),
            "segment_stays": _rows(sql, f"select * from {SEGMENT_HISTORY.name} {by_customer} order by all"),
            "customer_id_history": _rows(sql, f"select * from {ID_HISTORY.name} {by_customer} order by all"),
            "sent_to_destinations": _rows(
                sql,
                f"""select destination, run_id, operation, status, logged_at from syncs.changelog
                    where key in ({keys}) order by logged_at, destination""",
            ),
            "held_by_destinations": _rows(
                sql,
                f"""select destination, key, row_json, present, acknowledged_at from {DESTINATION_STATE.name}
                    where key in ({keys}) order by destination""",
            ),
            "in_file_exports": _exported(sql, config, ids),
            # What the platform refused of their rows, with the value and why: a value cleaning dropped
            # (a phone it could not read) and lines the extract could not read at all, which hold their
            # e-mail address but are in no table above. Erasure removes these rows too.
            "quarantined": _rows(
                sql,
                f"""select q.source, q.file, q.row_number, q.field, q.value, q.reason, q.stage, q.scope
                    from cdp.quarantine q join (select distinct source, file, row_number from {raw_rows}) e
                    using (source, file, row_number) order by all""",
            )
            if sql.table_exists("cdp.quarantine")
            else [],
        }
    return document


def _exported(sql: Sql, config: CDPConfig, ids: str) -> list[dict[str, Any]]:
    """The person's rows in every file a `file` destination wrote (each export is a copy handed to another
    system): found by customer id, or, in an export without one, by the profile's e-mail or phone."""
    found: list[dict[str, Any]] = []
    profile = (
        sql.row(
            f"select list(distinct email), list(distinct phone) from cdp.golden_profiles where customer_id in "
            f"(select customer_id from {ids})"
        )
        if profiles_hold_contacts(sql)
        else None
    )
    emails, phones = profile or ([], [])
    customers = [c for (c,) in sql.rows(f"select distinct customer_id::varchar from {ids}")]
    for destination in config.destinations:
        if not isinstance(destination, FileDestinationConfig):
            continue
        if "customer_id" in destination.fields:
            match = f"customer_id::varchar in (select unnest({literal_list(customers)}))"
        else:
            parts = [
                f"{kind}::varchar in (select unnest({literal_list([v for v in values if v])}))"
                for kind, values in (("email", emails or []), ("phone", phones or []))
                if kind in destination.fields
            ]
            if not parts:
                continue
            match = " or ".join(parts)
        with file_sql() as files:
            for path in export_files(config, destination):
                reader = export_reader(destination, path)
                for row in _rows(files, f"select * from {reader} where coalesce({match}, false)"):
                    found.append({"destination": destination.name, "file": path.name, "row": row})
    return found


def write_access_document(config: CDPConfig, request_id: str, document: dict[str, Any], at: datetime) -> Path:
    """Write the document where the operator picks it up, owner-only; returns its path."""
    folder = config.privacy_requests_path / "access"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{request_id}.json"
    body = json.dumps({"generated_at": at.isoformat(), **document}, indent=2, sort_keys=False, default=str)
    target.touch(mode=0o600, exist_ok=True)

    def write(staging: Path) -> None:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)

    replace_atomically(target, write)
    write_csv_bundle(folder / request_id, document)
    return target


def remove_access_documents(sql: Sql, config: CDPConfig, customers: Sequence[str]) -> int:
    """Delete the access documents (JSON and CSV bundle) written for any of `customers`, the ids an erasure
    removes: an export made before the erasure holds everything erased, and an erasure that left it in the
    requests folder would not be one. The access request's receipt stays, its note saying the document is
    gone. Returns how many documents were removed."""
    if not customers:
        return 0
    requests = [
        r
        for (r,) in sql.rows(
            f"""select request_id from {PRIVACY_REQUESTS.name}
                where type = 'access' and list_has_any(customers, cast(? as varchar[])) order by 1""",
            [list(customers)],
        )
    ]
    folder = config.privacy_requests_path / "access"
    for request_id in requests:
        (folder / f"{request_id}.json").unlink(missing_ok=True)
        shutil.rmtree(folder / request_id, ignore_errors=True)
        sql.execute(
            f"""update {PRIVACY_REQUESTS.name}
                set note = 'document removed: the person was erased since'
                where request_id = ? and note is distinct from 'document removed: the person was erased since'""",
            [request_id],
        )
    return len(requests)


def write_csv_bundle(folder: Path, document: dict[str, Any]) -> None:
    """The same document as one CSV file per section (nested values as JSON), for people who open a spreadsheet:
    text cells are made inert as a file destination's are (`spreadsheet_safe_text`), since the person's own
    name may be `=cmd|...` and whoever checks the bundle before handing it over opens it in Excel."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for section, rows in document.items():
        if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
            continue
        columns = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    json.dumps(v)
                    if isinstance(v, dict | list)
                    else spreadsheet_safe_text(v)
                    if isinstance(v, str)
                    else ("" if v is None else v)
                    for v in map(row.get, columns)
                ]
            )
        path = folder / f"{section}.csv"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # With a byte order mark: Excel reads a CSV file without one in the machine's legacy code page, and
        # the person's own name (Zoë Müller) would come out as ZoÃ« MÃ¼ller in what they are handed.
        with os.fdopen(fd, "w", newline="", encoding="utf-8-sig") as handle:
            handle.write(out.getvalue())
