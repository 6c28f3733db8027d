"""Activity records that would join different people: a shared device, someone else's e-mail.

An event or transaction record carries every identifier its calls gave: a browser's anonymousId, each
userId that logged in on it, each e-mail an identify sent. Such a record links the person records of all
of them, so one kiosk where Fay and then Gus logged in, or one identify that gave Ivy's userId with Jon's
e-mail, would make Fay and Gus (Ivy and Jon) one customer, though their CRM records say two people. No
shared-value rule sees it: each value is on one person record only; the activity record is the bridge.

So, before the graph's components are taken, each activity record whose identifier values reach (one
value away) person records that cannot be one person (first names that are no nickname, typo or initial
of each other, birth dates no typo of each other: the sharing check's own tests, `FirstNames` and
`birth_date_people`) keeps only the links it can vouch for:

- its own record id, when it is one of its identifier values (a userId call's events are keyed by that
  userId) and reaches one person, anchors it: it keeps that value and every other value whose people are
  the anchor's person (Ivy's events keep her userId, and lose Jon's e-mail);
- otherwise (a device keyed by its anonymousId, seen with two userIds) it keeps none of the values that
  reach person records, and its events stay with the device's own customer.

Values reaching no person record (the anonymousId itself) are kept. The links given up are in
`identity.separated_links` with the number of people and the reason, and `identity.links` leaves them
out. Only one step is looked at: a chain of activity records each naming one person is not examined.
"""

from __future__ import annotations

from cdp_assets.identity.clustering import FirstNames, birth_date_people
from cdp_assets.identity.matching.model import name_counts
from resources.sql import Scratch, Sql

SEPARATED_LINKS = "identity.separated_links"


def first_names(sql: Sql, person_latest: str, kept: bool) -> FirstNames:
    """How common each first name is among the person records, as the sharing checks judge names by: as
    kept with the model when the run keeps it (`kept`, see name_counts)."""
    names = f"select lower(trim(first_name)) as name from {person_latest}"
    return FirstNames(name_counts(sql, "written", names, kept))


def create_separated_links(sql: Sql) -> None:
    """Empty `identity.separated_links`: (source, source_record_id, id_type, id_value, people, reason)."""
    sql.execute(
        f"""create or replace table {SEPARATED_LINKS} (source varchar, source_record_id varchar, id_type varchar,
            id_value varchar, people integer, reason varchar)"""
    )


