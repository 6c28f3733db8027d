"""Candidate pairs for the probabilistic layer: multi-pass blocking over the matching records.

Comparing every record with every other is quadratic; blocking compares only records that agree
exactly on the features a rule lists. Several rules with different features let a typo in one field
be caught by another rule. A key shared by more than `max_block_size` records (every "John Smith" in
a city of millions, a default postal code) is skipped by that rule and reported: such a block costs
n² comparisons and its pairs have to be told apart by other fields anyway, which other rules block on.
Each rule's pair count is known from its group sizes before a single pair
is made, so a rule on a near-constant field fails at once, naming itself and the count, instead of
exhausting memory an hour later.
"""

from resources.config.identity import LIST_FEATURES
from resources.sql import Sql


class BlockingRuleTooBroad(ValueError):
    """A blocking rule would produce more candidate pairs than `identity.matching.max_pairs_per_rule`."""


def rule_name(rule: list[str]) -> str:
    """A rule as people read it in metadata and `identity.evidence`: its features joined by ' + '."""
    return " + ".join(rule)


def list_features(rule: list[str]) -> list[str]:
    """The rule's features that hold several values (LIST_FEATURES)."""
    return [f for f in rule if f in LIST_FEATURES]


def whole_key(rule: list[str]) -> str:
    """The hash of a record's whole lists of the rule's list features: which records hold the same values."""
    return f"hash({', '.join(list_features(rule))})"


def keyed(records: str, rule: list[str], distinct: bool = False) -> str:
    """The records as the rule's blocks see them: a list feature gives a row per value, and `__whole` (a
    hash of the whole lists) tells which records hold the same lists (the same e-mail address, for
    `email_one_slip`). With `distinct`, each distinct combination of the rule's values once and no node
    id: what a block holds of a list feature is whole values, and a person's records mostly repeat theirs,
    so unnesting each value once costs a fraction of unnesting every record's."""
    if not list_features(rule):
        return records
    columns = ", ".join(f"unnest({f}) as {f}" if f in LIST_FEATURES else f for f in rule)
    whole = f"{whole_key(rule)} as __whole"
    if distinct:
        return f"(select {whole}, {columns} from (select distinct {', '.join(rule)} from {records}))"
    return f"(select node_id, {whole}, {columns} from {records})"


def held_keys(records: str, rule: list[str], nodes: str) -> str:
    """A select of the rule's keys held by the `records` whose node ids are in table `nodes`. The records
    are narrowed first and only theirs are unnested: a semi join does not reach under the unnest, which
    would otherwise unnest every record's list."""
    narrowed = f"(select * from {records} semi join {nodes} using (node_id))"
    return f"select {', '.join(rule)} from {keyed(narrowed, rule)}"


def holding(records: str, rule: list[str], keys: str, key: str = "node_id") -> str:
    """The rows of table `records` holding, in each of the rule's list features, a value of the select
    `keys`: every record of those keys' blocks, and few others (the table itself when the rule lists none).

    A small run's blocks are found in them rather than in `keyed(..., distinct=True)` over every record:
    the distinct combinations of a million records' lists cost seconds to find and unnest, where unnesting
    each record's list beside its `key` (columns that tell its rows apart) and keeping those holding a
    value costs tenths. Callers keep their own join on the keys: these rows only narrow what it reads."""
    narrowed = records
    for feature in list_features(rule):
        values = f"(select {key}, unnest({feature}) as {feature} from {records})"
        holders = f"select {key} from {values} semi join ({keys}) using ({feature})"
        narrowed = f"(select * from {narrowed} semi join ({holders}) using ({key}))"
    return narrowed


def _count_blocks(
    sql: Sql, records: str, keys: str, rule: list[str], max_block_size: int, touching: str | None = None
) -> dict[str, object]:
    """Count the rule's blocks of `records` into temp table `keys` (every key on two or more records, with
    its size) and sum what they would cost: n(n-1)/2 pairs per block within the cap, and the keys skipped
    for being shared by more than `max_block_size` records. With `touching` (a table of node ids), only
    the blocks one of them is in are counted (each over all `records`).

    A rule on a list feature counts the distinct whole values in a block, not the records: records holding
    the same value (one address on a person's ten records) are the deterministic layer's to join, so they
    neither fill a block nor are paired with each other here (build_candidate_pairs)."""
    columns = ", ".join(rule)
    not_null = " and ".join(f"{f} is not null" for f in rule)
    counted, held, within = records, "", ""
    if touching is not None:
        # Only the keys one of the touching records holds (`held`): only their blocks can make a pair with
        # one. Found once, they keep the blocks and narrow the records a list rule unnests (holding).
        held = f"with held as ({held_keys(records, rule, touching)})"
        counted = holding(records, rule, "select * from held")
        within = f"semi join held using ({columns})"
    # On a list feature each row of the distinct values is another whole value: counting rows counts them.
    sql.create_table_as(
        keys,
        f"""{held} select {columns}, count(*)::hugeint as n from {keyed(counted, rule, distinct=True)} {within}
            where {not_null} group by all having count(*) > 1""",
        temporary=True,
    )
    found = sql.row(
        f"""select coalesce(sum(n * (n - 1) // 2) filter (where n <= {max_block_size}), 0),
                   count(*) filter (where n > {max_block_size}),
                   coalesce(sum(n) filter (where n > {max_block_size}), 0)
            from {keys}"""
    )
    assert found is not None  # an aggregate without group by has one row
    pairs, skipped_keys, skipped_records = found
    return {
        "rule": rule_name(rule),
        "estimated_pairs": int(pairs),
        "skipped_keys": int(skipped_keys),
        "records_in_skipped_keys": int(skipped_records),
    }


