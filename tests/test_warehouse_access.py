"""Readers and runs share the warehouse safely.

Readers use the read snapshot, published atomically after each refresh, so they never wait for a run,
never block one and always see one consistent state; runs take turns on the warehouse, a second one
waiting for the first or failing with a message that names it; and when the warehouse is held by
another process, the error says who holds it and where readers should go instead.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from resources.run_launcher import RUN_HOST_TAG
from resources.sql import Sql
from resources.warehouse import RunLock, Warehouse, WarehouseInUseError, lock_path, publish_read_snapshot
from tests.fixtures import REPO, Platform, wait_for, write_config

BIN = Path(sys.executable).parent
WAREHOUSE_JOB = REPO / "tests" / "warehouse_job.py"


def _python(code: str) -> subprocess.Popen:
    """Another process (a BI tool, a notebook, a run) running `code`; it talks over stdin/stdout lines."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _tell(process: subprocess.Popen, line: str = "go") -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


@pytest.mark.dagster
def test_a_refresh_publishes_every_public_table_as_the_read_snapshot(platform: Platform):
    snapshot = platform.config.read_snapshot_path
    assert snapshot.exists() and snapshot != platform.config.warehouse_path
    public = {
        name: platform.scalar(f"select count(*) from cdp.{name}")
        for (name,) in platform.sql("select table_name from information_schema.tables where table_schema = 'cdp'")
    }
    assert {"identity_map", "golden_profiles", "profile_provenance", "segment_membership"} <= set(public)
    assert {"segment_membership_history", "quarantine"} <= set(public)
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        published = {
            name: conn.execute(f"select count(*) from cdp.{name}").fetchone()[0]
            for (name,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'cdp'"
            ).fetchall()
        }
        run_id = conn.execute("select run_id from snapshot_info").fetchone()[0]
        published_columns = conn.execute("describe cdp.golden_profiles").fetchall()
    assert published == public and public["golden_profiles"] > 0
    assert published_columns == platform.sql("describe cdp.golden_profiles")
    assert run_id  # the refresh that published it
    # The run tagged the host it ran on, so run monitoring judges it only from that host.
    assert platform.instance.get_run_by_id(run_id).tags[RUN_HOST_TAG] == socket.gethostname()


