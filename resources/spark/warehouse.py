"""The Spark warehouse: the resource every stage writes through when `warehouse.engine` is `spark`.

It offers the stages what `resources.warehouse.Warehouse` offers them on DuckDB: a `sql()` runner per
step (`SparkSql`, the same surface as `Sql`), held by one run at a time, and the read snapshot. Behind it:
- one SparkSession per process (`warehouse.spark.master`: `local[N]` in the run's own JVM, or a cluster),
  started by the run's first step and kept for the next ones, since a session costs seconds to start;
- tables that persist between runs and processes: their files in `warehouse.spark.warehouse_dir`, their
  catalogue a Hive metastore (embedded Derby) in the same folder, which one JVM opens at a time, as the
  run lock (`<warehouse_dir>/.lock`, as on DuckDB) guarantees;
- all-or-nothing writes as on DuckDB, by swapping tables rather than by a log: a table one statement
  replaces or changes is written beside the old one and swapped in, and a block the stages mark as a
  transaction (the id registry's write, a sync's batch bookkeeping, a file's load) changes staged copies of
  its tables, or writes apart the rows it only adds to one, and a journal has them swapped and moved in
  together when it ends (resources/spark/runner.py). When the session
  starts, before anything reads a table, `finish_interrupted_writes` completes what a killed run left
  committed (a swap whose old table was already dropped, a block whose journal was written), drops what
  it left uncommitted, and removes the folders of writes it cut short (which would make Spark refuse to
  create those tables again);
- customer data readable by its owner only, as on DuckDB: the warehouse and read snapshot folders are
  0700 (Hadoop's local file system writes the table files 0644 whatever the umask), and the session's JVM
  starts with umask 077 for the folders it makes;
- a copy of the warehouse for the rebuild check and the identity change preview (`scratch_copy`): every
  table of every schema copied into databases `<copy>__<schema>` of the same catalogue, which runners made
  for the copy read and write in place of the schemas (resources/spark/runner.py), dropped afterwards;
- the read snapshot as parquet: each publication writes every public `cdp` table into a new folder
  (`<read_snapshot>/<time>/<table>/`) with Spark's writers, then points `<read_snapshot>/current` at it
  by replacing a symbolic link, so a reader sees one refresh's tables. The publication before it is kept
  for readers still on it; a publication that is not incremental (as an erasure's on DuckDB) removes every
  earlier one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from resources.config import CDPConfig
from resources.spark.runner import SparkSql, copy_database_name, finish_interrupted_writes, spark_session
from resources.warehouse import (
    SCHEMAS,
    RunLock,
    ScratchCopy,
    SnapshotReport,
    create_shared,
    hold_run_lock,
    private_files,
    utc_now,
)

# The process's sessions, by warehouse folder: started once, used by every step of the run.
_SESSIONS: dict[str, Any] = {}
# Why the process's session on a warehouse folder could not start: the run's other steps fail at once with
# the same words instead of each starting a JVM again (a standalone master that does not answer costs Spark
# a minute of retries per attempt).
_START_FAILURES: dict[str, str] = {}
# How long a standalone master may take to accept a connection before the session is not started.
MASTER_CONNECT_SECONDS = 10.0
_LOG = logging.getLogger(__name__)
CURRENT = "current"
SNAPSHOT_INFO = "snapshot_info.json"
# The name of a publication's folder in the read snapshot (its time): the only folders a publication removes,
# so a read_snapshot pointed at a folder holding anything else never loses it.
PUBLICATION_STAMP = "%Y%m%dT%H%M%S%f"
PUBLICATION_NAME = re.compile(r"[0-9]{8}T[0-9]{12}")


class SparkWarehouse(dg.ConfigurableResource):
    """Spark with the platform's schemas and shared tables, held by one run at a time; see the module docstring."""

    master: str = "local[2]"
    warehouse_dir: str
    table_format: str = "parquet"
    read_snapshot: str
    conf: dict[str, str] = {}
    lock_timeout_seconds: float = 300.0
    _run_lock: RunLock | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Take the warehouse's run lock for the whole run, as on DuckDB."""
        _private_folder(Path(self.warehouse_dir), "warehouse.spark.warehouse_dir")
        self._run_lock = hold_run_lock(context, Path(self.warehouse_dir) / ".lock", self.lock_timeout_seconds)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def session(self) -> Any:
        """The process's SparkSession on this warehouse, started (with the schemas and shared tables) on first use."""
        folder = str(Path(self.warehouse_dir).resolve())
        if folder not in _SESSIONS:
            if folder not in _START_FAILURES:
                try:
                    unreachable_master(self.master)
                    # The JVM inherits the umask it starts with: the folders it makes are its owner's only.
                    with private_files():
                        session = spark_session(self.master, folder, catalog="hive", conf=self.conf)
                except Exception as exc:
                    _START_FAILURES[folder] = session_start_failure(self.master, exc)
            if folder in _START_FAILURES:
                raise dg.Failure(description=_START_FAILURES[folder])
            for repaired in finish_interrupted_writes(session):
                _LOG.warning("Spark warehouse %s, after a run that did not end: %s", folder, repaired)
            create_shared(SparkSql(session, self.table_format).execute)
            _SESSIONS[folder] = session
        return _SESSIONS[folder]

    @contextmanager
    def sql(self) -> Iterator[SparkSql]:
        """The statement runner for one step (resources/spark/runner.py)."""
        yield SparkSql(self.session(), self.table_format, staged_transactions=True)

    @contextmanager
    def scratch_copy(self, sql: SparkSql, path: Path, alias: str) -> Iterator[ScratchCopy]:
        """A copy of the warehouse for the length of the block, as `Warehouse.scratch_copy` gives on DuckDB:
        every table of the platform's schemas copied into the databases `<alias>__<schema>` (`path`, a
        DuckDB file's, is not used), dropped after, on error too. Views are not copied: the stages that
        read one (`identity.links`) make it first."""
        session = sql.spark
        copied = {schema: copy_database_name(alias, schema) for schema in SCHEMAS}
        try:
            for database in copied.values():
                session.sql(f"drop database if exists {database} cascade")
                session.sql(f"create database {database}")
            for schema, table in sql.table_names():
                if schema in copied:
                    rows = session.table(f"{schema}.{table}")
                    rows.write.format(self.table_format).saveAsTable(f"{copied[schema]}.{table}")

            @contextmanager
            def scratch() -> Iterator[SparkSql]:
                runner = SparkSql(session, self.table_format, staged_transactions=True, schemas=copied)
                create_shared(runner.execute)  # and the views, which were not copied
                yield runner

            @contextmanager
            def beside() -> Iterator[SparkSql]:
                yield SparkSql(session, self.table_format, staged_transactions=True, copies=(alias,))

            yield ScratchCopy(open=scratch, attached=beside)
        finally:
            for database in copied.values():
                session.sql(f"drop database if exists {database} cascade")

    def publish_read_snapshot(self, sql: SparkSql, run_id: str | None, *, incremental: bool = False) -> SnapshotReport:
        """Write every public table as parquet into a new folder and point `current` at it; see the module
        docstring. Without `incremental` (an erasure's publication) every earlier publication is removed."""
        root = Path(self.read_snapshot)
        _private_folder(root, "warehouse.spark.read_snapshot")
        stamp = utc_now()
        target = root / stamp.strftime(PUBLICATION_STAMP)
        rows = {}
        for table in sorted(t.name for t in sql.spark.catalog.listTables("cdp") if not t.isTemporary):
            sql.spark.table(f"cdp.{table}").write.parquet(str(target / table))
            rows[table] = sql.spark.read.parquet(str(target / table)).count()
        info = {"published_at": stamp.isoformat(sep=" "), "run_id": run_id, "tables": rows}
        (target / SNAPSHOT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        link = root / f".{CURRENT}.new"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        os.replace(link, root / CURRENT)
        kept = {target.name} | ({_previous(root, target.name)} if incremental else set())
        for folder in _publications(root):
            if folder.name not in kept:
                shutil.rmtree(folder)
        return SnapshotReport(rows=rows, copied_whole=list(rows))

    def compact(self) -> dict[str, int]:
        """Nothing to compact: a table the runner changes is written anew and the old files deleted (see
        resources/spark/runner.py), so no erased row's bytes stay behind in the warehouse folder. Returns
        the folder's size, before and after alike."""
        size = sum(f.stat().st_size for f in Path(self.warehouse_dir).rglob("*") if f.is_file())
        return {"size_before": size, "size_after": size}

    def snapshot_path(self) -> Path:
        """Where readers find the snapshot: `<read_snapshot>/current/<table>/`."""
        return Path(self.read_snapshot) / CURRENT


class MasterUnreachable(Exception):
    """No master of a standalone cluster's URL accepts a connection."""


def unreachable_master(master: str) -> None:
    """Raise `MasterUnreachable` when `master` is a standalone cluster (`spark://host:port[,host:port]`) none
    of whose masters accepts a connection: Spark itself would retry each for a minute, then fail with a
    NullPointerException that says nothing of the master."""
    if not master.startswith("spark://"):
        return
    refused = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=MASTER_CONNECT_SECONDS).close()
            return
        except OSError as exc:
            refused.append(f"{address}: {exc.strerror or exc}")
    raise MasterUnreachable("; ".join(refused))


