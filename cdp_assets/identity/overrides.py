"""Manual identity overrides applied to the clustering (the file is read by resources/config/overrides.py).

Overrides are applied after every automatic link, on every run, so they survive rebuilds:
1. `must_link`: the customers holding the two sides become one, unless that would put the two sides of
   a `cannot_link` together (then it is refused and listed in the check's metadata);
2. `cannot_link`: where the two sides share a customer, the `other` side's records leave it and form a
   customer of their own. It beats every automatic link and every must-link;
3. `unmerge`: the side's records leave their customer and form one of their own.

Records that leave take along the activity (events, transactions) joined to them by identifiers alone,
which would otherwise stay behind with no person of theirs in the customer: the records of their
deterministic component, when no person record but the leaving ones is among them and the component
holds none of a cannot_link's `record` side. A person record is moved only when a side names it.

Each applied override is written to `identity.evidence` (rule `override line N`, decision
`override: <action> by <author>: <reason>`), so "why are these two one customer?" has an answer. A side
that names no record is reported by the identity asset's warning check, never fatal: the record may
simply not have arrived yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resources.config import CDPConfig
from resources.config.overrides import Override, Side
from resources.sql import Sql

EVIDENCE_TABLE = "identity.evidence"


@dataclass
class OverrideReport:
    """What the overrides did this run."""

    applied: int = 0
    # The clusters (labels after the overrides) an override changed: id changes there are its doing.
    touched: set[int] = field(default_factory=set)
    # (line, side text): sides that named no record.
    unresolved: list[tuple[int, str]] = field(default_factory=list)
    # (line, why): must-links refused because a cannot-link forbids the merge.
    refused: list[tuple[int, str]] = field(default_factory=list)


# A value as identifiers are compared: (value, normaliser name) -> match key.
Normalise = Callable[[str, str], str | None]


def _side_nodes(
    sql: Sql, side: Side, id_nodes: str, identifiers: str, config: CDPConfig, normalise: Normalise
) -> np.ndarray:
    """Node ids of the records a side names."""
    if side.source is not None:
        rows = sql.rows(
            f"select node_id from {id_nodes} where source = ? and source_record_id = ? order by node_id",
            [side.source, side.record_id],
        )
    else:
        value = normalise(side.value or "", config.identity.type_config(side.id_type or "").normalize)
        rows = sql.rows(
            f"""select distinct n.node_id from ({identifiers}) e join {id_nodes} n using (source, source_record_id)
                where e.id_type = ? and e.id_value = ? order by 1""",
            [side.id_type, value],
        )
    return np.array([r[0] for r in rows], dtype=np.int64)


def override_records(sql: Sql) -> set[tuple[str, str]]:
    """The records (source, source_record_id) the applied overrides' evidence rows name: read before a run
    rewrites the evidence, they are what the last run's overrides named, so one removed since is known."""
    if not sql.table_exists(EVIDENCE_TABLE):
        return set()
    rows = sql.rows(
        f"""select left_source, left_record_id, right_source, right_record_id from {EVIDENCE_TABLE}
            where starts_with(rule, 'override line ')"""
    )
    return {(source, record) for row in rows for source, record in (row[:2], row[2:]) if source is not None}


def released_customers(sql: Sql, named_before: set[tuple[str, str]], customers: str, id_nodes: str) -> set[int]:
    """The customers (of `customers`: node_id, component) of the records the last run's overrides named
    (`named_before`, override_records read before this run's evidence was written) that no override
    applied now names: the ids an override's removal changes are its doing, not the link rules'."""
    released = named_before - override_records(sql)
    if not released:
        return set()
    frame = pd.DataFrame(sorted(released), columns=["source", "source_record_id"])
    with sql.registered("override_released", frame) as records:
        rows = sql.rows(
            f"""select distinct c.component from {customers} c join (
                    select n.node_id from {id_nodes} n semi join {records} r using (source, source_record_id)
                ) n using (node_id)"""
        )
    return {int(component) for (component,) in rows}


