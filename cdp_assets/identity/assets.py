"""Identity clusters: which records belong to the same person, published as `cdp.identity_map`.

Two layers. The deterministic layer stitches records that share a normalised identifier value of the
same type (an e-mail match key, an E.164 phone, a customer id, an anonymousId seen with a userId),
after blocking junk values (test@test.com, 0000000000, "n/a") and values shared by several people (a
household landline), because one such value would chain thousands of records into one "customer".
Components of the bipartite graph of records and identifier values are found by vectorised label
propagation, a second for millions of edges. The probabilistic layer (identity_matching) then links person
records that share no identifier, scoring names, birth dates, addresses and the like with a
Fellegi-Sunter model, and merges customers only where no strong evidence objects.
"""

import hashlib
import itertools
import time
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd

from cdp_assets.clean.assets import PERSON_RECORDS, activity_assets
from cdp_assets.identity.bridges import SEPARATED_LINKS, create_separated_links, first_names, separate_bridges
from cdp_assets.identity.clustering import ConstrainedUnion, Customer, FirstNames, birth_date_people, group_people
from cdp_assets.identity.components import min_node_labels, sql_components
from cdp_assets.identity.inputs import (
    PERSON_COLUMNS,
    RESOLVED_INPUTS,
    activity_records,
    kept_model,
    last_override_report,
    map_as_left,
    read_inputs,
    record_run,
    settings_as_last_run,
    why_resolve,
    with_outputs,
)
from cdp_assets.identity.islands import (
    LISTED_REASONS,
    find_scope,
    forget_islands,
    islands_apply,
    keep_islands,
    kept_islands,
    keys_unique,
    label_again,
    node_inputs,
    record_key,
    restore,
    set_aside,
)
from cdp_assets.identity.matching.model import MIN_LABELLED_PAIRS
from cdp_assets.identity.matching.pipeline import match_probabilistically, trains
from cdp_assets.identity.overrides import OverrideReport, apply_overrides, override_records, released_customers
from cdp_assets.identity.registry import IdChanges, assign_ids
from cdp_assets.identity.shared_activity import follow_one_customer
from cdp_assets.metadata import in_brief, markdown_table, mask, masked_preview, redact_errors, table_metadata
from resources.config import CDPConfig
from resources.config.overrides import parse_side
from resources.config.refresh import RETRAIN_TAG
from resources.identifiers import DEFAULT_BLOCKED_PATTERNS, NORMALISERS
from resources.sql import Scratch, Sql
from resources.warehouse import ROLES, Warehouse, sql_literal, utc_now

GROUP = "identity"
# Bump when matching or clustering logic changes.
CODE_VERSION = "13"
# Every (record, identifier value) edge the cleaned sources hold.
ALL_IDENTIFIERS = " union all ".join(
    f"select source, source_record_id, id_type, id_value from clean.{role}_identifiers" for role in ROLES
)
IDENTITY_CLUSTERS = dg.AssetKey(["identity", "clusters"])
CHECK_UNIQUE = "identity_map_unique_records"
CHECK_COMPLETE = "every_record_has_a_customer"
CHECK_CLUSTER_SIZE = "cluster_size_within_bound"
CHECK_OVERRIDES = "overrides_name_records"


def _normalise_blocked(value: str, kind: str) -> str | None:
    """A blocked value in the form identifiers are compared in (its normaliser's match key); as written if
    it does not normalise (an invalid number in the list must still match a value that reached identity
    some other way)."""
    normalised = NORMALISERS[kind].match_key(value, "US")
    return normalised or value.strip() or None


def blocked_condition(config: CDPConfig, id_types: list[str]) -> tuple[str, pd.DataFrame]:
    """SQL deciding if `id_value` of `id_type` is blocked, and a table of blocked literal values."""
    clauses: list[str] = []
    literals: list[tuple[str, str]] = []
    for id_type in id_types:
        spec = config.identity.type_config(id_type)
        # One expression per type, the patterns its alternatives: each value is searched once, not once
        # per pattern (a third of the time with the three default patterns).
        either = "|".join(f"(?:{p})" for p in [*DEFAULT_BLOCKED_PATTERNS, *spec.blocked_patterns])
        clauses.append(
            f"(id_type = {sql_literal(id_type)} and regexp_matches(id_value, {sql_literal('(?i)' + either)}))"
        )
        for value in spec.blocked_values:
            normalised = _normalise_blocked(value, spec.normalize)
            if normalised:
                literals.append((id_type, normalised))
    condition = " or ".join(clauses) or "false"
    return condition, pd.DataFrame(literals or [], columns=["id_type", "id_value"], dtype=object)


def resolve(
    sql: Sql,
    config: CDPConfig,
    per_customer: str | None = None,
    run_id: str | None = None,
    settings: str | None = None,
    retrain: bool = False,
    reuse_pairs: bool = False,
    map_kept: bool = False,
    clusters_only: bool = False,
    activity: str | None = None,
) -> dict[str, object]:
    """Rebuild `cdp.identity_map` and the identity tables that explain it; `per_customer`, a table name of
    the caller's, gets each customer's record counts for its checks and preview (without one, they are
    counted for the summary only). `run_id` is recorded with the id changes the run makes, and `settings`
    as the identity configuration's fingerprint (by default `config`'s own; the change preview passes the
    one the configuration will have once a candidate overrides file's content is in place). `retrain`
    trains the matching model afresh rather than keeping the last one (match_probabilistically); `reuse_pairs`
    keeps the pairs the last run scored where both records are unchanged (matching/pairs.py): the caller
    says so only when that run completed with the same configuration; `map_kept` brings the map up to date
    by rewriting only the records whose id changed, which the caller says only when the map is what the
    last completed run left (inputs.map_as_left). `clusters_only` stops before the id registry names the
    customers and returns the clusters, (source, source_record_id, role, component) rows, as `clusters`:
    how one engine's clustering is compared with another's, apart from the id registry (each engine's
    registry keeps the ids of its own earlier runs). `activity`, a temp table of the caller's filled by
    inputs.activity_records, is taken over (numbered, then dropped); without one the run makes its own."""
    with sql.scratch("deterministic") as tables:
        fingerprint = settings or settings_fingerprint(config)
        if activity is None:
            activity = tables("activity_records")
            activity_records(sql, activity)
        return _resolve(
            sql,
            config,
            per_customer or tables("per_customer"),
            tables,
            run_id,
            fingerprint,
            retrain,
            reuse_pairs,
            map_kept,
            clusters_only,
            activity,
        )


def settings_fingerprint(config: CDPConfig) -> str:
    """What the identity configuration is, as a short hash: a run whose settings differ from the last one's
    puts the id changes it makes down to the configuration."""
    return hashlib.sha256(config.identity.model_dump_json().encode()).hexdigest()[:16]


