"""Erasure in the warehouse: find every record of a person, then remove them from every table that holds them.

A person is found from one identifier (an e-mail, a phone, any configured identifier type, a customer id
current or alias, or a source's record id): the records carrying it, the customer those records belong to
in the identity map, and then every record of that customer. An identifier that reaches several customers
(a family mailbox) erases nobody: the request waits for review with the candidate ids.

`COVERAGE` says, for every table the platform writes, how a person's rows are found in it or why the table
holds nothing personal; a test lists the tables of a materialized warehouse and fails on any table with a
record or customer id that is not declared here, so a new table cannot silently keep erased people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from cdp_assets.clean.assets import record_id_sql
from cdp_assets.extract.assets import ensure_raw_table, raw_table
from cdp_assets.extract.tombstones import identifier_checks
from cdp_assets.identity.islands import ISLANDS, ISLANDS_STATE, record_key
from cdp_assets.identity.matching.decisions import DECISIONS_STATE, DECISIONS_TABLE
from cdp_assets.identity.registry import publish_aliases
from cdp_assets.syncs.state import fold_acknowledged
from resources.config import CDPConfig
from resources.identifiers import NORMALISERS
from resources.privacy import keyed_hash, record_kind
from resources.sql import Scratch, Sql
from resources.tables import (
    ACKNOWLEDGED,
    ACTIVITY_CONSENT,
    CLEAN_QUARANTINE,
    CONSENT_HISTORY,
    CONSENT_STATEMENTS,
    CUSTOMER_ALIASES,
    DESTINATION_STATE,
    EVENTS,
    EXTRACT_QUARANTINE,
    FILE_REWRITES,
    HASHED_ROWS,
    ID_HISTORY,
    ID_REGISTRY,
    IDENTIFIERS,
    LOADED_FILES,
    PERSON_ATTRIBUTES,
    PERSON_RECORDS,
    RECORD_IDS,
    ROLES,
    SEGMENT_HISTORY,
    SEGMENT_MEMBERSHIP,
    SUPPRESSIONS,
    TOMBSTONES,
    TRANSACTIONS,
)
from resources.warehouse import sql_literal

# The cleaned table each role's raw rows become (by file and line).
_CLEANED_TABLE = {"person": PERSON_RECORDS.name, "events": EVENTS.name, "transactions": TRANSACTIONS.name}

# Identifier types that are not identifier values a record carries, but names of records or customers.
CUSTOMER_ID = "customer_id"
SOURCE_RECORD = "source_record"


@dataclass(frozen=True)
class Coverage:
    """How a table's rows of an erased person are found: `by` one of the keys below, or `kept` with the reason
    the table holds nothing personal (it stays as it is)."""

    by: str
    note: str = ""


# by: record   -> columns (source, source_record_id) name an erased record
#     record_key -> column `key` is the hash of an erased record's (source, source_record_id) (islands.py)
#     pair     -> (left_source, left_record_id) or (right_source, right_record_id) does
#     raw_row  -> (source, file, row_number) names an erased raw row (raw tables use _file, _row_number)
#     customer -> customer_id is an erased customer id
#     value    -> (id_type, id_value) is an identifier value of an erased record
#     registry -> the id is marked erased and never issued again; history gains an `erased` event
#     sync     -> the destination's acknowledged row becomes a destination erasure; pending and hashed rows go;
#                 changelog and in-flight rows lose the person's key and fields
#     kept     -> nothing personal
COVERAGE: dict[str, Coverage] = {
    "raw.*": Coverage("raw_row"),
    EXTRACT_QUARANTINE.name: Coverage("raw_row"),
    **{CLEAN_QUARANTINE[role].name: Coverage("raw_row") for role in ROLES},
    PERSON_RECORDS.name: Coverage("record"),
    EVENTS.name: Coverage("record"),
    TRANSACTIONS.name: Coverage("record"),
    CONSENT_STATEMENTS.name: Coverage("record"),
    CONSENT_HISTORY.name: Coverage("record"),
    PERSON_ATTRIBUTES.name: Coverage("record"),
    **{table.name: Coverage("record") for table in ACTIVITY_CONSENT.values()},
    **{IDENTIFIERS[role].name: Coverage("record") for role in ROLES},
    RECORD_IDS.name: Coverage("record"),
    "cdp.identity_map": Coverage("record"),
    "identity.shared_identifier_groups": Coverage("record"),
    "identity.evidence": Coverage("pair"),
    "identity.match_features": Coverage("record"),
    DECISIONS_TABLE: Coverage("pair"),
    ISLANDS: Coverage("record_key"),
    "identity.review": Coverage("pair"),
    "identity.shared_identifiers": Coverage("value"),
    "identity.blocked_identifiers": Coverage("value"),
    "identity.separated_links": Coverage("value"),
    "cdp.golden_profiles": Coverage("customer"),
    "meta.profiled_identity": Coverage("record"),
    "meta.profiled_inputs": Coverage("record"),
    "meta.profile_changes": Coverage("customer"),
    "cdp.profile_provenance": Coverage("customer"),
    SEGMENT_MEMBERSHIP.name: Coverage("customer"),
    SUPPRESSIONS.name: Coverage("customer"),
    SEGMENT_HISTORY.name: Coverage("customer"),
    ID_REGISTRY.name: Coverage("registry"),
    CUSTOMER_ALIASES.name: Coverage("registry", "rewritten from the registry: an erased id maps to nothing"),
    ID_HISTORY.name: Coverage("registry", "ids only; an `erased` event is added"),
    DESTINATION_STATE.name: Coverage("sync"),
    ACKNOWLEDGED.name: Coverage("sync"),
    "syncs.pending": Coverage("sync"),
    "syncs.changelog": Coverage("sync"),
    "syncs.in_flight": Coverage("sync"),
    HASHED_ROWS.name: Coverage("sync"),
    "identity.id_runs": Coverage("kept", "one row per identity run: its settings"),
    "identity.model": Coverage("kept", "the matching model's weights"),
    "identity.match_features_state": Coverage("kept", "the model's name and a row count"),
    ISLANDS_STATE: Coverage("kept", "a row count"),
    DECISIONS_STATE: Coverage("kept", "the model's name, a setting and a version"),
    "identity.model_term_frequencies": Coverage(
        "kept", "shares of values on two or more records, under their md5: no value as written"
    ),
    "identity.model_name_counts": Coverage(
        "kept", "counts of first names on two or more person records, under their md5: no name as written"
    ),
    "identity.links": Coverage("kept", "a view over the identifier tables"),
    "cdp.quarantine": Coverage("kept", "a view over the quarantine tables"),
    "meta.loaded_files": Coverage("kept", "file names and hashes; a rewritten file's hash is updated"),
    "syncs.file_exports": Coverage("kept", "file names and row counts; the files are rewritten"),
    "syncs.batch_sequence": Coverage("kept", "batch numbers"),
    "privacy.requests": Coverage("kept", "receipts: ids, counts and statuses"),
    "privacy.tombstones": Coverage("kept", "keyed hashes only"),
    "privacy.destination_erasures": Coverage("kept", "keys and hashed identifiers until confirmed"),
    FILE_REWRITES.name: Coverage("kept", "file names and line numbers"),
}


def coverage_of(table: str) -> Coverage | None:
    """The declared coverage of a qualified table name (`raw.*` covers every source's raw table)."""
    return COVERAGE.get(table) or (COVERAGE["raw.*"] if table.startswith("raw.") else None)


@dataclass
class Request:
    """One privacy request as received; `value` never leaves this process except into the warehouse's lookup."""

    request_id: str
    type: str
    id_type: str
    value: str
    reference: str | None = None
    source: str | None = None


@dataclass
class Resolution:
    """Who a request names: its status, the customers found and, when ambiguous, the candidates."""

    status: str
    customers: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    note: str | None = None


def match_value(config: CDPConfig, id_type: str, value: str) -> str | None:
    """The identifier in the form the warehouse stores it (its match key), or None when it is not valid."""
    kind = config.identity.type_config(id_type).normalize
    region = next((s.default_country for s in config.sources if s.role == "person"), "US")
    return NORMALISERS[kind].match_key(value, region)


def known_id_types(config: CDPConfig) -> list[str]:
    """Every identifier type a request may name."""
    declared = set(config.identity.identifier_types) | {i.type for s in config.sources for i in s.identifiers}
    return sorted(declared) + [CUSTOMER_ID, SOURCE_RECORD]


_ALL_IDENTIFIERS = " union all ".join(
    f"select source, source_record_id, id_type, id_value from {IDENTIFIERS[role].name}" for role in ROLES
)


def resolve(sql: Sql, config: CDPConfig, request: Request) -> Resolution:
    """Find the person one request names; see `resolve_all`."""
    return resolve_all(sql, config, [request])[request.request_id]


def resolve_all(sql: Sql, config: CDPConfig, requests: Sequence[Request], key: bytes = b"") -> dict[str, Resolution]:
    """Find the person each request names: `not_found`, `needs_review` (several customers), `rejected` (not a
    valid value of its type) or `found`. One query for the whole batch: a thousand requests cost one join over
    the identifier tables, not a thousand scans. A `not_found` whose value an earlier erasure left a tombstone
    of (with `key`), or whose customer id was erased, says so in its note: "we erased you already" and "we
    never held you" are different answers to the requester."""
    resolutions: dict[str, Resolution] = {}
    rows = []
    values: dict[str, str | None] = {}
    for request in requests:
        if request.id_type in (CUSTOMER_ID, SOURCE_RECORD):
            value: str | None = request.value.strip()
        else:
            value = match_value(config, request.id_type, request.value)
            if value is None:
                resolutions[request.request_id] = Resolution(
                    "rejected", note=f"the value is not a valid {request.id_type}"
                )
                continue
        rows.append((request.request_id, request.id_type, value, request.source))
        values[request.request_id] = value
    # Before the identity stage first ran there is nobody to find.
    resolved = sql.table_exists("cdp.identity_map")
    frame = pd.DataFrame(rows, columns=["request_id", "id_type", "value", "source"], dtype=object).astype("string")
    with sql.registered("resolve_frame", frame):
        found = (
            []
            if not rows or not resolved
            else sql.rows(
                f"""with seeds as (
                    select r.request_id, i.source, i.source_record_id from resolve_frame r
                    join ({_ALL_IDENTIFIERS}) i on i.id_type = r.id_type and i.id_value = r.value
                    union all
                    select request_id, source, value from resolve_frame where id_type = '{SOURCE_RECORD}'
                ),
                customers as (
                    select s.request_id, m.customer_id from seeds s
                    join cdp.identity_map m using (source, source_record_id)
                    union all
                    select r.request_id, a.customer_id from resolve_frame r
                    join {CUSTOMER_ALIASES.name} a on a.alias_id = r.value and a.status <> 'erased'
                    where r.id_type = '{CUSTOMER_ID}'
                )
                select request_id, list(distinct customer_id order by customer_id) from customers
                where customer_id is not null group by request_id"""
            )
        )
    by_request = dict(found)
    for request in requests:
        if request.request_id in resolutions:
            continue
        customers = by_request.get(request.request_id) or []
        if not customers:
            resolutions[request.request_id] = Resolution(
                "not_found", note=_erased_before(sql, request, values[request.request_id], key)
            )
        elif len(customers) > 1 and request.id_type not in (SOURCE_RECORD, CUSTOMER_ID):
            resolutions[request.request_id] = Resolution(
                "needs_review",
                candidates=customers,
                note=f"the {request.id_type} is carried by {len(customers)} customers; "
                f"send the {request.type} request again for one of them by customer_id",
            )
        else:
            resolutions[request.request_id] = Resolution("found", customers=customers)
    return resolutions


def _erased_before(sql: Sql, request: Request, value: str | None, key: bytes) -> str | None:
    """`erased before by <request> on <date>` when the request names what an earlier erasure removed: an erased
    customer id, or a value or record id its tombstones hold. None otherwise (or without the key)."""
    if request.id_type == CUSTOMER_ID:
        erased = sql.rows(f"select 1 from {CUSTOMER_ALIASES.name} where alias_id = ? and status = 'erased'", [value])
        return "erased before: the customer id is erased" if erased else None
    if not key or value is None or (request.id_type == SOURCE_RECORD and not request.source):
        return None
    kind = record_kind(request.source) if request.id_type == SOURCE_RECORD else request.id_type
    found = sql.rows(
        f"select request_id, erased_at from {TOMBSTONES.name} where hash = ?", [keyed_hash(key, kind, value)]
    )
    if not found:
        return None
    earlier, at = found[0]
    return f"erased before, by request {earlier} on {at:%Y-%m-%d}"


@dataclass
class ErasureBatch:
    """What one batch erased, for the receipts and for the files and destinations that follow."""

    rows_removed: dict[str, dict[str, int]] = field(default_factory=dict)  # request -> table -> rows
    customer_ids: list[str] = field(default_factory=list)
    destination_erasures: int = 0


def _count_and_delete(sql: Sql, batch: ErasureBatch, table: str, where: str, request_of: str, using: str = "") -> None:
    """Count the rows `where` selects in `table` (alias t) per request, then delete them."""
    for request_id, rows in sql.rows(f"select {request_of}, count(*) from {table} t {using} where {where} group by 1"):
        batch.rows_removed.setdefault(request_id, {})[table] = int(rows)
    sql.execute(f"delete from {table} t where {where}")


def erase(
    sql: Sql,
    config: CDPConfig,
    found: Mapping[str, Sequence[str]],
    key: bytes,
    *,
    run_id: str,
    at: datetime,
) -> ErasureBatch:
    """Remove the customers of `found` (request id -> customer ids) from every table of `COVERAGE`, leave a
    tombstone of each identifier only they carried, and queue each destination's removal; one transaction."""
    batch = ErasureBatch()
    # What destinations accepted is folded into their state first: the erasure asks each to delete what it holds.
    fold_acknowledged(sql)
    with sql.scratch("erase") as tables:
        stage_person(sql, config, tables, found)
        batch.customer_ids = [c for (c,) in sql.rows(f"select distinct customer_id from {tables('ids')} order by 1")]
        lines = lines_of(sql, tables)
        with sql.transaction():
            batch.destination_erasures = _queue_destinations(sql, config, tables, batch)
            _delete(sql, config, tables, batch)
            _tombstones(sql, tables, key, at)
            _mark_registry(sql, tables, run_id, at)
            queue_file_rewrites(sql, run_id, lines, exports=True)
    return batch


def queue_file_rewrites(
    sql: Sql, run_id: str, lines: Mapping[tuple[str, str], tuple[list[int], list[int]]], *, exports: bool
) -> None:
    """Record the landing files (and, for an erasure, the exports) the deleted rows must leave too, and what
    the warehouse owes after any deletion: its read snapshot published again and its file compacted
    (`warehouse`), and for an erasure the other profiles and segments brought up to the removal
    (`profiles`). Recorded with the deletion, so a run that dies before they are done leaves them to the
    next `privacy_request` run rather than to a refresh that may never come."""
    rows = [(run_id, "landing", s, f, erased, known) for (s, f), (erased, known) in lines.items()]
    rows.append((run_id, "warehouse", None, None, [], []))
    if exports:
        rows.append((run_id, "exports", None, None, [], []))
        rows.append((run_id, "profiles", None, None, [], []))
    if rows:
        frame = pd.DataFrame(rows, columns=["queued_by", "target", "source", "file", "lines", "known_lines"])
        with sql.registered("rewrites_frame", frame):
            sql.execute(
                f"""insert into {FILE_REWRITES.name}
                    select r.queued_by, r.target, r.source, r.file, f.sha256, r.lines, r.known_lines
                    from rewrites_frame r left join {LOADED_FILES.name} f using (source, file)"""
            )


def stage_person(sql: Sql, config: CDPConfig, tables: Scratch, found: Mapping[str, Sequence[str]]) -> None:
    """Scratch tables `ids`, `records`, `raw_rows` and `values` of `tables`: per request (request id ->
    customer ids), every id the customers carry, their records, raw rows and identifier values."""
    frame = pd.DataFrame(
        [(request_id, customer) for request_id, customers in found.items() for customer in customers],
        columns=["request_id", "customer_id"],
    )
    customers = tables.frame("customers", frame)
    ids, records, raw_rows, values = tables("ids"), tables("records"), tables("raw_rows"), tables("values")
    # Every id that names the customer today: itself and the ids merged into it.
    sql.create_table_as(
        ids,
        f"""select c.request_id, r.customer_id from {customers} c
            join {ID_REGISTRY.name} r on r.current_id = c.customer_id
            union select c.request_id, r.customer_id from {customers} c
            join {ID_REGISTRY.name} r on r.customer_id = c.customer_id
            union select request_id, customer_id from {customers}""",
        temporary=True,
    )
    sql.create_table_as(
        records,
        f"""select distinct i.request_id, m.source, m.source_record_id from cdp.identity_map m
            join {ids} i using (customer_id)
            union select distinct i.request_id, r.source, r.source_record_id from {RECORD_IDS.name} r
            join {ids} i using (customer_id)""",
        temporary=True,
    )
    # The raw rows of each record: by the record id each source's rows carry.
    selects = [
        f"""select e.request_id, {sql_literal(s.name)} as source, r._file as file, r._row_number as row_number
            from {ensure_raw_table(sql, s)} r
            join {records} e on e.source = {sql_literal(s.name)} and e.source_record_id = {record_id_sql(s)}"""
        for s in config.sources
    ]
    sql.create_table_as(raw_rows, " union ".join(selects), temporary=True)
    # Identifier values, and the person records' own e-mail and phone under their normaliser's name (the
    # extract checks a source's e-mail and phone fields that way, identifiers or not).
    sql.create_table_as(
        values,
        f"""select distinct e.request_id, i.id_type, i.id_value from ({_ALL_IDENTIFIERS}) i
            join {records} e using (source, source_record_id)
            union select distinct e.request_id, 'email', p.email_match_key from {PERSON_RECORDS.name} p
            join {records} e using (source, source_record_id) where p.email_match_key is not null
            union select distinct e.request_id, 'phone', p.phone from {PERSON_RECORDS.name} p
            join {records} e using (source, source_record_id) where p.phone is not null""",
        temporary=True,
    )
    _add_unresolved_rows(sql, config, tables)


def _add_unresolved_rows(sql: Sql, config: CDPConfig, tables: Scratch) -> None:
    """Add to `raw_rows` the person's rows no customer holds: raw rows cleaning refused (so identity never saw
    them) that carry one of the person's identifier values or record ids, and lines the extract could not read
    at all whose quarantined text holds one of their e-mail addresses."""
    raw_rows, values, records = tables("raw_rows"), tables("values"), tables("records")
    wanted: dict[tuple[str, str], str] = {
        (kind, value): request
        for request, kind, value in sql.rows(f"select request_id, id_type, id_value from {values}")
    }
    wanted.update(
        {
            (record_kind(source), record): request
            for request, source, record in sql.rows(f"select request_id, source, source_record_id from {records}")
        }
    )
    found: list[tuple[str, str, str, int]] = []
    refused = tables("refused_rows")
    for source in config.sources:
        cleaned = _CLEANED_TABLE[source.role]
        # Found once per source (an anti-join over every raw row), then read by each identifier check.
        sql.create_table_as(
            refused,
            f"select r.* from {raw_table(source)} r where not exists (select 1 from {cleaned} c "
            f"where c.source = {sql_literal(source.name)} and c.file = r._file and c.row_number = r._row_number)",
            temporary=True,
        )
        for _, expr, kind, match in identifier_checks(config, source):
            for file, row_number, value in sql.rows(
                f"select _file, _row_number, {expr} from {refused} where {expr} is not null"
            ):
                matched = match(value) if match else value
                if matched is not None and (kind, matched) in wanted:
                    found.append((wanted[(kind, matched)], source.name, file, int(row_number)))
    emails = sorted({(value, request) for (kind, value), request in wanted.items() if kind == "email"})
    if emails:
        with sql.registered("erased_emails", pd.DataFrame(emails, columns=["email", "request_id"])):
            found += [
                (request, source, file, int(row_number))
                for request, source, file, row_number in sql.rows(
                    # Each address-like token of the text, joined on equality: a hash join, where a
                    # search of every text for every address was a nested loop over both.
                    f"""select distinct e.request_id, q.source, q.file, q.row_number from (
                            select source, file, row_number,
                                   unnest(regexp_extract_all(lower(value), '[a-z0-9._%+-]+@[a-z0-9.-]+')) as token
                            from {EXTRACT_QUARANTINE.name}
                            where scope = 'row' and row_number is not null and contains(value, '@')) q
                        join erased_emails e on rtrim(q.token, '.') = e.email"""
                )
            ]
    if found:
        frame = pd.DataFrame(found, columns=["request_id", "source", "file", "row_number"])
        with sql.registered("unresolved_rows", frame):
            sql.execute(f"insert into {raw_rows} select * from unresolved_rows except select * from {raw_rows}")


def lines_of(sql: Sql, tables: Scratch) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """Per landing file holding an erased row: the erased rows' line numbers, and every row's line number the
    warehouse knows (loaded or quarantined), which bound where each erased record ends in the file."""
    erased: dict[tuple[str, str], list[int]] = {}
    for source, file, line in sql.rows(
        f"select distinct source, file, row_number from {tables('raw_rows')} order by 1, 2, 3"
    ):
        erased.setdefault((source, file), []).append(int(line))
    found: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for (source, file), lines in erased.items():
        known = sql.rows(
            f"""select _row_number from raw.{source} where _file = ?
                union select row_number from {EXTRACT_QUARANTINE.name}
                where source = ? and file = ? and row_number is not null order by 1""",
            [file, source, file],
        )
        found[(source, file)] = (lines, [int(n) for (n,) in known])
    return found


def _delete(sql: Sql, config: CDPConfig, tables: Scratch, batch: ErasureBatch) -> None:
    ids, records, raw_rows, values = tables("ids"), tables("records"), tables("raw_rows"), tables("values")
    for source in config.sources:
        _count_and_delete(
            sql,
            batch,
            raw_table(source),
            f"exists (select 1 from {raw_rows} e where e.source = {sql_literal(source.name)} "
            "and e.file = t._file and e.row_number = t._row_number)",
            "e.request_id",
            f"join {raw_rows} e on e.source = {sql_literal(source.name)} and e.file = t._file "
            "and e.row_number = t._row_number",
        )
    for table in (EXTRACT_QUARANTINE.name, *(CLEAN_QUARANTINE[role].name for role in ROLES)):
        _count_and_delete(
            sql,
            batch,
            table,
            f"exists (select 1 from {raw_rows} e where e.source = t.source and e.file = t.file "
            "and e.row_number = t.row_number)",
            "e.request_id",
            f"join {raw_rows} e on e.source = t.source and e.file = t.file and e.row_number = t.row_number",
        )
    # A table the warehouse does not have yet (its stage has not run since it was added) holds nobody.
    present = {f"{schema}.{name}" for schema, name in sql.table_names()}
    for table, coverage in COVERAGE.items():
        if table not in present:
            continue
        if coverage.by == "record":
            _count_and_delete(
                sql,
                batch,
                table,
                f"exists (select 1 from {records} e where e.source = t.source "
                "and e.source_record_id = t.source_record_id)",
                "e.request_id",
                f"join {records} e on e.source = t.source and e.source_record_id = t.source_record_id",
            )
        elif coverage.by == "record_key":
            _count_and_delete(
                sql,
                batch,
                table,
                f"exists (select 1 from {records} e where {record_key('e')} = t.key)",
                "e.request_id",
                f"join {records} e on {record_key('e')} = t.key",
            )
        elif coverage.by == "pair":
            # Two equi-joins (hash joins); one join on `left or right` would compare every pair with every record.
            hit = "exists (select 1 from {1} e where e.source = t.{0}_source and e.source_record_id = t.{0}_record_id)"
            either = f"{hit.format('left', records)} or {hit.format('right', records)}"
            # A pair is named by its two records (each pair is one row), so a pair of two erased records
            # counts once per request.
            pair = "t.left_source, t.left_record_id, t.right_source, t.right_record_id"
            sides = " union ".join(
                f"select {pair}, e.request_id from {table} t join {records} e "
                f"on e.source = t.{side}_source and e.source_record_id = t.{side}_record_id"
                for side in ("left", "right")
            )
            for request_id, rows in sql.rows(f"select request_id, count(*) from ({sides}) group by 1"):
                batch.rows_removed.setdefault(request_id, {})[table] = int(rows)
            sql.execute(f"delete from {table} t where {either}")
        elif coverage.by == "customer":
            _count_and_delete(
                sql,
                batch,
                table,
                f"t.customer_id in (select customer_id from {ids})",
                "e.request_id",
                f"join {ids} e using (customer_id)",
            )
        elif coverage.by == "value":
            _count_and_delete(
                sql,
                batch,
                table,
                f"exists (select 1 from {values} e where e.id_type = t.id_type and e.id_value = t.id_value)",
                "e.request_id",
                f"join {values} e on e.id_type = t.id_type and e.id_value = t.id_value",
            )


def _tombstones(sql: Sql, tables: Scratch, key: bytes, at: datetime) -> None:
    """A keyed hash of each erased record id, and of each identifier value no remaining record carries."""
    records, values = tables("records"), tables("values")
    rows: list[tuple[str, str, str]] = []
    for request_id, source, record_id in sql.rows(f"select request_id, source, source_record_id from {records}"):
        rows.append((keyed_hash(key, record_kind(source), record_id), record_kind(source), request_id))
    for request_id, id_type, id_value in sql.rows(
        f"""select request_id, id_type, id_value from {values} v
            where not exists (select 1 from ({_ALL_IDENTIFIERS}) i where i.id_type = v.id_type
                              and i.id_value = v.id_value)
              and not (v.id_type = 'email' and exists (select 1 from {PERSON_RECORDS.name} p
                                                        where p.email_match_key = v.id_value))
              and not (v.id_type = 'phone' and exists (select 1 from {PERSON_RECORDS.name} p
                                                        where p.phone = v.id_value))"""
    ):
        rows.append((keyed_hash(key, id_type, id_value), id_type, request_id))
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=["hash", "kind", "request_id"]).drop_duplicates("hash")
    with sql.registered("tombstone_frame", frame):
        sql.execute(
            "insert into privacy.tombstones select hash, kind, request_id, ? from tombstone_frame "
            "on conflict do nothing",
            [at],
        )


