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
from collections.abc import Mapping

from cdp_assets.identity.clustering import Conflict, FirstNames, cluster_linked
from cdp_assets.identity.components import merge_components, sql_components
from cdp_assets.identity.islands import Scope
from cdp_assets.identity.matching import decisions as kept_decisions
from cdp_assets.identity.matching.blocking import build_candidate_pairs, preflight, rule_name
from cdp_assets.identity.matching.comparisons import COMPARISONS, person_evidence_sql, vector_sql
from cdp_assets.identity.matching.features import KeptFeatures, build_match_records
from cdp_assets.identity.matching.model import (
    MIN_LABELLED_PAIRS,
    MODEL_TABLE,
    TRAINING_TABLE,
    FellegiSunterModel,
    KeptModel,
    build_term_frequencies,
    estimate,
    fill_kept_term_frequencies,
    has_kept_term_frequencies,
    load_model,
    model_fingerprint,
    model_in_use,
    name_counts,
    save_model,
    save_term_frequencies,
    scoring_sql,
    term_frequency_columns,
)
from cdp_assets.identity.matching.pairs import (
    FEATURES_STATE,
    FEATURES_TABLE,
    changed_records,
    keep_scored_pairs,
    pairs_reusable,
    save_features,
)
from resources.config import CDPConfig
from resources.config.identity import STRONG_CONFLICTS
from resources.sql import Scratch, Sql, portable_hash
from resources.warehouse import utc_now

EVIDENCE_TABLE = "identity.evidence"
REVIEW_TABLE = "identity.review"
# A pair over the link threshold whose agreeing fields are all ones a household shares.
HOUSEHOLD_ONLY = "review: only household fields agree"
# Pairs of one person's records the m of names, birth dates and addresses is measured on: a seeded sample
# this size pins each m to well under a percentage point, more only costs comparisons.
LABELLED_PAIRS = 200_000


def _empty_outputs(sql: Sql, names: list[str]) -> None:
    """Empty evidence, review and model tables, for a run with matching disabled or too few records."""
    levels = "".join(f", null::tinyint as {n}, null::double as w_{n}" for n in names)
    sql.create_table_as(
        EVIDENCE_TABLE,
        f"""select null::varchar as left_source, null::varchar as left_record_id, null::varchar as right_source,
                   null::varchar as right_record_id, null::varchar as rule, null::boolean as swapped{levels},
                   null::double as match_weight, null::double as match_probability, null::varchar as decision
            where false""",
    )
    sql.create_table_as(REVIEW_TABLE, f"select * from {EVIDENCE_TABLE}")
    sql.create_table_as(
        MODEL_TABLE,
        """select null::varchar comparison, null::integer level, null::varchar label, null::double m,
                  null::double u, null::double weight, null::boolean tf_adjusted where false""",
    )
    sql.drop_table(TRAINING_TABLE)
    sql.drop_table(FEATURES_TABLE)
    sql.drop_table(FEATURES_STATE)
    kept_decisions.forget(sql)


def match_probabilistically(
    sql: Sql,
    config: CDPConfig,
    labels: str,
    out: str,
    person_latest: str,
    limited_edges: str | None,
    retrain: bool = False,
    reuse_pairs: bool = False,
    shared_disagreement: dict[str, float] | None = None,
    written_names: Mapping[str, int] | None = None,
    scope: Scope | None = None,
) -> dict[str, object]:
    """Merge deterministic components over probabilistic links; returns figures for metadata, and as
    "labels" the name of the table of each node's customer after: `labels` (node_id, component: the
    deterministic components) when no link merges two, else the caller's temp table `out`.

    The model trained last is kept (identity.model, identity.model_training), so a new file is scored with
    the weights the data so far taught, and results do not drift from run to run. It is trained again when
    `retrain` asks (the weekly retraining schedule, or on demand), when no kept model fits the comparisons
    and matching settings, when the person records have doubled since it was trained, or when it was
    trained on too few pairs of one person's records to measure m.

    Takes over the caller's `person_latest` (each person record's latest version, by node), dropped once
    the matching features are built from it, and reads its `limited_edges` (the links of identifier types
    with a max_per_profile, if any). The chain of tables the steps hand on (the matching records, their
    candidate pairs, the pairs' comparison vectors, the scored pairs) is named here, in this step's
    scratch scope, and handed to each function that reads or writes it; it and every other table made
    here are dropped when it returns, or fails.

    `shared_disagreement` (field -> rate, SharedDisagreement in identity/assets.py) is kept with a model
    trained now; a strong conflict applies only where neither it nor m shows the field unreliable.
    `written_names` are the first-name counts the deterministic layer judged by (name_counts, `written`),
    kept with a model trained now, as the counts clustering judges by are. `scope` is the records the
    deterministic layer resolved again (a delta's, islands.py), outside which the kept features stand."""
    with sql.scratch("matching") as tables:
        return _match(
            sql,
            config,
            labels,
            out,
            person_latest,
            limited_edges,
            tables,
            retrain,
            reuse_pairs,
            shared_disagreement or {},
            written_names or {},
            scope,
        )