def _resolve(
    sql: Sql,
    config: CDPConfig,
    per_customer: str,
    tables: Scratch,
    run_id: str | None,
    settings: str,
    retrain: bool,
    reuse_pairs: bool,
    map_kept: bool,
    clusters_only: bool,
    activity: str,
) -> dict[str, object]:
    person_latest, id_nodes, id_edges = tables("person_latest"), tables("nodes"), tables("edges")
    id_values, usable_values = tables("values"), tables("usable_values")
    started = time.perf_counter()
    # What the last run's overrides named, before matching writes this run's evidence over theirs.
    named_before = override_records(sql)
    # Person records are numbered in a fixed order, since matching breaks ties by node; activity records
    # (most of the nodes) only need distinct numbers after them, which spares sorting them. Each person
    # record has one latest version, so numbering those numbers the records, and `person_latest` keeps
    # what the sharing check and the matching features read. The keys alone are sorted and then joined
    # with their columns: a sort carrying every column took twice as long (1.5 s at 1.5M records).
    sql.create_table_as(
        person_latest,
        f"""
        with numbered as (
            select source, source_record_id, row_number() over (order by source, source_record_id) - 1 as node_id
            from clean.person_records where is_latest
        )
        select n.node_id, p.source, p.source_record_id, {", ".join(f"p.{c}" for c in PERSON_COLUMNS)}
        from clean.person_records p join numbered n using (source, source_record_id)
        where p.is_latest
        """,
        temporary=True,
    )
    sql.create_table_as(
        id_nodes, f"select node_id, source, source_record_id, 'person' as role from {person_latest}", temporary=True
    )
    person_nodes = int(sql.value(f"select count(*) from {id_nodes}"))
    sql.execute(
        f"insert into {id_nodes} select {person_nodes} + row_number() over () - 1, source, source_record_id, role "
        f"from {activity}"
    )
    sql.drop_table(activity)
    node_count = int(sql.value(f"select count(*) from {id_nodes}"))
    # On DuckDB an identifier finds its node by the hash of its record's key (islands.record_key) when no two
    # nodes' keys hash alike: an integer join takes about half the time of the two text columns' (9.3M
    # identifiers onto 5M nodes: 1.1-1.5 s against 1.9-3.1 s). An identifier of a record that is no node
    # (none is) would join a node only if its key hashed as that node's, one chance in millions of millions.
    keyed = config.warehouse.engine == "duckdb" and keys_unique(sql, id_nodes)
    written_edges = tables("written_edges")
    sql.create_table_as(
        written_edges,
        f"""
        select n.node_id, e.id_type, e.id_value
        from ({ALL_IDENTIFIERS}) e join {id_nodes} n
        """
        + (f"on {record_key('n')} = {record_key('e')}" if keyed else "using (source, source_record_id)"),
        temporary=True,
    )
    # How reliable first names and birth dates are, measured on shared values, is kept with a model being
    # trained (SharedDisagreement); with the kept model it is not measured.
    measure = trains(sql, config, person_nodes, retrain)
    # The deterministic layer runs over the islands a delta can change when the last run kept its islands
    # (islands.py), over every record otherwise; either way the islands are kept for the next run.
    inputs, scope = tables("node_inputs"), None
    keeps = islands_apply(config) and keyed
    if keeps:
        node_inputs(sql, id_nodes, person_latest, written_edges, inputs)
    else:
        forget_islands(sql)
    if keeps and reuse_pairs and not measure and kept_islands(sql):

        def blocked(types: list[str]) -> tuple[str, str]:
            condition, literals = blocked_condition(config, types)
            return condition, tables.frame("scope_blocked_literals", literals)

        scope = find_scope(sql, tables, inputs, written_edges, node_count, blocked)
    if scope is not None:
        set_aside(sql, tables, scope, written_edges, (SHARED_VALUES, SHARED_GROUPS), SEPARATED_LINKS)
        scoped_edges = tables("scoped_edges")
        sql.create_table_as(
            scoped_edges, f"select * from {written_edges} semi join {scope.nodes} using (node_id)", temporary=True
        )
        tables.drop("written_edges")
        written_edges = scoped_edges
    # Every distinct value once, with the records carrying it: blocking and sharing are judged per value.
    # Value ids only name graph vertices: any numbering gives the same components, so none is sorted.
    sql.create_table_as(
        id_values,
        f"""
        select row_number() over () - 1 as value_id, id_type, id_value, records
        from (select id_type, id_value, count(*) as records from {written_edges} group by 1, 2)
        """,
        temporary=True,
    )
    # From here on an edge names its value by number: the joins over millions of edges (the reach of
    # activity records, the graph's edges) compare integers, not the values' text.
    sql.create_table_as(
        id_edges,
        f"select e.node_id, v.value_id from {written_edges} e join {id_values} v using (id_type, id_value)",
        temporary=True,
    )
    tables.drop("written_edges")
    tables.drop("scoped_edges")
    id_types = [r[0] for r in sql.rows(f"select distinct id_type from {id_values} order by 1")]
    condition, literals = blocked_condition(config, id_types)
    blocked_literals = tables.frame("blocked_literals", literals)
    sql.create_table_as(
        "identity.blocked_identifiers",
        f"""
        select id_type, id_value, records,
               case when exists (select 1 from {blocked_literals} b where b.id_type = v.id_type
                                 and b.id_value = v.id_value) then {sql_literal(LISTED_REASONS[0])}
                    else {sql_literal(LISTED_REASONS[1])} end as reason
        from {id_values} v
        where ({condition})
           or exists (select 1 from {blocked_literals} b where b.id_type = v.id_type and b.id_value = v.id_value)
        """,
    )
    split_edges = tables("split_edges")
    # How common each first name is, as the sharing and bridge checks judge names: kept with a kept model.
    names = first_names(sql, person_latest, kept=not measure and config.identity.matching.enabled)
    shared = block_shared_values(sql, config, id_types, id_values, id_edges, person_latest, split_edges, names, measure)
    sql.create_table_as(
        usable_values,
        f"""
        select value_id, id_type, id_value, records from {id_values}
        anti join identity.blocked_identifiers using (id_type, id_value)
        """,
        temporary=True,
    )
    tables.drop("values")
    # The values that link records outright: usable, and not shared by several people (those link only
    # within each person, through `split_edges`).
    linking_values = tables("linking_values")
    sql.create_table_as(
        linking_values,
        f"""select value_id, id_type, id_value, records from {usable_values}
            anti join {SHARED_VALUES} using (id_type, id_value)""",
        temporary=True,
    )
    # An activity record whose values reach people who cannot be one person (a shared device, someone
    # else's e-mail) gives up the links it cannot vouch for (bridges.py).
    create_separated_links(sql)
    separated = separate_bridges(
        sql,
        tables,
        names,
        id_nodes=id_nodes,
        id_edges=id_edges,
        linking_values=linking_values,
        person_latest=person_latest,
        person_nodes=person_nodes,
    )
    _publish_links(sql)
    value_count = int(sql.value(f"select coalesce(max(value_id), -1) + 1 from {usable_values}"))
    groups = int(sql.value(f"select coalesce(max(group_id), -1) + 1 from {split_edges}"))
    # A value shared by several people links only within each of them: its edges are those of its
    # per-person groups, each a vertex of its own numbered after the values.
    edges = f"""(select e.node_id, e.value_id from {id_edges} e semi join {linking_values} using (value_id)
                 anti join {separated} using (node_id, value_id)
                 union all select node_id, group_id + {value_count} from {split_edges})"""
    # Each node's customer, as a table from here on (on Spark it never leaves the executors): the
    # deterministic components, split where they break a max_per_profile, then merged by matching, then
    # changed by the overrides; each step names the table it leaves, its input when it changes nothing.
    components = tables("components")
    component_labels(
        sql, config.warehouse.engine, tables, edges, id_nodes, node_count, value_count + groups, components
    )
    tables.drop("split_edges")
    limited_edges = tables("limited_edges") if config.identity.profile_limits() else None
    deterministic = enforce_profile_limits(
        sql, config, components, id_nodes, id_edges, usable_values, limited_edges, tables("limited_components")
    )
    if keeps:
        # Each record's island: its component over every value not blocked by pattern or list.
        island_labels = tables("island_labels")
        usable_edges = f"(select e.node_id, e.value_id from {id_edges} e semi join {usable_values} using (value_id))"
        component_labels(
            sql, config.warehouse.engine, tables, usable_edges, id_nodes, node_count, value_count, island_labels
        )
        if scope is not None:
            restore(sql, tables, ALL_IDENTIFIERS, (SHARED_VALUES, SHARED_GROUPS), SEPARATED_LINKS)
            label_again(sql, scope, inputs, deterministic, tables("relabelled"))
        keep_islands(sql, scope, inputs, island_labels, deterministic)
        if scope is not None:
            deterministic = tables("relabelled")
        tables.drop("island_labels")
        tables.drop("node_inputs")
    # Every record's links by the value's type: its values that link outright (not blocked, not shared by
    # several people), and a shared value's within the person each record looks like.
    links_by_type = sql.rows(
        f"""select id_type, sum(links) from (
                select id_type, count(*) as links from ({ALL_IDENTIFIERS})
                anti join identity.blocked_identifiers using (id_type, id_value)
                anti join {SHARED_VALUES} using (id_type, id_value) group by 1
                union all select id_type, linked_records from {SHARED_VALUES})
            group by 1"""
    )
    tables.drop("edges")
    tables.drop("usable_values")
    deterministic_seconds = round(time.perf_counter() - started, 2)
    matching = match_probabilistically(
        sql,
        config,
        deterministic,
        tables("matched_components"),
        person_latest,
        limited_edges,
        retrain,
        reuse_pairs,
        shared.rates(MIN_LABELLED_PAIRS),
        names.counts,
        scope,
    )
    started = time.perf_counter()
    # Orders and events under an e-mail the sharing check gave to two people follow them once matching
    # has made them one customer (shared_activity.py).
    followed, matching["activity_following_shared_values"] = follow_one_customer(
        sql,
        tables,
        str(matching.pop("labels")),
        id_nodes,
        ALL_IDENTIFIERS,
        SHARED_VALUES,
        tables("followed_components"),
    )
    customers, override_report = apply_overrides(
        sql,
        config,
        config.identity_overrides(),
        followed,
        id_nodes,
        ALL_IDENTIFIERS,
        _normalise_blocked,
        deterministic,
        tables("overridden_components"),
    )
    override_report.touched |= released_customers(sql, named_before, customers, id_nodes)
    # Customers are named by the id registry: the ids their records carried last time, new ones only for
    # customers none of whose records had one (registry.py has the survivor rules); it writes the map too.
    labelled, assigned = tables("labelled"), tables("assigned")
    sql.create_table_as(
        labelled,
        f"""
        select n.source, n.source_record_id, n.role, c.component
        from {id_nodes} n join {customers} c using (node_id)
        """,
        temporary=True,
    )
    timings = {"deterministic layer": deterministic_seconds, **dict(matching["timings"])}  # type: ignore[call-overload]
    matching["deterministic_records"] = scope.node_count if scope is not None else node_count
    if clusters_only:
        clusters = sql.rows(f"select source, source_record_id, role, component from {labelled}")
        return {"clusters": clusters, **matching, "timings": timings}
    id_changes = assign_ids(
        sql,
        labelled,
        assigned,
        run_id=run_id,
        at=utc_now(),
        settings=settings,
        overridden=override_report.touched,
        map_kept=map_kept,
    )
    summary = _summary(sql, per_customer)
    summary["links_by_type"] = [
        {"identifier type": t, "links": n} for t, n in sorted(links_by_type, key=lambda row: (-row[1], row[0]))
    ]
    summary.update(matching)
    summary["id_changes"] = id_changes
    summary["overrides"] = override_report
    summary["timings"] = {**timings, "identity map and summary": round(time.perf_counter() - started, 2)}
    return summary


