"""Identity's clustering on Spark: the demo's cleaned tables resolved through `SparkSql` and through the
DuckDB runner give the same partition of records into customers, the same blocked and shared identifiers,
the same trained model and the same evidence (match weights equal to the last bits of a double, where the
engines' logarithms round differently).

Both runs stop where the id registry would take the clusters over and name the customers
(`resolve(..., clusters_only=True)`), and the clusters are compared as partitions of the records; the whole
pipeline, registry included, is compared in tests/test_spark_pipeline.py.
`python -m benchmarks.spark_identity` makes the same comparison on FEBRL 1-4 and larger demo data.
"""

import pytest

from benchmarks.spark_identity import cleaned_on_both, compare, drop_spark_schemas

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def cleaned(platform, spark, tmp_path_factory):  # noqa: ANN001, ANN201 - conftest's platform and Spark session
    """The demo platform's cleaned tables in a fresh DuckDB database and in the Spark session's catalog."""
    on_duckdb, on_spark = cleaned_on_both(platform.config.warehouse_path, spark, tmp_path_factory.mktemp("cleaned"))
    yield on_duckdb, on_spark
    on_duckdb.close()
    drop_spark_schemas(spark)


def test_identity_clusters_the_same_records_on_spark_and_duckdb(cleaned, platform) -> None:  # noqa: ANN001
    figures = compare(*cleaned, platform.config)
    assert figures["same partition"]
    assert all(figures["same tables"].values()), figures["same tables"]
    assert figures["same evidence"]
    # Enough happened to compare: customers joined both ways, and identifiers blocked.
    assert figures["joined customers"] > 50
    assert {"linked", "same customer (shared identifier)"} <= set(figures["decisions"])
    on_duckdb, _ = cleaned
    assert on_duckdb.value("select count(*) from identity.blocked_identifiers") > 0
    # Shared values judged per value (the runner's map_groups, on Spark's executors): some link within people.
    assert on_duckdb.value("select count(*) from identity.shared_identifier_groups where person_group is not null") > 0
