"""The DuckDB warehouse: the resource every stage writes through, the tables they share, and its readers' copy.

DuckDB allows one process to write a database file, and no other process may open it meanwhile, not even
read-only. So:
- every run holds an exclusive lock on `<warehouse>.lock` for its whole length: a second run waits for
  it (`warehouse.lock_timeout_seconds`) or fails naming the run that holds it, never interleaving steps;
- readers do not open the warehouse: after each refresh the public tables (schema `cdp`) are published as
  a separate read-only DuckDB file, swapped in atomically, so a reader never waits for a run, never
  blocks one and always sees one consistent state (see `publish_read_snapshot`);
- when the warehouse cannot be opened because another process has it, the error says so and points
  readers at the snapshot, instead of DuckDB's bare lock error.
Sensors never open the database.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from resources.config import CDPConfig
from resources.durable import fsync_path
from resources.run_launcher import RUN_HOST_TAG
from resources.sql import Sql, SqlError, sql_literal
from resources.tables import CLEAN_QUARANTINE, EXTRACT_QUARANTINE, ROLES, SHARED_TABLES

SCHEMAS = ("raw", "meta", "clean", "identity", "cdp", "syncs", "privacy")

# The public rejects table: what extraction could not parse plus what cleaning refused.
_QUARANTINE_VIEW = "create or replace view cdp.quarantine as\n" + "\nunion all by name ".join(
    f"select * from {table.name}" for table in (EXTRACT_QUARANTINE, *(CLEAN_QUARANTINE[role] for role in ROLES))
)

# The shared tables' DDL, generated once from their declarations in resources/tables.py, and the view.
_SHARED_DDL = (*(table.create_sql() for table in SHARED_TABLES), _QUARANTINE_VIEW)


# How often a run that waits for the warehouse tries again.
_RETRY_SECONDS = 0.25


class WarehouseInUseError(RuntimeError):
    """The warehouse could not be had within the lock timeout: another run or process holds it."""


def lock_path(database: str | os.PathLike[str]) -> Path:
    """The file whose exclusive lock a run holds while it uses the warehouse."""
    return Path(f"{database}.lock")


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "a run whose details were not recorded"
    return (
        f"run {holder.get('run_id')} (job {holder.get('job')}, pid {holder.get('pid')} on {holder.get('host')}, "
        f"since {holder.get('since')} UTC)"
    )


class RunLock:
    """An exclusive lock on a file beside the warehouse, held by one run at a time.

    `flock` locks belong to the open file, so the kernel releases the lock when the holding process dies
    (a killed run never leaves the warehouse locked). The holder writes who it is into the file, so a run
    that cannot get the lock can say which run has it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def holder(self) -> dict[str, object] | None:
        """Who holds (or last held) the lock, as that run wrote it."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self, holder: dict[str, object], timeout: float, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock, waiting at most `timeout` seconds; raise WarehouseInUseError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise WarehouseInUseError(
                        f"Another CDP run holds the warehouse {str(self.path)[: -len('.lock')]}: "
                        f"{_describe(self.holder())}. This run waited {timeout:g} s for it "
                        "(warehouse.lock_timeout_seconds in cdp.yaml). Runs take turns because DuckDB lets "
                        "one process write a database file; let that run finish, then run this one again "
                        "(a run whose process died releases the lock at once)."
                    ) from None
                if not waiting and on_wait is not None:
                    on_wait(f"Waiting up to {timeout:g} s for the warehouse, held by {_describe(self.holder())}.")
                waiting = True
                time.sleep(_RETRY_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next run in; the holder record is left, stale, until the next run overwrites it."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def hold_run_lock(context: dg.InitResourceContext, path: Path, timeout_seconds: float) -> RunLock:
    """The run lock at `path`, taken for the run `context` starts (waiting up to `timeout_seconds` for the run
    that holds it), with the run, job, process and host recorded as its holder; the run is tagged with its
    host, which lets run monitoring tell a run on another host from a dead one (resources/run_launcher.py)."""
    run = context.run
    holder = {
        "run_id": run.run_id if run else None,
        "job": run.job_name if run else None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": utc_now().isoformat(timespec="seconds"),
    }
    if run is not None and context.instance is not None:
        context.instance.add_run_tags(run.run_id, {RUN_HOST_TAG: holder["host"]})
    lock = RunLock(path)
    lock.acquire(holder, timeout_seconds, on_wait=context.log.warning if context.log else None)
    return lock


class Warehouse(DuckDBResource):
    """DuckDB with the platform's schemas and shared tables on every connection, held by one run at a time."""

    lock_timeout_seconds: float = 300.0
    read_snapshot: str | None = None
    _run_lock: RunLock | None = PrivateAttr(default=None)
    # Seconds this run's steps have waited for another process to close the file: the timeout is the run's,
    # not each step's, or a run of N independent steps (one extract per source) would wait N times as long.
    _waited: float = PrivateAttr(default=0.0)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Take the warehouse's run lock for the whole run, so no other run's steps interleave with ours."""
        self._waited = 0.0
        if self.database == ":memory:":
            return
        self._run_lock = hold_run_lock(context, lock_path(self.database), self.lock_timeout_seconds)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with private_files():
            conn = self._connect()
            try:
                bootstrap(conn)
                yield conn
            finally:
                conn.close()
                release_freed_memory()

    @contextmanager
    def sql(self) -> Iterator[Sql]:
        """The statement runner for one step (resources/sql.py): stage code goes through it, never a
        connection of its own."""
        with self.get_connection() as conn:
            yield Sql(conn)

    @contextmanager
    def open_copy(self, path: Path) -> Iterator[Sql]:
        """A runner on a copy of the warehouse made by `copy_database`, with the warehouse's settings and
        bootstrap: the real stage code runs on it unchanged, and nothing it writes reaches the warehouse.
        The caller owns the file (and deletes it)."""
        config = {"custom_user_agent": "dagster", **self.connection_config}
        with private_files():
            conn = duckdb.connect(str(path), read_only=False, config=config)
            try:
                bootstrap(conn)
                yield Sql(conn)
            finally:
                conn.close()
                release_freed_memory()

    @contextmanager
    def scratch_copy(self, sql: Sql, path: Path, alias: str) -> Iterator[ScratchCopy]:
        """A copy of the warehouse at `path` for the length of the block, deleted after (on error too):
        stage code runs on it through `open()`, and `attached()` gives `sql` with the copy readable as
        `<alias>.<schema>.<table>`, to compare it with the warehouse."""
        with temporary_copy(sql, path):
            yield ScratchCopy(open=lambda: self.open_copy(path), attached=lambda: _attached(sql, path, alias))

    def publish_read_snapshot(self, sql: Sql, run_id: str | None, *, incremental: bool = False) -> SnapshotReport:
        """Publish the public tables as the readers' DuckDB file (see the module function of this name)."""
        return publish_read_snapshot(sql, self.snapshot_path(), run_id, incremental=incremental)

    def snapshot_path(self) -> Path:
        """Where readers find the snapshot: the DuckDB file `warehouse.read_snapshot`."""
        if self.read_snapshot is None:
            raise ValueError("this warehouse has no read snapshot")
        return Path(self.read_snapshot)

    def compact(self) -> dict[str, int]:
        """Rewrite the warehouse file with only its live rows, so nothing deleted survives on disk.

        DuckDB reuses a deleted row's blocks later but does not wipe them, and the WAL holds recent changes
        until a checkpoint: after an erasure the person's bytes would still be in the file. The database is
        copied into a new file through the run's own connection (`copy_database`), the connection closed,
        and the copy renamed over the warehouse (atomic; the run's lock keeps every other run out meanwhile).
        The new file, like the warehouse, is readable by its owner only. Returns the sizes before and after.
        """
        path = Path(self.database)
        before = path.stat().st_size
        staging = path.with_name(f".{path.name}.compact")
        with self.sql() as sql:
            copy_database(sql, staging)
        os.chmod(staging, 0o600)
        fsync_path(staging)
        os.replace(staging, path)
        # The old file's WAL was checkpointed when its last connection closed; a stale one must not be
        # replayed into the new file.
        Path(f"{path}.wal").unlink(missing_ok=True)
        return {"size_before": before, "size_after": path.stat().st_size}

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the warehouse for writing; while another process has the file open, retry until the lock timeout."""
        config = {"custom_user_agent": "dagster", **self.connection_config}
        started = time.monotonic()
        deadline = started + max(0.0, self.lock_timeout_seconds - self._waited)
        blocked = False  # only the time a step waited counts: opening the file at once costs the run nothing
        try:
            while True:
                try:
                    conn = duckdb.connect(self.database, read_only=False, config=config)
                except duckdb.IOException as error:
                    if "lock" not in str(error).lower():
                        raise
                    blocked = True
                    if time.monotonic() >= deadline:
                        raise WarehouseInUseError(self._in_use_message(error)) from error
                    time.sleep(_RETRY_SECONDS)
                    continue
                owner_only(Path(self.database))
                return conn
        finally:
            if blocked:
                self._waited += time.monotonic() - started

    def _in_use_message(self, error: duckdb.IOException) -> str:
        found = re.search(r"\(PID (\d+)\)", str(error))
        pid = int(found.group(1)) if found else None
        holder = RunLock(lock_path(self.database)).holder()
        if pid is not None and holder and holder.get("pid") == pid:
            who = f"the CDP {_describe(holder)}"
        else:
            who = f"process {pid if pid is not None else '(unknown pid)'}, which is not a CDP run"
        snapshot = self.read_snapshot or "the read snapshot (warehouse.read_snapshot in cdp.yaml)"
        return (
            f"The warehouse {self.database} is in use by {who}: DuckDB lets one process open a database file "
            f"for writing and no other process open it meanwhile, even read-only. This run waited "
            f"{self.lock_timeout_seconds:g} s for it (warehouse.lock_timeout_seconds in cdp.yaml, for the "
            "whole run; its later steps try once). BI tools, notebooks "
            f"and scripts should read {snapshot} instead: the public cdp.* tables as of the last refresh, "
            f"which runs never lock. DuckDB said: {error}"
        )


def release_freed_memory() -> None:
    """Give the memory Arrow's allocator kept from freed frames back to the system.

    Every step of a run executes in one process. Arrow's allocator (mimalloc) keeps what a step's Arrow
    tables and text columns freed, for reuse, and a later step that allocates through DuckDB or numpy
    instead never reuses it: at 1M people the Great Expectations suite left 0.37 GB so, under identity's
    peak. Called when a step's connection closes; it takes milliseconds.
    """
    pa.default_memory_pool().release_unused()


def bootstrap(conn: duckdb.DuckDBPyConnection) -> None:
    """Create schemas and shared tables if missing; cheap and idempotent."""
    # Timestamps without an offset are read as UTC, whatever the machine's time zone.
    conn.execute("set TimeZone = 'UTC'")
    create_shared(conn.execute)


def create_shared(execute: Callable[[str], object]) -> None:
    """Create the platform's schemas, the tables several stages share and the public quarantine view, if
    missing, through `execute` (a DuckDB connection's or a Spark runner's)."""
    for schema in SCHEMAS:
        execute(f"create schema if not exists {schema}")
    for statement in _SHARED_DDL:
        execute(statement)


@contextmanager
def private_files() -> Iterator[None]:
    """Every file created meanwhile is readable by its owner only: the WAL, which DuckDB creates on the first
    write after each checkpoint (after `owner_only` has run), the read snapshot and its WAL, exports and
    rewritten files. The umask is the process's, so it is put back when the connection closes."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def owner_only(path: Path) -> None:
    """Make a file of customer data (the warehouse and its WAL, an export) readable by its owner only."""
    for file in (path, Path(f"{path}.wal")):
        with suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)