def _publish_links(sql: Sql) -> None:
    """`identity.links`: every record's identifier values that link, i.e. the cleaned identifiers less the
    blocked ones, and a shared value's only within the person each record looks like (`person_group`). A
    view, not a copy: millions of rows the clean tables already hold would take longer to write than the
    rest of the deterministic layer takes to run."""
    if sql.table_exists("identity.links") and not sql.is_view("identity.links"):  # a table of earlier versions
        sql.execute("drop table identity.links")
    # A value shared by several people links a record only within the person it looks like, named by
    # `person_group`; records it gives no link (ambiguous ones, activity records) are left out.
    sql.execute(
        f"""
        create or replace view identity.links as
        select source, source_record_id, id_type, id_value, null::integer as person_group
        from ({ALL_IDENTIFIERS}) anti join identity.blocked_identifiers using (id_type, id_value)
        anti join {SHARED_VALUES} using (id_type, id_value)
        anti join {SEPARATED_LINKS} using (source, source_record_id, id_type, id_value)
        union all
        select source, source_record_id, id_type, id_value, person_group from {SHARED_GROUPS}
        where person_group is not null
        """
    )


def enforce_profile_limits(
    sql: Sql,
    config: CDPConfig,
    labels: str,
    id_nodes: str,
    id_edges: str,
    usable_values: str,
    limited_edges: str | None,
    out: str,
) -> str:
    """Split the deterministic components holding more values of a `max_per_profile` type than allowed;
    returns the name of the table of (node_id, component) after: `labels` itself when nothing is split,
    else the caller's temp table `out`.

    Their record-to-identifier links are replayed, highest type priority first, refusing any link that
    would break a limit; the rest of the graph keeps its components untouched (and this costs nothing
    when no type declares a limit). The links of limited types are written to the caller's table
    `limited_edges` (named when a type declares a limit) for the probabilistic layer, which must respect
    the same limits. Only the offending components' records are read into this process.
    """
    limits = config.identity.profile_limits()
    if not limits or limited_edges is None:
        return labels
    with sql.scratch("profile_limits") as tables:
        return _split_over_limits(
            sql, config, labels, limits, id_nodes, id_edges, usable_values, limited_edges, tables, out
        )