def session_start_failure(master: str, exc: Exception) -> str:
    """What to tell the user when the Spark session could not start, naming the keys that decide it. The
    message holds the master, the settings and Spark's reason, never a customer value (no table has been
    read), so it reaches the run's history unmasked."""
    if isinstance(exc, MasterUnreachable):
        reason = f"no master answers ({exc})"
    elif "JAVA_GATEWAY_EXITED" in str(exc):
        reason = (
            "Java exited as it started; its reason is on the run's standard error just before this failure "
            "(a warehouse.spark.conf value Java refused, such as a spark.driver.memory it cannot take, "
            "or too little memory on the machine)"
        )
    else:
        text = _java_root_cause(exc) or str(exc).strip()
        reason = re.sub(r"\s+", " ", text.splitlines()[0] if text else type(exc).__name__)[:500]
    return (
        f"The Spark session could not start with warehouse.spark.master '{master}' and the settings of "
        f"warehouse.spark.conf: {reason}. Correct cdp.yaml (or start the cluster) and run again."
    )


def _java_root_cause(exc: BaseException) -> str | None:
    """The innermost Java exception behind a pyspark error, as Java writes it: Spark wraps the reason a
    setting is refused ("... should be long, but was lots") in "Error while instantiating ..."."""
    for error in (exc, exc.__context__):
        java = getattr(error, "java_exception", None) or getattr(error, "_origin", None)
        if java is None:
            continue
        try:
            while java.getCause() is not None:
                java = java.getCause()
            return str(java.toString()).strip()
        except Exception:  # the JVM is gone: say what pyspark said
            return None
    return None


