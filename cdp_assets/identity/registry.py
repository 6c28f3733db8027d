"""Persistent customer ids: which id each customer of this run carries, and the lineage of every id.

Clustering decides which records are one person; this module decides what that person is called. An id,
once issued, names the same person across runs, rebuilds, new files, changed matching settings and any
order of input files, because it is chosen from what the records carried last time, never from how this
run happened to number its clusters:

- a customer whose records carried one id keeps it;
- a merge: when a customer holds records of several ids, the oldest issued id survives and the others
  become aliases of it (`cdp.customer_aliases`); ids issued in the same run are in the order of their
  smallest records;
- a split: when an id's records end up in several customers, the one holding most of them keeps the id
  (ties: the one holding the id's oldest record), the others get new ids;
- a customer none of whose records carried an id gets a new one: `cus_` and 16 hex digits of the md5 of
  its smallest `source/record id`. An id is never issued twice: if that name was ever issued (to a customer
  since merged, retired or erased), `#1`, `#2`, ... is appended to what is hashed until it is free.

The registry lives in the warehouse (`identity.id_registry`, `identity.record_ids`). With it lost, the
first run issues every id afresh by the rule for new customers, so the same data gives the same ids.

Every change is an event of `cdp.customer_id_history`: `issued`, `merged` (into `related_id`), `split`
(a new id taking part of `related_id`'s records), `moved` (records of `related_id`, which lives on, joining
an existing customer `customer_id`), `retired` (no record carries the id any more) and
`erased` (written by a privacy erasure: the id is never issued again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from resources.sql import Scratch, Sql
from resources.tables import CUSTOMER_ALIASES, ID_HISTORY, ID_REGISTRY, ID_RUNS, RECORD_IDS

# The public map of records to customers: the record ids' twin, without the run that first saw each record.
IDENTITY_MAP = "cdp.identity_map"


@dataclass(frozen=True)
class IdChanges:
    """What one assignment did to the ids, for the asset's metadata and checks."""

    kept: int
    issued: int
    merged: int
    split: int
    retired: int
    reason: str


def new_id(key: str, attempt: int = 0) -> str:
    """The id a new customer gets from its smallest `source/record id`; `attempt` > 0 when that name is taken."""
    text = key if attempt == 0 else f"{key}#{attempt}"
    return "cus_" + hashlib.md5(text.encode()).hexdigest()[:16]


# Names tried at once for a customer whose name is taken: the first is almost always free.
_CANDIDATES = 4


def _rename_clashes(sql: Sql, tables: Scratch, issued: str, clashes: list[tuple]) -> str:
    """The new ids of table `issued` with each of `clashes` ((component, first_key), in first_key order),
    whose name the registry or another new customer holds, given the next name neither holds nor an earlier
    clash took: a table of the step's. The candidates are looked up a few per clash at a time, every clash
    in one query: the registry grows with every customer ever named and never comes to this process whole."""
    renamed: dict[int, str] = {}
    chosen: set[str] = set()
    pending, attempt = list(clashes), 1
    while pending:
        candidates = {
            (component, tried): new_id(first_key, tried)
            for component, first_key in pending
            for tried in range(attempt, attempt + _CANDIDATES)
        }
        listed = tables.frame("candidates", pd.DataFrame({"customer_id": list(candidates.values())}, dtype=object))
        taken = {
            row[0]
            for row in sql.rows(
                f"""select customer_id from {ID_REGISTRY.name} semi join {listed} using (customer_id)
                    union select customer_id from {issued} semi join {listed} using (customer_id)"""
            )
        }
        tables.drop("candidates")
        waiting = []
        for component, first_key in pending:
            names = (candidates[(component, tried)] for tried in range(attempt, attempt + _CANDIDATES))
            free = next((name for name in names if name not in taken and name not in chosen), None)
            if free is None:
                waiting.append((component, first_key))
                continue
            renamed[component] = free
            chosen.add(free)
        pending, attempt = waiting, attempt + _CANDIDATES
    frame = pd.DataFrame(
        {
            "component": pd.Series(list(renamed), dtype="int64"),
            "customer_id": pd.Series(list(renamed.values()), dtype=object),
        }
    )
    names = tables.frame("renamed", frame)
    named = tables("named")
    sql.create_table_as(
        named,
        f"""select i.component, i.first_key, coalesce(r.customer_id, i.customer_id) as customer_id, i.split_from,
                   i.records
            from {issued} i left join {names} r using (component)""",
        temporary=True,
    )
    return named


