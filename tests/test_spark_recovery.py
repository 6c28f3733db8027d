"""A Spark warehouse after a run that did not end: every table replaced or changed by one statement is left
as it was or as the statement made it, the tables a block of statements changes are left all as they
were or all as the block made them, and the next run can write every table again.

A kill is made two ways: the runner's statements fail at each point of a table's swap (the catalogue then
holds exactly what a kill there leaves), and a process running a block is killed with SIGKILL while
Spark writes a table's files (`test_a_process_killed_inside_a_block_leaves_the_tables_it_had`)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.spark import runner as spark_runner
from resources.spark.runner import ADDED, BESIDE, JOURNALS, STAGED, SparkSql, finish_interrupted_writes

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
OLD = "select * from (values ('a', 1), ('b', 2)) t(k, v)"
NEW = "select * from (values ('a', 10), ('c', 30), ('d', 40)) t(k, v)"


class Killed(Exception):
    """The process died here."""


@pytest.fixture
def sql(spark):  # noqa: ANN001, ANN201 - the session fixture; a runner on a fresh schema
    runner = SparkSql(spark, staged_transactions=True)
    runner.execute("drop database if exists kept cascade")
    runner.execute("create database kept")
    runner.create_table_as("kept.t", OLD)
    yield runner
    runner.execute("drop database if exists kept cascade")


def folder(spark, name: str) -> Path:  # noqa: ANN001
    return Path(spark.catalog.getDatabase("kept").locationUri.removeprefix("file:")) / name


def rows(sql: SparkSql) -> list[tuple]:
    return sql.rows("select k, v from kept.t order by k")


def dies_at(sql: SparkSql, monkeypatch: pytest.MonkeyPatch, statement: str) -> None:
    """The runner's process dies when it is about to run `statement`."""
    run = sql._run

    def dying(text: str, params: object) -> object:
        if text == statement:
            raise Killed(text)
        return run(text, params)

    monkeypatch.setattr(sql, "_run", dying)


@pytest.mark.parametrize(
    ("dies_before", "expected", "repair"),
    [
        # the new rows written beside, the old table still there: the statement never happened
        ("drop table kept.t", [("a", 1), ("b", 2)], "the unfinished replacement dropped"),
        # the old table dropped, the new one complete beside it: the statement happened
        (
            f"alter table kept.t{BESIDE} rename to kept.t",
            [("a", 10), ("c", 30), ("d", 40)],
            "its replacement, complete",
        ),
    ],
)
def test_a_swap_cut_short_leaves_the_old_table_or_the_new_one(
    sql: SparkSql, monkeypatch: pytest.MonkeyPatch, dies_before: str, expected: list[tuple], repair: str
) -> None:
    dies_at(sql, monkeypatch, dies_before)
    with pytest.raises(Killed):
        sql.create_table_as("kept.t", NEW)
    monkeypatch.undo()
    done = finish_interrupted_writes(sql.spark)
    assert [line.split(": ", 1)[1].startswith(repair) for line in done if line.startswith("kept.t:")] == [True]
    assert rows(sql) == expected
    assert not sql.table_exists(f"kept.t{BESIDE}") and not folder(sql.spark, f"t{BESIDE}").exists()
    # Nothing left to repair, the table's own folder kept, and the next statements run.
    assert finish_interrupted_writes(sql.spark) == []
    sql.execute("update kept.t set v = v + 1 where k = 'a'")
    assert rows(sql)[0][1] == expected[0][1] + 1


def test_an_update_cut_short_after_the_drop_is_completed(sql: SparkSql, monkeypatch: pytest.MonkeyPatch) -> None:
    """`update` writes the table anew through the same swap; the old table's files were not all removed."""
    dies_at(sql, monkeypatch, f"alter table kept.t{BESIDE} rename to kept.t")
    with pytest.raises(Killed):
        sql.execute("update kept.t set v = v * 100 where k = 'b'")
    monkeypatch.undo()
    folder(sql.spark, "t").mkdir()
    (folder(sql.spark, "t") / "part-00000-left.parquet").write_bytes(b"not parquet")
    finish_interrupted_writes(sql.spark)
    assert rows(sql) == [("a", 1), ("b", 200)]


def test_a_rename_cut_between_moving_the_folder_and_the_catalogue_is_put_back(sql: SparkSql) -> None:
    sql.create_table_as(f"kept.t{BESIDE}", NEW)
    sql.execute("drop table kept.t")
    folder(sql.spark, f"t{BESIDE}").rename(folder(sql.spark, "t"))  # moved, the catalogue not yet changed
    assert "complete, put in place" in " ".join(finish_interrupted_writes(sql.spark))
    assert rows(sql) == [("a", 10), ("c", 30), ("d", 40)]


