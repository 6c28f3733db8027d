"""The Spark read snapshot removes only its own publications (folders named by their time): pointed at a
folder that holds anything else (the warehouse's own folder, the folder of the landing files), a publication
used to delete every other folder in it."""

from pathlib import Path

import pytest

from resources.spark.runner import SparkSql
from resources.spark.warehouse import CURRENT, SparkWarehouse

pytestmark = pytest.mark.spark


def test_a_publication_leaves_every_folder_that_is_not_one(spark, tmp_path: Path) -> None:  # noqa: ANN001 - the session fixture
    shared = tmp_path / "data"
    for folder in ("landing/crm", "cdp.db/golden_profiles", "metastore_db", "_cdp_blocks", "exports"):
        (shared / folder).mkdir(parents=True)
    (shared / "landing" / "crm" / "contacts.csv").write_text("id,email\nC1,ann@example.org\n")
    sql = SparkSql(spark)
    sql.execute("create database if not exists cdp")
    sql.create_table_as("cdp.snapshot_folder_probe", "select * from values ('cus_1', 1) as t(customer_id, n)")
    warehouse = SparkWarehouse(warehouse_dir=str(tmp_path / "warehouse"), read_snapshot=str(shared))
    try:
        warehouse.publish_read_snapshot(sql, "run-1", incremental=True)
        warehouse.publish_read_snapshot(sql, "run-2", incremental=True)
        warehouse.publish_read_snapshot(sql, "run-3")  # an erasure's: every earlier publication goes
    finally:
        sql.drop_table("cdp.snapshot_folder_probe")
    assert (shared / "landing" / "crm" / "contacts.csv").read_text() == "id,email\nC1,ann@example.org\n"
    assert all((shared / f).is_dir() for f in ("cdp.db/golden_profiles", "metastore_db", "_cdp_blocks", "exports"))
    publications = [f.name for f in shared.iterdir() if f.is_dir() and f.name[:1].isdigit()]
    assert len(publications) == 1 and (shared / CURRENT).resolve().name == publications[0]
    assert (shared / CURRENT / "snapshot_folder_probe").is_dir()