def assign_ids(
    sql: Sql,
    labelled: str,
    assigned: str,
    *,
    run_id: str | None,
    at: datetime,
    settings: str,
    overridden: Collection[int] = (),
    map_kept: bool = False,
) -> IdChanges:
    """Name each component of `labelled` (source, source_record_id, role, component) with a persistent id;
    write `assigned` (component, customer_id) and record the changes in the registry and its history.

    Id changes in the `overridden` components (those a manual override changed) are put down to the
    override; others to a configuration change when `settings` (a fingerprint of the identity
    configuration) differs from the last run's, else to the link rules. The record ids and
    `cdp.identity_map` are written too (see _record_ids; `map_kept`: the map is what the last run left).
    """
    last = sql.row(f"select run_seq, settings from {ID_RUNS.name} order by run_seq desc limit 1")
    run_seq = 1 if last is None else int(last[0]) + 1
    reason = "config change" if last is not None and last[1] != settings else "link rules"
    with sql.scratch("ids") as tables:
        overrides = tables.frame("overridden", pd.DataFrame({"component": pd.Series(list(overridden), dtype="int64")}))

        def why(component: str) -> str:
            """SQL for the reason of an id change in the cluster `component` names."""
            return f"case when {component} in (select component from {overrides}) then 'override' else '{reason}' end"

        compared, carried = tables("compared"), tables("carried")
        homes, claims = tables("homes"), tables("claims")
        # Customers that are exactly an active id of last time: every record of the one carried that id,
        # and every record that carried it is in it (none gone). The id is kept with nothing else to
        # decide, and the rules below look only at the rest, which no record of these shares: after a
        # delta, the few customers it touched instead of millions. (A customer that lost a record is
        # among the rest, where the rules give it its id all the same.)
        stable, rest = tables("stable"), (tables("rest_components"), tables("rest_ids"))
        stable_records = _stable_customers(sql, tables, labelled, stable, rest)
        narrowed = (
            (labelled, RECORD_IDS.name)
            if stable_records is None
            else (
                f"(select * from {labelled} semi join {rest[0]} using (component))",
                f"(select * from {RECORD_IDS.name} semi join {rest[1]} using (customer_id))",
            )
        )
        # Every other record of this run or the last, with its component now and its id of last time: the
        # one pass over those records that both the assignment and the rewrite of the record ids read.
        sql.create_table_as(
            compared,
            f"""
            select coalesce(l.source, r.source) as source, coalesce(l.source_record_id, r.source_record_id)
                       as source_record_id, coalesce(l.role, r.role) as role,
                   l.component, r.customer_id as old_id, r.first_seen_seq
            from {narrowed[0]} l full join {narrowed[1]} r using (source, source_record_id, role)
            """,
            temporary=True,
        )
        # Each other record's active id of last time, ranked by age within the id (1 = the id's oldest
        # record) where the id's records are now in several components: only there does the rank break a
        # tie, and ranking every record would sort rows a delta leaves where they were.
        sql.create_table_as(
            carried,
            f"""
            with active as (
                select c.* from {compared} c
                join {ID_REGISTRY.name} g on g.customer_id = c.old_id and g.status = 'active'
                where c.component is not null
            ),
            spread as (select old_id from active group by old_id having min(component) <> max(component))
            select component, old_id, first_seen_seq, null::bigint as age_rank
            from active anti join spread using (old_id)
            union all
            select component, old_id, first_seen_seq,
                   row_number() over (
                       partition by old_id order by first_seen_seq, source, source_record_id, role
                   ) as age_rank
            from active semi join spread using (old_id)
            """,
            temporary=True,
        )
        # Where each old id goes: the component with most of its records, ties to the one with its oldest.
        sql.create_table_as(
            homes,
            f"""
            select old_id, component, records
            from (
                select old_id, component, count(*) as records,
                       row_number() over (partition by old_id order by count(*) desc, min(age_rank)) as choice
                from {carried} group by old_id, component
            )
            where choice = 1
            """,
            temporary=True,
        )
        # Per component, the ids that call it home, the oldest issued first: it survives.
        sql.create_table_as(
            claims,
            f"""
            select h.component, h.old_id, h.records,
                   row_number() over (partition by h.component order by g.issued_seq, h.old_id) as rank
            from {homes} h join {ID_REGISTRY.name} g on g.customer_id = h.old_id
            """,
            temporary=True,
        )
        # Components no id calls home get new ids, named after their smallest record; a name ever issued
        # before is hashed again with a suffix (rare, so done one by one).
        issued_table = tables("issued")
        sql.create_table_as(
            issued_table,
            f"""
            with split_origin as (
                select component, old_id as split_from
                from (
                    select component, old_id,
                           row_number() over (partition by component order by count(*) desc, old_id) as choice
                    from {carried} group by component, old_id
                )
                where choice = 1
            )
            select f.component, f.first_key, 'cus_' || substr(md5(f.first_key), 1, 16) as customer_id,
                   o.split_from, f.records
            from (
                select component, min(source || '/' || source_record_id) as first_key, count(*) as records
                from {compared} anti join {claims} using (component)
                where component is not null
                group by component
            ) f
            left join split_origin o using (component)
            """,
            temporary=True,
        )
        clashes = sql.rows(
            f"""
            select component, first_key from {issued_table} i
            where customer_id in (select customer_id from {ID_REGISTRY.name})
               or (select count(*) from {issued_table} j where j.customer_id = i.customer_id) > 1
            order by first_key
            """
        )
        if clashes:
            issued_table = _rename_clashes(sql, tables, issued_table, clashes)
        sql.create_table_as(
            assigned,
            f"""
            select component, old_id as customer_id from {claims} where rank = 1
            union all
            select component, old_id from {stable}
            union all
            select component, customer_id from {issued_table}
            """,
        )
        # Ids whose customer another, older id names: they become aliases of it.
        merged = tables("merged")
        sql.create_table_as(
            merged,
            f"""
            select m.old_id, s.old_id as survivor, m.records, {why("m.component")} as reason
            from {claims} m join {claims} s on s.component = m.component and s.rank = 1
            where m.rank > 1
            """,
            temporary=True,
        )
        retired = [
            row[0]
            for row in sql.rows(
                f"""
                select g.customer_id from {ID_REGISTRY.name} g
                anti join {homes} h on h.old_id = g.customer_id
                anti join {stable} s on s.old_id = g.customer_id
                where g.status = 'active'
                order by 1
                """
            )
        ]
        kept = int(
            sql.value(f"select (select count(*) from {claims} where rank = 1) + (select count(*) from {stable})")
        )
        with sql.transaction():
            sql.execute(f"insert into {ID_RUNS.name} values (?, ?, ?, ?)", [run_seq, run_id, at, settings])
            next_seq = int(sql.value(f"select coalesce(max(issued_seq), 0) from {ID_REGISTRY.name}"))
            sql.execute(
                f"""
                insert into {ID_REGISTRY.name}
                select customer_id, 'active', customer_id,
                       ? + row_number() over (order by first_key), ?, ?, ?
                from {issued_table}
                """,
                [next_seq, at, run_id, at],
            )
            sql.execute(
                f"""
                update {ID_REGISTRY.name} set status = 'merged', changed_at = ?
                where customer_id in (select old_id from {merged})
                """,
                [at],
            )
            # Aliases of an absorbed id now lead to its survivor too (a survivor is active, so never absorbed).
            sql.execute(
                f"""
                update {ID_REGISTRY.name} g set current_id = m.survivor
                from {merged} m where g.current_id = m.old_id
                """
            )
            if retired:
                sql.execute(
                    f"""
                    update {ID_REGISTRY.name} set status = 'retired', changed_at = ?
                    where customer_id in (select unnest(cast(? as varchar[])))
                    """,
                    [at, retired],
                )
                sql.execute(
                    f"update {ID_REGISTRY.name} set current_id = null "
                    "where current_id in (select unnest(cast(? as varchar[])))",
                    [retired],
                )
            sql.execute(
                f"""
                insert into {ID_HISTORY.name}
                select ?, ?, ?, case when split_from is null then 'issued' else 'split' end, customer_id,
                       split_from, records, case when split_from is null then ? else {why("component")} end
                from {issued_table} order by customer_id
                """,
                [run_seq, run_id, at, "new records" if last else "first run"],
            )
            # Records that left an id which lives on for a customer that already had another id: neither a
            # merge (the old id survives elsewhere) nor a split (no new id), but their id changed all the same.
            sql.execute(
                f"""
                insert into {ID_HISTORY.name}
                select ?, ?, ?, 'moved', a.customer_id, c.old_id, count(*), {why("c.component")}
                from {carried} c join {assigned} a using (component)
                where c.old_id <> a.customer_id
                  and c.old_id not in (select old_id from {claims} where rank > 1)
                  and a.customer_id not in (select customer_id from {issued_table})
                group by a.customer_id, c.old_id, c.component
                order by a.customer_id, c.old_id
                """,
                [run_seq, run_id, at],
            )
            sql.execute(
                f"""
                insert into {ID_HISTORY.name}
                select ?, ?, ?, 'merged', old_id, survivor, records, reason from {merged} order by old_id
                """,
                [run_seq, run_id, at],
            )
            sql.execute(
                f"""
                insert into {ID_HISTORY.name}
                select ?, ?, ?, 'retired', unnest(cast(? as varchar[])), null, 0, 'no record carries it'
                """,
                [run_seq, run_id, at, retired],
            )
            _record_ids(sql, compared, assigned, stable, stable_records or 0, run_seq, tables, map_kept)
            publish_aliases(sql)
        issued, split = sql.row(f"select count(*), count(split_from) from {issued_table}")
        absorbed = sql.value(f"select count(*) from {merged}")
    return IdChanges(
        kept=kept, issued=int(issued), merged=int(absorbed), split=int(split), retired=len(retired), reason=reason
    )


