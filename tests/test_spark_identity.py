"""Identity's clustering on Spark: the demo's cleaned tables resolved through `SparkSql` and through the
DuckDB runner give the same partition of records into customers, the same blocked and shared identifiers,
the same trained model and the same evidence (match weights equal to the last bits of a double, where the
engines' logarithms round differently).

The id registry, which names the customers, does not run on Spark yet (its changes are one transaction,
which Spark tables do not offer): both runs stop where the registry would take the clusters over, and
the clusters are compared as partitions of the records.
"""

import math
from pathlib import Path

import duckdb
import pytest

from cdp_assets.identity import assets
from resources.spark.runner import SparkSql
from resources.sql import Sql
from resources.warehouse import bootstrap

pytestmark = pytest.mark.spark

COMPARED = (
    "identity.blocked_identifiers",
    "identity.shared_identifiers",
    "identity.shared_identifier_groups",
    "identity.model",
)


class _Clustered(Exception):
    """Raised in place of the registry, with the clusters it would have named."""

    def __init__(self, rows: list[tuple]) -> None:
        super().__init__("clustered")
        self.rows = rows


def _stop_at_registry(sql, labelled: str, assigned: str, **_: object) -> None:  # noqa: ANN001 - either runner
    raise _Clustered(sql.rows(f"select source, source_record_id, role, component from {labelled}"))


def _partition(rows: list[tuple]) -> list[list[tuple]]:
    groups: dict[object, list[tuple]] = {}
    for source, record, role, component in rows:
        groups.setdefault(component, []).append((source, record, role))
    return sorted(sorted(group) for group in groups.values())


def _clusters(sql, config) -> list[list[tuple]]:  # noqa: ANN001 - either runner, the platform's configuration
    with pytest.raises(_Clustered) as clustered:
        assets.resolve(sql, config)
    return _partition(clustered.value.rows)


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


@pytest.fixture(scope="module")
def cleaned(platform, spark, tmp_path_factory):  # noqa: ANN001, ANN201 - conftest's platform and Spark session
    """The demo platform's cleaned tables in a fresh DuckDB database and in the Spark session's catalog."""
    folder: Path = tmp_path_factory.mktemp("cleaned")
    duck = duckdb.connect()
    duck.execute("set TimeZone = 'UTC'")
    duck.execute(f"attach '{platform.config.warehouse_path}' as source (read_only)")
    bootstrap(duck)
    spark.sql("create database if not exists clean")
    tables = [t for (t,) in duck.execute("select table_name from duckdb_tables() where database_name = 'source' "
                                          "and schema_name = 'clean' order by 1").fetchall()]  # fmt: skip
    for table in tables:
        duck.execute(f"create or replace table clean.{table} as select * from source.clean.{table}")
        file = folder / f"{table}.parquet"
        duck.execute(f"copy clean.{table} to '{file}' (format parquet)")
        spark.read.parquet(str(file)).write.saveAsTable(f"clean.{table}")
    duck.execute("detach source")
    yield Sql(duck), SparkSql(spark)
    duck.close()
    for schema in ("clean", "identity", "cdp"):
        spark.sql(f"drop database if exists {schema} cascade")


def test_identity_clusters_the_same_records_on_spark_and_duckdb(cleaned, platform, monkeypatch) -> None:  # noqa: ANN001
    on_duckdb, on_spark = cleaned
    monkeypatch.setattr(assets, "assign_ids", _stop_at_registry)
    duckdb_clusters = _clusters(on_duckdb, platform.config)
    spark_clusters = _clusters(on_spark, platform.config)
    assert spark_clusters == duckdb_clusters
    # Some customers hold several records, joined both ways (a shared identifier and a probabilistic link).
    assert sum(len(c) > 1 for c in duckdb_clusters) > 50
    for table in COMPARED:
        assert sorted(on_spark.rows(f"select * from {table}")) == sorted(on_duckdb.rows(f"select * from {table}"))
    assert on_duckdb.value("select count(*) from identity.blocked_identifiers") > 0
    evidence = "select * from identity.evidence order by left_source, left_record_id, right_source, right_record_id"
    duckdb_evidence, spark_evidence = on_duckdb.rows(evidence), on_spark.rows(evidence)
    assert len(spark_evidence) == len(duckdb_evidence) > 0
    decisions = {row[-1] for row in duckdb_evidence}
    assert {"linked", "same customer (shared identifier)"} <= decisions
    for ours, theirs in zip(duckdb_evidence, spark_evidence, strict=True):
        assert all(_close(a, b) for a, b in zip(ours, theirs, strict=True)), (ours, theirs)
