"""Clustering decisions kept from the last run: a delta decides again only the groups whose links changed.

Clustering decides each group of customers that links join on the group's rows alone (`cluster_linked`:
each customer's size, birth dates and names, and the links between them in rank order), with the model in
use, its first-name counts and conflicts, and `max_cluster_person_records`. A delta changes few groups:
the others come back with the same rows, under this run's node numbers. So each group's rows are hashed
with its record nodes named by their records, not their numbers (the group's *signature*), and the
decisions of every group are kept under it with their records (`identity.cluster_decisions`). The next run
takes the kept decisions of every group whose signature it finds there, and calls the rule only for the
others. Person records are numbered in the order of their (source, record id), so a group with the same
records and rows ranks its links and orders its customers as before: its decisions are the ones the rule
gives now.

Decisions are kept only for the model that made them and the settings the rule reads
(`identity.cluster_decisions_state`), and used only where the run keeps the last one's scored pairs (the
same model and identity settings, nothing erased since); a run that decides everything writes the table
afresh. A group of which an erasure removed rows (rows naming an erased record are removed) no longer has
all its decisions, and is decided again.
"""

from cdp_assets.identity.islands import record_key
from cdp_assets.identity.matching.model import model_in_use
from resources.config import CDPConfig
from resources.sql import Sql, sql_literal

DECISIONS_TABLE = "identity.cluster_decisions"
DECISIONS_STATE = "identity.cluster_decisions_state"
# Bump when cluster_linked decides differently for the same rows: kept decisions of another version are
# never used.
VERSION = "1"
# The columns of a group's link row (grp, kind, component, a, b, c, rank) that name record nodes besides
# its customer (`component`): the other customer and the link's two records.
_LINK_NODES = ("a", "b", "c")


def _state(sql: Sql, config: CDPConfig) -> str:
    """What the kept decisions hold for: the model in use, the bound the rule applies and this version."""
    return f"{model_in_use(sql)}|{config.identity.max_cluster_person_records}|{VERSION}"


def usable(sql: Sql, config: CDPConfig) -> bool:
    """Whether the kept decisions were made for the model and settings of this run."""
    if not (sql.table_exists(DECISIONS_TABLE) and sql.table_exists(DECISIONS_STATE)):
        return False
    return sql.value(f"select state from {DECISIONS_STATE}") == _state(sql, config)


def forget(sql: Sql) -> None:
    """Drop the kept decisions (matching off, or a run that cannot keep them)."""
    sql.drop_table(DECISIONS_TABLE)
    sql.drop_table(DECISIONS_STATE)


def signatures(sql: Sql, group_rows: str, records: str, out: str) -> None:
    """Temp table `out` (grp, signature, rows): per group of `group_rows` (grp, kind, component, a, b, c,
    rank, as clustering gives them to `cluster_linked`), the sum of its rows' hashes with every record node
    (a customer, and in a link row its other customer and its two records) named by its record's key
    (`islands.record_key`, from the matching `records`). The groups' nodes are named first, so
    the rows are joined with them rather than with every record."""
    nodes = " union ".join(
        [f"select component::bigint as node_id from {group_rows}"]
        + [f"select try_cast({c} as bigint) from {group_rows} where kind = 'link'" for c in _LINK_NODES]
    )
    joins = "".join(
        f" left join keys k_{c} on g.kind = 'link' and k_{c}.node_id = try_cast(g.{c} as bigint)" for c in _LINK_NODES
    )
    named = ", ".join(f"case when g.kind = 'link' then k_{c}.key::varchar else g.{c} end" for c in _LINK_NODES)
    sql.create_table_as(
        out,
        f"""with keys as (
                select node_id, {record_key("r")} as key from {records} r semi join ({nodes}) using (node_id)
            )
            select g.grp, sum(hash(g.kind, k.key, {named}, g.rank))::hugeint as signature, count(*) as rows
            from {group_rows} g join keys k on k.node_id = g.component::bigint{joins}
            group by g.grp""",
        temporary=True,
    )


def reuse(sql: Sql, signatures_table: str, records: str, out: str) -> None:
    """Temp table `out` (grp, kind, x, y, decision), text like the rule's rows: the kept decisions of each
    group whose signature is kept with all its decisions, under this run's node ids."""
    sql.create_table_as(
        out,
        f"""
        with complete as (
            select signature from {DECISIONS_TABLE} group by signature, outputs having count(*) = outputs
        )
        select s.grp::varchar as grp, d.kind, l.node_id::varchar as x, r.node_id::varchar as y, d.decision
        from {DECISIONS_TABLE} d semi join complete using (signature)
        join {signatures_table} s using (signature)
        join {records} l on l.source = d.left_source and l.source_record_id = d.left_record_id
        join {records} r on r.source = d.right_source and r.source_record_id = d.right_record_id
        """,
        temporary=True,
    )


def save(sql: Sql, config: CDPConfig, signatures_table: str, decided: str, records: str, reused: str | None) -> None:
    """Keep the decisions `decided` (grp, kind, x, y, decision) made now under their groups' signatures, with
    their records. With `reused` (this run took the decisions of those groups from the table), the kept rows
    of every other group are replaced by this run's; without, the table is written afresh."""
    rows = f"""
        select s.signature, o.outputs, d.kind, l.source as left_source, l.source_record_id as left_record_id,
               r.source as right_source, r.source_record_id as right_record_id, d.decision
        from {decided} d join {signatures_table} s using (grp)
        join (select grp, count(*) as outputs from {decided} group by grp) o using (grp)
        join {records} l on l.node_id = d.x::bigint
        join {records} r on r.node_id = d.y::bigint"""
    if reused is not None:
        sql.execute(
            f"""delete from {DECISIONS_TABLE} where signature not in (
                    select signature from {signatures_table} semi join (select grp::bigint as grp from {reused})
                    using (grp))"""
        )
        sql.execute(f"insert into {DECISIONS_TABLE} {rows}")
    else:
        sql.create_table_as(DECISIONS_TABLE, rows)
    sql.create_table_as(DECISIONS_STATE, f"select {sql_literal(_state(sql, config))} as state")
