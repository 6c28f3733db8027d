"""Candidate pairs for the probabilistic layer: multi-pass blocking over `identity.match_records`.

Comparing every record with every other is quadratic; blocking compares only records that agree
exactly on the features a rule lists. Several rules with different features let a typo in one field
be caught by another rule. Each rule's pair count is known from its group sizes before a single pair
is made, so a rule on a near-constant field fails at once, naming itself and the count, instead of
exhausting memory an hour later.
"""

import duckdb


class BlockingRuleTooBroad(ValueError):
    """A blocking rule would produce more candidate pairs than `identity.matching.max_pairs_per_rule`."""


def rule_name(rule: list[str]) -> str:
    return " + ".join(rule)


def _agree(rule: list[str]) -> str:
    return " and ".join(f"l.{f} = r.{f}" for f in rule)


def estimate_pairs(conn: duckdb.DuckDBPyConnection, rule: list[str]) -> int:
    """Pairs the rule would make: the sum over its blocks of n(n-1)/2, from one GROUP BY."""
    columns = ", ".join(rule)
    not_null = " and ".join(f"{f} is not null" for f in rule)
    value = conn.execute(
        f"select coalesce(sum(n * (n - 1) // 2), 0) from "
        f"(select count(*)::hugeint as n from identity.match_records where {not_null} group by {columns})"
    ).fetchall()[0][0]
    return int(value)


def preflight(conn: duckdb.DuckDBPyConnection, rules: list[list[str]], max_pairs: int) -> list[dict[str, object]]:
    """Estimated pairs per rule; raises naming every rule over the limit before any pair is made."""
    estimates = [{"rule": rule_name(rule), "estimated_pairs": estimate_pairs(conn, rule)} for rule in rules]
    too_broad = [e for e in estimates if int(e["estimated_pairs"]) > max_pairs]
    if too_broad:
        listed = "; ".join(f"rule '{e['rule']}' would make {int(e['estimated_pairs']):,} pairs" for e in too_broad)
        raise BlockingRuleTooBroad(
            f"identity.matching.blocking_rules: {listed}, over max_pairs_per_rule ({max_pairs:,}). "
            "Add a feature to the rule so its blocks are smaller, or raise the limit if the memory allows."
        )
    return estimates


def build_candidate_pairs(conn: duckdb.DuckDBPyConnection, rules: list[list[str]]) -> dict[str, int]:
    """Rebuild temp table `match_pairs(l, r, rule)`: each pair once, credited to the first rule that finds it."""
    conn.execute("create or replace temp table match_pairs (l bigint, r bigint, rule varchar)")
    made: dict[str, int] = {}
    for index, rule in enumerate(rules):
        earlier = [f"coalesce({_agree(r)}, false)" for r in rules[:index]]
        exclude = f"and not ({' or '.join(earlier)})" if earlier else ""
        name = rule_name(rule)
        conn.execute(
            f"""
            insert into match_pairs
            select l.node_id, r.node_id, ?
            from identity.match_records l join identity.match_records r on {_agree(rule)} and l.node_id < r.node_id
            where true {exclude}
            """,
            [name],
        )
        made[name] = int(conn.execute("select count(*) from match_pairs where rule = ?", [name]).fetchall()[0][0])
    return made
