"""The warehouse's shared tables, each declared once: its columns (name → DuckDB type, in order).

A declaration is what the DDL that creates a table, the statement that rebuilds it and the condition
checker's schemas are all generated from, so a column cannot be added, renamed or retyped in one place
and not the others. A statement that rebuilds a table goes through `Table.replace`, which refuses a
select producing a column the table does not declare or missing one it does, naming them, instead of
dropping or NULL-filling it quietly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from resources.sql import Sql

# Money is exact: amounts are DECIMAL with a fixed scale, so a sum is the same whatever order DuckDB's
# threads add it in (a DOUBLE sum changes its last bits from run to run, and a customer at a quintile
# boundary then leaves and re-enters a segment with nothing changed). An amount written with more
# decimals is rounded to MONEY_SCALE, half away from zero (12.345 -> 12.35). Sums keep the scale with
# DuckDB's widest precision; averages are rounded to the same scale (see traits.exact_average).
MONEY_SCALE = 2
AMOUNT_TYPE = f"DECIMAL(18,{MONEY_SCALE})"
MONEY_TOTAL_TYPE = f"DECIMAL(38,{MONEY_SCALE})"


class TableShapeError(RuntimeError):
    """A statement meant to fill a table produces other columns than the table declares."""


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


# Every declared table's primary key, by qualified name: Spark's tables enforce no key, so its runner looks
# up here which columns `insert or replace` and `on conflict` go by (resources/spark/runner.py).
_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}


def primary_key_of(name: str) -> tuple[str, ...]:
    """The primary key declared for table `name` (schema.table), or () when it declares none."""
    return _PRIMARY_KEYS.get(name, ())


@dataclass(frozen=True)
class Table:
    """A table's qualified name and columns (name → DuckDB type, in order).

    `added_later` names columns that warehouses made by an earlier version lack; creating the table adds
    them, so an existing warehouse gets the declared shape too.
    """

    name: str
    columns: Mapping[str, str]
    primary_key: tuple[str, ...] = ()
    added_later: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.primary_key:
            _PRIMARY_KEYS[self.name] = self.primary_key

    def create_sql(self) -> str:
        """`create table if not exists` with the declared columns, then any column added since."""
        items = [f"{_quoted(c)} {t}" for c, t in self.columns.items() if c not in self.added_later]
        if self.primary_key:
            items.append(f"primary key ({', '.join(map(_quoted, self.primary_key))})")
        statements = [f"create table if not exists {self.name} ({', '.join(items)})"]
        statements += [
            f"alter table {self.name} add column if not exists {_quoted(c)} {self.columns[c]}" for c in self.added_later
        ]
        return ";\n".join(statements) + ";\n"

    def projection(self, expressions: Mapping[str, str] | None = None) -> str:
        """A select list giving exactly the declared columns, in order: each column of the same name, or the
        SQL in `expressions` for it."""
        expressions = expressions or {}
        unknown = sorted(set(expressions) - set(self.columns))
        if unknown:
            raise TableShapeError(f"{self.name} declares no column(s) {unknown}; it has {', '.join(self.columns)}")
        return ", ".join(f"{expressions.get(c, _quoted(c))} as {_quoted(c)}" for c in self.columns)

    def check_select(self, sql: Sql, select_sql: str) -> None:
        """Raise TableShapeError unless `select_sql` produces each declared column once and nothing else.

        Only the statement is bound, nothing runs, so the check costs next to nothing."""
        produced = sql.columns(select_sql)
        problems = []
        if doubled := sorted({c for c in produced if produced.count(c) > 1}):
            problems.append(f"selected more than once: {doubled}")
        if extra := [c for c in produced if c not in self.columns]:
            problems.append(f"selected but not declared: {extra}")
        if missing := [c for c in self.columns if c not in produced]:
            problems.append(f"declared but not selected: {missing}")
        if problems:
            raise TableShapeError(
                f"The statement that fills {self.name} does not match its declaration: {'; '.join(problems)}. "
                "Declare the column, or stop selecting it."
            )

    def replace(self, sql: Sql, select_sql: str) -> None:
        """Rebuild the table from `select_sql`, which must produce exactly the declared columns (in any
        order); they are stored in the declared order and types."""
        sql.create_table_as(self.name, self._cast(sql, select_sql))

    def insert(self, sql: Sql, select_sql: str) -> None:
        """Append the rows of `select_sql`, held to the declaration as `replace` holds a rebuild: for a
        stage that replaces only some customers' rows."""
        listed = ", ".join(map(_quoted, self.columns))
        sql.execute(f"insert into {self.name} ({listed}) {self._cast(sql, select_sql)}")

    def _cast(self, sql: Sql, select_sql: str) -> str:
        self.check_select(sql, select_sql)
        casts = ", ".join(f"{_quoted(c)}::{t} as {_quoted(c)}" for c, t in self.columns.items())
        return f"select {casts} from ({select_sql})"