def test_a_folder_no_table_owns_is_removed_and_its_table_can_be_written(sql: SparkSql) -> None:
    """What a write killed before its table was catalogued leaves: without its removal, Spark refuses to
    create the table ("LOCATION_ALREADY_EXISTS") in every later run."""
    for name in ("orphan", "u"):
        (folder(sql.spark, name) / "_temporary").mkdir(parents=True)
        (folder(sql.spark, name) / "part-00000.parquet").write_bytes(b"half written")
    done = finish_interrupted_writes(sql.spark)
    assert sorted(line.rsplit("/", 1)[-1] for line in done) == ["orphan)", "u)"]
    assert not folder(sql.spark, "orphan").exists() and folder(sql.spark, "t").exists()
    (folder(sql.spark, "u") / "_temporary").mkdir(parents=True)  # and a write that failed in this process
    sql.create_table_as("kept.u", OLD)
    assert sql.rows("select count(*) from kept.u") == [(2,)]


def block(sql: SparkSql) -> None:
    """A block changing `kept.t` in place, creating `kept.u`, dropping `kept.gone` and adding rows to
    `kept.log`, reading its own changes (both made by `prepare`)."""
    with sql.transaction():
        sql.execute("insert into kept.log select k, v from kept.t")
        sql.execute("insert into kept.t values ('c', 3)")
        sql.execute("update kept.t set v = v * 10 where k = 'a'")
        sql.create_table_as("kept.u", "select k, v + 1 as v from kept.t")
        sql.drop_table("kept.gone")
        assert sql.rows("select k, v from kept.u order by k") == [("a", 11), ("b", 3), ("c", 4)]
        assert not sql.table_exists("kept.gone") and ("kept", "u") in sql.table_names()
        sql.execute("insert into kept.log select k, v from kept.u where k = 'c'")
        assert sql.rows("select count(*), sum(l.v) from kept.log l") == [(4, 7)]
        # Another runner, as another step would read the warehouse: nothing has changed yet.
        assert rows(SparkSql(sql.spark)) == [("a", 1), ("b", 2)]
        assert SparkSql(sql.spark).rows("select count(*) from kept.log") == [(1,)]


def prepare(sql: SparkSql) -> None:
    sql.create_table_as("kept.gone", OLD)
    sql.create_table_as("kept.log", "select 'z' as k, 0 as v")


def logged(sql: SparkSql) -> list[tuple]:
    return sql.rows("select k, v from kept.log order by k, v")


LOGGED = [("a", 1), ("b", 2), ("c", 4), ("z", 0)]


BLOCK_DONE = [("a", 10), ("b", 2), ("c", 3)]


def tables(sql: SparkSql) -> list[str]:
    return sorted(t.name for t in sql.spark.catalog.listTables("kept") if not t.isTemporary)