def utc_now() -> datetime:
    """Now in UTC without a zone: the form every timestamp column of the warehouse holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def warehouse_resource(config: CDPConfig) -> Warehouse:
    """The warehouse resource for a configuration; its folder is created so a fresh clone just works."""
    path = config.warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {}
    if config.warehouse.memory_limit:
        settings["memory_limit"] = config.warehouse.memory_limit
    if config.warehouse.threads:
        settings["threads"] = config.warehouse.threads
    return Warehouse(
        database=str(path),
        connection_config=settings,
        lock_timeout_seconds=float(config.warehouse.lock_timeout_seconds),
        read_snapshot=str(config.read_snapshot_path),
    )


def copy_database(sql: Sql, path: Path) -> None:
    """Copy the whole database of `sql`'s connection (every schema, table, view and key) into a new DuckDB
    file `path`, through the connection itself: the warehouse file is only opened by the run that holds it,
    so copying through SQL gives a consistent copy without a second handle on the file. The copy is
    detached again, so the caller can open it with `Warehouse.open_copy`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, Path(f"{path}.wal")):
        leftover.unlink(missing_ok=True)
    source = sql.value("select current_database()")
    sql.execute(f"attach {sql_literal(str(path))} as warehouse_copy")
    try:
        sql.execute(f'copy from database "{source}" to warehouse_copy')
        sql.execute("checkpoint warehouse_copy")
    finally:
        with suppress(SqlError):
            sql.execute("detach warehouse_copy")


