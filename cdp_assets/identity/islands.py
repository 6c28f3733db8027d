"""The deterministic layer resolved again only where a delta can change it: its records' value islands.

Every judgement the deterministic layer makes is local to the records that identifier values join: a
value shared by several people is judged on the person records carrying it, an activity record that would
bridge people on the person records its values reach, and the graph's components never cross a value no
record shares. So records joined by any value not blocked by pattern or list fall into *islands*: the
connected components of the record-to-value graph before the sharing and bridge checks take links away.
Nothing outside an island is read to decide anything inside it.

Each run keeps, per record node, its island, its deterministic component and a hash of what identity reads
of it (`identity.islands`: a person record's fields, PERSON_COLUMNS, and every record's identifier values).
The layer itself reads names and birth dates of those fields; the others are there because a record outside
the scope keeps its matching features too (matching/features.py). The next run, when the last one completed
with the same settings and the same model, compares the hashes: the records that changed, arrived or left,
the islands they were in and the islands of the records carrying a value one of them now carries make the
scope. No record outside the scope carries a value of a record inside it (an unchanged record's values are
as they were, and a changed record's values bring every carrier's island in), so resolving the scope alone
gives its records the components a run over everything gives, and every other record keeps its component.
Component labels are the smallest node id of each component, as a full run gives them; the kept components
are labelled again under this run's node ids.

What the scoped run writes to the deterministic layer's tables (values shared by several people, their
groups, separated links, values blocked for sharing) replaces the scope's rows only; values blocked by pattern
or list span islands (they join nobody) and are counted again over every record. A run that cannot use the
kept islands (the model trained, rows of this table removed by an erasure since, a scope over half the
records) runs the layer over everything and keeps the islands for the next one; where islands never apply
(Spark, matching disabled, a `max_per_profile` type) none are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cdp_assets.identity.inputs import PERSON_COLUMNS
from resources.config import CDPConfig
from resources.sql import Scratch, Sql, sql_literal

ISLANDS = "identity.islands"
# How many rows the last run left in ISLANDS: fewer now means an erasure removed some, whose islands the
# next run could not find; it then runs over everything.
ISLANDS_STATE = "identity.islands_state"
# A scope holding more than this share of the record nodes is resolved as a whole: the scoped run's own
# passes (the kept rows, the labels again) would cost more than they save.
MAX_SCOPE_SHARE = 0.5
# The reasons identity.blocked_identifiers gives a value blocked by pattern or list, not by its sharing.
LISTED_REASONS = ("listed in blocked_values", "matches a blocked pattern")
_LISTED = ", ".join(sql_literal(r) for r in LISTED_REASONS)
# A record is kept under the hash of its (source, source_record_id), which a source's records never share
# with another role's: millions of rows of integers write and join in a fraction of the time their text
# takes. A run whose records' keys collide keeps no islands (keys_unique).
_COLUMNS = ("key", "island", "component", "inputs")


def record_key(alias: str) -> str:
    """SQL for the key of the record whose columns `alias` names."""
    return f"hash({alias}.source, {alias}.source_record_id)"


def islands_apply(config: CDPConfig) -> bool:
    """Whether runs under `config` keep islands at all: only DuckDB's, with matching on (the first-name
    counts the sharing checks read then come with the kept model) and no `max_per_profile` type (whose
    splits number their components after the largest label of every island)."""
    return (
        config.warehouse.engine == "duckdb"
        and config.identity.matching.enabled
        and not config.identity.profile_limits()
    )


def keys_unique(sql: Sql, id_nodes: str) -> bool:
    """Whether no two record nodes (`id_nodes`: source, source_record_id) have keys that hash alike, one chance
    in millions of millions per run: a run whose keys collide keeps no islands, and its identifiers find
    their nodes by the keys' text."""
    return not sql.value(f"select count(*) - count(distinct {record_key('n')}) from {id_nodes} n")


def node_inputs(sql: Sql, id_nodes: str, person_latest: str, written_edges: str, out: str) -> None:
    """Temp table `out` (node_id, key, inputs): per record node, its record's key and a hash of what identity
    reads of it (a person record's fields, PERSON_COLUMNS of `person_latest`, and the set of its identifier
    values, from `written_edges`: node_id, id_type, id_value). Only for nodes whose keys are unique
    (keys_unique)."""
    fields = ", ".join(f"p.{column}" for column in PERSON_COLUMNS)
    sql.create_table_as(
        out,
        f"""
        select n.node_id, {record_key("n")} as key, hash(coalesce(e.values_hash, 0), {fields}) as inputs
        from {id_nodes} n
        left join (select node_id, sum(hash(id_type, id_value)) as values_hash from {written_edges} group by 1) e
            using (node_id)
        left join {person_latest} p using (node_id)
        """,
        temporary=True,
    )