def _rule_pairs_sql(
    records: str, rule: list[str], keys: str, max_block_size: int, index: int, touching: str | None = None
) -> str:
    """The pairs of `records` the rule's kept blocks (`keys`) make, credited to rule `index`; with
    `touching` (a table of node ids, whose blocks alone preflight then counted), only the pairs with at
    least one record in it.

    Each record is tagged with its block's number, so the pairs come from a join on one integer rather than
    on the rule's features (names, postal codes), whatever the record holds. Any numbering tells the blocks
    apart, so none is sorted. On a list feature the blocks pair distinct whole values first, then every
    record of one with every record of the other."""
    columns = ", ".join(rule)
    touched = "true"
    if touching is not None:
        touched = f"(l.node_id in (select node_id from {touching}) or r.node_id in (select node_id from {touching}))"
    numbered = f"(select {columns}, row_number() over () as block from {keys} where n <= {max_block_size})"
    if not list_features(rule):
        return f"""
            with blocks as (select m.node_id, k.block from {records} m join {numbered} k using ({columns}))
            select l.node_id, r.node_id, {index}
            from blocks l join blocks r on l.block = r.block and l.node_id < r.node_id
            where {touched}"""
    first_list = list_features(rule)[0]
    if touching is not None:  # the kept blocks are the few the touching records are in
        records = holding(records, rule, f"select {columns} from {keys} where n <= {max_block_size}")
    return f"""
        with blocks as (
            select distinct m.__whole, k.block from {keyed(records, rule, distinct=True)} m
            join {numbered} k using ({columns})
        ),
        value_pairs as (
            select distinct a.__whole as lw, b.__whole as rw
            from blocks a join blocks b on a.block = b.block and a.__whole < b.__whole
        ),
        holders as (
            select node_id, {whole_key(rule)} as __whole from {records} where array_length({first_list}) > 0
        )
        select least(l.node_id, r.node_id), greatest(l.node_id, r.node_id), {index}
        from value_pairs p join holders l on l.__whole = p.lw join holders r on r.__whole = p.rw
        where {touched}"""


def preflight(
    sql: Sql,
    records: str,
    rules: list[tuple[list[str], int]],
    max_pairs: int,
    keys: list[str],
    touching: str | None = None,
) -> list[dict[str, object]]:
    """Estimated pairs per rule (its features and block cap) over the matching `records`, or over the
    blocks of the records in `touching` when given; raises naming every rule over the limit before any
    pair is made. Rule `i`'s blocks are counted into the caller's table `keys[i]`, which
    build_candidate_pairs turns into pairs and drops (as does this, when it raises)."""
    estimates = [
        _count_blocks(sql, records, table, rule, cap, touching) for table, (rule, cap) in zip(keys, rules, strict=True)
    ]
    too_broad = [e for e in estimates if int(e["estimated_pairs"]) > max_pairs]
    if too_broad:
        for table in keys:
            sql.drop_table(table)
        listed = "; ".join(f"rule '{e['rule']}' would make {int(e['estimated_pairs']):,} pairs" for e in too_broad)
        raise BlockingRuleTooBroad(
            f"identity.matching.blocking_rules: {listed}, over max_pairs_per_rule ({max_pairs:,}). "
            "Add a feature to the rule so its blocks are smaller, or raise the limit if the memory allows."
        )
    return estimates


def build_candidate_pairs(
    sql: Sql,
    records: str,
    rules: list[tuple[list[str], int]],
    keys: list[str],
    pairs: str,
    touching: str | None = None,
) -> dict[str, int]:
    """Rebuild the caller's temp table `pairs(l, r, rule_index)` from the blocks preflight counted into
    `keys`, dropping each once used: each pair of `records` once, credited to the first rule that finds it
    (its position in `rules`); with `touching` (a table of node ids), only the pairs with a record in it.
    Returns the pairs each rule made."""
    with sql.scratch("blocking") as tables:
        rule_pairs = tables("rule_pairs")
        sql.execute(f"create temp table {rule_pairs} (l bigint, r bigint, rule_index smallint)")
        for index, ((rule, max_block_size), table) in enumerate(zip(rules, keys, strict=True)):
            sql.execute(
                f"insert into {rule_pairs} {_rule_pairs_sql(records, rule, table, max_block_size, index, touching)}"
            )
            sql.drop_table(table)
        sql.create_table_as(
            pairs, f"select l, r, min(rule_index) as rule_index from {rule_pairs} group by l, r", temporary=True
        )
    made = dict.fromkeys((rule_name(rule) for rule, _ in rules), 0)
    for index, count in sql.rows(f"select rule_index, count(*) from {pairs} group by 1"):
        made[rule_name(rules[index][0])] = int(count)
    return made