# Where in its landing file a cleaned row came from, and when the file was loaded: lineage, not data a
# trait or a segment condition may use.
LINEAGE_COLUMNS: dict[str, str] = {"file": "VARCHAR", "row_number": "BIGINT", "loaded_at": "TIMESTAMP"}

# Every reject, from extraction or cleaning: one shape, so cdp.quarantine is their union.
QUARANTINE_COLUMNS: dict[str, str] = {
    "stage": "VARCHAR",
    "source": "VARCHAR",
    "file": "VARCHAR",
    "row_number": "BIGINT",
    "field": "VARCHAR",
    "value": "VARCHAR",
    "reason": "VARCHAR",
    "scope": "VARCHAR",
    "quarantined_at": "TIMESTAMP",
}

LOADED_FILES = Table(
    "meta.loaded_files",
    {
        "source": "VARCHAR",
        "file": "VARCHAR",
        "sha256": "VARCHAR",
        "size_bytes": "BIGINT",
        "rows_loaded": "BIGINT",
        "rows_rejected": "BIGINT",
        "status": "VARCHAR",
        "loaded_at": "TIMESTAMP",
        # What the file was read with; a failed file is tried again when it changes (see cdp_assets.extract).
        "read_settings": "VARCHAR",
        # The file's modification time when its sha256 was last taken: a file of the same size and time is
        # not read again to hash it (as the landing sensor judges files, by size and time).
        "mtime_ns": "BIGINT",
    },
    primary_key=("source", "file"),
    added_later=("read_settings", "mtime_ns"),
)
EXTRACT_QUARANTINE = Table("meta.extract_quarantine", QUARANTINE_COLUMNS)
# Which raw files cleaning has read, as loaded when it read them, and with which cleaning settings: a
# file loaded again since, a new one or one gone is what the next cleaning run reads or removes.
CLEANED_FILES = Table(
    "meta.cleaned_files",
    {"role": "VARCHAR", "source": "VARCHAR", "file": "VARCHAR", "loaded_at": "TIMESTAMP", "settings": "VARCHAR"},
)
# The files of person records the expectations suite found sound, as they were then: their rows and a digest
# of the columns it reads, under the suite's fingerprint. Such a file is not validated again while it stays
# so (cdp_assets/clean/checks.py).
VALIDATED_FILES = Table(
    "meta.expectations_validated_files",
    {"source": "VARCHAR", "file": "VARCHAR", "rows": "BIGINT", "digest": "HUGEINT", "suite": "VARCHAR"},
)

