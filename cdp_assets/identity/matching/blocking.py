"""Candidate pairs for the probabilistic layer: multi-pass blocking over `match_records`.

Comparing every record with every other is quadratic; blocking compares only records that agree
exactly on the features a rule lists. Several rules with different features let a typo in one field
be caught by another rule. A key shared by more than `max_block_size` records (every "John Smith" in
a city of millions, a default postal code) is skipped by that rule and reported: such a block costs
n² comparisons and its pairs have to be told apart by other fields anyway, which other rules block on.
Each rule's pair count is known from its group sizes before a single pair
is made, so a rule on a near-constant field fails at once, naming itself and the count, instead of
exhausting memory an hour later.
"""

import duckdb

from cdp_assets.identity.scratch import step_tables


class BlockingRuleTooBroad(ValueError):
    """A blocking rule would produce more candidate pairs than `identity.matching.max_pairs_per_rule`."""


def rule_name(rule: list[str]) -> str:
    return " + ".join(rule)


def _keys_table(index: int) -> str:
    """The blocks preflight counted for rule `index`, which build_candidate_pairs turns into pairs and drops."""
    return f"blocking__keys_{index}"


def _count_blocks(
    conn: duckdb.DuckDBPyConnection, index: int, rule: list[str], max_block_size: int
) -> dict[str, object]:
    """Count the rule's blocks into temp table `block_keys_<index>` (every key on two or more records, with
    its size) and sum what they would cost: n(n-1)/2 pairs per block within the cap, and the keys skipped
    for being shared by more than `max_block_size` records."""
    columns = ", ".join(rule)
    not_null = " and ".join(f"{f} is not null" for f in rule)
    conn.execute(
        f"""create or replace temp table {_keys_table(index)} as
            select {columns}, count(*)::hugeint as n from match_records where {not_null}
            group by all having count(*) > 1"""
    )
    pairs, skipped_keys, skipped_records = conn.execute(
        f"""select coalesce(sum(n * (n - 1) // 2) filter (where n <= {max_block_size}), 0),
                   count(*) filter (where n > {max_block_size}),
                   coalesce(sum(n) filter (where n > {max_block_size}), 0)
            from {_keys_table(index)}"""
    ).fetchall()[0]
    return {
        "rule": rule_name(rule),
        "estimated_pairs": int(pairs),
        "skipped_keys": int(skipped_keys),
        "records_in_skipped_keys": int(skipped_records),
    }


def preflight(
    conn: duckdb.DuckDBPyConnection, rules: list[tuple[list[str], int]], max_pairs: int
) -> list[dict[str, object]]:
    """Estimated pairs per rule (its features and block cap); raises naming every rule over the limit
    before any pair is made. The blocks counted stay for build_candidate_pairs, which drops them."""
    estimates = [_count_blocks(conn, index, rule, cap) for index, (rule, cap) in enumerate(rules)]
    too_broad = [e for e in estimates if int(e["estimated_pairs"]) > max_pairs]
    if too_broad:
        for index in range(len(rules)):
            conn.execute(f"drop table {_keys_table(index)}")
        listed = "; ".join(f"rule '{e['rule']}' would make {int(e['estimated_pairs']):,} pairs" for e in too_broad)
        raise BlockingRuleTooBroad(
            f"identity.matching.blocking_rules: {listed}, over max_pairs_per_rule ({max_pairs:,}). "
            "Add a feature to the rule so its blocks are smaller, or raise the limit if the memory allows."
        )
    return estimates


def build_candidate_pairs(conn: duckdb.DuckDBPyConnection, rules: list[tuple[list[str], int]]) -> dict[str, int]:
    """Rebuild temp table `match_pairs(l, r, rule_index)` from the blocks preflight counted: each pair once,
    credited to the first rule that finds it (its position in `rules`)."""
    with step_tables(conn, "blocking") as tables:
        rule_pairs = tables("rule_pairs")
        conn.execute(f"create temp table {rule_pairs} (l bigint, r bigint, rule_index smallint)")
        for index, (rule, max_block_size) in enumerate(rules):
            columns = ", ".join(rule)
            # Each record is tagged with its block's number, so the pairs come from a join on one integer
            # rather than on the rule's features (names, postal codes), whatever the record holds.
            conn.execute(
                f"""
                insert into {rule_pairs}
                with blocks as (
                    select m.node_id, k.block from match_records m
                    join (select {columns}, row_number() over () as block from {_keys_table(index)}
                          where n <= {max_block_size}) k using ({columns})
                )
                select l.node_id, r.node_id, {index}
                from blocks l join blocks r on l.block = r.block and l.node_id < r.node_id
                """
            )
            conn.execute(f"drop table {_keys_table(index)}")
        conn.execute(
            f"""create or replace temp table match_pairs as
               select l, r, min(rule_index) as rule_index from {rule_pairs} group by l, r"""
        )
    made = dict.fromkeys((rule_name(rule) for rule, _ in rules), 0)
    for index, count in conn.execute("select rule_index, count(*) from match_pairs group by 1").fetchall():
        made[rule_name(rules[index][0])] = int(count)
    return made