def _match(
    sql: Sql,
    config: CDPConfig,
    node_labels: str,
    out: str,
    person_latest: str,
    limited_edges: str | None,
    tables: Scratch,
    retrain: bool,
    reuse_pairs: bool,
    shared_disagreement: dict[str, float],
    written_names: Mapping[str, int],
    scope: Scope | None,
) -> dict[str, object]:
    records, pairs = tables("records"), tables("pairs")
    vectors, scores = tables("vectors"), tables("scores")
    settings = config.identity.matching
    names = list(settings.comparisons)
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[step] = round(now - mark, 2)
        mark = now

    record_count = int(sql.value(f"select count(*) from {person_latest}")) if settings.enabled else 0
    if not settings.enabled or record_count < 2:
        sql.drop_table(person_latest)
        _empty_outputs(sql, names)
        return {
            "labels": node_labels,
            "candidate_pairs": 0,
            "probabilistic_links": 0,
            "review_pairs": 0,
            "timings": timings,
        }
    rules = settings.block_rules()
    fingerprint = model_fingerprint(names, settings.model_dump_json())
    kept = load_model(sql, names, fingerprint)
    training = _training(kept, retrain, record_count)
    # How common each value is, per column whose exact agreement is weighed by it: `tf_<column>(value, tf)`,
    # as the kept model was trained with them when it is kept.
    term_frequencies = {column: tables(f"tf_{column}") for column in term_frequency_columns(names)}
    frozen = training == "kept" and has_kept_term_frequencies(sql, list(term_frequencies))
    # What the last run derived and scored can be kept when it scored with this very model and its
    # frequencies (see pairs.py): only the records whose base row changed get their features derived,
    # and only their pairs are made and scored again.
    scored_with = model_in_use(sql) if frozen else None
    reusable = reuse_pairs and scored_with is not None and pairs_reusable(sql, scored_with)
    kept_features = KeptFeatures(FEATURES_TABLE, tables("fresh"), tables("gone")) if reusable else None
    build_match_records(sql, config, person_latest, records, kept=kept_features, scope=scope)
    sql.drop_table(person_latest)  # taken over from the caller: the features hold what matching needs of it
    if frozen:
        fill_kept_term_frequencies(sql, records, term_frequencies)
    # As clustering reads names (folded), counted with the term frequencies' rule: kept with a kept model.
    folded_names = name_counts(sql, "folded", f"select first_name as name from {records}", training == "kept")
    lap("matching features")
    changed, records_changed = None, record_count
    if kept_features is not None:
        changed = tables("changed")
        records_changed = changed_records(sql, records, rules, kept_features, changed, list(term_frequencies))
    # Each rule's blocks, counted by preflight and turned into pairs (and dropped) by build_candidate_pairs.
    keys = [tables(f"keys_{index}") for index in range(len(rules))]
    estimates = preflight(sql, records, rules, settings.max_pairs_per_rule, keys, touching=changed)
    made = build_candidate_pairs(sql, records, rules, keys, pairs, touching=changed)
    lap("blocking")
    sql.create_table_as(
        vectors,
        f"""
        select v.*, cl.component as l_component, cr.component as r_component,
               cl.component = cr.component as same_component
        from ({vector_sql(records, pairs, names, carry=("rule_index",))}) v
        join {node_labels} cl on cl.node_id = v.l
        join {node_labels} cr on cr.node_id = v.r
        """,
        temporary=True,
    )
    tables.drop("pairs")
    lap("comparison vectors")
    if kept is not None and training == "kept":
        model, trained_at = kept.model, kept.trained_at
    else:
        model, trained_at = _train(sql, config, records, vectors, node_labels, names, rules, tables), utc_now()
        model.shared_disagreement = dict(shared_disagreement)
        levels_table = tables.frame("model_levels", model.levels_table())
        save_model(
            sql,
            model,
            levels_table,
            fingerprint,
            trained_at,
            record_count,
            {"written": written_names, "folded": folded_names},
        )
    if not frozen:
        build_term_frequencies(sql, records, term_frequencies)
        save_term_frequencies(sql, records, list(term_frequencies))
    lap("model (u sample, m, EM)" if training != "kept" else "model (kept)")
    person_fields = [n for n in settings.person_evidence if n in names]
    columns = ", ".join(["l", "r", "rule_index", "swapped", *names, *(f"w_{n}" for n in names)])
    sql.create_table_as(
        scores,
        f"""select {columns}, match_weight, match_probability, l_component, r_component, same_component,
                   {person_evidence_sql(person_fields)} as person_evidence
            from ({scoring_sql(model, records, vectors, term_frequencies, settings.review_threshold)})
            where match_probability >= {settings.review_threshold!r}""",
        temporary=True,
    )
    tables.drop("vectors")
    kept_pairs = 0
    if changed is not None:
        kept_pairs = keep_scored_pairs(
            sql,
            records,
            changed,
            node_labels,
            scores,
            [rule_name(rule) for rule, _ in rules],
            names,
            person_evidence_sql(person_fields),
        )
    lap("scoring")
    # In the order the vocabulary declares them, whatever the configuration's order: the first that
    # objects names the refusal.
    # How often one person's records disagree on the field: as m measures it, or as the records under one
    # shared value show it before the deterministic layer judged them by it, whichever is higher.
    disagreement = {c: max(float(model.m[c][0]), model.shared_disagreement.get(c, 0.0)) for c in names}
    conflicts = {
        c: COMPARISONS[c].conflict
        for c in STRONG_CONFLICTS
        if c in settings.strong_conflicts and c in names and disagreement[c] <= settings.conflict_max_disagreement
    }
    link_decisions = tables("link_decisions")
    clustering_figures: dict[str, int] = {}
    with sql.scratch("clustering") as clustering:
        labels = _cluster(
            sql,
            config,
            settings.link_threshold,
            conflicts,
            records,
            scores,
            node_labels,
            limited_edges,
            clustering,
            link_decisions,
            out,
            FirstNames(folded_names),
            changed is not None,
            clustering_figures,
        )
    lap("clustering")
    level_columns = "".join(f", s.{n}, s.w_{n}" for n in names)
    sql.create_table_as(
        EVIDENCE_TABLE,
        f"""
        select nl.source as left_source, nl.source_record_id as left_record_id,
               nr.source as right_source, nr.source_record_id as right_record_id,
               ?[s.rule_index + 1] as rule, s.swapped{level_columns}, s.match_weight, s.match_probability,
               case when s.same_component then 'same customer (shared identifier)'
                    when d.decision is not null then d.decision::varchar
                    when not s.person_evidence and s.match_probability >= {settings.link_threshold!r}
                         then '{HOUSEHOLD_ONLY}'
                    else 'review' end as decision
        from {scores} s
        join {records} nl on nl.node_id = s.l
        join {records} nr on nr.node_id = s.r
        left join {link_decisions} d on d.l = s.l and d.r = s.r
        order by s.match_probability desc, left_source, left_record_id, right_source, right_record_id
        """,
        [[rule_name(rule) for rule, _ in rules]],
    )
    tables.drop("scores")
    save_features(sql, records, model_in_use(sql) or "", kept_features)
    sql.create_table_as(
        REVIEW_TABLE,
        f"select * from {EVIDENCE_TABLE} where decision like 'review%' or decision like 'conflict:%'",
    )
    levels = model.levels_table()
    by_rule = sql.rows(
        f"""select rule, count(*) filter (where decision = 'linked') as links,
                   count(*) filter (where decision like 'review%') as review,
                   count(*) filter (where decision like 'conflict:%') as refused
            from {EVIDENCE_TABLE} group by 1"""
    )
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
    totals = sql.row(
        f"""select count(*) filter (where decision = 'linked'), count(*) filter (where decision like 'review%'),
                   count(*) filter (where decision like 'conflict:%') from {EVIDENCE_TABLE}"""
    )
    assert totals is not None  # an aggregate without group by has one row
    lap("evidence and review tables")
    return {
        "labels": labels,
        "timings": timings,
        "pairs": "kept from the last run where both records are unchanged" if changed is not None else "all made",
        # Whether this run kept the last one's pairs at all: a delta may keep none and still be incremental.
        "pairs_kept": changed is not None,
        "records_rescored": records_changed,
        "scored_pairs_kept": kept_pairs,
        "linked_groups": clustering_figures.get("groups"),
        "linked_groups_kept": clustering_figures.get("groups_kept"),
        "candidate_pairs": sum(made.values()),
        "probabilistic_links": int(totals[0]),
        "review_pairs": int(totals[1]),
        "refused_links": int(totals[2]),
        "rules": rules,
        "model": levels,
        "model_trained_at": trained_at,
        "model_training": training,
        "prior": model.prior,
        "em_iterations": model.iterations,
        "strong_conflicts": {
            c: {
                "disagreement": disagreement[c],
                "m_disagreement": float(model.m[c][0]),
                "shared_value_disagreement": model.shared_disagreement.get(c),
                "applied": c in conflicts,
            }
            for c in settings.strong_conflicts
            if c in names
        },
    }