PERSON_RECORDS = Table(
    "clean.person_records",
    {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "file": "VARCHAR",
        "row_number": "BIGINT",
        "loaded_at": "TIMESTAMP",
        "trust": "INTEGER",
        "is_latest": "BOOLEAN",
        "full_name": "VARCHAR",
        "first_name": "VARCHAR",
        "middle_name": "VARCHAR",
        "last_name": "VARCHAR",
        "email": "VARCHAR",
        "email_match_key": "VARCHAR",
        "phone": "VARCHAR",
        "address_line1": "VARCHAR",
        "address_line2": "VARCHAR",
        "address_key": "VARCHAR",
        "city": "VARCHAR",
        "region": "VARCHAR",
        "postal_code": "VARCHAR",
        "country": "VARCHAR",
        "date_of_birth": "DATE",
        "updated_at": "TIMESTAMP",
    },
)
EVENTS = Table(
    "clean.events",
    {
        "source": "VARCHAR",
        "event_id": "VARCHAR",
        "source_record_id": "VARCHAR",
        "event": "VARCHAR",
        "occurred_at": "TIMESTAMP",
        "status": "VARCHAR",
        # The account a Segment `group` call puts the user in.
        "group_id": "VARCHAR",
        # The event's own JSON objects (Segment's properties, context and traits), NULL where a source has none.
        "properties": "JSON",
        "context": "JSON",
        "traits": "JSON",
        **LINEAGE_COLUMNS,
    },
    added_later=("group_id", "properties", "context", "traits"),
)
TRANSACTIONS = Table(
    "clean.transactions",
    {
        "source": "VARCHAR",
        "event_id": "VARCHAR",
        "source_record_id": "VARCHAR",
        "occurred_at": "TIMESTAMP",
        "amount": AMOUNT_TYPE,
        "currency": "VARCHAR",
        "status": "VARCHAR",
        **LINEAGE_COLUMNS,
    },
)
# The cleaned activity tables by role: what traits aggregate.
ACTIVITY_TABLES: dict[str, Table] = {"events": EVENTS, "transactions": TRANSACTIONS}
CONSENT_STATEMENTS = Table(
    "clean.consent_statements",
    {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "purpose": "VARCHAR",
        "granted": "BOOLEAN",
        "stated_at": "TIMESTAMP",
        "file": "VARCHAR",
        "row_number": "BIGINT",
    },
)
# Each role's cleaned records have their identifiers and their rejects.
ROLES = ("person", "events", "transactions")
# The roles of activity records (events, transactions): every role but the person records'.
ACTIVITY_ROLES = tuple(role for role in ROLES if role != "person")
# The consent statements events and transactions make (a consent banner's choice on an event, a checkout's
# marketing box on an order): per role, and per file only each record's latest statement of a purpose, which
# is all a profile reads of them, so a source that stamps consent on every event does not store it each time.
ACTIVITY_CONSENT: dict[str, Table] = {
    role: Table(f"clean.{role}_consent_statements", CONSENT_STATEMENTS.columns) for role in ACTIVITY_ROLES
}
# The attributes of their own that person sources map (`attributes` in cdp.yaml), one row per value of each
# raw row: a long table, so a new attribute needs no new column in the cleaned records.
PERSON_ATTRIBUTES = Table(
    "clean.person_attributes",
    {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "attribute": "VARCHAR",
        "value": "VARCHAR",
        "file": "VARCHAR",
        "row_number": "BIGINT",
    },
)
# Every consent statement ever read, kept when a later file changes or drops it: what was stated, by which
# source record, when, and when the platform first saw it.
CONSENT_HISTORY = Table(
    "cdp.consent_history",
    {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "purpose": "VARCHAR",
        "granted": "BOOLEAN",
        "stated_at": "TIMESTAMP",
        "file": "VARCHAR",
        "row_number": "BIGINT",
        "recorded_at": "TIMESTAMP",
    },
)

IDENTIFIERS: dict[str, Table] = {
    role: Table(
        f"clean.{role}_identifiers",
        {
            "source": "VARCHAR",
            "source_record_id": "VARCHAR",
            "id_type": "VARCHAR",
            "id_value": "VARCHAR",
            "file": "VARCHAR",
            "row_number": "BIGINT",
        },
    )
    for role in ROLES
}
CLEAN_QUARANTINE: dict[str, Table] = {role: Table(f"clean.{role}_quarantine", QUARANTINE_COLUMNS) for role in ROLES}