def _split_over_limits(
    sql: Sql,
    config: CDPConfig,
    labels: str,
    limits: dict[str, int],
    id_nodes: str,
    id_edges: str,
    usable_values: str,
    limited_edges: str,
    tables: Scratch,
    out: str,
) -> str:
    type_limits = tables.frame("type_limits", pd.DataFrame(list(limits.items()), columns=["id_type", "max_values"]))
    sql.create_table_as(
        limited_edges,
        f"""select l.node_id, v.id_type, v.id_value from {id_edges} l
           join {usable_values} v using (value_id) semi join {type_limits} using (id_type)""",
        temporary=True,
    )
    offending = sql.rows(
        f"""
        select distinct component from (
            select c.component, l.id_type, count(distinct l.id_value) as n, any_value(t.max_values) as max_values
            from {limited_edges} l join {labels} c using (node_id) join {type_limits} t using (id_type)
            group by 1, 2
        ) where n > max_values
        """
    )
    if not offending:
        return labels
    over = tables.frame("offending", pd.DataFrame({"component": [c for (c,) in offending]}))
    edges = sql.rows(
        f"""
        select n.node_id, n.role, l.id_type, l.id_value, n.source, n.source_record_id
        from {limited_edges} l join {id_nodes} n using (node_id)
        join {labels} c using (node_id) join {over} o using (component)
        """
    )
    members = sql.rows(
        f"select node_id, n.role from {labels} c join {over} o using (component) "
        f"join {id_nodes} n using (node_id) order by node_id"
    )
    priority = {t: s.priority for t, s in config.identity.identifier_types.items()}
    index: dict[object, int] = {}
    customers: list[Customer] = []

    def item(key: object, customer: Customer) -> int:
        if key not in index:
            index[key] = len(customers)
            customers.append(customer)
        return index[key]

    for node_id, role in members:
        item(("node", node_id), Customer(person_records=1 if role == "person" else 0))
    ordered = sorted(edges, key=lambda e: (-priority.get(e[2], 0), e[2], e[3], e[4], e[5]))
    for _node_id, _role, id_type, id_value, _source, _record in ordered:
        item(("value", id_type, id_value), Customer(limited={id_type: {id_value}} if id_type in limits else {}))
    union = ConstrainedUnion(customers, limits, max_person_records=2**62)
    for node_id, _role, id_type, id_value, _source, _record in ordered:
        union.merge(index[("node", node_id)], index[("value", id_type, id_value)])
    offset = int(sql.value(f"select coalesce(max(component), -1) + 1 from {labels}"))
    split = tables.frame(
        "split",
        pd.DataFrame(
            {
                "node_id": np.array([node_id for node_id, _role in members], dtype=np.int64),
                "component": np.array(
                    [offset + union.find(index[("node", node_id)]) for node_id, _role in members], dtype=np.int64
                ),
            }
        ),
    )
    sql.create_table_as(
        out,
        f"""select c.node_id, coalesce(s.component, c.component) as component
            from {labels} c left join {split} s using (node_id)""",
        temporary=True,
    )
    return out


SHARED_GROUPS = "identity.shared_identifier_groups"
SHARED_VALUES = "identity.shared_identifiers"


def _create_shared_tables(sql: Sql) -> None:
    """Empty `identity.shared_identifiers` (values shared by several people that link only the records
    within each) and `identity.shared_identifier_groups` (which person each record under such a value looks
    like; none when it could be several, and then the value gives it no link)."""
    sql.execute(
        f"""create or replace table {SHARED_VALUES} (id_type varchar, id_value varchar, records bigint,
            people integer, linked_records integer, reason varchar)"""
    )
    sql.execute(
        f"""create or replace table {SHARED_GROUPS} (source varchar, source_record_id varchar, id_type varchar,
            id_value varchar, person_group integer)"""
    )


# A value on two to this many person records is taken for one person's few records (or a couple's, a
# family's) when measuring how often one person's records disagree; more is a shared desk or a list.
FEW_RECORDS = 6


@dataclass
class SharedDisagreement:
    """How often two person records under one identifier value (an e-mail, a phone on at most FEW_RECORDS
    person records) that agree on the birth date give first names that cannot be one person's, and how
    often two that give the same first name give birth dates that cannot be one person's: pairs counted
    (`pairs`) and disagreeing (`disagreeing`), per strong-conflict field. Only pairs that agree on the
    last name and the postal code (or lack both alike) count: records that look like one person's in all
    but the field measured. Namesakes in other towns under one family mailbox are several people, and
    their birth dates say nothing of how reliable one person's are.

    The model's m is measured on records the deterministic layer joined, and that layer refuses to join
    records under a shared value whose first names or birth dates disagree: measured there, a field whose
    values are often re-keyed or replaced (FEBRL's first names) looks reliable, and a strong conflict on
    it would refuse true links. Measured here, before the values are judged, it does not."""

    pairs: dict[str, int] = field(default_factory=dict)
    disagreeing: dict[str, int] = field(default_factory=dict)

    def rates(self, min_pairs: int) -> dict[str, float]:
        """The disagreement rate of each field measured on at least `min_pairs` pairs."""
        return {f: self.disagreeing.get(f, 0) / n for f, n in self.pairs.items() if n >= min_pairs}


def block_shared_values(
    sql: Sql,
    config: CDPConfig,
    id_types: list[str],
    id_values: str,
    id_edges: str,
    person_latest: str,
    split_edges: str,
    known: FirstNames,
    measure: bool = True,
) -> SharedDisagreement:
    """Sort out the values shared by more people than their type allows (`max_people_per_value`).

    People are counted from the person records carrying the value: groups of birth dates that could be
    one date mistyped, and groups of first names that could be one person's (see FirstNames: nicknames
    and typos count as one, two common names as two). Whichever count is higher is the estimate, so
    twins (one birthday, two names) count as two, as does a couple sharing a landline. A value shared by
    at most `max_people_linked_within` people links the records within each person it looks like (see
    group_people): they are written to `identity.shared_identifier_groups` and, as (node, group) edges, to
    the caller's table `split_edges`, and the value to `identity.shared_identifiers`. A value shared by more
    people, or whose records all stay ambiguous or alone, links nobody and is added to
    `identity.blocked_identifiers`. Reads the caller's tables of distinct values, record-to-value edges and
    latest person records; `known` says how common each first name is.

    Returns what the values' records say about how reliable first names and birth dates are (see
    SharedDisagreement), measured before the values were judged by them; nothing when not `measure`.
    """
    _create_shared_tables(sql)
    sql.create_table_as(
        split_edges, "select null::bigint as node_id, null::bigint as group_id where false", temporary=True
    )
    specs = {t: config.identity.type_config(t) for t in id_types}
    limits = {t: spec.max_people_per_value for t, spec in specs.items() if spec.max_people_per_value is not None}
    if not limits:
        return SharedDisagreement()
    within = {t: specs[t].max_people_linked_within for t in limits}
    with sql.scratch("shared_values") as tables:
        return _block_shared(
            sql, limits, within, id_values, id_edges, person_latest, split_edges, tables, known, measure
        )