def separate_bridges(
    sql: Sql,
    tables: Scratch,
    names: FirstNames,
    *,
    id_nodes: str,
    id_edges: str,
    linking_values: str,
    person_latest: str,
    person_nodes: int,
) -> str:
    """Fill `identity.separated_links` and return the name of a temp table of the (node_id, value_id)
    edges the graph must leave out. Person records are nodes 0 to `person_nodes` - 1; `id_edges` are
    (node_id, value_id) and `linking_values` (value_id, id_type, id_value, records) the values that link outright
    (usable, and not shared by several people)."""
    reach = tables("bridge_reach")
    # Each activity edge through a value that links outright, with the person records carrying that
    # value; only activity records reaching two or more person records whose first names
    # or birth dates differ as written are read (most reach one person, or one person's records). Which
    # activity records reach two person records at all (a value on several, or values on different ones)
    # is told from each value's count and smallest and largest person first (`several`), so the reach of
    # the others is never spelt out record by record: at 1M people that was 10 s and 5 GB of the step.
    sql.create_table_as(
        reach,
        f"""
        with person_values as (
            select value_id, count(*) as persons, min(node_id) as first_person, max(node_id) as last_person
            from {id_edges} where node_id < {person_nodes} group by all
        ),
        activity as (
            select e.node_id, e.value_id, v.persons, v.first_person, v.last_person from {id_edges} e
            join person_values v using (value_id)
            semi join {linking_values} using (value_id)
            where e.node_id >= {person_nodes}
        ),
        several as (
            select node_id from activity group by node_id
            having max(persons) > 1 or min(first_person) <> max(last_person)
        ),
        reached as (
            select a.node_id, a.value_id, p.node_id as person
            from activity a semi join several using (node_id) join {id_edges} p using (value_id)
            where p.node_id < {person_nodes}
        ),
        bridging as (
            select r.node_id from reached r join {person_latest} pl on pl.node_id = r.person
            group by r.node_id
            having count(distinct r.person) > 1
               and (min(lower(trim(pl.first_name))) <> max(lower(trim(pl.first_name)))
                    or min(pl.date_of_birth) <> max(pl.date_of_birth))
        )
        select r.node_id, n.source, n.source_record_id, v.id_type, v.id_value, r.person,
               nullif(lower(trim(pl.first_name)), '') as first_name,
               nullif(lower(trim(pl.last_name)), '') as last_name,
               strftime(pl.date_of_birth, '%Y%m%d') as birth_date
        from reached r semi join bridging using (node_id)
        join {id_nodes} n on n.node_id = r.node_id
        join {linking_values} v on v.value_id = r.value_id
        join {person_latest} pl on pl.node_id = r.person
        """,
        temporary=True,
    )
    # Each activity record's reach judged where its rows are (on Spark's executors, on DuckDB in process).
    columns = ["node_id", "source", "source_record_id", "id_type", "id_value", "people", "reason"]
    frame = tables("separated_frame")
    sql.map_groups(frame, f"select * from {reach}", ["node_id"], lambda rows: _separate(rows, names), columns)
    sql.execute(
        f"""insert into {SEPARATED_LINKS}
            select source, source_record_id, id_type, id_value, people::integer, reason from {frame}"""
    )
    dropped = tables("separated_edges")
    sql.create_table_as(
        dropped,
        f"""select f.node_id::bigint as node_id, v.value_id
            from {frame} f join {linking_values} v using (id_type, id_value)""",
        temporary=True,
    )
    tables.drop("bridge_reach")
    return dropped


def _people(persons: dict[str, tuple[str | None, str | None, str | None]], chosen: set[str], names: FirstNames) -> int:
    """How many people the chosen person records need at least (the sharing check's count)."""
    named = sorted({(persons[p][0], persons[p][1]) for p in chosen if persons[p][0]}, key=lambda n: (n[0], n[1] or ""))
    dates = sorted({persons[p][2] for p in chosen if persons[p][2]})  # type: ignore[misc]
    return max(birth_date_people(dates), names.people(named))  # type: ignore[arg-type]


def _separate(rows: list[tuple], names: FirstNames) -> list[tuple[str, str, str, str, str, str, str]]:
    """One activity record's edges to give up: (node_id, source, record id, id_type, id_value, people, reason),
    from its rows of `bridge_reach` as text."""
    node, source, record_id = rows[0][0], rows[0][1], rows[0][2]
    persons = {r[5]: (r[6], r[7], r[8]) for r in rows}
    by_value: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        by_value.setdefault((r[3], r[4]), set()).add(r[5])
    people = _people(persons, set(persons), names)
    if people <= 1:
        return []
    anchors = [value for value in by_value if value[1] == record_id]
    kept: set[tuple[str, str]] = set()
    holding: set[str] = set().union(*(by_value[v] for v in anchors)) if anchors else set()
    if holding and _people(persons, holding, names) <= 1:
        kept.update(anchors)
        for value in sorted(by_value):
            if value not in kept and _people(persons, holding | by_value[value], names) <= 1:
                kept.add(value)
                holding |= by_value[value]
        reason = f"reaches {people} people: kept only the links to the person its own id names"
    else:
        reason = f"reaches {people} people and names none of them by its own id: links none of them"
    return [(node, source, record_id, t, v, str(people), reason) for (t, v) in sorted(by_value) if (t, v) not in kept]
