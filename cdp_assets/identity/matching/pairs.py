"""Scored pairs kept from the last run: a small delta compares and scores only the pairs it can change.

A candidate pair's score is a function of its two records' matching features, the model and the model's
term frequencies. With the model kept (and its frequencies with it, see model.py), a pair of two records
whose base rows are as they were scores as it did, so the last run's scored pairs (`identity.evidence`:
every pair at or over the review threshold) are kept, and only the pairs with a record whose base row
changed are made and scored again. Pairs under the review threshold are kept nowhere and need not be:
they stay under it.

Blocking can change a pair of unchanged records too: a block shared by more records than its rule's cap
makes no pairs, so a record arriving in a block at its cap takes away the pairs of every record in it
(and one leaving gives them back). The records of a block whose side of the cap changed are counted as
changed. Everything after scoring (clustering, the evidence and review tables) runs over every pair, kept
and new, as in a full run: the result is the one a full run with the kept model gives, which the
`equals_a_rebuild` check and tests/test_identity_incremental.py compare.

`identity.match_features` keeps the matching records (features.py) with the hash of each one's base row,
of which every feature is a function, and `identity.match_features_state` what scored the pairs (the
model's fingerprint and training time) and how many rows were kept: a record whose base row hashes as it
did keeps its features, and pairs are kept only from a run that scored them with the model in use, when
no kept row has been removed since (an erasure removes the rows of the people it erases).
"""

from collections.abc import Sequence

from cdp_assets.identity.matching.blocking import held_keys, holding, keyed, list_features, whole_key
from cdp_assets.identity.matching.features import FEATURE_COLUMNS, KeptFeatures
from cdp_assets.identity.matching.model import unseen_values_sql
from resources.sql import Sql

FEATURES_TABLE = "identity.match_features"
# What scored the kept pairs and how many feature rows were kept: rows removed since by anything but an
# identity run (an erasure) took their blocks' old sizes with them, so the features are then not kept.
FEATURES_STATE = "identity.match_features_state"
# How pairs are weighed beside the model, named with it in FEATURES_STATE: pairs a version that weighed
# otherwise scored are not kept. "unseen counted": a value the kept term frequencies lack weighs by how many
# records hold it (model.fill_kept_term_frequencies).
SCORING = "unseen counted"


def save_features(sql: Sql, records: str, scored_with: str, kept: KeptFeatures | None = None) -> None:
    """Keep the matching `records` (their features and base-row hashes, see features.py), after a run that
    scored with the model `scored_with` names, for the next run to keep what did not change. With `kept`
    (this run kept the last one's features), only the rows of records new, changed or gone are written
    (the two tables build_match_records filled): the kept rows' node ids are stale then, and nothing reads
    them."""
    if kept is not None:
        sql.execute(
            f"""delete from {FEATURES_TABLE} f using {kept.gone} g
                where g.source = f.source and g.source_record_id = f.source_record_id"""
        )
        sql.execute(
            f"insert into {FEATURES_TABLE} by name select * from {records} semi join {kept.fresh} using (node_id)"
        )
    else:
        sql.create_table_as(FEATURES_TABLE, f"select * from {records}")
    sql.create_table_as(
        FEATURES_STATE,
        f"select cast(? as varchar) as scored_with, (select count(*) from {FEATURES_TABLE}) as feature_rows",
        [f"{scored_with}|{SCORING}"],
    )


def pairs_reusable(sql: Sql, scored_with: str) -> bool:
    """Whether the last run's features and scored pairs can be kept: it scored with the model `scored_with`
    names, kept every feature (and the base-row hash) this version derives, and no row has gone since."""
    if not all(sql.table_exists(t) for t in (FEATURES_TABLE, FEATURES_STATE, "identity.evidence")):
        return False
    if not {*FEATURE_COLUMNS, "base_hash"} <= set(sql.columns(f"select * from {FEATURES_TABLE}")):
        return False
    state = sql.row(f"select scored_with, feature_rows from {FEATURES_STATE}")
    return state == (f"{scored_with}|{SCORING}", sql.value(f"select count(*) from {FEATURES_TABLE}"))


def changed_records(
    sql: Sql,
    records: str,
    rules: list[tuple[list[str], int]],
    kept: KeptFeatures,
    changed: str,
    counted: Sequence[str] = (),
) -> int:
    """Fill the caller's temp table `changed(node_id)` with the matching `records` whose pairs must be made
    and scored again: new ones and those whose base row changed (`kept.fresh`), those in a block whose
    side of its rule's cap (or of two records) a new, changed or departed record (`kept.gone`, the kept rows
    that lost their place in their blocks) moved, and those holding a value of one of the `counted` columns
    that the kept term frequencies lack and that such a record took to or from them (its share follows how
    many records hold it: model.fill_kept_term_frequencies). Returns their count; `kept.gone` is left
    holding the departed rows' keys only."""
    sql.create_table_as(changed, f"select node_id from {kept.fresh}", temporary=True)
    for rule, cap in rules:
        sql.execute(f"insert into {changed} {_crossing_sql(records, kept, changed, rule, cap)}")
    for column in counted:
        sql.execute(f"insert into {changed} {_recounted_sql(records, kept, changed, column)}")
    # Only their keys are read after this (save_features): the rest of the rows need not be held meanwhile.
    sql.create_table_as(kept.gone, f"select source, source_record_id from {kept.gone}", temporary=True)
    return int(sql.value(f"select count(*) from {changed}"))