def _block_shared(
    sql: Sql,
    limits: dict[str, int],
    within: dict[str, int],
    id_values: str,
    id_edges: str,
    person_latest: str,
    split_edges: str,
    tables: Scratch,
    known: FirstNames,
    measure: bool,
) -> SharedDisagreement:
    type_limits = tables.frame("type_limits", pd.DataFrame(list(limits.items()), columns=["id_type", "max_people"]))
    repeated_values = tables("repeated_values")
    # Only a value on several records can be shared by several people; most values are on one.
    sql.create_table_as(
        repeated_values,
        f"""select value_id, id_type, id_value, records from {id_values} semi join {type_limits} using (id_type)
            where records > 1""",
        temporary=True,
    )
    measured = _shared_pairs(sql, repeated_values, id_edges, person_latest) if measure else SharedDisagreement()
    # Each value judged where its records are (on Spark's executors, on DuckDB in process): see _judge_value.
    judged = tables("judged_values")
    sql.map_groups(
        judged,
        f"""
        with records as ({_repeated_value_records(id_edges, repeated_values, person_latest)}),
        -- Values whose records differ in birth date or first name: a tenth of them. Finding them with min
        -- and max first spares reading the records of the values that only one person carries.
        varied as (
            select id_type, id_value from records group by 1, 2
            having min(birth_date) <> max(birth_date) or min(first_name) <> max(first_name)
        )
        select id_type, id_value, node_id, first_name, last_name, birth_date, postal_code
        from records semi join varied using (id_type, id_value)
        """,
        ["id_type", "id_value"],
        lambda rows: _judge_value(rows, known, limits, within, measure),
        ["kind", "id_type", "id_value", "node_id", "a", "b"],
    )
    for field_name, count in sql.rows(
        f"select id_type, sum(a::bigint) from {judged} where kind = 'disagreeing' group by 1 order by 1"
    ):
        measured.disagreeing[field_name] = measured.disagreeing.get(field_name, 0) + int(count)
    sql.execute(
        f"""
        insert into identity.blocked_identifiers
        select s.id_type, s.id_value, v.records,
               'shared by ' || s.a || ' people (max_people_per_value ' || s.b || ')'
        from {judged} s join {repeated_values} v using (id_type, id_value)
        where s.kind = 'blocked'
        """
    )
    if not sql.value(f"select count(*) from {judged} where kind = 'split'"):
        return measured
    sql.execute(
        f"""
        insert into {SHARED_VALUES}
        select s.id_type, s.id_value, v.records, s.a::integer, s.b::integer,
               'shared by ' || s.a || ' people: links within each'
        from {judged} s join {repeated_values} v using (id_type, id_value)
        where s.kind = 'split'
        """
    )
    sql.execute(
        f"""
        insert into {SHARED_GROUPS}
        select p.source, p.source_record_id, g.id_type, g.id_value, g.a::integer
        from {judged} g join {person_latest} p on p.node_id = g.node_id::bigint
        where g.kind = 'record'
        """
    )
    # Each (value, group) that links is one vertex of the graph, numbered densely from 0 in the order of
    # the values and of the groups within each.
    sql.execute(
        f"""
        insert into {split_edges}
        select node_id::bigint, dense_rank() over (order by id_type, id_value, b::integer) - 1
        from {judged} where kind = 'record' and b is not null
        """
    )
    return measured


def _judge_value(
    rows: list[tuple], known: FirstNames, limits: dict[str, int], within: dict[str, int], measure: bool
) -> list[tuple[str, str, str, str | None, str | None, str | None]]:
    """The judgement of one value shared by person records whose names or birth dates differ, from its
    records' rows (id_type, id_value, node_id, first name, last name, birth date as YYYYMMDD, postal code), as rows
    (kind, id_type, id_value, node_id, a, b) of text:

    - `disagreeing`: (field in id_type, pairs in a), the pairs SharedDisagreement counts, when `measure`;
    - `blocked`: a value shared by more people than its type allows that links nobody (people, limit);
    - `split`: one that links the records within each person it looks like (people, linked records);
    - `record`: each record of a split value, with its person group (a, None when it could be several
      people's and so links nothing) and that group's rank among the value's linking groups (b)."""
    rows = sorted(rows, key=lambda r: int(r[2]))  # by record, as the groups are placed in that order
    id_type, id_value = rows[0][0], rows[0][1]
    out: list[tuple[str, str, str, str | None, str | None, str | None]] = []
    if measure and len(rows) <= FEW_RECORDS:
        counted = SharedDisagreement()
        _count_disagreeing(rows, known, counted)
        out += [("disagreeing", f, "", None, str(n), None) for f, n in sorted(counted.disagreeing.items())]
    birth_dates = sorted({r[5] for r in rows if r[5] is not None})
    names = sorted({(r[3], r[4]) for r in rows if r[3] is not None}, key=lambda n: (n[0], n[1] or ""))
    people = max(birth_date_people(birth_dates), known.people(names))
    if people <= limits[id_type]:
        return out
    placed = group_people([(r[3], r[4], r[5]) for r in rows], known) if people <= within[id_type] else []
    sizes: dict[int, int] = {}
    for group in placed:
        if group is not None:
            sizes[group] = sizes.get(group, 0) + 1
    linking = sorted(g for g, n in sizes.items() if n > 1)
    if not linking:
        return [*out, ("blocked", id_type, id_value, None, str(people), str(limits[id_type]))]
    linked = str(sum(sizes[g] for g in linking))
    out.append(("split", id_type, id_value, None, str(people), linked))
    for row, group in zip(rows, placed, strict=True):
        links = group in linking
        out.append(
            (
                "record",
                id_type,
                id_value,
                row[2],
                str(group) if links else None,
                str(linking.index(group)) if links else None,
            )
        )
    return out


def _repeated_value_records(id_edges: str, repeated_values: str, person_latest: str) -> str:
    """A select of the person records under each repeated value not blocked by pattern or list, as the
    sharing rules read them: (id_type, id_value, node_id, birth_date as YYYYMMDD, first_name, last_name,
    postal_code), names lower-cased and trimmed."""
    return f"""
        select v.id_type, v.id_value, e.node_id, strftime(p.date_of_birth, '%Y%m%d') as birth_date,
               nullif(lower(trim(p.first_name)), '') as first_name,
               nullif(lower(trim(p.last_name)), '') as last_name,
               nullif(lower(trim(p.postal_code)), '') as postal_code
        from {id_edges} e
        join (select value_id, id_type, id_value from {repeated_values}
              anti join identity.blocked_identifiers using (id_type, id_value)) v using (value_id)
        join {person_latest} p using (node_id)"""