def _mark_registry(sql: Sql, tables: Scratch, run_id: str, at: datetime) -> None:
    """Mark every id of the erased customers erased (never issued again) and record the event."""
    ids = tables("ids")
    sql.execute(
        f"""insert into {ID_HISTORY.name}
            select (select coalesce(max(run_seq), 0) from identity.id_runs), ?, ?, 'erased', customer_id, null, 0,
                   'privacy request ' || min(request_id)
            from {ids} where customer_id in (select customer_id from {ID_REGISTRY.name} where status <> 'erased')
            group by customer_id""",
        [run_id, at],
    )
    sql.execute(
        f"""update {ID_REGISTRY.name} set status = 'erased', current_id = null, changed_at = ?
            where customer_id in (select customer_id from {ids})""",
        [at],
    )
    publish_aliases(sql)


def profiles_hold_contacts(sql: Sql) -> bool:
    """Whether the golden profiles exist with e-mail and phone columns (a configuration may map neither):
    the keys, besides the customer id, a destination that is no longer configured may hold a person by."""
    profiles = "cdp.golden_profiles"
    return sql.table_exists(profiles) and {"email", "phone"} <= set(sql.columns(f"select * from {profiles}"))


def _queue_destinations(sql: Sql, config: CDPConfig, tables: Scratch, batch: ErasureBatch) -> int:
    """Turn each row destination's acknowledged rows of the person into destination erasures, and take the
    person out of the sync bookkeeping: pending and hashed rows go, changelog and in-flight rows lose key
    and fields."""
    ids = tables("ids")
    keys = tables("sync_keys")
    selects = []
    # A destination taken out of cdp.yaml still holds what it was sent, and its bookkeeping stays (so it
    # resumes where it was if it comes back). Its key column is no longer known: its rows are found by the
    # customer id or the profile's e-mail or phone, the keys a destination is given, and its erasure is
    # held until it is configured again. An audience's (it has hashed rows) keeps the hashes to remove.
    configured = [d.name for d in config.destinations]
    contact = profiles_hold_contacts(sql)
    profile_keys = "[i.customer_id, p.email, p.phone]" if contact else "[i.customer_id]"
    joined = f"{ids} i left join cdp.golden_profiles p using (customer_id)" if contact else f"{ids} i"
    for (name,) in sql.rows(
        f"select distinct destination from {DESTINATION_STATE.name} where not list_contains(?, destination) order by 1",
        [configured],
    ):
        selects.append(
            f"""select i.request_id, {sql_literal(name)} as destination, k.key::varchar as key,
                       exists (select 1 from {HASHED_ROWS.name} h where h.destination = {sql_literal(name)}) as hashed,
                       false as configured
                from {joined}, unnest({profile_keys}) k(key)"""
        )
    for destination in config.destinations:
        if destination.type == "file":
            continue
        column = destination.primary_key
        key_sql = "customer_id" if column == CUSTOMER_ID else f'(select p."{column}" from cdp.golden_profiles p '
        if column != CUSTOMER_ID:
            key_sql += "where p.customer_id = i.customer_id)::varchar"
        selects.append(
            f"select i.request_id, {sql_literal(destination.name)} as destination, {key_sql} as key, "
            f"{'true' if destination.type == 'hashed_audience' else 'false'} as hashed, true as configured "
            f"from {ids} i"
        )
    if not selects:
        sql.create_table_as(
            keys,
            "select null::varchar request_id, null::varchar destination, null::varchar key, false as hashed, "
            "true as configured where false",
            temporary=True,
        )
    else:
        sql.create_table_as(
            keys, f"select * from ({' union all '.join(selects)}) where key is not null", temporary=True
        )
    # Counted before and after rather than read from the insert, which only DuckDB answers with a count.
    before = int(sql.value("select count(*) from privacy.destination_erasures"))
    sql.execute(
        f"""insert into privacy.destination_erasures
            select k.request_id, k.destination, k.key,
                   case when k.hashed then s.row_json else '{{}}' end,
                   case when k.configured then 'pending' else 'held' end, 0, null, null
            from {keys} k join {DESTINATION_STATE.name} s on s.destination = k.destination and s.key = k.key
            where s.present
            on conflict do nothing"""
    )
    queued = int(sql.value("select count(*) from privacy.destination_erasures")) - before
    in_keys = f"exists (select 1 from {keys} k where k.destination = t.destination and k.key = t.key)"
    # The journal of accepted rows is folded before an erasure (`fold_acknowledged`), so it holds none of
    # the person's rows here; it is cleared of their keys all the same.
    for table in (DESTINATION_STATE.name, ACKNOWLEDGED.name, "syncs.pending", HASHED_ROWS.name):
        _count_and_delete(
            sql,
            batch,
            table,
            in_keys,
            "k.request_id",
            f"join {keys} k on k.destination = t.destination and k.key = t.key",
        )
    for request_id, rows in sql.rows(
        f"select k.request_id, count(*) from syncs.changelog t join {keys} k "
        "on k.destination = t.destination and k.key = t.key group by 1"
    ):
        batch.rows_removed.setdefault(request_id, {})["syncs.changelog"] = int(rows)
    sql.execute(f"update syncs.changelog t set key = null, error = null where {in_keys}")
    for destination, erased in sql.rows(f"select destination, list(distinct key) from {keys} group by 1"):
        sql.execute(
            """update syncs.in_flight set changes = list_filter(changes, lambda c: not list_contains(?, c.key))
               where destination = ? and list_has_any(list_transform(changes, lambda c: c.key), ?)""",
            [erased, destination, erased],
        )
    return queued