def kept_islands(sql: Sql) -> bool:
    """Whether the islands the last run kept are all there (an erasure removes its records' rows)."""
    if not (sql.table_exists(ISLANDS) and sql.table_exists(ISLANDS_STATE)):
        return False
    if set(sql.columns(f"select * from {ISLANDS}")) != set(_COLUMNS):
        return False
    return sql.value(f"select rows from {ISLANDS_STATE}") == sql.value(f"select count(*) from {ISLANDS}")


def forget_islands(sql: Sql) -> None:
    """Drop the kept islands: a run that cannot keep them leaves none that would be out of date."""
    sql.drop_table(ISLANDS)
    sql.drop_table(ISLANDS_STATE)


@dataclass(frozen=True)
class Scope:
    """What a scoped run resolves: its record nodes (`nodes`, a temp table of node_id), the kept islands
    they were in (`islands`: island) and the keys of every record in those islands or changed, those gone
    since included (`keys`: key); `node_count` counts the nodes."""

    nodes: str
    islands: str
    keys: str
    node_count: int


def find_scope(
    sql: Sql,
    tables: Scratch,
    inputs: str,
    written_edges: str,
    node_count: int,
    blocked: Callable[[list[str]], tuple[str, str]],
) -> Scope | None:
    """The scope of this run (see the module's docstring), or None when it holds more than MAX_SCOPE_SHARE
    of the run's `node_count` record nodes. `inputs` is node_inputs' table and `written_edges` every node's
    identifier values; `blocked` gives, for a list of identifier types, the condition and the table of
    literal values that block a value by pattern or list."""
    changed, now_values = tables("scope_changed"), tables("scope_values")
    islands, keys, nodes = tables("scope_islands"), tables("scope_keys"), tables("scope_nodes")
    # Record nodes new or changed since the last run (with their kept island, if any).
    sql.create_table_as(
        changed,
        f"""select i.node_id, i.key, k.island from {inputs} i left join {ISLANDS} k using (key)
            where k.inputs is distinct from i.inputs""",
        temporary=True,
    )
    # The values the changed records carry now: every other record carrying one (unless it blocks by
    # pattern or list, and so joins nobody) is in the scope, with its island.
    sql.create_table_as(
        now_values,
        f"select distinct id_type, id_value from {written_edges} semi join {changed} using (node_id)",
        temporary=True,
    )
    condition, literals = blocked([t for (t,) in sql.rows(f"select distinct id_type from {now_values} order by 1")])
    sql.create_table_as(
        islands,
        f"""
        with joining as (
            select id_type, id_value from {now_values} v
            where not ({condition})
              and not exists (select 1 from {literals} b where b.id_type = v.id_type and b.id_value = v.id_value)
        ),
        carriers as (select distinct node_id from {written_edges} semi join joining using (id_type, id_value))
        select island from {changed} where island is not null
        union select k.island from {ISLANDS} k anti join {inputs} using (key)
        union select k.island from {ISLANDS} k semi join (
            select i.key from {inputs} i semi join carriers using (node_id)) using (key)
        """,
        temporary=True,
    )
    sql.create_table_as(
        keys,
        f"select key from {ISLANDS} semi join {islands} using (island) union select key from {changed}",
        temporary=True,
    )
    sql.create_table_as(nodes, f"select node_id from {inputs} semi join {keys} using (key)", temporary=True)
    tables.drop("scope_changed")
    tables.drop("scope_values")
    size = int(sql.value(f"select count(*) from {nodes}"))
    if size > MAX_SCOPE_SHARE * node_count:
        for name in ("scope_islands", "scope_keys", "scope_nodes"):
            tables.drop(name)
        return None
    return Scope(nodes=nodes, islands=islands, keys=keys, node_count=size)