@contextmanager
def attached_read_only(sql: Sql, path: Path, alias: str) -> Iterator[None]:
    """Attach the DuckDB file `path` to `sql`'s connection read-only as `alias`, for comparing it with the
    warehouse, and detach it after (a copy made with copy_database and written through open_copy)."""
    sql.execute(f"attach {sql_literal(str(path))} as {alias} (read_only)")
    try:
        yield
    finally:
        with suppress(SqlError):
            sql.execute(f"detach {alias}")


@contextmanager
def _attached(sql: Sql, path: Path, alias: str) -> Iterator[Sql]:
    with attached_read_only(sql, path, alias):
        yield sql


@dataclass(frozen=True)
class ScratchCopy:
    """A copy of the warehouse that checks and previews run the stages on, on either engine: `open()` a
    runner writing to the copy, `attached()` the warehouse's runner with the copy readable beside it."""

    open: Callable[[], AbstractContextManager[Sql]]
    attached: Callable[[], AbstractContextManager[Sql]]


@contextmanager
def temporary_copy(sql: Sql, path: Path) -> Iterator[Path]:
    """copy_database into `path` for the length of the block, then delete the copy and its WAL, on error
    too: a scratch warehouse that a check or preview runs the stages on."""
    try:
        copy_database(sql, path)
        yield path
    finally:
        for leftover in (path, Path(f"{path}.wal")):
            leftover.unlink(missing_ok=True)