FILE_EXPORTS = Table(
    "syncs.file_exports",
    {
        "destination": "VARCHAR",
        "segment": "VARCHAR",
        "run_id": "VARCHAR",
        "file": "VARCHAR",
        "rows": "BIGINT",
        "exported_at": "TIMESTAMP",
    },
)
DESTINATION_STATE = Table(
    "syncs.destination_state",
    {
        "destination": "VARCHAR",
        "key": "VARCHAR",
        "row_hash": "VARCHAR",
        "row_json": "VARCHAR",
        "present": "BOOLEAN",
        "acknowledged_at": "TIMESTAMP",
    },
    primary_key=("destination", "key"),
)
# The rows destinations accepted during a sync, batch by batch, until the sync ends and folds them into
# `syncs.destination_state` (cdp_assets.syncs.state): a batch's answer only adds rows here, so recording it
# costs the batch's rows, not a rewrite of the whole acknowledged state. `sequence` is the batch's and
# `row_in_batch` the row's place in it, so the last word on a key wins when folded.
ACKNOWLEDGED = Table(
    "syncs.acknowledged", {**DESTINATION_STATE.columns, "sequence": "BIGINT", "row_in_batch": "BIGINT"}
)
PENDING = Table(
    "syncs.pending",
    {
        "destination": "VARCHAR",
        "key": "VARCHAR",
        "operation": "VARCHAR",
        "error": "VARCHAR",
        "attempts": "INTEGER",
        "first_failed_at": "TIMESTAMP",
        "last_failed_at": "TIMESTAMP",
    },
    primary_key=("destination", "key"),
)
CHANGELOG = Table(
    "syncs.changelog",
    {
        "destination": "VARCHAR",
        "run_id": "VARCHAR",
        "key": "VARCHAR",
        "operation": "VARCHAR",
        "status": "VARCHAR",
        "error": "VARCHAR",
        "logged_at": "TIMESTAMP",
    },
)
# Each destination's batch numbering, and the batches sent but not yet answered, one row per batch with
# its rows as sent. Only the syncs use them, so the syncs create them (cdp_assets.syncs.state).
BATCH_SEQUENCE = Table(
    "syncs.batch_sequence",
    {"destination": "VARCHAR", "epoch": "VARCHAR", "last_sequence": "BIGINT"},
    primary_key=("destination",),
)
IN_FLIGHT = Table(
    "syncs.in_flight",
    {
        "destination": "VARCHAR",
        "batch_id": "VARCHAR",
        "sequence": "BIGINT",
        "opened_at": "TIMESTAMP",
        "changes": "STRUCT(key VARCHAR, operation VARCHAR, row_hash VARCHAR, row_json VARCHAR)[]",
    },
    primary_key=("destination", "batch_id"),
)

# A hashed audience's rows as last hashed, one per member key: the hashed row, or why the row was rejected,
# for the clear row of digest `clear_hash` under the hashing `settings`. Hashing is a pure function of the
# two, so a row whose clear values did not change is not hashed again (cdp_assets.syncs.state).
HASHED_ROWS = Table(
    "syncs.hashed_rows",
    {
        "destination": "VARCHAR",
        "key": "VARCHAR",
        "clear_hash": "VARCHAR",
        "settings": "VARCHAR",
        "row_json": "VARCHAR",
        "rejected": "VARCHAR",
    },
    primary_key=("destination", "key"),
)

# Persistent customer ids (cdp_assets/identity/registry.py): every id ever issued and what became of it.
ID_REGISTRY = Table(
    "identity.id_registry",
    {
        "customer_id": "VARCHAR",
        # active | merged | retired | erased
        "status": "VARCHAR",
        # The id to use for this one today: itself while active, its survivor once merged, NULL once
        # retired or erased.
        "current_id": "VARCHAR",
        "issued_seq": "BIGINT",
        "issued_at": "TIMESTAMP",
        "issued_run": "VARCHAR",
        "changed_at": "TIMESTAMP",
    },
    primary_key=("customer_id",),
)

# The id each record carried after the last run, and the run that first saw it ("oldest record").
RECORD_IDS = Table(
    "identity.record_ids",
    {
        "source": "VARCHAR",
        "source_record_id": "VARCHAR",
        "role": "VARCHAR",
        "customer_id": "VARCHAR",
        "first_seen_seq": "BIGINT",
    },
)

ID_RUNS = Table(
    "identity.id_runs",
    {"run_seq": "BIGINT", "run_id": "VARCHAR", "at": "TIMESTAMP", "settings": "VARCHAR"},
    primary_key=("run_seq",),
)

ID_HISTORY = Table(
    "cdp.customer_id_history",
    {
        "run_seq": "BIGINT",
        "run_id": "VARCHAR",
        "changed_at": "TIMESTAMP",
        "event": "VARCHAR",
        "customer_id": "VARCHAR",
        "related_id": "VARCHAR",
        "records": "BIGINT",
        "reason": "VARCHAR",
    },
)

CUSTOMER_ALIASES = Table(
    "cdp.customer_aliases",
    {"alias_id": "VARCHAR", "customer_id": "VARCHAR", "status": "VARCHAR"},
    primary_key=("alias_id",),
)

# Segment membership: the current members of each segment, and every stay (entered, exited and why).
SEGMENT_MEMBERSHIP = Table(
    "cdp.segment_membership",
    {"segment": "VARCHAR", "customer_id": "VARCHAR", "entered_at": "TIMESTAMP", "computed_at": "TIMESTAMP"},
)
SEGMENT_HISTORY = Table(
    "cdp.segment_membership_history",
    {
        "segment": "VARCHAR",
        "customer_id": "VARCHAR",
        "entered_at": "TIMESTAMP",
        "exited_at": "TIMESTAMP",
        # Why a stay ended: the condition no longer held, the segment was removed, or the customer's id
        # was merged into another (`merged into cus_...`) or retired.
        "exit_reason": "VARCHAR",
    },
    added_later=("exit_reason",),
)