def _training(kept: KeptModel | None, retrain: bool, person_records: int) -> str:
    """Whether the model is trained in this run, and why: "kept" when the kept one serves."""
    if retrain:
        return "retrained: requested"
    if kept is None:
        return "trained: no kept model fits these comparisons and matching settings"
    if person_records >= 2 * kept.person_records:
        return f"retrained: person records doubled since training ({kept.person_records:,} -> {person_records:,})"
    if kept.model.labelled_pairs < MIN_LABELLED_PAIRS:
        return "retrained: the kept model had too few pairs of one person's records to learn from"
    return "kept"


def trains(sql: Sql, config: CDPConfig, person_records: int, retrain: bool) -> bool:
    """Whether a run over `person_records` latest person records trains the model (match_probabilistically
    decides the same way): what is measured only for a model being trained can be skipped otherwise."""
    settings = config.identity.matching
    if not settings.enabled or person_records < 2:
        return False
    names = list(settings.comparisons)
    kept = load_model(sql, names, model_fingerprint(names, settings.model_dump_json()))
    return _training(kept, retrain, person_records) != "kept"


def _train(
    sql: Sql,
    config: CDPConfig,
    records: str,
    vectors: str,
    node_labels: str,
    names: list[str],
    rules: list[tuple[list[str], int]],
    tables: Scratch,
) -> FellegiSunterModel:
    """Fit the model to this run's candidate pairs, with m measured on person records already joined by a
    shared identifier: examples of one person written twice."""
    settings = config.identity.matching
    labelled_pairs = tables("labelled_pairs")
    sql.create_table_as(
        labelled_pairs,
        f"""
        with members as (
            select m.node_id, c.component, count(*) over (partition by c.component) as size
            from {records} m join {node_labels} c using (node_id)
        )
        select a.node_id as l, b.node_id as r
        from members a join members b on a.component = b.component and a.node_id < b.node_id
        where a.size <= {config.identity.max_cluster_person_records}
        order by {portable_hash("a.node_id", "b.node_id", str(settings.seed))}, a.node_id, b.node_id
        limit {LABELLED_PAIRS}
        """,
        temporary=True,
    )
    model = estimate(
        sql,
        records,
        vectors,
        names,
        [rule for rule, _ in rules],
        settings.u_sample_pairs,
        settings.seed,
        settings.max_em_iterations,
        labelled_pairs,
    )
    tables.drop("labelled_pairs")
    return model