def _warehouse_with(path: Path, rows: int) -> None:
    """A warehouse whose two public tables always hold the same number of rows (a consistent state)."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema if not exists cdp")
        conn.execute(f"create or replace table cdp.golden_profiles as select range as id from range({rows})")
        conn.execute(f"create or replace table cdp.segment_membership as select range as id from range({rows})")


@pytest.mark.e2e
def test_readers_of_the_snapshot_are_never_blocked_and_always_see_one_consistent_state(tmp_path: Path):
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "warehouse_read.duckdb"
    _warehouse_with(warehouse, 10)
    with duckdb.connect(str(warehouse)) as conn:
        publish_read_snapshot(Sql(conn), snapshot, "first")
    # A BI tool that keeps its connection to the snapshot open across refreshes.
    holder = _python(
        f"""
        import duckdb, sys
        conn = duckdb.connect({str(snapshot)!r}, read_only=True)
        for line in sys.stdin:
            print(conn.execute("select count(*) from cdp.golden_profiles").fetchone()[0], flush=True)
        """
    )
    # A dashboard that opens the snapshot afresh again and again, checking both tables agree every time.
    poller = _python(
        f"""
        import duckdb, os, sys
        opened = inconsistent = 0
        while not os.path.exists({str(tmp_path / "stop")!r}):
            with duckdb.connect({str(snapshot)!r}, read_only=True) as conn:
                a, b = conn.execute("select (select count(*) from cdp.golden_profiles),"
                                    " (select count(*) from cdp.segment_membership)").fetchone()
            opened += 1
            inconsistent += a != b
        print(opened, inconsistent, flush=True)
        """
    )
    try:
        assert _tell(holder) == "10"
        for rows in range(11, 31):
            _warehouse_with(warehouse, rows)
            started = time.monotonic()
            with duckdb.connect(str(warehouse)) as conn:
                counts = publish_read_snapshot(Sql(conn), snapshot, f"run {rows}", incremental=True).rows
            assert counts == {"golden_profiles": rows, "segment_membership": rows}
            assert time.monotonic() - started < 30  # publishing never waits for readers
        (tmp_path / "stop").touch()
        opened, inconsistent = map(int, poller.communicate(timeout=120)[0].split())
        assert opened > 0 and inconsistent == 0
        assert _tell(holder) == "10"  # the old reader still works, on the state it opened
        with duckdb.connect(str(snapshot), read_only=True) as conn:
            assert conn.execute("select count(*) from cdp.golden_profiles").fetchone()[0] == 30
            assert conn.execute("select run_id from snapshot_info").fetchone()[0] == "run 30"
        assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []  # no staging file left
    finally:
        for process in (holder, poller):
            process.kill()
            process.wait(timeout=30)


def _snapshot_tables(path: Path) -> dict[str, tuple[list[tuple], list[tuple]]]:
    """Each table of a snapshot: its columns with their types, and its rows in a fixed order."""
    with duckdb.connect(str(path), read_only=True) as conn:
        names = [
            n for (n,) in conn.execute("select table_name from duckdb_tables() where schema_name = 'cdp'").fetchall()
        ]
        return {
            n: (
                conn.execute(f"select column_name, column_type from (describe cdp.{n})").fetchall(),
                conn.execute(f"select * from cdp.{n} order by all").fetchall(),
            )
            for n in names
        }


@pytest.mark.stage
def test_a_snapshot_updated_in_place_holds_what_a_fresh_copy_holds(tmp_path: Path):
    """Only the rows that differ are replaced, yet every kind of change arrives: changed, deleted and added
    rows, duplicates, a table that appeared or went, a column whose type changed, a table mostly rewritten,
    a view; and the file is still swapped in whole."""
    warehouse, snapshot, fresh = tmp_path / "w.duckdb", tmp_path / "read.duckdb", tmp_path / "fresh.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        sql = Sql(conn)
        sql.execute("create schema cdp")
        sql.execute(
            """create table cdp.profiles as select 'c' || range as customer_id, range % 7 as score,
                      case when range % 5 = 0 then null else ['x' || range] end as emails,
                      {'city': 'C' || (range % 13)} as address
               from range(4000)"""
        )
        sql.execute("create table cdp.pairs as select range % 100 as a, 'same' as b from range(2000)")  # duplicates
        sql.execute("create table cdp.typed as select range as n from range(100)")
        sql.execute("create table cdp.churn as select range as n from range(100)")
        sql.execute("create table cdp.gone as select 1 as n")
        sql.execute("create table cdp.emptied as select 1 as n")
        # Columns named like a row alias: hashing the row must not hash that column instead.
        sql.execute("create table cdp.clash as select range as x, 0 as y from range(1000)")
        sql.execute("create table cdp.aliased as select range as snapshot_row, 0 as y from range(100)")
        sql.execute("create table cdp.unchanged as select range as n from range(10)")
        sql.execute("create view cdp.big_scores as select customer_id from cdp.profiles where score > 4")
        first = publish_read_snapshot(sql, snapshot, "first", incremental=True)
        assert not first.rows_replaced and "profiles" in first.copied_whole  # nothing to start from

        sql.execute("update cdp.profiles set score = score + 1 where customer_id in ('c1', 'c7', 'c10')")
        sql.execute("delete from cdp.profiles where customer_id in ('c2', 'c3')")
        sql.execute("insert into cdp.profiles values ('new', 6, null, {'city': 'N'}), ('c1', 0, [], null)")
        sql.execute("delete from cdp.pairs where rowid in (select rowid from cdp.pairs where a = 3 limit 5)")
        sql.execute("insert into cdp.pairs values (11, 'same'), (11, 'same')")
        sql.execute("create or replace table cdp.typed as select range::varchar as n from range(100)")
        sql.execute("update cdp.churn set n = n + 1000 where n < 60")
        sql.execute("drop table cdp.gone")
        sql.execute("create table cdp.added as select 'a' as x")
        sql.execute("delete from cdp.emptied")
        sql.execute("update cdp.clash set y = 1 where x = 5")
        sql.execute("update cdp.aliased set y = 1 where snapshot_row = 5")
        second = publish_read_snapshot(sql, snapshot, "second", incremental=True)
        publish_read_snapshot(sql, fresh, "fresh")

    assert _snapshot_tables(snapshot) == _snapshot_tables(fresh)
    assert "gone" not in _snapshot_tables(snapshot)
    assert sorted(second.copied_whole) == ["added", "aliased", "churn", "emptied", "typed"]
    assert 0 < second.rows_replaced["clash"] < 0.25 * second.rows["clash"]
    # Whole buckets are replaced: at least the changed rows, far fewer than the table.
    assert 10 <= second.rows_replaced["profiles"] < 0.25 * second.rows["profiles"]
    assert 20 + 15 + 2 <= second.rows_replaced["pairs"] < 0.25 * second.rows["pairs"]
    assert 0 < second.rows_replaced["big_scores"] < 0.25 * second.rows["big_scores"]
    assert second.rows_replaced["unchanged"] == 0 and second.rows["emptied"] == 0
    assert second.rows == {t: len(rows) for t, (_, rows) in _snapshot_tables(fresh).items()}
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        assert conn.execute("select run_id from snapshot_info").fetchall() == [("second",)]
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []  # no staging file left


@pytest.mark.stage
def test_an_unreadable_snapshot_is_published_afresh_and_a_killed_publication_leaves_nothing(tmp_path: Path):
    warehouse, snapshot = tmp_path / "w.duckdb", tmp_path / "read.duckdb"
    snapshot.write_bytes(b"not a database")
    killed = [tmp_path / ".read.duckdb.99999.tmp", tmp_path / ".read.duckdb.99999.tmp.wal"]
    for path in killed:
        path.write_bytes(b"a staging copy a killed run left")
    _warehouse_with(warehouse, 3)
    with duckdb.connect(str(warehouse)) as conn:
        report = publish_read_snapshot(Sql(conn), snapshot, "run", incremental=True)
    assert report.rows == {"golden_profiles": 3, "segment_membership": 3}
    assert sorted(report.copied_whole) == ["golden_profiles", "segment_membership"]
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def _job_environment(config: Path) -> dict[str, str]:
    home = config.parent / "dagster_home"  # the runs' own instance, not the developer's
    home.mkdir(exist_ok=True)
    return {**os.environ, "CDP_CONFIG": str(config), "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(home)}


def _execute(config: Path, gate: Path, output: Path) -> subprocess.Popen:
    run_config = gate.parent / f"{output.stem}.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {"first": {"config": {"folder": str(gate)}}}}))
    with output.open("w") as log:
        return subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-f", str(WAREHOUSE_JOB), "-j", "two_steps"]
            + ["-c", str(run_config)],
            cwd=REPO,
            env=_job_environment(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.e2e
def test_a_second_run_waits_for_the_first_or_fails_naming_it_and_steps_never_interleave(tmp_path: Path):
    warehouse = tmp_path / "warehouse.duckdb"
    patient = write_config(tmp_path, warehouse={"path": str(warehouse), "lock_timeout_seconds": 300})
    (tmp_path / "impatient").mkdir()
    impatient = write_config(tmp_path / "impatient", warehouse={"path": str(warehouse), "lock_timeout_seconds": 1})
    gate = tmp_path / "gate"
    gate.mkdir()
    processes: list[subprocess.Popen] = []
    try:
        processes.append(_execute(patient, gate, tmp_path / "first.log"))
        first_run = wait_for(lambda: [p.read_text() for p in gate.glob("started_*")], "the first run's step")[0]

        processes.append(_execute(impatient, gate, tmp_path / "impatient.log"))
        assert processes[-1].wait(timeout=120) != 0
        refused = (tmp_path / "impatient.log").read_text()
        assert "Another CDP run holds the warehouse" in refused and first_run in refused, refused[-3000:]
        assert "warehouse.lock_timeout_seconds" in refused

        processes.append(_execute(patient, gate, tmp_path / "second.log"))
        waiting = wait_for(
            lambda: "Waiting up to 300 s for the warehouse" in (tmp_path / "second.log").read_text(),
            "the second run waiting for the first",
        )
        assert waiting and first_run in (tmp_path / "second.log").read_text()
        (gate / "release").touch()
        assert processes[0].wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
        assert processes[2].wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        log = conn.execute("select run_id, step, phase from meta.step_log order by n").fetchall()
    runs = [run for run, _, _ in log]
    assert len(log) == 8 and len(set(runs)) == 2 and runs[0] == first_run
    assert runs == [runs[0]] * 4 + [runs[4]] * 4, log  # one run's steps, then the other's: never interleaved
    steps = [("first", "start"), ("first", "end"), ("second", "start"), ("second", "end")]
    assert [(step, phase) for _, step, phase in log] == steps * 2


HOLD_WAREHOUSE = """
    import duckdb, json, os, sys
    from pathlib import Path
    from resources.warehouse import RunLock, lock_path
    warehouse = {warehouse!r}
    if {as_run!r}:
        lock = RunLock(lock_path(warehouse))
        lock.acquire({{"run_id": "run-42", "job": "full_refresh", "pid": os.getpid(), "host": "here",
                      "since": "2026-01-01T00:00:00"}}, timeout=10)
    conn = duckdb.connect(warehouse, read_only={read_only!r})
    print(os.getpid(), flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("as_run", [True, False], ids=["held_by_a_run", "held_by_a_reader"])
@pytest.mark.e2e
def test_a_warehouse_held_by_another_process_says_who_and_points_readers_at_the_snapshot(tmp_path: Path, as_run: bool):
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "warehouse_read.duckdb"
    _warehouse_with(warehouse, 1)
    other = _python(HOLD_WAREHOUSE.format(warehouse=str(warehouse), as_run=as_run, read_only=not as_run))
    try:
        pid = other.stdout.readline().strip()
        resource = Warehouse(database=str(warehouse), lock_timeout_seconds=0.5, read_snapshot=str(snapshot))
        with pytest.raises(WarehouseInUseError) as raised:
            with resource.get_connection():
                pass
    finally:
        other.kill()
        other.wait(timeout=30)
    message = str(raised.value)
    assert f"The warehouse {warehouse} is in use by" in message
    assert str(snapshot) in message and "should read" in message
    assert pid in message
    if as_run:
        assert "CDP run run-42 (job full_refresh" in message
    else:
        assert "which is not a CDP run" in message
    # Once the other process is gone, the warehouse opens again.
    with resource.get_connection() as conn:
        assert conn.execute("select count(*) from cdp.golden_profiles").fetchone()[0] == 1


@pytest.mark.e2e
def test_the_run_lock_is_released_when_its_holder_dies(tmp_path: Path):
    path = lock_path(tmp_path / "warehouse.duckdb")
    other = _python(HOLD_WAREHOUSE.format(warehouse=str(tmp_path / "warehouse.duckdb"), as_run=True, read_only=False))
    other.stdout.readline()
    with pytest.raises(WarehouseInUseError, match="run run-42"):
        RunLock(path).acquire({"run_id": "mine"}, timeout=0.3)
    other.kill()
    other.wait(timeout=30)
    mine = RunLock(path)
    mine.acquire({"run_id": "mine"}, timeout=5)
    assert mine.holder() == {"run_id": "mine"}
    mine.release()


@pytest.mark.stage
def test_the_wal_and_the_read_snapshot_are_readable_by_their_owner_only(tmp_path: Path):
    """DuckDB creates the WAL on the first write after a checkpoint, after the warehouse file was made
    owner-only; the snapshot is a new file too. Neither may be readable by other users, and the process's
    umask is back as it was once the connection closes."""
    previous = os.umask(0o022)
    try:
        warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
        snapshot = tmp_path / "read" / "warehouse_read.duckdb"
        with warehouse.sql() as sql:
            sql.execute("create table cdp.people as select 'ada@example.org' as email")
            sql.execute("checkpoint")
            sql.execute("insert into cdp.people values ('bob@example.org')")
            wal = Path(f"{warehouse.database}.wal")
            assert wal.exists()
            assert wal.stat().st_mode & 0o077 == 0
            publish_read_snapshot(sql, snapshot)
        assert Path(warehouse.database).stat().st_mode & 0o077 == 0
        assert snapshot.stat().st_mode & 0o077 == 0
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


@pytest.mark.e2e
def test_a_run_waits_for_a_held_warehouse_once_not_once_per_step(tmp_path: Path, monkeypatch):
    warehouse, snapshot = tmp_path / "warehouse.duckdb", tmp_path / "warehouse_read.duckdb"
    _warehouse_with(warehouse, 1)
    attempts: list[str] = []
    connect = duckdb.connect

    def counted(database: str, *args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        attempts.append(database)
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counted)
    other = _python(HOLD_WAREHOUSE.format(warehouse=str(warehouse), as_run=False, read_only=True))
    try:
        other.stdout.readline()
        # One resource for the whole run, as Dagster gives every step of a run executed in one process.
        resource = Warehouse(database=str(warehouse), lock_timeout_seconds=0.5, read_snapshot=str(snapshot))
        with pytest.raises(WarehouseInUseError, match="This run waited 0.5 s for it"):
            with resource.get_connection():
                pass
        assert len(attempts) > 1  # the first step waited, trying again meanwhile
        # The next steps (the other sources' extracts) try once each and fail: the run's wait is spent.
        for _ in range(3):
            attempts.clear()
            with pytest.raises(WarehouseInUseError):
                with resource.get_connection():
                    pass
            assert len(attempts) == 1
    finally:
        other.kill()
        other.wait(timeout=30)
    # Once the other process is gone, a later step opens it.
    with resource.get_connection() as conn:
        assert conn.execute("select count(*) from cdp.golden_profiles").fetchone()[0] == 1