# A table whose changed rows would be more than this share of it is copied whole: a full copy is then about
# as cheap, and it leaves no space from deleted rows behind in the snapshot file.
SNAPSHOT_REWRITE_SHARE = 0.25
# Rows per bucket (see `_update_snapshot_table`) when a table's buckets are laid out; a table that has grown
# past this many times as many rows per bucket is copied whole and laid out again. A changed customer costs
# its whole bucket, deleted and inserted, so a publication replaces about twice this many rows per changed
# customer: at 16, a 1% delta at 1M people (41,000 profiles recomputed) passed SNAPSHOT_REWRITE_SHARE for the
# profiles, which were copied whole; at 4 it replaces a few percent of them (docs/performance.md).
BUCKET_ROWS = 4
BUCKET_GROWTH = 8
# In the snapshot file, beside `snapshot_info`: how each table's rows are bucketed, and each bucket's digest.
SNAPSHOT_TABLES = "read_snapshot.main.snapshot_tables"
SNAPSHOT_BUCKETS = "read_snapshot.main.snapshot_buckets"
# The alias a table's row goes by in the statements that hash whole rows (`hash(alias)` hashes the row).
ROW = "snapshot_row"


@dataclass(frozen=True)
class SnapshotReport:
    """What a publication of the read snapshot did: rows per table, which tables were copied whole and how
    many rows of the others were replaced (deleted and inserted)."""

    rows: dict[str, int]
    copied_whole: list[str] = field(default_factory=list)
    rows_replaced: dict[str, int] = field(default_factory=dict)


def _columns(sql: Sql, catalog: str, table: str) -> list[tuple[str, str]]:
    """The columns of `<catalog>.cdp.<table>` with their types, in order (none when it does not exist)."""
    return sql.rows(
        "select column_name, data_type from information_schema.columns "
        f"where table_catalog = {catalog} and table_schema = 'cdp' and table_name = ? order by ordinal_position",
        [table],
    )