def set_aside(
    sql: Sql, tables: Scratch, scope: Scope, written_edges: str, shared: tuple[str, str], separated: str
) -> None:
    """Copy the rows of the deterministic layer's tables that the scope leaves as they were, before the scoped
    run replaces the tables with its own: `restore` puts them back."""
    shared_values, shared_groups = shared
    outside = f"anti join {scope.keys} k on k.key = {record_key('t')}"
    sql.create_table_as(tables("kept_groups"), f"select t.* from {shared_groups} t {outside}", temporary=True)
    sql.create_table_as(
        tables("kept_shared"),
        f"select v.* from {shared_values} v semi join {tables('kept_groups')} using (id_type, id_value)",
        temporary=True,
    )
    sql.create_table_as(tables("kept_separated"), f"select t.* from {separated} t {outside}", temporary=True)
    # A value blocked for being shared is kept when its records are outside the scope (all of them are, or
    # none: they are one island); one blocked by pattern or list is counted again in `restore`.
    sql.create_table_as(
        tables("kept_blocked"),
        f"""
        with judged as (select * from identity.blocked_identifiers where reason not in ({_LISTED}))
        select j.* from judged j semi join (
            select id_type, id_value from {written_edges} semi join judged using (id_type, id_value)
            anti join {scope.nodes} using (node_id)
        ) using (id_type, id_value)
        """,
        temporary=True,
    )
    sql.create_table_as(
        tables("listed_before"),
        f"select id_type, id_value, reason from identity.blocked_identifiers where reason in ({_LISTED})",
        temporary=True,
    )


def restore(sql: Sql, tables: Scratch, identifiers: str, shared: tuple[str, str], separated: str) -> None:
    """Put back the rows `set_aside` copied, and count every value blocked by pattern or list again over every
    record's `identifiers` (a select of id_type, id_value, a row per record holding it): its records may lie
    in any island."""
    shared_values, shared_groups = shared
    sql.execute(f"insert into {shared_groups} select * from {tables('kept_groups')}")
    sql.execute(f"insert into {shared_values} select * from {tables('kept_shared')}")
    sql.execute(f"insert into {separated} select * from {tables('kept_separated')}")
    listed = tables("listed_now")
    sql.create_table_as(
        listed,
        f"""select id_type, id_value, reason from {tables("listed_before")}
            union select id_type, id_value, reason from identity.blocked_identifiers where reason in ({_LISTED})""",
        temporary=True,
    )
    sql.execute(f"delete from identity.blocked_identifiers where reason in ({_LISTED})")
    sql.execute(
        f"""
        insert into identity.blocked_identifiers
        select l.id_type, l.id_value, c.records, l.reason from {listed} l
        join (select id_type, id_value, count(*) as records from ({identifiers})
              semi join {listed} using (id_type, id_value) group by all) c using (id_type, id_value)
        """
    )
    sql.execute(f"insert into identity.blocked_identifiers select * from {tables('kept_blocked')}")
    for name in ("kept_groups", "kept_shared", "kept_separated", "kept_blocked", "listed_before", "listed_now"):
        tables.drop(name)


def label_again(sql: Sql, scope: Scope, inputs: str, components: str, out: str) -> None:
    """Temp table `out` (node_id, component) for every record node: the scope's components as this run found
    them (`components`), the others' as kept, each labelled with its smallest node id under this run's
    numbering, as a run over everything labels them."""
    sql.create_table_as(
        out,
        f"""
        with outside as (
            select i.node_id, k.component as kept from {inputs} i join {ISLANDS} k using (key)
            anti join {scope.nodes} using (node_id)
        )
        select o.node_id, l.component from outside o
        join (select kept, min(node_id) as component from outside group by kept) l using (kept)
        union all
        select c.node_id, c.component from {components} c semi join {scope.nodes} using (node_id)
        """,
        temporary=True,
    )


def keep_islands(sql: Sql, scope: Scope | None, inputs: str, island_labels: str, components: str) -> None:
    """Keep each record node's island (`island_labels`: node_id, component over the values not blocked by
    pattern or list), deterministic component (`components`) and inputs hash for the next run: all of them
    after a run over everything, the scope's in place of its kept islands after a scoped run. Kept ids are
    offset past the largest kept one, so a scope's new islands and components never take a kept one's id."""
    rows = f"""
        select i.key, s.component + {{island_offset}} as island, c.component + {{component_offset}} as component,
               i.inputs
        from {inputs} i join {island_labels} s using (node_id) join {components} c using (node_id)"""
    if scope is None:
        sql.create_table_as(ISLANDS, rows.format(island_offset=0, component_offset=0))
    else:
        island_offset, component_offset = sql.row(
            f"select coalesce(max(island), -1) + 1, coalesce(max(component), -1) + 1 from {ISLANDS}"
        ) or (0, 0)
        sql.execute(f"delete from {ISLANDS} where island in (select island from {scope.islands})")
        sql.execute(
            f"insert into {ISLANDS} {rows.format(island_offset=island_offset, component_offset=component_offset)}"
            f" semi join {scope.nodes} using (node_id)"
        )
    sql.create_table_as(ISLANDS_STATE, f"select count(*) as rows from {ISLANDS}")
