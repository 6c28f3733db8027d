"""Connected components of the identity graph (records joined by the identifier values they share) in SQL,
for an engine whose edges must stay where they are (Spark: no edge is collected to the driver).

On DuckDB the edges are fetched as arrays and `connected_components` (assets.py) labels them in numpy or
SciPy, which is faster; `component_labels` there chooses by `warehouse.engine`. Both give each record the
smallest record id of its component (`min_node_labels` makes any labelling so), so the engines agree on
the partition and on the numbers.

The SQL is the alternating algorithm of Kiveris et al. ("Connected components in MapReduce and beyond",
SoCC 2014): each value first becomes a star from its smallest record to its others (value vertices and
values held by one record drop out), then large-star (every neighbour larger than a node is hung on the
smallest of its neighbourhood) and small-star (a node and its smaller neighbours are hung on the smallest
of them) alternate until the edges are stars around each component's smallest record. That takes
O(log n) rounds on paths and identity's shallow graphs in practice (O(log² n) proven); each round is a
few joins and aggregates run only through the `Sql` runner, so it runs on `Sql` and `SparkSql` alike.
"""

from __future__ import annotations

import numpy as np

from resources.sql import Scratch, Sql

# A graph still changing after this many rounds is a bug, not a long chain: 2 log2(n) rounds settle any
# path of 2^32 records.
MAX_ROUNDS = 64


def merge_components(sql: Sql, labels: str, merges: str, out: str) -> None:
    """Temp table `out` (node_id, component): `labels` (node_id, component) with every component `merges`
    (a table or parenthesised select of component, target) names taken into its target."""
    sql.create_table_as(
        out,
        f"""select l.node_id, coalesce(m.target, l.component) as component
            from {labels} l left join {merges} m on m.component = l.component""",
        temporary=True,
    )


def sql_components(sql: Sql, tables: Scratch, edges: str, out: str, nodes: str | None = None) -> int:
    """Create `out` (node_id, component): each node of `edges` (a table or parenthesised select of
    node_id, value_id) labelled with the smallest node_id of its component, and each node of `nodes`
    (node_id) that no edge joins labelled with itself. Returns the number of large-star/small-star rounds.
    `out` is one of `tables`' names, or any table the caller owns."""
    current, following = tables("cc_edges_a"), tables("cc_edges_b")
    # Edges are kept once, as (hi, lo) with lo < hi.
    sql.create_table_as(
        current,
        f"""
        select distinct e.node_id as hi, h.hub as lo
        from {edges} e join (select value_id, min(node_id) as hub from {edges} group by value_id) h
             on e.value_id = h.value_id
        where e.node_id <> h.hub
        """,
        temporary=True,
    )
    rounds = 0
    while not _settled(sql, current):
        if rounds == MAX_ROUNDS:
            raise RuntimeError(f"connected components did not settle in {MAX_ROUNDS} rounds")
        rounds += 1
        # Large-star: each edge's larger end is hung on the smallest node around its smaller end.
        sql.create_table_as(
            following,
            f"""
            with smallest as (select lo as u, min(hi) as m from {current} group by lo
                              union all select hi, min(lo) from {current} group by hi)
            select distinct e.hi, least(e.lo, s.m) as lo
            from {current} e join (select u, min(m) as m from smallest group by u) s on s.u = e.lo
            """,
            temporary=True,
        )
        # Small-star: a node and its smaller neighbours are hung on the smallest of them.
        sql.create_table_as(
            current,
            f"""
            with smallest as (select hi as u, min(lo) as m from {following} group by hi)
            select u as hi, m as lo from smallest
            union
            select e.lo as hi, s.m as lo from {following} e join smallest s on s.u = e.hi where e.lo <> s.m
            """,
            temporary=True,
        )
    labelled = f"select hi as node_id, lo as component from {current} union all select distinct lo, lo from {current}"
    if nodes is not None:
        labelled = f"""
            select n.node_id, coalesce(l.component, n.node_id) as component
            from {nodes} n left join ({labelled}) l on l.node_id = n.node_id
        """
    sql.create_table_as(out, labelled, temporary=True)
    sql.drop_table(current)
    sql.drop_table(following)
    return rounds


def _settled(sql: Sql, edges: str) -> bool:
    """Whether the edges are stars: every node hangs on one node, which hangs on none (so it is its
    component's smallest, every edge's `lo` being the smaller end)."""
    unsettled = sql.value(
        f"""
        select (select count(*) from {edges} where lo in (select hi from {edges}))
             + (select count(*) - count(distinct hi) from {edges})
        """
    )
    return int(unsettled) == 0


def min_node_labels(labels: np.ndarray) -> np.ndarray:
    """Any labelling of nodes 0..n-1 by component as the smallest node id of each component: SciPy numbers
    components 0, 1, ... in the order of their smallest node, numpy's propagation and the SQL give the
    smallest node itself; after this all three give the same numbers."""
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    _, component = np.unique(labels, return_inverse=True)
    smallest = np.full(component.max() + 1, len(labels), dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(len(labels), dtype=np.int64))
    return smallest[component]
