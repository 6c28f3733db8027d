"""Connected components in SQL (cdp_assets/identity/components.py) against SciPy's, on DuckDB: seeded random
graphs of chains, stars, many small components and one long path, with record ids shuffled so that no
component's smallest record sits where a naive propagation would find it first.
tests/test_spark_components.py runs the same graphs on Spark."""

import random

import duckdb
import numpy as np
import pandas as pd
import pytest

from cdp_assets.identity import assets
from cdp_assets.identity.assets import _scipy_components, component_labels, connected_components
from cdp_assets.identity.components import min_node_labels, sql_components
from resources.sql import Sql

pytestmark = pytest.mark.unit


def graph(kind: str, seed: int) -> tuple[int, int, pd.DataFrame]:
    """(node_count, value_count, edges node_id, value_id) of a seeded graph of `kind` ("mixed" is all
    of them side by side); some nodes have no edge and some values one node."""
    rng = random.Random(seed)
    groups: list[list[tuple[int, int]]] = []  # per component, edges over local node and value numbers
    if kind in ("chains", "mixed"):
        for _ in range(40):
            length = rng.randint(2, 60)
            groups.append([(i, i) for i in range(length)] + [(i + 1, i) for i in range(length - 1)])
    if kind in ("stars", "mixed"):
        for _ in range(30):
            spokes = rng.randint(1, 80)
            groups.append([(i, 0) for i in range(spokes + 1)] + [(i, i) for i in range(1, spokes + 1)])
    if kind in ("small", "mixed"):
        for _ in range(600):
            size = rng.randint(1, 4)
            groups.append([(i, rng.randint(0, 2)) for i in range(size) for _ in range(2)])
    if kind in ("path", "mixed"):
        length = 2_000 if kind == "path" else 700
        groups.append([(i, i) for i in range(length)] + [(i + 1, i) for i in range(length - 1)])
    if kind in ("random", "mixed"):
        nodes = 500
        groups.append([(rng.randrange(nodes), rng.randrange(nodes // 2)) for _ in range(nodes)])
    nodes, values, node_count, value_count = [], [], 0, 0
    for edges in groups:
        size = max(n for n, _ in edges) + 1
        nodes += [node_count + n for n, _ in edges]
        values += [value_count + v for _, v in edges]
        node_count, value_count = node_count + size, value_count + max(v for _, v in edges) + 1
    isolated = 50
    node_count += isolated
    order = list(range(node_count))
    rng.shuffle(order)
    value_order = list(range(value_count))
    rng.shuffle(value_order)
    edges = pd.DataFrame(
        {"node_id": [order[n] for n in nodes], "value_id": [value_order[v] for v in values]}, dtype="int64"
    )
    return node_count, value_count, edges


def scipy_labels(node_count: int, value_count: int, edges: pd.DataFrame) -> np.ndarray:
    found = _scipy_components(node_count, value_count, edges["node_id"].to_numpy(), edges["value_id"].to_numpy())
    return min_node_labels(found)


def sql_labels(sql: Sql, node_count: int, edges: pd.DataFrame) -> tuple[np.ndarray, int]:
    """The SQL components of every node, and the rounds they took."""
    with sql.scratch("cc_test") as tables:
        edge_table = tables.frame("edges", edges)
        node_table = tables.frame("nodes", pd.DataFrame({"node_id": np.arange(node_count, dtype=np.int64)}))
        out = tables("labels")
        rounds = sql_components(sql, tables, edge_table, out, nodes=node_table)
        found = sql.rows(f"select node_id, component from {out} order by node_id")
    assert [n for n, _ in found] == list(range(node_count))
    return np.array([c for _, c in found], dtype=np.int64), rounds


@pytest.fixture
def duck() -> Sql:
    sql = Sql(duckdb.connect())
    yield sql
    sql.close()


@pytest.mark.parametrize("kind", ["chains", "stars", "small", "path", "random", "mixed"])
def test_sql_components_equal_scipy_on_duckdb(duck: Sql, kind: str) -> None:
    node_count, value_count, edges = graph(kind, seed=11)
    expected = scipy_labels(node_count, value_count, edges)
    found, rounds = sql_labels(duck, node_count, edges)
    assert np.array_equal(found, expected)
    assert len(np.unique(expected)) > (1 if kind in ("path", "random") else 20)
    # Logarithmic in the path's length, not linear: 2,000 records in a row settle in a few dozen rounds.
    assert rounds <= 2 * np.log2(node_count) + 2


def test_a_single_long_path_settles_in_logarithmic_rounds(duck: Sql) -> None:
    node_count, value_count, edges = graph("path", seed=3)
    found, rounds = sql_labels(duck, node_count, edges)
    assert np.array_equal(found, scipy_labels(node_count, value_count, edges))
    assert rounds <= 22  # 2,050 nodes: the propagation of assets.py would need a round per link


def test_every_labelling_maps_to_the_smallest_node_of_its_component() -> None:
    # numpy's propagation labels a component by its smallest node, SciPy (its fallback for a long chain,
    # which the mixed graph has) numbers components 0, 1, ... in that node's order: connected_components
    # gives the smallest node whichever path it took.
    for kind in ("small", "mixed"):
        node_count, value_count, edges = graph(kind, seed=5)
        nodes, values = edges["node_id"].to_numpy(), edges["value_id"].to_numpy()
        scipy = _scipy_components(node_count, value_count, nodes, values)
        labels = connected_components(node_count, value_count, nodes, values)
        assert not np.array_equal(labels, scipy)
        canonical = min_node_labels(scipy)
        assert np.array_equal(canonical, labels)
        assert np.array_equal(min_node_labels(canonical), canonical)
        assert all(canonical[canonical] == canonical) and all(canonical <= np.arange(node_count))
        assert np.array_equal(np.unique(scipy, return_index=True)[1], np.unique(canonical))


def test_component_labels_gives_the_same_numbers_for_either_engine(duck: Sql) -> None:
    node_count, value_count, edges = graph("mixed", seed=8)
    with duck.scratch("choose") as tables:
        edge_table = tables.frame("edges", edges)
        nodes = tables.frame("nodes", pd.DataFrame({"node_id": np.arange(node_count)}))
        on_duckdb, in_sql = tables("on_duckdb"), tables("in_sql")
        component_labels(duck, "duckdb", tables, edge_table, nodes, node_count, value_count, on_duckdb)
        component_labels(duck, "spark", tables, edge_table, nodes, node_count, value_count, in_sql)
        on_duckdb, in_sql = (
            duck.arrays(f"select component from {t} order by node_id")["component"] for t in (on_duckdb, in_sql)
        )
    assert np.array_equal(on_duckdb, in_sql)
    assert np.array_equal(on_duckdb, scipy_labels(node_count, value_count, edges))


@pytest.mark.parametrize("kind", ["small", "mixed"])
def test_component_labels_on_64_bit_ids_equal_those_on_32(
    duck: Sql, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A graph with two billion ids or more is labelled on 64-bit edges; small test graphs take 32 bits, so
    # the wide path is forced here. Both must give every node the same label, as int64 either way.
    node_count, value_count, edges = graph(kind, seed=13)
    chosen = assets.edge_id_type
    assert chosen(2**31 - 1, 0) is np.int32 and chosen(2**30, 2**30) is np.int64
    found = {}
    for width in (np.int32, np.int64):
        monkeypatch.setattr(assets, "edge_id_type", lambda nodes, values, width=width: width)
        with duck.scratch("widths") as tables:
            edge_table = tables.frame("edges", edges)
            nodes = tables.frame("nodes", pd.DataFrame({"node_id": np.arange(node_count)}))
            out = tables("out")
            component_labels(duck, "duckdb", tables, edge_table, nodes, node_count, value_count, out)
            assert duck.column_types(f"select component from {out}") == [("component", "BIGINT")]
            found[width] = duck.arrays(f"select component from {out} order by node_id")["component"]
    assert np.array_equal(found[np.int32], found[np.int64])
    assert np.array_equal(found[np.int64], scipy_labels(node_count, value_count, edges))