def _recounted_sql(records: str, kept: KeptFeatures, changed: str, column: str) -> str:
    """The node ids, not yet in `changed`, of the `records` holding a value of `column` that the kept term
    frequencies lack and that is on another number of records than last run (`kept.table`): a changed or
    departed record took it to or from them, so their exact agreements on it weigh otherwise now."""
    touched = f"""select {column} as value from {records} semi join {changed} using (node_id)
                  where {column} is not null
                  union select {column} from {kept.gone} where {column} is not null"""
    return f"""
        with unseen as ({unseen_values_sql(column, touched)}),
        now_n as (
            select r.{column} as value, count(*) as n, list(r.node_id) as nodes from {records} r
            semi join unseen u on u.value = r.{column} group by 1
        ),
        before_n as (
            select k.{column} as value, count(*) as n from {kept.table} k
            semi join unseen u on u.value = k.{column} group by 1
        ),
        recounted as (
            select unnest(a.nodes) as node_id from now_n a left join before_n b using (value)
            where a.n <> coalesce(b.n, 0)
        )
        select distinct node_id from recounted anti join {changed} using (node_id)"""


def _crossing_sql(records: str, kept: KeptFeatures, changed: str, rule: list[str], cap: int) -> str:
    """The node ids, not yet in `changed`, of the `records` in a block of `rule` whose side of its cap (or
    of two records) a changed record (in `changed`) or a departed one (in `kept.gone`) moved: the blocks'
    sizes before are counted in `kept.table`."""
    columns = ", ".join(rule)
    not_null = " and ".join(f"{f} is not null" for f in rule)
    pairs_made = f"between 2 and {cap}"
    touched = f"""
        select * from ({held_keys(records, rule, changed)}) where {not_null}
        union
        select {columns} from {keyed(kept.gone, rule)} where {not_null}"""
    if not list_features(rule):
        return f"""
            with touched as ({touched}),
            now_n as (
                select {columns}, count(*) as n, list(node_id) as nodes from {records}
                semi join touched using ({columns}) group by all
            ),
            before_n as (
                select {columns}, count(*) as n from {kept.table} semi join touched using ({columns}) group by all
            ),
            crossing as (
                select unnest(a.nodes) as node_id from touched t
                join now_n a using ({columns}) left join before_n b using ({columns})
                where (a.n {pairs_made}) <> (coalesce(b.n, 0) {pairs_made})
            )
            select distinct node_id from crossing anti join {changed} using (node_id)"""
    # A list feature's block holds whole values (blocking.py): each distinct combination of the rule's
    # values is unnested once, its blocks counted in distinct whole values, and the records of a block
    # whose side moved are found by their whole values (and the rule's other features).
    # Only the records holding a touched value are unnested into their blocks (blocking.holding).
    plain = [f for f in rule if f not in list_features(rule)]
    also = "".join(f", {f}" for f in plain)
    using = ", ".join(["__whole", *plain])
    before_holding = holding(kept.table, rule, "select * from touched", key="source, source_record_id")
    return f"""
        with touched as ({touched}),
        now_holding as {holding(records, rule, "select * from touched")},
        now_whole as (
            select distinct __whole, {columns} from {keyed("now_holding", rule, distinct=True)}
            semi join touched using ({columns})
        ),
        now_n as (select {columns}, count(*) as n from now_whole group by all),
        before_n as (
            select {columns}, count(*) as n from (
                select distinct __whole, {columns} from {keyed(before_holding, rule, distinct=True)}
                semi join touched using ({columns})
            ) group by all
        ),
        crossing as (
            select distinct w.__whole{"".join(f", w.{f}" for f in plain)} from now_n a
            left join before_n b using ({columns}) join now_whole w using ({columns})
            where (a.n {pairs_made}) <> (coalesce(b.n, 0) {pairs_made})
        ),
        holders as (select node_id, {whole_key(rule)} as __whole{also} from now_holding)
        select distinct node_id from holders semi join crossing using ({using}) anti join {changed} using (node_id)"""


def keep_scored_pairs(
    sql: Sql,
    records: str,
    changed: str,
    node_labels: str,
    scores: str,
    rule_names: list[str],
    names: list[str],
    person_evidence: str,
) -> int:
    """Add to the caller's `scores` (the pairs scored now, at or over the review threshold) the last run's
    scored pairs of two unchanged `records`, under this run's node ids and components; returns how many."""
    levels = "".join(f", e.{n}, e.w_{n}" for n in names)
    carried = "".join(f", {n}, w_{n}" for n in names)
    before = int(sql.value(f"select count(*) from {scores}"))
    sql.execute(
        f"""
        insert into {scores} by name
        with kept as (
            select nl.node_id as l, nr.node_id as r, e.rule, e.swapped{levels}, e.match_weight, e.match_probability
            from identity.evidence e
            join {records} nl on nl.source = e.left_source and nl.source_record_id = e.left_record_id
            join {records} nr on nr.source = e.right_source and nr.source_record_id = e.right_record_id
            anti join {changed} cl on cl.node_id = nl.node_id
            anti join {changed} cr on cr.node_id = nr.node_id
        )
        select l, r, (list_position(?, rule) - 1)::smallint as rule_index, swapped{carried}, match_weight,
               match_probability, cl.component as l_component, cr.component as r_component,
               cl.component = cr.component as same_component, {person_evidence} as person_evidence
        from kept
        join {node_labels} cl on cl.node_id = kept.l
        join {node_labels} cr on cr.node_id = kept.r
        """,
        [rule_names],
    )
    return int(sql.value(f"select count(*) from {scores}")) - before