def apply_overrides(
    sql: Sql,
    config: CDPConfig,
    overrides: list[Override],
    labels: str,
    id_nodes: str,
    identifiers: str,
    normalise: Normalise,
    deterministic: str | None,
    out: str,
) -> tuple[str, OverrideReport]:
    """The clustering with the overrides applied; see the module. `labels` is a table of (node_id,
    component), one row per node of `id_nodes`; `identifiers` SQL giving (source, source_record_id,
    id_type, id_value) of every record; `deterministic` a table like `labels` of the deterministic
    layer's components, whose activity leaving records take along (None: each record its own). Returns
    the name of the table of each node's customer after: `labels` when no override changes one, else the
    caller's temp table `out`.

    Every record an override can move or merge is in a customer one of its sides is in before any is
    applied (a must-link joins two such customers, a cannot-link or unmerge moves records out of one), so
    only those customers' records are read into this process, and only the records moved are written."""
    report = OverrideReport()
    if not overrides:
        return labels, report
    resolved: list[tuple[Override, np.ndarray, np.ndarray | None]] = []
    for override in overrides:
        first = _side_nodes(sql, override.record, id_nodes, identifiers, config, normalise)
        second = _side_nodes(sql, override.other, id_nodes, identifiers, config, normalise) if override.other else None
        missing = [s.text for s, nodes in ((override.record, first), (override.other, second)) if s and not len(nodes)]
        report.unresolved += [(override.line, text) for text in missing]
        if not missing:
            resolved.append((override, first, second))
    named = [n for _, first, second in resolved for n in (first, second) if n is not None]
    if not named:
        return labels, report
    if deterministic is None:
        with_joined = f"select node_id, component, node_id as joined from {labels}"
    else:
        with_joined = f"""select c.node_id, c.component, d.component as joined
                          from {labels} c join {deterministic} d using (node_id)"""
    with sql.registered("override_sides", pd.DataFrame({"node_id": np.unique(np.concatenate(named))})) as sides:
        held = sql.arrays(
            f"""select node_id, component, joined from ({with_joined})
                where component in (select component from {labels} semi join {sides} using (node_id))
                order by node_id"""
        )
    nodes = held["node_id"].astype(np.int64)
    local = Held(
        nodes=nodes,
        labels=held["component"].astype(np.int64),
        joined=held["joined"].astype(np.int64),
        next_label=int(sql.value(f"select coalesce(max(component), -1) + 1 from {labels}")),
    )
    before = local.labels.copy()
    evidence = _apply(sql, id_nodes, local, report, resolved)
    _write_evidence(sql, id_nodes, evidence)
    report.applied = len(evidence)
    moved = local.labels != before
    if not moved.any():
        return labels, report
    with sql.registered(
        "override_moved", pd.DataFrame({"node_id": nodes[moved], "component": local.labels[moved]})
    ) as frame:
        sql.create_table_as(
            out,
            f"""select c.node_id, coalesce(m.component, c.component) as component
                from {labels} c left join {frame} m using (node_id)""",
            temporary=True,
        )
    return out, report


@dataclass
class Held:
    """The records of the customers the overrides' sides are in, as this process holds them: their node
    ids (sorted), customers and deterministic components, by position; and the next free customer number."""

    nodes: np.ndarray
    labels: np.ndarray
    joined: np.ndarray
    next_label: int

    def positions(self, nodes: np.ndarray) -> np.ndarray:
        """Where the given node ids are held (every side's nodes are)."""
        return np.searchsorted(self.nodes, nodes)