def _shared_pairs(sql: Sql, repeated_values: str, id_edges: str, person_latest: str) -> SharedDisagreement:
    """The pairs SharedDisagreement counts, each field's disagreeing ones still at zero: pairs of person
    records under a value on at most FEW_RECORDS of them (not blocked by pattern or list) that agree on
    the birth date (for first names) or give the same first name (for birth dates), both fields known, and
    agree on the last name and the postal code (a missing one agreeing with a missing one)."""
    row = sql.row(
        f"""
        with records as ({_repeated_value_records(id_edges, repeated_values, person_latest)}),
        few as (
            select id_type, id_value, birth_date, first_name, last_name, postal_code from records
            semi join (select id_type, id_value from records group by 1, 2 having count(*) <= {FEW_RECORDS})
                using (id_type, id_value)
            where birth_date is not null and first_name is not null
        )
        select (select coalesce(sum(n * (n - 1) // 2), 0)
                from (select count(*) as n from few group by id_type, id_value, birth_date, last_name, postal_code)),
               (select coalesce(sum(n * (n - 1) // 2), 0)
                from (select count(*) as n from few group by id_type, id_value, first_name, last_name, postal_code))
        """
    )
    same_birth_date, same_first_name = row if row else (0, 0)
    return SharedDisagreement(pairs={"first_name": int(same_birth_date), "date_of_birth": int(same_first_name)})


def _count_disagreeing(value_rows: list[tuple], first_names: FirstNames, measured: SharedDisagreement) -> None:
    """Add one value's disagreeing pairs to `measured`: among its records (id_type, id_value, node,
    first name, last name, birth date, postal code), of those agreeing on the last name and the postal
    code (see SharedDisagreement), pairs of one birth date whose first names cannot be one person's, and
    pairs of one first name whose birth dates cannot be one person's (typos of one date can)."""
    known = [r for r in value_rows if r[3] is not None and r[5] is not None]
    for left, right in itertools.combinations(known, 2):
        if (left[4], left[6]) != (right[4], right[6]):
            continue
        if left[5] == right[5] and not first_names.compatible((left[3], left[4]), (right[3], right[4])):
            measured.disagreeing["first_name"] = measured.disagreeing.get("first_name", 0) + 1
        if left[3] == right[3] and birth_date_people([left[5], right[5]]) > 1:
            measured.disagreeing["date_of_birth"] = measured.disagreeing.get("date_of_birth", 0) + 1


_PROPAGATION_ROUNDS = 30


