"""The copy of a Spark warehouse that the rebuild check and the identity change preview run the stages on:
stage code writes the copy under the warehouse's own table names, the comparison reads the copy by DuckDB's
name for an attached copy, and neither the warehouse nor the copy's databases outlive the block."""

from pathlib import Path

import pytest

from resources.spark.runner import SparkSql
from resources.spark.warehouse import SparkWarehouse

pytestmark = pytest.mark.spark


def test_the_copy_takes_the_stages_writes_and_the_warehouse_keeps_its_rows(spark, tmp_path: Path) -> None:  # noqa: ANN001 - the session fixture
    sql = SparkSql(spark, staged_transactions=True)
    sql.execute("create database if not exists clean")
    sql.create_table_as("clean.copied_rows", "select * from (values ('a', 1), ('b', 2)) t(k, v)")
    warehouse = SparkWarehouse(warehouse_dir=str(tmp_path / "w"), read_snapshot=str(tmp_path / "s"))
    try:
        with warehouse.scratch_copy(sql, tmp_path / "unused.duckdb", "rebuild_copy") as copy:
            with copy.open() as scratch:
                scratch.execute("update clean.copied_rows set v = v * 10 where k = 'b'")
                scratch.create_table_as("clean.made_in_copy", "select k from clean.copied_rows where v > 5")
                assert scratch.table_exists("clean.made_in_copy")
                assert scratch.rows("select k, v from clean.copied_rows order by k") == [("a", 1), ("b", 20)]
            assert not sql.table_exists("clean.made_in_copy")
            with copy.attached() as beside:
                assert beside.rows(
                    """select w.k, w.v, c.v from clean.copied_rows w
                       join rebuild_copy.clean.copied_rows c using (k) order by 1"""
                ) == [("a", 1, 1), ("b", 2, 20)]
                assert beside.rows("select k from rebuild_copy.clean.made_in_copy") == [("b",)]
        assert sql.rows("select k, v from clean.copied_rows order by k") == [("a", 1), ("b", 2)]
        assert not [d.name for d in spark.catalog.listDatabases() if d.name.startswith("rebuild_copy__")]
    finally:
        sql.drop_table("clean.copied_rows")
