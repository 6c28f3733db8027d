"""Connected components in SQL on Spark: the graphs of tests/test_identity_components.py (chains, stars,
many small components, a long path, side by side) labelled through `SparkSql` equal SciPy's components
and the DuckDB runner's, label for label."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from cdp_assets.identity.assets import component_labels
from resources.spark.runner import SparkSql
from resources.sql import Sql
from tests.test_identity_components import graph, scipy_labels, sql_labels

pytestmark = pytest.mark.spark


def test_sql_components_on_spark_equal_scipy_and_duckdb(spark) -> None:  # noqa: ANN001
    node_count, value_count, edges = graph("mixed", seed=13)
    expected = scipy_labels(node_count, value_count, edges)
    on_spark, rounds = sql_labels(SparkSql(spark), node_count, edges)
    on_duckdb, duckdb_rounds = sql_labels(Sql(duckdb.connect()), node_count, edges)
    assert np.array_equal(on_spark, expected)
    assert np.array_equal(on_duckdb, expected)
    assert rounds == duckdb_rounds
    assert len(np.unique(expected)) > 600


def test_component_labels_on_spark_keep_the_edges_in_spark(spark) -> None:  # noqa: ANN001
    node_count, value_count, edges = graph("small", seed=21)
    runner = SparkSql(spark)
    with runner.scratch("choose") as tables:
        edge_table = tables.frame("edges", edges)
        nodes = tables.frame("nodes", pd.DataFrame({"node_id": np.arange(node_count)}))
        component_labels(runner, "spark", tables, edge_table, nodes, node_count, value_count, tables("labels"))
        labels = runner.arrays(f"select component from {tables('labels')} order by node_id")["component"]
    assert np.array_equal(labels, scipy_labels(node_count, value_count, edges))
    assert not spark.catalog.tableExists("choose__cc_edges_a")