def _digests(source: str, bucket: str, buckets: int) -> str:
    """Per bucket of `source`'s rows (`bucket`, an expression over the row `ROW`, modulo `buckets`): its rows and
    the sum of their whole-row hashes."""
    return f"""select ({bucket}) % {buckets} as bucket, count(*) as rows, sum(hash({ROW})::hugeint) as digest
               from {source} {ROW} group by 1"""


def _copy_snapshot_table(sql: Sql, table: str, bucket: str) -> None:
    """Copy `cdp.<table>` whole into the snapshot and lay out its buckets afresh."""
    here, there = f'cdp."{table}"', f'read_snapshot.cdp."{table}"'
    sql.create_table_as(there, f"select * from {here}")
    rows = int(sql.value(f"select count(*) from {there}"))
    buckets = 1 << max(0, (rows // BUCKET_ROWS).bit_length())
    sql.execute(f"delete from {SNAPSHOT_TABLES} where table_name = ?", [table])
    sql.execute(f"insert into {SNAPSHOT_TABLES} values (?, ?)", [table, buckets])
    sql.execute(f"delete from {SNAPSHOT_BUCKETS} where table_name = ?", [table])
    sql.execute(f"insert into {SNAPSHOT_BUCKETS} select ?, * from ({_digests(there, bucket, buckets)})", [table])


def _update_snapshot_table(sql: Sql, table: str, bucket: str) -> int | None:
    """Bring the snapshot's copy of `cdp.<table>` to the warehouse's rows by replacing only the buckets of
    rows that differ; the number of rows replaced, or None when the table must be copied whole instead
    (missing, other columns, grown past its buckets, or too much changed).

    A table's rows are spread over buckets by `bucket` (the hash of the customer id where the table has
    one); the snapshot keeps each bucket's row count and the sum of its rows' whole-row hashes. Only the
    warehouse's rows are hashed: every bucket whose count or sum differs from the kept ones has all its
    snapshot rows deleted and all its warehouse rows inserted, so the snapshot holds the warehouse's rows
    exactly, duplicates included. Only a bucket whose changed rows hash to the same 128-bit sum as before
    would be missed."""
    here, there = f'cdp."{table}"', f'read_snapshot.cdp."{table}"'
    kept = sql.value(f"select buckets from {SNAPSHOT_TABLES} where table_name = ?", [table])
    if kept is None or _columns(sql, "current_database()", table) != _columns(sql, "'read_snapshot'", table):
        return None
    buckets = int(kept)
    with sql.scratch("read_snapshot") as tables:
        now, changed = tables("digests"), tables("changed_buckets")
        sql.create_table_as(now, _digests(here, bucket, buckets), temporary=True)
        sql.create_table_as(
            changed,
            f"""select bucket, coalesce(n.rows, 0) + coalesce(k.rows, 0) as rows
                from {now} n full join (select * from {SNAPSHOT_BUCKETS} where table_name = ?) k using (bucket)
                where n.rows is distinct from k.rows or n.digest is distinct from k.digest""",
            [table],
            temporary=True,
        )
        rows = int(sql.value(f"select coalesce(sum(rows), 0) from {now}"))
        replaced = int(sql.value(f"select coalesce(sum(rows), 0) from {changed}"))
        if rows > BUCKET_ROWS * BUCKET_GROWTH * buckets or replaced > SNAPSHOT_REWRITE_SHARE * max(rows, 1):
            return None
        if replaced:
            among = f"({bucket}) % {buckets} in (select bucket from {changed})"
            sql.execute(f"delete from {there} {ROW} where {among}")
            sql.execute(f"insert into {there} select * from {here} {ROW} where {among}")
            sql.execute(
                f"delete from {SNAPSHOT_BUCKETS} where table_name = ? and bucket in (select bucket from {changed})",
                [table],
            )
            sql.execute(
                f"insert into {SNAPSHOT_BUCKETS} select ?, * from {now} where bucket in (select bucket from {changed})",
                [table],
            )
    return replaced


def publish_read_snapshot(
    sql: Sql, path: Path, run_id: str | None = None, *, incremental: bool = False
) -> SnapshotReport:
    """Copy every table and view of schema `cdp` into a new DuckDB file and swap it in at `path`.

    The copy is written under a temporary name in the same folder, flushed to disk, then renamed over
    the old file with `os.replace`, which is atomic: a reader opening `path` gets the old file or the
    new one, never half of one. A reader with the old file open keeps reading the old file (POSIX keeps
    it until the last reader closes it), and nothing waits for anything. The snapshot also holds
    `main.snapshot_info` (published_at, run_id) so a reader can tell which refresh it sees.

    With `incremental`, the new file starts as a byte copy of the published one and each table gets only
    the buckets of rows that differ from the warehouse's (see `_update_snapshot_table`): a refresh that
    changed 1% of the profiles writes a few percent of them, not every table again, and reads the snapshot's
    rows only where they changed. The result holds the same rows as a full copy. Without it every table is
    copied afresh, which a privacy erasure needs: rows deleted from a copied file may leave their bytes in
    its free blocks, a fresh file has none. The snapshot also holds `main.snapshot_tables` and
    `main.snapshot_buckets`, the bucket digests the next publication compares with.
    """
    tables = [
        row[0]
        for row in sql.rows(
            "select table_name from information_schema.tables "
            "where table_schema = 'cdp' and table_catalog = current_database() order by table_name"
        )
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A publication killed before its rename left its staging file (a copy of the snapshot) behind; runs
    # take turns on the warehouse, so no other publication is writing one now.
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        leftover.unlink(missing_ok=True)
    reused = incremental and _attach_copy_of_published(sql, path, staging)
    if not reused:
        sql.execute(f"attach {sql_literal(str(staging))} as read_snapshot")
    report = SnapshotReport(rows={})
    try:
        sql.execute("create schema if not exists read_snapshot.cdp")
        published = [
            name
            for (name,) in sql.rows(
                "select table_name from information_schema.tables "
                "where table_catalog = 'read_snapshot' and table_schema = 'cdp'"
            )
        ]
        sql.execute(
            f"""create table if not exists {SNAPSHOT_TABLES} (table_name varchar primary key, buckets ubigint);
                create table if not exists {SNAPSHOT_BUCKETS}
                    (table_name varchar, bucket ubigint, rows bigint, digest hugeint)"""
        )
        for gone in sorted(set(published) - set(tables)):
            sql.execute(f'drop table read_snapshot.cdp."{gone}"')
        sql.execute(f"delete from {SNAPSHOT_TABLES} where not list_contains(?, table_name)", [tables])
        sql.execute(f"delete from {SNAPSHOT_BUCKETS} where not list_contains(?, table_name)", [tables])
        for table in tables:
            columns = [name for name, _ in _columns(sql, "current_database()", table)]
            bucket = f'hash({ROW}."customer_id")' if "customer_id" in columns else f"hash({ROW})"
            # A column named like the row's alias would be hashed instead of the row: such a table is copied.
            replaced = _update_snapshot_table(sql, table, bucket) if reused and ROW not in columns else None
            if replaced is None:
                _copy_snapshot_table(sql, table, bucket)
                report.copied_whole.append(table)
            else:
                report.rows_replaced[table] = replaced
            report.rows[table] = int(sql.value(f'select count(*) from read_snapshot.cdp."{table}"'))
        sql.create_table_as(
            "read_snapshot.main.snapshot_info",
            "select ?::timestamp as published_at, ?::varchar as run_id",
            [utc_now(), run_id],
        )
        sql.execute("checkpoint read_snapshot")
        sql.execute("detach read_snapshot")
        fsync_path(staging)
        os.replace(staging, path)
        # The rename itself survives a crash only once the folder is on disk too.
        fsync_path(path.parent)
    except BaseException:
        with suppress(SqlError):
            sql.execute("detach if exists read_snapshot")
        staging.unlink(missing_ok=True)
        raise
    return report


def _attach_copy_of_published(sql: Sql, path: Path, staging: Path) -> bool:
    """Byte-copy the published snapshot to `staging` and attach it as `read_snapshot`, the start of the next
    one; False (nothing attached, no staging file) when there is none or DuckDB cannot open it, so the next
    one is built afresh."""
    if not path.is_file():
        return False
    shutil.copyfile(path, staging)
    try:
        sql.execute(f"attach {sql_literal(str(staging))} as read_snapshot")
    except SqlError:
        with suppress(SqlError):
            sql.execute("detach if exists read_snapshot")
        for leftover in (staging, Path(f"{staging}.wal")):
            leftover.unlink(missing_ok=True)
        return False
    return True