def _stable_customers(sql: Sql, tables: Scratch, labelled: str, stable: str, rest: tuple[str, str]) -> int | None:
    """Fill temp table `stable` (component, old_id, n) with the components of `labelled` whose records are
    exactly those of an active id of last time (`n` records each), and the two temp tables `rest` with the
    others: the components (component) and the ids of last time (customer_id). Returns how many records
    the stable components hold, or None, with `stable` empty and `rest` not made, when no record had an id
    (a first run: every component is among the rest).

    A component and an id are compared by digest (their records' count and two sums of hashes of their
    keys) rather than by joining every record with its id of last time: one aggregate over each side costs
    less than that join, and it leaves only the other records to join. Two sets of records that differ
    but give the same count and both sums (one chance in about 2^128 per pair) would only make a new
    customer keep an old id."""
    rest_components, rest_ids = rest
    if not sql.value(f"select count(*) from (select 1 from {RECORD_IDS.name} limit 1)"):
        empty = "select null::bigint as component, null::varchar as old_id, null::bigint as n limit 0"
        sql.create_table_as(stable, empty, temporary=True)
        return None
    digest = (
        "count(*) as n, sum(hash(source, source_record_id, role))::hugeint as d1, "
        "sum(hash(role, source_record_id, source))::hugeint as d2"
    )
    components, ids = tables("component_digests"), tables("id_digests")
    sql.create_table_as(components, f"select component, {digest} from {labelled} group by component", temporary=True)
    sql.create_table_as(
        ids, f"select customer_id, {digest} from {RECORD_IDS.name} group by customer_id", temporary=True
    )
    sql.create_table_as(
        stable,
        f"""select c.component, i.customer_id as old_id, c.n from {components} c join {ids} i using (n, d1, d2)
            join {ID_REGISTRY.name} g on g.customer_id = i.customer_id and g.status = 'active'""",
        temporary=True,
    )
    sql.create_table_as(
        rest_components, f"select component from {components} anti join {stable} using (component)", temporary=True
    )
    sql.create_table_as(
        rest_ids, f"select customer_id from {ids} i anti join {stable} s on s.old_id = i.customer_id", temporary=True
    )
    tables.drop("component_digests")
    tables.drop("id_digests")
    return int(sql.value(f"select coalesce(sum(n), 0) from {stable}"))