# Privacy requests (cdp_assets/privacy): the receipt of every request, the keyed hashes of erased identifiers,
# and each destination's part of an erasure until the destination confirms it. None holds a personal value.
PRIVACY_REQUESTS = Table(
    "privacy.requests",
    {
        "request_id": "VARCHAR",
        "type": "VARCHAR",
        "id_type": "VARCHAR",
        "reference": "VARCHAR",
        "received_at": "TIMESTAMP",
        "completed_at": "TIMESTAMP",
        # completed | pending (a destination has not confirmed) | not_found | needs_review | rejected
        "status": "VARCHAR",
        "customers": "VARCHAR[]",
        "candidates": "VARCHAR[]",
        "rows_removed": "MAP(VARCHAR, BIGINT)",
        "destinations": "MAP(VARCHAR, VARCHAR)",
        "note": "VARCHAR",
        "run_id": "VARCHAR",
    },
    primary_key=("request_id",),
)
TOMBSTONES = Table(
    "privacy.tombstones",
    {"hash": "VARCHAR", "kind": "VARCHAR", "request_id": "VARCHAR", "erased_at": "TIMESTAMP"},
    primary_key=("hash",),
)
DESTINATION_ERASURES = Table(
    "privacy.destination_erasures",
    {
        "request_id": "VARCHAR",
        "destination": "VARCHAR",
        "key": "VARCHAR",
        # What the destination needs to find the member: {} for a keyed destination, the member's hashed
        # identifiers for an audience. Emptied once confirmed.
        "payload": "VARCHAR",
        "status": "VARCHAR",
        "attempts": "INTEGER",
        "error": "VARCHAR",
        "confirmed_at": "TIMESTAMP",
    },
    primary_key=("request_id", "destination", "key"),
)
# The global suppression list: customers no sync may send, whatever the purpose (`suppress` requests).
SUPPRESSIONS = Table(
    "privacy.suppressions",
    {"customer_id": "VARCHAR", "request_id": "VARCHAR", "suppressed_at": "TIMESTAMP"},
    primary_key=("customer_id",),
)
# File rewrites an erasure or retention run still owes, recorded in the transaction that deleted the rows so a
# run that dies before rewriting the files leaves them to the next run: a landing file's lines to drop (and
# every line known in it), or `exports` (every export file is filtered by the erased ids and tombstones).
FILE_REWRITES = Table(
    "privacy.file_rewrites",
    {
        "queued_by": "VARCHAR",  # the run
        "target": "VARCHAR",
        "source": "VARCHAR",
        "file": "VARCHAR",
        # The file's hash when queued: a file whose hash differs has been rewritten already (or replaced).
        "sha256": "VARCHAR",
        "lines": "BIGINT[]",
        "known_lines": "BIGINT[]",
    },
)
PRIVACY_TABLES: tuple[Table, ...] = (PRIVACY_REQUESTS, TOMBSTONES, DESTINATION_ERASURES, SUPPRESSIONS, FILE_REWRITES)

# Tables written by more than one asset, or read before their writer first ran: they exist from the start
# so every query has something to read (resources.warehouse.bootstrap creates them on every connection).
SHARED_TABLES: tuple[Table, ...] = (
    LOADED_FILES,
    EXTRACT_QUARANTINE,
    CLEANED_FILES,
    PERSON_RECORDS,
    EVENTS,
    TRANSACTIONS,
    FILE_EXPORTS,
    DESTINATION_STATE,
    ACKNOWLEDGED,
    PENDING,
    CHANGELOG,
    HASHED_ROWS,
    CONSENT_STATEMENTS,
    CONSENT_HISTORY,
    PERSON_ATTRIBUTES,
    *ACTIVITY_CONSENT.values(),
    ID_REGISTRY,
    RECORD_IDS,
    ID_RUNS,
    ID_HISTORY,
    CUSTOMER_ALIASES,
    SEGMENT_MEMBERSHIP,
    SEGMENT_HISTORY,
    *(table for role in ROLES for table in (IDENTIFIERS[role], CLEAN_QUARANTINE[role])),
    *PRIVACY_TABLES,
)