def connected_components(node_count: int, value_count: int, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Component label per record node, over the bipartite graph record -- identifier value.

    Each value becomes a star of record-to-record edges, from its smallest record to each other one,
    which drops the value vertices and the values on one record (they join nothing). Identity graphs are
    shallow (a person's records meet through one or two values), so repeatedly giving both ends of every
    edge the smaller label, with pointer jumping, settles in two or three vectorised rounds: twice as fast
    as SciPy's general algorithm at a million people. A graph still changing after
    `_PROPAGATION_ROUNDS` rounds (a long chain) goes to SciPy. Either way each record is labelled with the
    smallest record of its component (propagation settles on it; SciPy's numbers are mapped to it), so the
    labels depend neither on the path taken nor on the engine (components.py).
    """
    if node_count == 0:
        return np.zeros(0, dtype=np.int64)
    kind = edge_id_type(node_count, value_count)
    nodes = nodes.astype(kind, copy=False)
    values = values.astype(kind, copy=False)
    hub = np.full(value_count, node_count, dtype=kind)
    np.minimum.at(hub, values, nodes)
    spoke = hub[values]
    joins = spoke != nodes
    far, near = nodes[joins], spoke[joins]  # near < far: the hub is its value's smallest record
    del hub, spoke, joins
    labels = np.arange(node_count, dtype=kind)
    for _ in range(_PROPAGATION_ROUNDS):
        updated = labels.copy()
        np.minimum.at(updated, far, labels[near])
        np.minimum.at(updated, near, updated[far])
        updated = updated[updated]
        if np.array_equal(updated, labels):
            return labels.astype(np.int64)
        labels = updated
    return min_node_labels(_scipy_components(node_count, value_count, nodes, values))


def edge_id_type(node_count: int, value_count: int) -> type[np.signedinteger]:
    """The narrowest integer type that holds every node and value id of a graph: 32 bits up to two
    billion ids, which halves the edge arrays (up to 9M edges at a million people) against 64."""
    return np.int32 if node_count + value_count < 2**31 else np.int64


def _scipy_components(node_count: int, value_count: int, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    size = node_count + value_count
    graph = coo_matrix((np.ones(len(nodes), dtype=np.int8), (nodes, values + node_count)), shape=(size, size))
    _, labels = scipy_components(graph, directed=True, connection="weak")
    return labels[:node_count].astype(np.int64)


def component_labels(
    sql: Sql, engine: str, tables: Scratch, edges: str, nodes: str, node_count: int, value_count: int, out: str
) -> None:
    """Create temp table `out` (node_id, component): the smallest record node of each record node's
    component, for every node of `nodes` (node ids 0..node_count-1), over `edges` (a table or parenthesised
    select of node_id, value_id), computed where `engine` is fastest at it: DuckDB's edges are fetched and
    labelled by `connected_components`, Spark's stay in Spark (components.py), and so do its labels."""
    if engine == "spark":
        sql_components(sql, tables, edges, out, nodes=f"(select node_id from {nodes})")
        return
    kind = "integer" if edge_id_type(node_count, value_count) is np.int32 else "bigint"
    pairs = sql.arrays(
        f"select cast(node_id as {kind}) as node_id, cast(value_id as {kind}) as value_id from {edges} e"
    )
    labels = connected_components(node_count, value_count, pairs.pop("node_id"), pairs.pop("value_id"))
    frame = tables.frame("label_frame", pd.DataFrame({"node_id": np.arange(node_count), "component": labels}))
    # A table, not the registered frame: the joins after probe it millions of times, a scan of a pandas
    # frame costs a second where a table costs a tenth.
    sql.create_table_as(out, f"select * from {frame}", temporary=True)
    tables.drop("label_frame")


def _summary(sql: Sql, per_customer: str) -> dict[str, object]:
    # One pass over the map per customer serves the summary, the histogram, the cluster-size check and the
    # preview: the asset's table `per_customer`, dropped when the asset is done with it.
    sql.create_table_as(
        per_customer,
        """
        select customer_id, count(*) filter (where role = 'person') as person_records, count(*) as records
        from cdp.identity_map group by 1
        """,
        temporary=True,
    )
    stats = sql.row(
        f"""
        select count(*) as customers,
               coalesce(sum(person_records), 0) as person_records,
               count(*) filter (where person_records > 0) as customers_with_person_records,
               coalesce(sum(person_records) filter (where person_records > 1), 0) as merged_person_records,
               coalesce(max(person_records), 0) as largest_cluster_person_records,
               coalesce(max(records), 0) as largest_cluster_records,
               coalesce(sum(records), 0) as records
        from {per_customer}
        """
    )
    names = [
        "customers",
        "person_records",
        "customers_with_person_records",
        "merged_person_records",
        "largest_cluster_person_records",
        "largest_cluster_records",
        "records",
    ]
    summary: dict[str, object] = {n: int(v) for n, v in zip(names, stats, strict=True)}
    histogram = sql.rows(
        f"""
        select case when n = 0 then '0 (activity only)' when n <= 5 then n::varchar
                    when n <= 10 then '6-10' when n <= 25 then '11-25' else '>25' end as person_records_per_customer,
               count(*) as customers
        from (select person_records as n from {per_customer})
        group by 1 order by min(n)
        """
    )
    summary["histogram"] = [{"person records": h, "customers": c} for h, c in histogram]
    summary["blocked"] = [
        {"identifier type": t, "blocked values": v, "records": r}
        for t, v, r in sql.rows(
            "select id_type, count(*), sum(records) from identity.blocked_identifiers group by 1 order by 1"
        )
    ]
    return summary


def _shown_side(config: CDPConfig, text: str) -> str:
    """An override's side as Dagster's storage may show it: the source or identifier type, its record id or
    value masked (`email:p***@e***.com`, `crm/C***`), as the file's load errors never quote it either. The
    line number the check gives finds it in the file."""
    side = parse_side(text, [s.name for s in config.sources], list(config.identity.identifier_types))
    if side.source is not None:
        return f"{side.source}/{mask(side.record_id)}"
    return f"{side.id_type}:{mask(side.value)}"


def _overrides_check(config: CDPConfig, report: OverrideReport) -> dg.AssetCheckResult:
    """A warning, never a stop: an override naming a record that has not arrived (or was refused) is listed."""
    unresolved = [(line, f"'{_shown_side(config, text)}' names no record") for line, text in report.unresolved]
    lines = sorted([*unresolved, *report.refused], key=lambda problem: problem[0])
    problems = [{"line": line, "problem": why} for line, why in lines]
    return dg.AssetCheckResult(
        asset_key=IDENTITY_CLUSTERS,
        check_name=CHECK_OVERRIDES,
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "overrides_file": str(config.overrides_path) if config.overrides_path else "none configured",
            "applied": report.applied,
            "not_applied": dg.MetadataValue.md(markdown_table(problems)),
        },
        description=in_brief(
            [f"overrides line {p['line']}: {p['problem']}" for p in problems],
            len(problems),
        ),
    )


_CLEANED_KEYS = """(select source, source_record_id from clean.person_records
                     union all select source, source_record_id from clean.events
                     union all select source, source_record_id from clean.transactions)"""


def _map_faults(sql: Sql, engine: str) -> tuple[int, int]:
    """How many records the identity map holds more than once, and how many cleaned records it lacks.

    On DuckDB both are first looked for by hashes of the record keys, which millions of rows compare in
    half the time their text takes, and counted exactly only when that finds any (normally neither): a
    duplicate is never missed (two rows of one record hash alike), and a missing record would be missed
    only if both of its 64-bit hashes were those of a mapped record. Spark's dialect has no such hash."""
    if engine == "duckdb":
        doubled = sql.value(f"select count(*) - count(distinct {record_key('m')}) from cdp.identity_map m")
        missing = sql.value(
            f"""select count(*) from {_CLEANED_KEYS} r
                anti join (select {record_key("i")} as h1, hash(i.source_record_id, i.source) as h2
                           from cdp.identity_map i) m
                    on m.h1 = {record_key("r")} and m.h2 = hash(r.source_record_id, r.source)"""
        )
    else:
        doubled = missing = 1
    duplicates = doubled and sql.value(
        "select count(*) from (select source, source_record_id from cdp.identity_map group by 1, 2 having count(*) > 1)"
    )
    # Every row probes the map and only the orphans (normally none) are made distinct: cheaper than making
    # millions of event rows distinct first.
    orphans = missing and sql.value(
        f"""select count(distinct (source, source_record_id)) from {_CLEANED_KEYS} r
            anti join cdp.identity_map m using (source, source_record_id)"""
    )
    return int(duplicates), int(orphans)


def _checks(sql: Sql, config: CDPConfig, summary: dict[str, object], per_customer: str) -> list[dg.AssetCheckResult]:
    duplicates, orphans = _map_faults(sql, config.warehouse.engine)
    bound = config.identity.max_cluster_person_records
    oversized = sql.rows(
        f"""select customer_id, person_records from {per_customer}
           where person_records > ? order by 2 desc, 1 limit 10""",
        [bound],
    )
    return [
        dg.AssetCheckResult(
            asset_key=IDENTITY_CLUSTERS,
            check_name=CHECK_UNIQUE,
            passed=duplicates == 0,
            metadata={"duplicate_records": int(duplicates)},
        ),
        dg.AssetCheckResult(
            asset_key=IDENTITY_CLUSTERS,
            check_name=CHECK_COMPLETE,
            passed=orphans == 0,
            metadata={"records_without_customer": int(orphans)},
        ),
        dg.AssetCheckResult(
            asset_key=IDENTITY_CLUSTERS,
            check_name=CHECK_CLUSTER_SIZE,
            passed=not oversized,
            metadata={
                "bound_person_records": bound,
                "largest_cluster_person_records": summary["largest_cluster_person_records"],
                "oversized_clusters": dg.MetadataValue.md(
                    markdown_table([{"customer_id": c, "person_records": n} for c, n in oversized])
                ),
            },
        ),
        _overrides_check(config, summary.get("overrides", OverrideReport())),  # type: ignore[arg-type]
    ]


def _model_markdown(model: pd.DataFrame | None, prior: float | None) -> str:
    if model is None or len(model) == 0:
        return "No probabilistic model (matching disabled or fewer than two person records)."
    rows = [
        {
            "comparison": r.comparison,
            "level": r.label,
            "m": f"{r.m:.4f}",
            "u": f"{r.u:.6f}",
            "weight": f"{r.weight:+.2f}" + (" (tf)" if r.tf_adjusted else ""),
        }
        for r in model.itertuples()
    ]
    return f"Prior (two random records are one person): {prior:.3g}\n\n" + markdown_table(rows)


def _id_changes_markdown(changes: IdChanges) -> str:
    """What the run did to customer ids: the figures a data engineer checks after changing settings."""
    rows = [
        {"ids": "kept", "customers": changes.kept},
        {"ids": "issued for new customers", "customers": changes.issued - changes.split},
        {"ids": "issued to a part split off", "customers": changes.split},
        {"ids": "merged into another (now aliases)", "customers": changes.merged},
        {"ids": "retired (no record carries them)", "customers": changes.retired},
    ]
    return f"Changes put down to: {changes.reason}\n\n" + markdown_table(rows)


def _resolution_metadata(summary: dict[str, object]) -> dict[str, object]:
    """What a run that resolved identity adds to the metadata: its id changes, links, model and timings."""
    return {
        "id_changes": dg.MetadataValue.md(_id_changes_markdown(summary["id_changes"])),
        "links_by_identifier_type": dg.MetadataValue.md(markdown_table(summary["links_by_type"])),
        "scored_pairs": str(summary.get("pairs", "all made")),
        # Record nodes the deterministic layer resolved: every one, or the islands a delta could change.
        "deterministic_records": int(summary.get("deterministic_records", 0)),
        "records_rescored": int(summary.get("records_rescored", 0)),
        "scored_pairs_kept": int(summary.get("scored_pairs_kept", 0)),
        # Groups of customers the links join, and those whose kept decisions served (matching/decisions.py).
        "linked_groups": int(summary.get("linked_groups") or 0),
        "linked_groups_kept": int(summary.get("linked_groups_kept") or 0),
        "candidate_pairs": int(summary["candidate_pairs"]),
        "probabilistic_links": int(summary["probabilistic_links"]),
        "review_pairs": int(summary["review_pairs"]),
        "refused_links": int(summary.get("refused_links", 0)),
        # Activity records that joined the one customer the people of their shared values became.
        "activity_following_shared_values": int(summary.get("activity_following_shared_values", 0)),
        "links_by_blocking_rule": dg.MetadataValue.md(markdown_table(summary.get("rules", []))),
        "model": dg.MetadataValue.md(_model_markdown(summary.get("model"), summary.get("prior"))),
        "seconds_by_step": dg.MetadataValue.md(
            markdown_table([{"step": k, "seconds": v} for k, v in dict(summary["timings"]).items()])
        ),
        "strong_conflicts": dg.MetadataValue.md(
            markdown_table(
                [
                    {
                        "field": name,
                        "same person disagrees": f"{v['disagreement']:.2%}",
                        "joined records (m)": f"{v['m_disagreement']:.2%}",
                        "records sharing a value": "-"
                        if v.get("shared_value_disagreement") is None
                        else f"{v['shared_value_disagreement']:.2%}",
                        "blocks weak links": "yes" if v["applied"] else "no (unreliable in this data)",
                    }
                    for name, v in dict(summary.get("strong_conflicts", {})).items()
                ]
            )
        ),
    }


def build_identity_asset(config: CDPConfig) -> dg.AssetsDefinition:
    deps = [PERSON_RECORDS, *activity_assets(config)]

    @dg.asset(
        key=IDENTITY_CLUSTERS,
        group_name=GROUP,
        description=(
            "Records stitched into customers over shared identifiers and scored matches of names, birth dates "
            "and addresses, without chaining (cdp.identity_map; why in identity.links and identity.evidence)."
        ),
        deps=deps,
        kinds={"scipy"},
        code_version=CODE_VERSION,
        metadata=table_metadata(
            "cdp.identity_map",
            "identity.evidence",
            "identity.links",
            "identity.review",
            "identity.model",
            "identity.blocked_identifiers",
            "identity.shared_identifiers",
            "identity.shared_identifier_groups",
            "cdp.customer_id_history",
            "cdp.customer_aliases",
            RESOLVED_INPUTS,
        ),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_UNIQUE,
                asset=IDENTITY_CLUSTERS,
                blocking=True,
                description="Each source record maps to exactly one customer.",
            ),
            dg.AssetCheckSpec(
                CHECK_COMPLETE,
                asset=IDENTITY_CLUSTERS,
                blocking=True,
                description="Every cleaned record, event and transaction has a customer id.",
            ),
            dg.AssetCheckSpec(
                CHECK_OVERRIDES,
                asset=IDENTITY_CLUSTERS,
                description="Every manual override (identity.overrides) names records that exist, and was applied.",
            ),
            dg.AssetCheckSpec(
                CHECK_CLUSTER_SIZE,
                asset=IDENTITY_CLUSTERS,
                blocking=True,
                description="No customer holds more person records than identity.max_cluster_person_records.",
            ),
        ],
    )
    @redact_errors
    def clusters(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql, sql.scratch("clusters") as tables:
            per_customer = tables("per_customer")
            retrain = context.run.tags.get(RETRAIN_TAG) == "true"
            activity = tables("activity_records")
            inputs = read_inputs(sql, config, CODE_VERSION, settings_fingerprint(config), activity)
            current = with_outputs(sql, inputs)
            reason = why_resolve(sql, inputs, retrain, current)
            if reason is None:
                # Nothing identity reads changed: the tables are what a run would write; the checks and the
                # summary are read from them.
                summary = _summary(sql, per_customer)
                summary["overrides"] = last_override_report(sql, config)
                summary.update(kept_model(sql))
            else:
                reuse_pairs = settings_as_last_run(sql, inputs)
                map_kept = map_as_left(sql, current)
                # Forgotten first: a run failing half-way must not leave its half-written tables "unchanged".
                sql.drop_table(RESOLVED_INPUTS)
                summary = resolve(
                    sql,
                    config,
                    per_customer,
                    context.run.run_id,
                    retrain=retrain,
                    reuse_pairs=reuse_pairs,
                    map_kept=map_kept,
                    activity=activity,
                )
                record_run(sql, config, inputs, summary["overrides"], context.run.run_id)
            checks = _checks(sql, config, summary, per_customer)
            preview = masked_preview(
                sql,
                "select customer_id, source, source_record_id, role from cdp.identity_map "
                f"where customer_id in (select customer_id from {per_customer} where records > 2 order by 1 limit 2) "
                "order by all",
                limit=8,
            )
        person_records = int(summary["person_records"])
        merged = int(summary["merged_person_records"])
        metadata: dict[str, object] = {
            "dagster/row_count": dg.MetadataValue.int(int(summary["customers"])),
            "mode": "unchanged" if reason is None else ("incremental" if summary.get("pairs_kept") else "full"),
            "reason": reason or "nothing identity reads changed since the last run: its tables are kept",
            "records_affected": 0 if reason is None else int(summary["records"]),
            "components_reclustered": 0 if reason is None else int(summary["customers"]),
            "customers": int(summary["customers"]),
            "customers_with_person_records": int(summary["customers_with_person_records"]),
            "person_records": person_records,
            "match_rate": dg.MetadataValue.float(merged / person_records if person_records else 0.0),
            "largest_cluster_person_records": int(summary["largest_cluster_person_records"]),
            "cluster_size_histogram": dg.MetadataValue.md(markdown_table(summary["histogram"])),
            "blocked_identifiers": dg.MetadataValue.md(markdown_table(summary["blocked"])),
            "model_training": str(summary.get("model_training", "no model")),
            "model_trained_at": str(summary.get("model_trained_at", "never")),
            "preview": dg.MetadataValue.md(preview),
        }
        if reason is not None:
            metadata.update(_resolution_metadata(summary))
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return clusters
