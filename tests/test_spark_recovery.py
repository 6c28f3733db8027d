"""A Spark warehouse after a run that did not end: every table replaced or changed by one statement is left
as it was or as the statement made it, and the next run can write every table again.

A kill is made two ways: the runner's statements fail at each point of a table's swap (the catalogue then
holds exactly what a kill there leaves), and a process writing a table is killed with SIGKILL while
Spark writes the files (`test_a_process_killed_while_writing_leaves_the_table_it_had`)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.spark.runner import BESIDE, SparkSql, finish_interrupted_writes

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
OLD = "select * from (values ('a', 1), ('b', 2)) t(k, v)"
NEW = "select * from (values ('a', 10), ('c', 30), ('d', 40)) t(k, v)"


class Killed(Exception):
    """The process died here."""


@pytest.fixture
def sql(spark):  # noqa: ANN001, ANN201 - the session fixture; a runner on a fresh schema
    runner = SparkSql(spark, in_order_transactions=True)
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


KILLED_WRITER = """
import sys
from resources.spark.runner import SparkSql, spark_session
spark = spark_session("local[1]", sys.argv[1], catalog="hive")
sql = SparkSql(spark)
sql.execute("create database if not exists kept")
spark.range(1000).selectExpr("id as k", "id * 2 as v").createOrReplaceTempView("first_rows")
sql.create_table_as("kept.t", "select * from first_rows")
# Many small files: slow enough that the parent sees them being written and kills the process then.
spark.range(4000000).repartition(400).selectExpr("id as k", "id * 3 as v").createOrReplaceTempView("next_rows")
print("ready", flush=True)
sql.create_table_as("kept.t", "select * from next_rows")
print("finished", flush=True)
"""

REOPENED = """
import sys
from resources.spark.runner import SparkSql, finish_interrupted_writes, spark_session
spark = spark_session("local[1]", sys.argv[1], catalog="hive")
print("|".join(finish_interrupted_writes(spark)))
sql = SparkSql(spark)
print(sql.rows("select count(*), sum(v) from kept.t")[0])
spark.range(5).selectExpr("id as k", "id as v").createOrReplaceTempView("last_rows")
sql.create_table_as("kept.t", "select * from last_rows")  # a swap in the metastore's catalogue
print(finish_interrupted_writes(spark), sql.rows("select count(*) from kept.t")[0][0],
      sorted(t.name for t in spark.catalog.listTables("kept") if not t.isTemporary))
"""


@pytest.mark.slow
def test_a_process_killed_while_writing_leaves_the_table_it_had(tmp_path: Path) -> None:
    """SIGKILL while a replacement's files are being written, in a warehouse with its metastore on disk (as
    the Spark warehouse resource opens it): the next process finds the table as it was and writes it again."""
    warehouse = tmp_path / "warehouse"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(warehouse)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    writing = warehouse / "kept.db" / f"t{BESIDE}" / "_temporary"
    deadline = time.monotonic() + 300
    while not writing.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the file system for the write to begin, not waiting for a result
    assert writing.exists(), "the replacement's files never appeared"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    done = subprocess.run(
        [sys.executable, "-c", REOPENED, str(warehouse)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    repaired, before, after = done.stdout.strip().splitlines()[-3:]
    assert f"t{BESIDE}" in repaired  # its folder, removed
    assert before == str((1000, 999_000))  # the table as the killed statement found it
    assert after == "[] 5 ['t']"  # the renamed table's folder is its own: nothing more to repair