def _record_ids(
    sql: Sql,
    compared: str,
    assigned: str,
    stable: str,
    stable_records: int,
    run_seq: int,
    tables: Scratch,
    map_kept: bool,
) -> None:
    """Write what each record carries now to the record ids and `cdp.identity_map`, in the caller's
    transaction; a record keeps the run that first saw it. The records of `stable` customers (they kept
    their id, and their record ids are what the last run wrote) are not in `compared`.

    Only the records whose id changed, and those gone, are rewritten when they are few (a delta) and the
    map is what the last run left (`map_kept`), so the record ids' twin; otherwise both are rewritten
    whole, which is then also cheaper than updating millions of rows in place."""
    few = False
    changed = tables("changed")
    if map_kept and sql.table_exists(IDENTITY_MAP):
        sql.create_table_as(
            changed,
            f"""
            select c.source, c.source_record_id, c.role, a.customer_id, c.old_id,
                   coalesce(c.first_seen_seq, {run_seq}) as first_seen_seq
            from {compared} c left join {assigned} a using (component)
            where a.customer_id is distinct from c.old_id
            """,
            temporary=True,
        )
        changed_rows, all_rows = sql.row(
            f"select (select count(*) from {changed}), (select count(*) from {compared}) + {stable_records}"
        ) or (0, 0)
        few = changed_rows <= (all_rows - changed_rows) // 10
    if not few:
        kept = tables("kept_record_ids")
        sql.create_table_as(
            kept,
            f"select * from {RECORD_IDS.name} i semi join {stable} s on s.old_id = i.customer_id",
            temporary=True,
        )
        RECORD_IDS.replace(
            sql,
            f"""select c.source, c.source_record_id, c.role, a.customer_id,
                       coalesce(c.first_seen_seq, {run_seq}) as first_seen_seq
                from {compared} c join {assigned} a using (component)
                union all select source, source_record_id, role, customer_id, first_seen_seq from {kept}""",
        )
        tables.drop("kept_record_ids")
        sql.create_table_as(IDENTITY_MAP, f"select source, source_record_id, customer_id, role from {RECORD_IDS.name}")
        return
    for table in (RECORD_IDS.name, IDENTITY_MAP):
        sql.execute(
            f"""delete from {table} t using {changed} c
                where c.old_id is not null and t.source = c.source and t.source_record_id = c.source_record_id
                  and t.role = c.role"""
        )
    now = f"select * from {changed} where customer_id is not null"
    RECORD_IDS.insert(sql, f"select source, source_record_id, role, customer_id, first_seen_seq from ({now})")
    sql.execute(f"insert into {IDENTITY_MAP} select source, source_record_id, customer_id, role from ({now})")


def publish_aliases(sql: Sql) -> None:
    """Rewrite `cdp.customer_aliases`: every id ever issued, the id to use for it today and its status."""
    CUSTOMER_ALIASES.replace(
        sql,
        f"select customer_id as alias_id, current_id as customer_id, status from {ID_REGISTRY.name}",
    )