def _cluster(
    sql: Sql,
    config: CDPConfig,
    threshold: float,
    conflicts: dict[str, Conflict],
    records: str,
    scores: str,
    node_labels: str,
    limited_edges: str | None,
    tables: Scratch,
    decisions: str,
    out: str,
    names: FirstNames,
    reuse: bool,
    figures: dict[str, int],
) -> str:
    """Apply links strongest first to the customers they join; fills the caller's temp table `decisions`
    (l, r, decision) with each link's decision, and returns the name of the table of each node's customer
    after: `node_labels` (node_id, component) when no link merges two customers, else `out`.

    `records` are the matching records and `scores` the scored pairs, `names` how common each first name
    is (FirstNames); `limited_edges` the links of identifier types with a max_per_profile (None when no
    type sets one); `tables` the clustering step's own tables. The customers the links join fall into
    groups no link crosses; each group is decided by `cluster_linked` where its rows are (on Spark, its
    executors), and the customers it merges into another are written to `out`: no table passes through
    this process. With `reuse` (the run keeps the last one's scored pairs), a group the last run decided
    with the same rows takes its kept decisions (decisions.py); `figures` gets how many groups there were
    and how many took kept decisions."""
    links, groups, members, decided = tables("links"), tables("groups"), tables("members"), tables("decided")
    # Strongest first by weight, not probability: the probability rounds the weight (every link over about
    # 53 bits is 1.0, an order left to record numbers) and the engines' pow() differ in its last bit,
    # which reorders links of nearly equal strength on Spark. The weights are the same doubles on both.
    sql.create_table_as(
        links,
        f"""select l, r, l_component, r_component, match_weight
            from {scores} where not same_component and match_probability >= {threshold!r} and person_evidence""",
        temporary=True,
    )
    if int(sql.value(f"select count(*) from {links}")) == 0:
        sql.create_table_as(decisions, f"select l, r, cast(null as varchar) as decision from {links}", temporary=True)
        kept_decisions.forget(sql)
        return node_labels
    # Customers are the nodes, each link's left record the vertex joining them (its links all start at
    # its own customer, so no customers are joined that no link joins).
    sql_components(
        sql,
        tables,
        f"""(select l_component as node_id, l as value_id from {links}
             union all select r_component, l from {links})""",
        groups,
    )
    sql.create_table_as(
        members,
        f"""select c.node_id, c.component, g.component as grp
            from {node_labels} c join {groups} g on g.node_id = c.component""",
        temporary=True,
    )
    limits = config.identity.profile_limits()
    limited = ""
    if limits and limited_edges:
        limited = f"""union all
            select distinct grp, 'limit', component, l.id_type, l.id_value, null, null
            from {limited_edges} l join {members} c using (node_id)"""
    # Every person node has a row in the matching records, so its rows count a customer's person records.
    group_rows = f"""
        select grp, 'size' as kind, component, cast(count(m.node_id) as varchar) as a, null as b, null as c,
               null as rank
        from {members} c left join {records} m using (node_id) group by grp, component
        union all
        select distinct grp, 'born', component, m.dob_text, null, null, null
        from {members} c join {records} m using (node_id) where m.dob_text is not null
        union all
        select distinct grp, 'name', component, m.first_name, m.last_name, null, null
        from {members} c join {records} m using (node_id) where m.first_name is not null
        {limited}
        union all
        select g.component, 'link', k.l_component, cast(k.r_component as varchar), cast(k.l as varchar),
               cast(k.r as varchar),
               row_number() over (partition by g.component order by k.match_weight desc, k.l, k.r)
        from {links} k join {groups} g on g.node_id = k.l_component
    """
    max_person_records = config.identity.max_cluster_person_records
    figures["groups"] = int(sql.value(f"select count(distinct component) from {groups}"))
    figures["groups_kept"] = 0

    def decide(rows: str, into: str) -> None:
        """Temp table `into` (grp, kind, x, y, decision): cluster_linked's rows for each group of `rows`."""
        sql.map_groups(
            into,
            rows,
            ["grp"],
            lambda group: [
                (group[0][0], *row) for row in cluster_linked(group, limits, max_person_records, conflicts, names)
            ],
            ["grp", "kind", "x", "y", "decision"],
        )

    # The groups' decisions are kept for the next run where no identifier type limits a profile (a group's
    # limit rows name values, not records) and on DuckDB (decisions.py).
    if config.warehouse.engine != "duckdb" or limited:
        kept_decisions.forget(sql)
        decide(group_rows, decided)
    else:
        rows, signatures = tables("group_rows"), tables("signatures")
        sql.create_table_as(rows, group_rows, temporary=True)
        kept_decisions.signatures(sql, rows, records, signatures)
        reused = tables("reused") if reuse and kept_decisions.usable(sql, config) else None
        fresh = tables("fresh")
        todo = f"select * from {rows}"
        if reused is not None:
            kept_decisions.reuse(sql, signatures, records, reused)
            figures["groups_kept"] = int(sql.value(f"select count(distinct grp) from {reused}"))
            todo += f" anti join (select distinct grp::bigint as grp from {reused}) using (grp)"
        decide(todo, fresh)
        kept_decisions.save(sql, config, signatures, fresh, records, reused)
        sql.create_table_as(
            decided,
            f"select * from {fresh}" + (f" union all select * from {reused}" if reused else ""),
            temporary=True,
        )
        for name in ("group_rows", "signatures", "reused", "fresh"):
            tables.drop(name)
    for name in ("links", "groups", "members"):
        tables.drop(name)
    sql.create_table_as(
        decisions,
        f"select cast(x as bigint) as l, cast(y as bigint) as r, decision from {decided} where kind = 'link'",
        temporary=True,
    )
    merged = int(sql.value(f"select count(*) from {decided} where kind = 'root'"))
    if merged:
        roots = f"""(select cast(x as bigint) as component, cast(y as bigint) as target
                     from {decided} where kind = 'root')"""
        merge_components(sql, node_labels, roots, out)
    tables.drop("decided")
    return out if merged else node_labels