def journals(sql: SparkSql) -> list[str]:
    found = Path(sql.spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")) / JOURNALS
    return sorted(p.name for p in found.glob("*")) if found.exists() else []


def test_a_block_changes_its_tables_together(sql: SparkSql) -> None:
    prepare(sql)
    block(sql)
    assert rows(sql) == BLOCK_DONE and tables(sql) == ["log", "t", "u"] and journals(sql) == []
    assert logged(sql) == LOGGED
    assert sql.rows("select count(*) from kept.u") == [(3,)]
    with pytest.raises(Exception, match="boom"), sql.transaction():  # and one that fails changes nothing
        sql.execute("delete from kept.t where k = 'a'")
        sql.create_table_as("kept.u", OLD)
        sql.execute("insert into kept.log values ('y', 9)")
        raise RuntimeError("boom")
    assert rows(sql) == BLOCK_DONE and sql.rows("select count(*) from kept.u") == [(3,)]
    assert tables(sql) == ["log", "t", "u"] and logged(sql) == LOGGED


def test_a_block_killed_before_it_ended_did_not_happen(sql: SparkSql, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(sql)

    def killed(*_: object) -> None:
        raise Killed("before the journal")

    monkeypatch.setattr(spark_runner, "commit_block", killed)
    with pytest.raises(Killed):
        block(sql)
    monkeypatch.undo()
    assert {f"t{STAGED}", f"log{ADDED}"} < set(tables(sql))  # what the kill left
    done = finish_interrupted_writes(sql.spark)
    assert sorted(line.split(":")[0] for line in done) == ["kept.log", "kept.t", "kept.u"]
    assert rows(sql) == [("a", 1), ("b", 2)] and tables(sql) == ["gone", "log", "t"]
    assert logged(sql) == [("z", 0)]
    assert finish_interrupted_writes(sql.spark) == []


def test_a_block_killed_while_its_tables_were_swapped_in_is_completed(
    sql: SparkSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(sql)
    swap_in, swaps = spark_runner._swap_in, []

    def dying(spark, source: str, target: str, run) -> None:  # noqa: ANN001
        if source.endswith(STAGED):  # the block's swaps, not its statements' own within it
            if swaps:
                raise Killed(target)
            swaps.append(target)
        swap_in(spark, source, target, run)

    monkeypatch.setattr(spark_runner, "_swap_in", dying)
    with pytest.raises(Killed):
        block(sql)
    monkeypatch.undo()
    assert swaps == ["kept.t"]  # kept.gone dropped and kept.t swapped in, not kept.u; its journal left
    assert [name.endswith(".json") for name in journals(sql) if not name.startswith(".")] == [True]
    done = finish_interrupted_writes(sql.spark)
    assert [line for line in done if "block" in line] == [
        "a block ended by a killed run completed: kept.gone, kept.t, kept.u, kept.log"
    ]
    assert rows(sql) == BLOCK_DONE and tables(sql) == ["log", "t", "u"] and journals(sql) == []
    assert sql.rows("select count(*) from kept.u") == [(3,)] and logged(sql) == LOGGED


def test_rows_a_block_added_are_all_moved_in_once_after_a_kill(
    sql: SparkSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table the block only added rows to is not written again: the added rows' files are moved into its
    folder, one by one, so a kill part way leaves some moved; the journal has the rest moved, none twice."""
    with sql.transaction():
        sql.execute("insert into kept.t values ('c', 3)")
        sql.execute("insert into kept.t select k || 'x', v from kept.t")  # reads the rows added above
        assert tables(sql) == ["t", f"t{ADDED}"]
    assert rows(sql) == [("a", 1), ("ax", 1), ("b", 2), ("bx", 2), ("c", 3), ("cx", 3)]
    move, moved = spark_runner._rename_folder, []

    def dying(spark, source: str, target: str) -> None:  # noqa: ANN001
        if moved:
            raise Killed(source)
        moved.append(source)
        move(spark, source, target)

    monkeypatch.setattr(spark_runner, "_rename_folder", dying)
    with pytest.raises(Killed), sql.transaction():
        sql.execute("insert into kept.t values ('d', 4)")
        sql.execute("insert into kept.t values ('e', 5)")
    monkeypatch.undo()
    assert len(moved) == 1 and f"t{ADDED}" in tables(sql)
    finish_interrupted_writes(sql.spark)
    assert [k for k, _ in rows(sql)] == ["a", "ax", "b", "bx", "c", "cx", "d", "e"]
    assert tables(sql) == ["t"] and journals(sql) == []


KILLED_WRITER = """
import sys
from resources.spark.runner import SparkSql, spark_session
spark = spark_session("local[1]", sys.argv[1], catalog="hive")
sql = SparkSql(spark, staged_transactions=True)
sql.execute("create database if not exists kept")
spark.range(1000).selectExpr("id as k", "id * 2 as v").createOrReplaceTempView("first_rows")
sql.create_table_as("kept.t", "select * from first_rows")
sql.create_table_as("kept.s", "select * from first_rows")
# Many small files: slow enough that the parent sees them being written and kills the process then.
spark.range(4000000).repartition(400).selectExpr("id as k", "id * 3 as v").createOrReplaceTempView("next_rows")
print("ready", flush=True)
with sql.transaction():
    sql.execute("insert into kept.s select k + 1000, v from kept.s")
    sql.create_table_as("kept.t", "select * from next_rows")
print("finished", flush=True)
"""

REOPENED = """
import sys
from resources.spark.runner import SparkSql, finish_interrupted_writes, spark_session
spark = spark_session("local[1]", sys.argv[1], catalog="hive")
print("|".join(finish_interrupted_writes(spark)))
sql = SparkSql(spark, staged_transactions=True)
print(sql.rows("select (select count(*) from kept.s), count(*), sum(v) from kept.t")[0])
spark.range(5).selectExpr("id as k", "id as v").createOrReplaceTempView("last_rows")
sql.create_table_as("kept.t", "select * from last_rows")  # a swap in the metastore's catalogue
with sql.transaction():  # and a block's
    sql.execute("delete from kept.s where k < 500")
    sql.execute("insert into kept.t select k + 5, v from kept.t")
print(finish_interrupted_writes(spark), sql.rows("select (select count(*) from kept.s), count(*) from kept.t")[0],
      sorted(t.name for t in spark.catalog.listTables("kept") if not t.isTemporary))
"""


@pytest.mark.slow
def test_a_process_killed_inside_a_block_leaves_the_tables_it_had(tmp_path: Path) -> None:
    """SIGKILL while a block writes a table's files, after its first statement changed another table, in a
    warehouse with its metastore on disk (as the Spark warehouse resource opens it): the next process finds
    both tables as they were and writes them again."""
    warehouse = tmp_path / "warehouse"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(warehouse)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    writing = warehouse / "kept.db" / f"t{STAGED}" / "_temporary"
    deadline = time.monotonic() + 300
    while not writing.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the file system for the write to begin, not waiting for a result
    assert writing.exists(), "the block's files never appeared"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    done = subprocess.run(
        [sys.executable, "-c", REOPENED, str(warehouse)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    repaired, before, after = done.stdout.strip().splitlines()[-3:]
    assert "kept.s: a block's unfinished change dropped" in repaired  # the first statement's change
    assert f"t{STAGED})" in repaired  # the folder of the write the kill cut short, removed
    assert before == str((1000, 1000, 999_000))  # both tables as the killed block found them
    assert after == "[] (500, 10) ['s', 't']"  # nothing more to repair, every folder its table's own
