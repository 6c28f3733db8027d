"""Activity under a value shared by several people follows them once they turn out to be one customer.

The sharing check judges a value on person records by their names and birth dates before matching has
weighed anything else: an e-mail on "Zoë Krüger" and "Zëo Krüger" counts as two people's, since two
three-letter names a letter apart could be two people. The value then links nobody, and the orders and
events that carry only it make customers of their own. Matching may then find the two person records
one person (the same birth date, phone and address) and make them one customer; the orders should
follow, or that customer's revenue and activity are missing from its profile.

So after matching, each value the sharing check blocked or split whose person records all ended in one
customer names that customer, and a customer of activity records only (no person record) whose shared
values all name one customer joins it. Nothing else moves: a value whose people stayed apart still
links nobody, an activity record linked to a person by any other value stays where it is, and one whose
shared values name several customers stays alone. Overrides apply after this, so they can undo it.
"""

from __future__ import annotations

from cdp_assets.identity.components import merge_components
from cdp_assets.identity.islands import LISTED_REASONS
from resources.sql import Scratch, Sql, sql_literal


def follow_one_customer(
    sql: Sql, tables: Scratch, labels: str, id_nodes: str, identifiers: str, split_values: str, out: str
) -> tuple[str, int]:
    """The customers of `labels` (node_id, component) with activity-only customers joined to the one customer
    their shared values' person records ended in: the caller's temp table `out`, or `labels` when no node
    moves; and how many activity records moved. `id_nodes` is (node_id, source, source_record_id, role),
    `identifiers` SQL of (source, source_record_id, id_type, id_value) for every record, `split_values` the
    table of the values the sharing check split into per-person groups; those it blocked are the values of
    identity.blocked_identifiers not blocked by pattern or list."""
    listed = ", ".join(sql_literal(reason) for reason in LISTED_REASONS)
    moves = tables("shared_activity_moves")
    sql.create_table_as(
        moves,
        f"""
        with shared as (
            select id_type, id_value from identity.blocked_identifiers where reason not in ({listed})
            union select id_type, id_value from {split_values}
        ),
        carrying as (
            select i.id_type, i.id_value, n.role = 'person' as person, l.component
            from ({identifiers}) i
            semi join shared s on s.id_type = i.id_type and s.id_value = i.id_value
            join {id_nodes} n on n.source = i.source and n.source_record_id = i.source_record_id
            join {labels} l on l.node_id = n.node_id
        ),
        one_customer as (
            select id_type, id_value, min(component) as target from carrying where person
            group by id_type, id_value having count(distinct component) = 1
        ),
        candidates as (select distinct component from carrying where not person),
        -- Of those, the customers holding a person record (read only for them: labels hold every node).
        with_people as (
            select distinct l.component from {labels} l
            semi join candidates c on c.component = l.component
            join {id_nodes} n on n.node_id = l.node_id where n.role = 'person'
        )
        -- Every shared value of the customer names one customer, the same one.
        select c.component, min(o.target) as target
        from carrying c left join one_customer o on o.id_type = c.id_type and o.id_value = c.id_value
        where not c.person and c.component not in (select component from with_people)
        group by c.component
        having count(o.target) = count(*) and count(distinct o.target) = 1
        """,
        temporary=True,
    )
    moved = int(sql.value(f"select count(*) from {labels} l semi join {moves} m on m.component = l.component"))
    if moved:
        merge_components(sql, labels, moves, out)
    tables.drop("shared_activity_moves")
    return (out, moved) if moved else (labels, 0)