def _apply(
    sql: Sql,
    id_nodes: str,
    held: Held,
    report: OverrideReport,
    resolved: list[tuple[Override, np.ndarray, np.ndarray | None]],
) -> list[tuple[Override, np.ndarray, np.ndarray | None]]:
    """Apply the resolved overrides (their sides as node ids) to the held customers, in the module's
    order; returns the overrides applied, for the evidence."""
    labels = held.labels
    at = [
        (o, held.positions(first), None if second is None else held.positions(second)) for o, first, second in resolved
    ]

    def taking_along(moving: np.ndarray, customers: set[int], staying: np.ndarray) -> np.ndarray:
        return _taking_along(sql, id_nodes, moving, held, customers, staying)

    cannot = [(first, second) for o, first, second in at if o.action == "cannot_link" and second is not None]
    applied: list[int] = []
    for i, (override, first, second) in enumerate(at):
        if override.action != "must_link" or second is None:
            continue
        merged = set(labels[first].tolist()) | set(labels[second].tolist())
        together = np.isin(labels, list(merged))
        if any(together[a].any() and together[b].any() for a, b in cannot):
            report.refused.append((override.line, "a cannot_link keeps these customers apart"))
            continue
        target = min(merged)
        if len(merged) > 1:
            labels[together] = target
            report.touched.add(target)
        applied.append(i)

    for i, (override, first, second) in enumerate(at):
        if override.action == "cannot_link" and second is not None:
            shared = set(labels[first].tolist()) & set(labels[second].tolist())
            if shared:
                # A record both sides name stays with `record`: the override is about moving `other` away.
                moving = second[np.isin(labels[second], list(shared)) & ~np.isin(second, first)]
                moving = taking_along(moving, shared, staying=first)
                labels[moving] = held.next_label
                report.touched |= {held.next_label, *shared}
                held.next_label += 1
            applied.append(i)
        elif override.action == "unmerge":
            own = set(labels[first].tolist())
            members = np.isin(labels, list(own)).sum()
            moving = taking_along(first, own, staying=first[:0])
            if members > len(moving):
                labels[moving] = held.next_label
                report.touched |= {held.next_label, *own}
                held.next_label += 1
            applied.append(i)
    return [resolved[i] for i in applied]


def _taking_along(
    sql: Sql,
    id_nodes: str,
    moving: np.ndarray,
    held: Held,
    customers: set[int],
    staying: np.ndarray,
) -> np.ndarray:
    """`moving` and the other records of `customers` in a deterministic component with one of them, when
    none of those is a person record and the component holds none of the `staying` records (all given
    and returned as positions in `held`)."""
    labels, joined = held.labels, held.joined
    components = np.setdiff1d(np.unique(joined[moving]), np.unique(joined[staying]))
    others = np.flatnonzero(
        np.isin(joined, components) & np.isin(labels, list(customers)) & ~np.isin(np.arange(len(labels)), moving)
    )
    if not len(others):
        return moving
    with sql.registered("override_others", pd.DataFrame({"node_id": held.nodes[others]})) as frame:
        with_person = [
            node
            for (node,) in sql.rows(
                f"select distinct node_id from {id_nodes} semi join {frame} using (node_id) where role = 'person'"
            )
        ]
    peopled = np.unique(joined[held.positions(np.array(sorted(with_person), dtype=np.int64))])
    along = others[~np.isin(joined[others], peopled)]
    return np.union1d(moving, along)


def _write_evidence(sql: Sql, id_nodes: str, applied: list[tuple[Override, np.ndarray, np.ndarray | None]]) -> None:
    """One `identity.evidence` row per applied override, between the first record of each side."""
    for override, first, second in applied:
        left = sql.row(f"select source, source_record_id from {id_nodes} where node_id = ?", [int(first[0])])
        right = (
            sql.row(f"select source, source_record_id from {id_nodes} where node_id = ?", [int(second[0])])
            if second is not None
            else (None, None)
        )
        sql.execute(
            f"""insert into {EVIDENCE_TABLE} by name
                select ? as left_source, ? as left_record_id, ? as right_source, ? as right_record_id,
                       ? as rule, ? as decision""",
            [
                left[0],
                left[1],
                right[0],
                right[1],
                f"override line {override.line}",
                f"override: {override.action} by {override.author}: {override.reason}",
            ],
        )
