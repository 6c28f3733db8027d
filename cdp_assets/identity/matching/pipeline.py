"""The probabilistic layer of identity: person records that share no identifier but are the same person.

Runs after the deterministic components are known: builds the matching features, blocks, compares,
fits the Fellegi-Sunter model, scores every candidate pair, and merges customers over the pairs above
the link threshold without chaining (see identity_clustering). It writes, so a user can see why:

- `identity.evidence`: every candidate pair scoring at least the review threshold, with the blocking
  rule that found it, each field's comparison level and weight, the match weight and probability,
  and the decision (linked, same customer, conflict: <reason>, review, review: only household fields
  agree);
- `identity.review`: the pairs a person should look at: in the review band, over the link threshold on
  household fields alone, or refused by a conflict;
- `identity.model`: m, u and the weight of every comparison level.
"""

import time

import duckdb
import numpy as np
import pandas as pd

from cdp_assets.identity.clustering import Conflict, ConstrainedUnion, Customer, FirstNames
from cdp_assets.identity.matching.blocking import build_candidate_pairs, preflight, rule_name
from cdp_assets.identity.matching.comparisons import COMPARISONS, person_evidence_sql, vector_sql
from cdp_assets.identity.matching.features import build_match_records
from cdp_assets.identity.matching.model import build_term_frequencies, estimate, scoring_sql
from cdp_assets.identity.scratch import StepTables, step_tables
from resources.config import CDPConfig
from resources.config.identity import STRONG_CONFLICTS

EVIDENCE_TABLE = "identity.evidence"
REVIEW_TABLE = "identity.review"
MODEL_TABLE = "identity.model"
# A pair over the link threshold whose agreeing fields are all ones a household shares.
HOUSEHOLD_ONLY = "review: only household fields agree"
# Pairs of one person's records the m of names, birth dates and addresses is measured on: a seeded sample
# this size pins each m to well under a percentage point, more only costs comparisons.
LABELLED_PAIRS = 200_000


