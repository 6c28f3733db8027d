"""PostgreSQL as a destination: segments land in a table that applications, BI tools and analysts already query.

Each batch is one transaction, so a batch is applied whole or not at all, and both operations are idempotent
(upsert by key, delete by key), so a batch resent after a lost answer changes nothing. The table follows the
data: it is created on first use and gains a column when a mapped field is added, so changing a segment's
fields never needs a migration first.

Errors are sorted the way `deliver` needs them. Whatever may pass on a later attempt (no connection, a lost
connection, serialization failures, deadlocks, a server shutting down, a lock wait that timed out) is a
`TransientError`. So is a destination that cannot be written as configured (no privilege, no such schema, no
unique key on the key column): the rows are not at fault, so they wait for the next run instead of being
failed one by one. Anything the server says about the data (a value of the wrong type, a violated constraint)
is a `RejectedError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Json, Jsonb

from resources.config.destinations import SYNCED_AT_COLUMN
from resources.destinations import REMOVALS, Change, RejectedError, TransientError

SYNCED_AT = SYNCED_AT_COLUMN

# SQLSTATE classes: connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources, operator intervention (shutdown, cancel), system error, internal error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58", "XX"})
# lock_not_available, object_in_use, read_only_sql_transaction (a standby after a failover).
_TRANSIENT_STATES = frozenset({"55P03", "55006", "25006"})
# insufficient_privilege, invalid_schema_name, invalid_column_reference (ON CONFLICT without a unique key).
_MISCONFIGURED_STATES = frozenset({"42501", "3F000", "42P10"})
# Raised when another writer creates the same table or column in the same instant.
_CONCURRENT_DDL = (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateColumn, errors.DuplicateObject)


def column_type(value: Any) -> str:
    """The PostgreSQL type a new column gets from the first non-null value seen in it.

    Anything without an obvious native type (timestamps arrive as ISO strings) is text: text accepts every
    later value, while guessing a narrower type would reject rows that a wider look would have allowed.
    """
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, Decimal):
        return "numeric"  # as exact as the warehouse's money columns: 0.10 is 0.10
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, list | tuple | dict):
        return "jsonb"
    return "text"


class PostgresClient:
    """Keeps one table in step with a segment: upserts `add`/`update` rows by key, deletes `remove`d keys.

    Every upserted row carries `_cdp_synced_at`, the time it last changed; a row resent unchanged is not
    rewritten, so its timestamp and the table stay as they were. One connection per client, opened on the
    first batch and again on the next batch after it broke.
    """

    def __init__(
        self, dsn: str, table: str, key_column: str = "id", *, schema: str = "public", connect_timeout: float = 10
    ) -> None:
        self._dsn = dsn
        self._secrets = _secrets(dsn)
        self.table, self.key_column, self.schema = table, key_column, schema
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._name = sql.Identifier(schema, table)
        self._label = f"PostgreSQL table {schema}.{table}{_server(dsn)}"

    def __repr__(self) -> str:
        return f"PostgresClient({self.schema}.{self.table}, key={self.key_column})"

    def send(self, changes: Sequence[Change], batch_id: str) -> None:
        """Apply the batch in one transaction. `batch_id` goes unused: upserts and deletes by key are
        idempotent already, so a resent batch needs no record of what was applied before."""
        if not changes:
            return
        conn = self._connect()
        creating = True
        try:
            with conn.cursor() as cur:
                if changes[0].operation in REMOVALS:
                    self._prepare(cur, {})
                    creating = False
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
                            self._name, sql.Identifier(self.key_column)
                        ),
                        [[change.key for change in changes]],
                    )
                else:
                    rows = [change.exact_row() for change in changes]
                    wanted = self._columns_of(rows)
                    types = self._prepare(cur, wanted)
                    creating = False
                    self._upsert(cur, changes, rows, {name: types[name] for name in wanted})
            conn.commit()
        except psycopg.Error as exc:
            self._recover(conn)
            raise self._error(exc, len(changes), creating) from None

    def table_exists(self) -> bool | None:
        """Whether the table is there; None when the server cannot be asked now (the batches then find out
        why, and fail as they do)."""
        try:
            conn = self._connect()
        except TransientError:
            return None
        try:
            with conn.cursor() as cur:
                found = bool(self._existing(cur))
            conn.rollback()  # a read: end its transaction
        except psycopg.Error:
            self._recover(conn)
            return None
        return found

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ connection

    def _connect(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(
                self._dsn,
                # libpq takes whole seconds and treats anything under 2 as 2.
                connect_timeout=max(2, math.ceil(self.connect_timeout)),
                fallback_application_name="cdp",
            )
        except psycopg.Error as exc:
            raise TransientError(f"{self._label}: could not connect: {self._reason(exc)}") from None
        return self._conn

    def _recover(self, conn: psycopg.Connection) -> None:
        """Roll back the failed batch; a connection that cannot even do that is dropped and reopened later."""
        if not conn.broken and not conn.closed:
            try:
                conn.rollback()
                return
            except psycopg.Error:
                pass
        self._conn = None
        conn.close()

    # ------------------------------------------------------------------ table

    def _columns_of(self, rows: Iterable[dict[str, Any]]) -> dict[str, str]:
        """The union of the rows' columns, in order of first appearance, typed by their first non-null value."""
        found: dict[str, Any] = {}
        for row in rows:
            for name, value in row.items():
                if name not in (self.key_column, SYNCED_AT) and found.get(name) is None:
                    found[name] = value
        return {name: column_type(value) if value is not None else "text" for name, value in found.items()}

    def _existing(self, cur: psycopg.Cursor) -> dict[str, str]:
        cur.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [self.schema, self.table],
        )
        return dict(cur.fetchall())

    def _prepare(self, cur: psycopg.Cursor, wanted: dict[str, str]) -> dict[str, str]:
        """Create the table or add the batch's new columns, inside the batch's transaction so a rejected batch
        leaves no trace; returns every column's type."""
        existing = self._existing(cur)
        if not existing:
            columns = [
                sql.SQL("{} text PRIMARY KEY").format(sql.Identifier(self.key_column)),
                *(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in wanted.items()),
                sql.SQL("{} timestamptz").format(sql.Identifier(SYNCED_AT)),
            ]
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self._name, sql.SQL(", ").join(columns)))
            existing = self._existing(cur)
        missing = {name: kind for name, kind in {**wanted, SYNCED_AT: "timestamptz"}.items() if name not in existing}
        if missing:
            additions = (
                sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(name), sql.SQL(kind))
                for name, kind in missing.items()
            )
            cur.execute(sql.SQL("ALTER TABLE {} {}").format(self._name, sql.SQL(", ").join(additions)))
            existing.update(missing)
        return existing

    def _upsert(
        self, cur: psycopg.Cursor, changes: Sequence[Change], rows: Sequence[dict[str, Any]], types: dict[str, str]
    ) -> None:
        """One statement per row, pipelined in one round trip: rows are applied in order, so the last change
        to a key wins, and no single statement outgrows PostgreSQL's 65535 bind parameters."""
        key = sql.Identifier(self.key_column)
        synced = sql.Identifier(SYNCED_AT)
        columns = [sql.Identifier(name) for name in types]
        if columns:
            # Comparing as text works for every column type, including those without an equality operator.
            conflict = sql.SQL("DO UPDATE SET {} WHERE ROW({})::text IS DISTINCT FROM ROW({})::text").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(column) for column in [*columns, synced]),
                sql.SQL(", ").join(sql.SQL("t.{}").format(column) for column in columns),
                sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(column) for column in columns),
            )
        else:
            conflict = sql.SQL("DO NOTHING")
        query = sql.SQL("INSERT INTO {} AS t ({}) VALUES ({}, now()) ON CONFLICT ({}) {}").format(
            self._name,
            sql.SQL(", ").join([key, *columns, synced]),
            sql.SQL(", ").join([sql.Placeholder()] * (len(columns) + 1)),
            key,
            conflict,
        )
        cur.executemany(
            query,
            (
                [change.key, *(_adapt(row.get(name), kind) for name, kind in types.items())]
                for change, row in zip(changes, rows, strict=True)
            ),
        )

    # ------------------------------------------------------------------ errors

    def _error(self, exc: psycopg.Error, size: int, creating: bool) -> TransientError | RejectedError:
        reason = self._reason(exc)
        state = exc.sqlstate
        if state is None:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                return TransientError(f"{self._label}: connection lost: {reason}")
            # Refused before reaching the server, e.g. a string holding a NUL byte.
            return RejectedError(f"{self._label}: {reason}", {0: reason} if size == 1 else {})
        if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
            return TransientError(f"{self._label}: {reason}")
        if state in _MISCONFIGURED_STATES:
            return TransientError(f"{self._label}: cannot be written as configured: {reason}")
        if creating and isinstance(exc, _CONCURRENT_DDL):
            return TransientError(f"{self._label}: changed by another writer at the same time: {reason}")
        # The server does not say which row of a multi-row statement failed; `deliver` splits the batch to find it.
        return RejectedError(f"{self._label}: {reason}", {0: reason} if size == 1 else {})

    def _reason(self, exc: psycopg.Error) -> str:
        diag = exc.diag
        text = diag.message_primary or " ".join(str(exc).split()) or type(exc).__name__
        if diag.message_detail:
            text += f" ({diag.message_detail})"
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Messages may end up in logs and run metadata; the DSN and its password must not."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets(dsn: str) -> list[str]:
    """The DSN and every spelling of its password (as parsed, as written in a URL or after `password=`)."""
    found = {dsn}
    try:
        found.add(str(conninfo_to_dict(dsn).get("password") or ""))
    except psycopg.Error:
        pass
    for pattern in (r"://[^/@:]*:([^@/]*)@", r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)"):
        found.update(match.group(1) for match in re.finditer(pattern, dsn))
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def _server(dsn: str) -> str:
    """' on host:port' from the connection string, for messages: which server failed is what an operator
    needs first, and the errors psycopg quotes it in are masked with every quoted value. Never the user,
    the password or the database's other settings."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return ""
    host = str(info.get("host") or info.get("hostaddr") or "")
    if not host or host.startswith("/"):
        return " on the local socket" if host else ""
    port = info.get("port")
    return f" on {host}:{port}" if port else f" on {host}"


def _adapt(value: Any, kind: str) -> Any:
    """Lists and dicts go as JSON; in a JSON column every value does, so a scalar there is valid JSON too."""
    if value is None:
        return None
    if kind == "json":
        return Json(value, dumps=_json_text)
    if kind == "jsonb" or isinstance(value, list | tuple | dict):
        return Jsonb(value, dumps=_json_text)
    return value


def _json_text(value: Any) -> str:
    """JSON text of a value whose numbers may be Decimals (exact_row): written as the numbers they are."""
    return json.dumps(value, default=lambda v: float(v) if isinstance(v, Decimal) else str(v))