def _private_folder(folder: Path, key: str) -> None:
    """Create `folder` if missing, readable by its owner only. Hadoop's local file system writes table files
    0644 whatever the umask, so the folders holding them keep everyone else out. A folder that cannot be
    made or owned fails the run naming `key`, the configuration's setting for it, not with an OSError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise dg.Failure(
            description=f"{key} '{folder}' cannot be used as a folder: {exc.strerror or exc}. "
            "Point it at a folder this user can create and write in cdp.yaml."
        ) from None


def _publications(root: Path) -> list[Path]:
    """The read snapshot's publication folders: named by their time, never another folder that is there."""
    return [f for f in root.iterdir() if f.is_dir() and not f.is_symlink() and PUBLICATION_NAME.fullmatch(f.name)]


def _previous(root: Path, newest: str) -> str:
    """The publication before `newest`, which a reader may still be reading."""
    earlier = sorted(f.name for f in _publications(root) if f.name < newest)
    return earlier[-1] if earlier else newest


def spark_warehouse_resource(config: CDPConfig) -> SparkWarehouse:
    """The Spark warehouse resource for a configuration (`warehouse.engine: spark`)."""
    spark = config.warehouse.spark
    return SparkWarehouse(
        master=spark.master,
        warehouse_dir=str(config.resolve(spark.warehouse_dir)),
        table_format=spark.table_format,
        read_snapshot=str(config.resolve(spark.read_snapshot)),
        conf=spark.session_conf(),
        lock_timeout_seconds=float(config.warehouse.lock_timeout_seconds),
    )