def _empty_outputs(conn: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    levels = "".join(f", null::tinyint as {n}, null::double as w_{n}" for n in names)
    conn.execute(
        f"""create or replace table {EVIDENCE_TABLE} as
            select null::varchar as left_source, null::varchar as left_record_id, null::varchar as right_source,
                   null::varchar as right_record_id, null::varchar as rule, null::boolean as swapped{levels},
                   null::double as match_weight, null::double as match_probability, null::varchar as decision
            where false"""
    )
    conn.execute(f"create or replace table {REVIEW_TABLE} as select * from {EVIDENCE_TABLE}")
    conn.execute(
        f"""create or replace table {MODEL_TABLE} as
            select null::varchar comparison, null::integer level, null::varchar label, null::double m,
                   null::double u, null::double weight, null::boolean tf_adjusted where false"""
    )


def match_probabilistically(
    conn: duckdb.DuckDBPyConnection,
    config: CDPConfig,
    labels: np.ndarray,
    person_latest: str,
    limited_edges: str | None,
) -> dict[str, object]:
    """Merge deterministic components over probabilistic links; returns new labels and figures for metadata.

    Takes over the caller's `person_latest` (each person record's latest version, by node), dropped once
    the matching features are built from it, and reads its `limited_edges` (the links of identifier types
    with a max_per_profile, if any). The chain of tables the steps hand on
    (match_records → match_pairs → match_vectors → match_scores) and every other table made here are
    dropped when it returns, or fails."""
    with step_tables(conn, "matching") as tables:
        return _match(conn, config, labels, person_latest, limited_edges, tables)


def _match(
    conn: duckdb.DuckDBPyConnection,
    config: CDPConfig,
    labels: np.ndarray,
    person_latest: str,
    limited_edges: str | None,
    tables: StepTables,
) -> dict[str, object]:
    for chain in ("match_records", "match_pairs", "match_vectors", "match_scores"):
        tables.own(chain)
    settings = config.identity.matching
    names = list(settings.comparisons)
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[step] = round(now - mark, 2)
        mark = now

    tables.own(person_latest)
    records = build_match_records(conn, config, person_latest) if settings.enabled else 0
    tables.drop(person_latest)  # the features hold what matching needs of it
    lap("matching features")
    if not settings.enabled or records < 2:
        _empty_outputs(conn, names)
        return {
            "labels": labels,
            "candidate_pairs": 0,
            "probabilistic_links": 0,
            "review_pairs": 0,
            "timings": timings,
        }
    rules = settings.block_rules()
    estimates = preflight(conn, rules, settings.max_pairs_per_rule)
    made = build_candidate_pairs(conn, rules)
    lap("blocking")
    # A table, not the registered frame: the joins below probe it millions of times, a scan of a pandas
    # frame costs a second where a table costs a tenth. Clustering reads it too, then it is dropped.
    label_frame = tables.frame("label_frame", pd.DataFrame({"node_id": np.arange(len(labels)), "component": labels}))
    node_labels = tables("node_labels")
    conn.execute(f"create temp table {node_labels} as select * from {label_frame}")
    tables.drop("label_frame")
    conn.execute(
        f"""
        create or replace temp table match_vectors as
        select v.*, cl.component as l_component, cr.component as r_component,
               cl.component = cr.component as same_component
        from ({vector_sql("match_pairs", names, carry=("rule_index",))}) v
        join {node_labels} cl on cl.node_id = v.l
        join {node_labels} cr on cr.node_id = v.r
        """
    )
    # Person records already joined by a shared identifier: examples of one person written twice.
    labelled_pairs = tables("labelled_pairs")
    conn.execute(
        f"""
        create temp table {labelled_pairs} as
        with members as (
            select m.node_id, c.component, count(*) over (partition by c.component) as size
            from match_records m join {node_labels} c using (node_id)
        )
        select a.node_id as l, b.node_id as r
        from members a join members b on a.component = b.component and a.node_id < b.node_id
        where a.size <= {config.identity.max_cluster_person_records}
        order by hash(a.node_id, b.node_id, {settings.seed}), a.node_id, b.node_id limit {LABELLED_PAIRS}
        """
    )
    tables.drop("match_pairs")
    lap("comparison vectors")
    model = estimate(
        conn,
        names,
        [rule for rule, _ in rules],
        settings.u_sample_pairs,
        settings.seed,
        settings.max_em_iterations,
        labelled_pairs,
    )
    lap("model (u sample, m, EM)")
    tf_columns = build_term_frequencies(conn, names)
    for column in tf_columns:
        tables.own(f"tf_{column}")
    person_fields = [n for n in settings.person_evidence if n in names]
    conn.execute(
        f"""create or replace temp table match_scores as
            select *, {person_evidence_sql(person_fields)} as person_evidence
            from ({scoring_sql(model, tf_columns, settings.review_threshold)})
            where match_probability >= {settings.review_threshold!r}"""
    )
    tables.drop("match_vectors")
    tables.drop("labelled_pairs")
    lap("scoring")
    # In the order the vocabulary declares them, whatever the configuration's order: the first that
    # objects names the refusal.
    conflicts = {
        c: COMPARISONS[c].conflict
        for c in STRONG_CONFLICTS
        if c in settings.strong_conflicts and c in names and model.m[c][0] <= settings.conflict_max_disagreement
    }
    with step_tables(conn, "clustering") as clustering:
        decisions, labels = _cluster(
            conn, config, labels, settings.link_threshold, conflicts, node_labels, limited_edges, clustering
        )
    tables.drop("node_labels")
    lap("clustering")
    link_decisions = tables.frame("link_decisions", decisions)
    level_columns = "".join(f", s.{n}, s.w_{n}" for n in names)
    conn.execute(
        f"""
        create or replace table {EVIDENCE_TABLE} as
        select nl.source as left_source, nl.source_record_id as left_record_id,
               nr.source as right_source, nr.source_record_id as right_record_id,
               ?[s.rule_index + 1] as rule, s.swapped{level_columns}, s.match_weight, s.match_probability,
               case when s.same_component then 'same customer (shared identifier)'
                    when d.decision is not null then d.decision::varchar
                    when not s.person_evidence and s.match_probability >= {settings.link_threshold!r}
                         then '{HOUSEHOLD_ONLY}'
                    else 'review' end as decision
        from match_scores s
        join match_records nl on nl.node_id = s.l
        join match_records nr on nr.node_id = s.r
        left join {link_decisions} d on d.l = s.l and d.r = s.r
        order by s.match_probability desc, left_source, left_record_id, right_source, right_record_id
        """,
        [[rule_name(rule) for rule, _ in rules]],
    )
    tables.drop("match_scores")
    conn.execute(
        f"""create or replace table {REVIEW_TABLE} as
            select * from {EVIDENCE_TABLE} where decision like 'review%' or decision like 'conflict:%'"""
    )
    levels = model.levels_table()
    conn.execute(f"create or replace table {MODEL_TABLE} as select * from {tables.frame('model_levels', levels)}")
    by_rule = conn.execute(
        f"""select rule, count(*) filter (where decision = 'linked') as links,
                   count(*) filter (where decision like 'review%') as review,
                   count(*) filter (where decision like 'conflict:%') as refused
            from {EVIDENCE_TABLE} group by 1"""
    ).fetchall()
    counted = {rule: (links, review, refused) for rule, links, review, refused in by_rule}
    rules = [
        {
            "blocking rule": e["rule"],
            "estimated pairs": int(e["estimated_pairs"]),
            "keys skipped (too common)": int(e["skipped_keys"]),
            "candidate pairs": made.get(str(e["rule"]), 0),
            "links": counted.get(e["rule"], (0, 0, 0))[0],
            "review": counted.get(e["rule"], (0, 0, 0))[1],
            "refused": counted.get(e["rule"], (0, 0, 0))[2],
        }
        for e in estimates
    ]
    totals = conn.execute(
        f"""select count(*) filter (where decision = 'linked'), count(*) filter (where decision like 'review%'),
                   count(*) filter (where decision like 'conflict:%') from {EVIDENCE_TABLE}"""
    ).fetchall()[0]
    lap("evidence and review tables")
    return {
        "labels": labels,
        "timings": timings,
        "candidate_pairs": sum(made.values()),
        "probabilistic_links": int(totals[0]),
        "review_pairs": int(totals[1]),
        "refused_links": int(totals[2]),
        "rules": rules,
        "model": levels,
        "prior": model.prior,
        "em_iterations": model.iterations,
        "strong_conflicts": {
            c: {"disagreement": float(model.m[c][0]), "applied": c in conflicts}
            for c in settings.strong_conflicts
            if c in names
        },
    }


def _cluster(
    conn: duckdb.DuckDBPyConnection,
    config: CDPConfig,
    labels: np.ndarray,
    threshold: float,
    conflicts: dict[str, Conflict],
    node_labels: str,
    limited_edges: str | None,
    tables: StepTables,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Apply links strongest first to the customers they join; returns each link's decision and new labels.

    `labels` are the components table `node_labels` holds; `limited_edges` the links of identifier types
    with a max_per_profile (None when no type sets one); `tables` the clustering step's own tables."""
    links = conn.execute(
        f"""select l, r, l_component, r_component from match_scores
            where not same_component and match_probability >= {threshold!r} and person_evidence
            order by match_probability desc, l, r"""
    ).fetchnumpy()
    if len(links["l"]) == 0:
        return pd.DataFrame({"l": [], "r": [], "decision": []}), labels
    involved = np.unique(np.concatenate([links["l_component"], links["r_component"]]))
    involved_frame = tables.frame("involved", pd.DataFrame({"component": involved}))
    involved_nodes = tables("involved_nodes")
    conn.execute(
        f"create temp table {involved_nodes} as "
        f"select * from {node_labels} semi join {involved_frame} using (component)"
    )
    # Every person node has a row in match_records, so its rows count a customer's person records.
    attributes = conn.execute(
        f"""
        select c.component, count(m.node_id) as person_records,
               list(distinct m.dob_text) filter (where m.dob_text is not null) as birth_dates,
               list(distinct [m.first_name, m.last_name]) filter (where m.first_name is not null) as names
        from {involved_nodes} c left join match_records m using (node_id)
        group by 1
        """
    ).fetchall()
    limits = config.identity.profile_limits()
    limited: dict[int, dict[str, set[str]]] = {}
    if limits and limited_edges:
        for component, id_type, id_value in conn.execute(
            f"select c.component, l.id_type, l.id_value from {limited_edges} l join {involved_nodes} c using (node_id)"
        ).fetchall():
            limited.setdefault(component, {}).setdefault(id_type, set()).add(id_value)
    tables.drop("involved_nodes")
    position = {int(c): i for i, c in enumerate(involved)}
    # Every involved component has a node, so the query returns each once: the list fills completely.
    customers: list[Customer] = [None] * len(involved)  # type: ignore[list-item]
    for component, person_records, birth_dates, names in attributes:
        customers[position[component]] = Customer(
            person_records=person_records,
            birth_dates=set(birth_dates) if birth_dates else set(),
            names=set(map(tuple, names)) if names else set(),
            limited=limited.get(component, {}),
        )
    counts = dict(
        conn.execute(
            "select first_name, count(*) from match_records where first_name is not null group by 1"
        ).fetchall()
    )
    union = ConstrainedUnion(
        customers, limits, config.identity.max_cluster_person_records, conflicts, FirstNames(counts)
    )
    decisions = [
        union.merge(position[int(a)], position[int(b)])
        for a, b in zip(links["l_component"], links["r_component"], strict=True)
    ]
    labels = labels.copy()
    root_component = np.array([involved[union.find(i)] for i in range(len(involved))])
    lookup = pd.Series(root_component, index=involved)
    mask = np.isin(labels, involved)
    labels[mask] = lookup.loc[labels[mask]].to_numpy()
    return pd.DataFrame({"l": links["l"], "r": links["r"], "decision": decisions}), labels
