"""The Great Expectations suite on `clean.person_records` run on Spark (every row on the executors, every
run) reports what it read in the keys DuckDB's run reports, so the check's metadata and plots read the same
on both engines."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cdp_assets.clean.checks import build_expectations_check
from resources.config import load_config
from resources.spark.runner import SparkSql

pytestmark = pytest.mark.spark

_SESSION: list = []


class SessionWarehouse(dg.ConfigurableResource):
    """The suite's only use of the warehouse, `sql()`, on the tests' Spark session."""

    @contextmanager
    def sql(self) -> Iterator[SparkSql]:
        yield SparkSql(_SESSION[0])


def test_the_suite_on_spark_says_how_many_rows_and_files_it_validated(spark, tmp_path: Path) -> None:  # noqa: ANN001
    _SESSION[:] = [spark]
    sql = SparkSql(spark)
    sql.execute("create database if not exists clean")
    sql.create_table_as(
        "clean.person_records",
        """select * from values
             ('crm', 'C1', 'crm/a.csv', 2, 'ann@example.org', 'ann@example.org', '+14155550147', 'US',
              date'1980-01-02', 90),
             ('crm', 'C2', 'crm/a.csv', 3, null, null, null, 'GB', null, 90),
             ('shop', 'S1', 'shop/b.jsonl', 1, 'bob@example.org', 'bob@example.org', null, 'DE', null, 70)
           as t(source, source_record_id, file, row_number, email, email_match_key, phone, country,
                date_of_birth, trust)""",
    )
    raw = {
        "warehouse": {"engine": "spark"},
        "sources": [{"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"}],
    }
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
    check = build_expectations_check(load_config(tmp_path / "cdp.yaml"))
    try:
        result = check(warehouse=SessionWarehouse())
    finally:
        sql.drop_table("clean.person_records")
    metadata = {key: value.value for key, value in result.metadata.items()}
    assert result.passed
    assert (metadata["rows_validated"], metadata["rows_validated_this_run"]) == (3, 3)
    assert (metadata["files_validated_this_run"], metadata["files_unchanged_since_validated"]) == (2, 0)
