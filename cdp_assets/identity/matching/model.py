"""Unsupervised Fellegi-Sunter weights for the comparison levels, and the SQL that scores pairs with them.

For every comparison level the model holds m (how often the same person's two records show it) and
u (how often two strangers' records do); a pair's match weight is the sum of log2(m/u) over its fields
plus the prior odds. u is measured, not guessed: comparing a seeded random sample of record pairs,
which are almost all strangers. m of names, birth dates and addresses is measured too, on the pairs of
person records the deterministic layer joined through a shared e-mail, phone or id: the same person
written twice, with the typos, nicknames and moves real duplicates have. Where there are too few such
pairs, and for the contact fields that made those links, m is learnt by expectation-maximisation over
the candidate pairs with u held fixed (the approach Splink takes). Left to EM alone, customer data
teaches the wrong lesson: most candidate pairs that agree on a surname and an address are households.
Exact agreement on a name, city or postal code is weighed by how common the value is (term
frequency): two records agreeing on "Smith" say far less than two agreeing on "Zyskowski".
"""

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from cdp_assets.identity.matching.comparisons import COMPARISONS, vector_sql
from resources.config.identity import BLOCKING_FEATURES
from resources.sql import Sql, portable_hash, sql_literal

# Fields whose agreement made a deterministic link; pairs joined that way are no example of them.
_DETERMINISTIC_FIELDS = frozenset({"email", "phone", "identifier"})
MIN_LABELLED_PAIRS = 50
_CONVERGED = 1e-6


@dataclass
class FellegiSunterModel:
    names: list[str]
    m: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    prior: float  # probability that two records picked at random are the same person
    iterations: int = 0
    labelled_pairs: int = 0
    # Per strong-conflict field, how often records under one shared identifier value disagree on it,
    # measured at training before the deterministic layer judged the values (see SharedDisagreement in
    # identity/assets.py); kept with the model, so whether a conflict applies changes only on retraining.
    shared_disagreement: dict[str, float] = field(default_factory=dict)

    def weight(self, name: str, level: int) -> float:
        return math.log2(self.m[name][level] / self.u[name][level])

    def levels_table(self) -> pd.DataFrame:
        rows = []
        for name in self.names:
            for level, label in sorted(COMPARISONS[name].labels.items(), reverse=True):
                rows.append(
                    (
                        name,
                        level,
                        label,
                        float(self.m[name][level]),
                        float(self.u[name][level]),
                        round(self.weight(name, level), 3),
                        bool(COMPARISONS[name].tf_column) and level == COMPARISONS[name].exact_level,
                    )
                )
        return pd.DataFrame(rows, columns=["comparison", "level", "label", "m", "u", "weight", "tf_adjusted"])


# The model in use, beside its levels in identity.model: when it was trained, on how many person records,
# and the fingerprint of what it fits (the comparisons' levels and the matching settings).
MODEL_TABLE = "identity.model"
TRAINING_TABLE = "identity.model_training"


def model_fingerprint(names: list[str], settings_json: str) -> str:
    """What a trained model fits: a stored model whose fingerprint differs (a comparison gained a level,
    a blocking rule changed) cannot score today's pairs and is retrained."""
    levels = {n: sorted(COMPARISONS[n].labels.items()) for n in names}
    return hashlib.sha256(f"{levels}\x00{settings_json}".encode()).hexdigest()[:16]


def save_model(
    sql: Sql,
    model: FellegiSunterModel,
    levels: str,
    fingerprint: str,
    trained_at: datetime,
    records: int,
    names: Mapping[str, Mapping[str, int]],
) -> None:
    """Keep `model` as the one in use: `levels` (a table of the caller's holding model.levels_table()) into
    identity.model, the first-name counts it was trained beside (`names`, kind -> name_counts) into
    identity.model_name_counts, the rest into identity.model_training."""
    _save_name_counts(sql, names, trained_at)
    sql.create_table_as(MODEL_TABLE, f"select * from {levels}")
    sql.create_table_as(
        TRAINING_TABLE,
        """select cast(? as varchar) as fingerprint, cast(? as timestamp) as trained_at,
                  cast(? as bigint) as person_records, cast(? as double) as prior,
                  cast(? as integer) as em_iterations, cast(? as bigint) as labelled_pairs,
                  cast(? as varchar) as shared_disagreement""",
        [
            fingerprint,
            trained_at,
            records,
            model.prior,
            model.iterations,
            model.labelled_pairs,
            json.dumps(model.shared_disagreement, sort_keys=True),
        ],
    )


@dataclass(frozen=True)
class KeptModel:
    model: FellegiSunterModel
    trained_at: datetime
    person_records: int


def model_in_use(sql: Sql) -> str | None:
    """The kept model's name: its fingerprint and training time (None when no model is kept). A table
    written by a run names the model it was made with by this."""
    if not sql.table_exists(TRAINING_TABLE):
        return None
    row = sql.row(f"select fingerprint, trained_at::varchar from {TRAINING_TABLE}")
    return "|".join(map(str, row)) if row else None


def load_model(sql: Sql, names: list[str], fingerprint: str) -> KeptModel | None:
    """The model kept by the last training, if it fits `fingerprint` and has every level of `names`."""
    if not sql.table_exists(TRAINING_TABLE):
        return None
    training = sql.row(
        f"select trained_at, person_records, prior, em_iterations, labelled_pairs from {TRAINING_TABLE}"
        " where fingerprint = ?",
        [fingerprint],
    )
    if training is None:
        return None
    trained_at, records, prior, iterations, labelled = training
    # A model kept by an earlier version has no such column: no measurement, as it was trained.
    shared = (
        json.loads(sql.value(f"select shared_disagreement from {TRAINING_TABLE}") or "{}")
        if "shared_disagreement" in sql.columns(f"select * from {TRAINING_TABLE}")
        else {}
    )
    m: dict[str, np.ndarray] = {}
    u: dict[str, np.ndarray] = {}
    for name in names:
        size = COMPARISONS[name].top + 1
        rows = sql.rows(f"select level, m, u from {MODEL_TABLE} where comparison = ? order by level", [name])
        if sorted(level for level, _, _ in rows) != list(range(size)):
            return None
        m[name] = np.array([row[1] for row in rows], dtype=np.float64)
        u[name] = np.array([row[2] for row in rows], dtype=np.float64)
    model = FellegiSunterModel(names, m, u, float(prior), int(iterations), int(labelled), shared)
    return KeptModel(model, trained_at, records)


# How many person records give each first name, kept beside the model: the sharing check, the bridge check
# and clustering ask whether a close spelling is rare next to another (FirstNames), and with the counts of
# the training, their answer about two records depends on those records alone, not on what has arrived
# since (a delta's new Marys would otherwise move the judgement of a Mark and a Mary under any value, and a
# delta could not leave the customers it does not touch as they are). Per kind: as the sharing and bridge
# checks read names (`written`, lower-cased) and as matching folds them (`folded`, accents too). Only names
# on two or more records, under their md5 (as the term frequencies are kept): a name on one record counts
# as one wherever it is asked about; a row with an empty name marks each kind as kept.
KEPT_NAME_COUNTS = "identity.model_name_counts"


def name_counts(sql: Sql, kind: str, names: str, kept: bool) -> dict[str, int]:
    """How many person records give each first name of `names` (a select of one column `name`, a row per
    person record), names on two or more records only: as kept with the model in use when `kept` (the run
    keeps the model) and it has them of this `kind`, otherwise counted now (a model kept by an earlier
    version has none: the counts are then those of each run, until the model is trained again)."""
    if kept and _has_name_counts(sql, kind):
        rows = sql.rows(
            f"""select n.name, k.records
                from (select distinct name from ({names}) where name is not null) n
                join {KEPT_NAME_COUNTS} k on k.name_hash = md5(n.name) where k.kind = ?""",
            [kind],
        )
    else:
        rows = sql.rows(f"select name, count(*) from ({names}) where name is not null group by 1 having count(*) > 1")
    return {str(name): int(count) for name, count in rows}


def _has_name_counts(sql: Sql, kind: str) -> bool:
    """Whether the model in use was saved with first-name counts of `kind` (saved with it, at its training time)."""
    if not (sql.table_exists(KEPT_NAME_COUNTS) and sql.table_exists(TRAINING_TABLE)):
        return False
    return bool(
        sql.value(
            f"""select count(*) from {KEPT_NAME_COUNTS} k join {TRAINING_TABLE} t on k.trained_at = t.trained_at
                where k.kind = ? and k.records = 0""",
            [kind],
        )
    )


def _save_name_counts(sql: Sql, names: Mapping[str, Mapping[str, int]], trained_at: datetime) -> None:
    rows = [(kind, "", 0) for kind in names] + [
        (kind, name, count) for kind, counts in names.items() for name, count in counts.items()
    ]
    with sql.scratch("kept_names") as tables:
        frame = tables.frame("names", pd.DataFrame(rows, columns=["kind", "name", "records"]))
        sql.create_table_as(
            KEPT_NAME_COUNTS,
            f"""select cast(kind as varchar) as kind, md5(cast(name as varchar)) as name_hash,
                       cast(records as bigint) as records, cast(? as timestamp) as trained_at from {frame}""",
            [trained_at],
        )


def _level_counts(frame: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    counts = {}
    for name in names:
        size = COMPARISONS[name].top + 1
        values = frame[name].to_numpy()
        weights = frame["n"].to_numpy()
        keep = values >= 0
        counts[name] = np.bincount(values[keep].astype(np.int64), weights=weights[keep], minlength=size)[:size]
    return counts


def sample_pairs_sql(numbered: str, sample: int, seed: int) -> str:
    """SELECT of `sample` seeded random pairs (l, r) of the records of `numbered(node_id, position)`, whose
    positions run from 0 without gaps: draw k pairs the positions `portable_hash(seed, k, side) % n`, with
    replacement, and a record drawn with itself is dropped. Drawn in SQL, so no list of records passes
    through Python and DuckDB and Spark draw the same pairs."""
    draw = {side: portable_hash(str(int(seed)), "k", sql_literal(side)) for side in ("l", "r")}
    return f"""
        with draws as (
            select {draw["l"]} % c.n as l_position, {draw["r"]} % c.n as r_position
            from unnest(range({int(sample)})) t(k)
            cross join (select count(*) as n from {numbered}) c
            where c.n >= 2
        )
        select l.node_id as l, r.node_id as r from draws d
        join {numbered} l on l.position = d.l_position
        join {numbered} r on r.position = d.r_position
        where d.l_position <> d.r_position"""


def estimate_u(sql: Sql, records: str, names: list[str], sample: int, seed: int) -> dict[str, np.ndarray]:
    """u per level from a seeded random sample of pairs of the matching `records` (strangers, nearly all
    of them; see sample_pairs_sql).

    Where the records have no more ordered pairs than the sample has draws (n(n-1) <= `sample`, a
    thousand records or fewer at the default), the draws would only repeat pairs: each pair is compared
    once and counted as often as the draws pick it on average (`sample` / n²; a record drawn with itself
    is dropped), the sample's expected counts without its noise, and the smoothing weighs as it does
    against a sample's. Drawing a million pairs of a few records cost seconds for nothing."""
    with sql.scratch("u_sample") as tables:
        numbered, pairs = tables("numbered"), tables("pairs")
        sql.create_table_as(
            numbered,
            f"select node_id, row_number() over (order by node_id) - 1 as position from {records}",
            temporary=True,
        )
        size = int(sql.value(f"select count(*) from {numbered}"))
        every_pair = size * (size - 1) <= sample
        drawn = (
            f"select l.node_id as l, r.node_id as r from {numbered} l join {numbered} r on l.position <> r.position"
            if every_pair
            else sample_pairs_sql(numbered, sample, seed)
        )
        sql.create_table_as(pairs, drawn, temporary=True)
        frame = sql.frame(
            f"select {', '.join(names)}, count(*) as n from ({vector_sql(records, pairs, names)}) "
            "group by all order by all"
        )
    counts = _level_counts(frame, names)
    if every_pair and size:
        counts = {name: c * (sample / (size * size)) for name, c in counts.items()}
    # Half a pair of smoothing: a level no stranger pair showed is rare, not impossible.
    return {n: normalise(n, c, 0.5) for n, c in counts.items()}


def normalise(name: str, counts: np.ndarray, smoothing: float, previous: np.ndarray | None = None) -> np.ndarray:
    """Level probabilities from counts, summing to one within each of the comparison's level groups;
    a group with no counts keeps its `previous` probabilities, where given."""
    out = np.zeros(len(counts)) if previous is None else previous.copy()
    for group in COMPARISONS[name].level_groups:
        index = list(group)
        if previous is not None and counts[index].sum() <= 0:
            continue
        out[index] = (counts[index] + smoothing) / (counts[index].sum() + smoothing * len(index))
    return out


def _default_m(name: str) -> np.ndarray:
    m = np.zeros(COMPARISONS[name].top + 1)
    for group in COMPARISONS[name].level_groups:
        m[list(group)] = 0.05 / max(len(group) - 1, 1)
        m[max(group)] = 0.95 if len(group) > 1 else 1.0
    return m


def _em(
    patterns: np.ndarray,
    rules: np.ndarray,
    rule_count: int,
    counts: np.ndarray,
    names: list[str],
    m: dict[str, np.ndarray],
    u: dict[str, np.ndarray],
    iterations: int,
    fixed: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """EM for m and each rule's share of matches, u fixed; patterns hold -1 where a field is no evidence."""
    log_u = {n: np.log(u[n]) for n in names}
    shares = np.full(rule_count, 0.1)
    done = 0
    for _ in range(iterations):
        done += 1
        log_odds = np.log(shares / (1 - shares))[rules]
        for i, name in enumerate(names):
            levels = patterns[:, i]
            known = levels >= 0
            log_odds[known] += np.log(m[name][levels[known]]) - log_u[name][levels[known]]
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))
        weighted = counts * posterior
        new_shares = np.clip(
            np.bincount(rules, weights=weighted, minlength=rule_count)
            / np.maximum(np.bincount(rules, weights=counts, minlength=rule_count), 1e-12),
            1e-6,
            1 - 1e-6,
        )
        change = float(np.abs(new_shares - shares).max())
        for i, name in enumerate(names):
            if name in fixed:
                continue
            levels = patterns[:, i]
            known = levels >= 0
            size = len(m[name])
            totals = np.bincount(levels[known].astype(np.int64), weights=weighted[known], minlength=size)[:size]
            if totals.sum() <= 0:
                continue
            new_m = normalise(name, totals, 1e-3, previous=m[name])
            change = max(change, float(np.abs(new_m - m[name]).max()))
            m[name] = new_m
        shares = new_shares
        if change < _CONVERGED:
            break
    return m, shares, done


def estimate(
    sql: Sql,
    records: str,
    vectors: str,
    names: list[str],
    rules: list[list[str]],
    u_sample: int,
    seed: int,
    max_iterations: int,
    labelled_pairs: str,
) -> FellegiSunterModel:
    """Fit the model to `vectors` (the candidate pairs' levels, their rule and `same_component`) of the
    matching `records`, with m measured where it can be on `labelled_pairs(l, r)`, pairs of one person's
    records.

    Each rule has its own share of matches. A pair's fields its rule forced to agree are left out of
    the fit, so a block of people sharing a surname does not teach that sharing a surname means a match.
    The prior for scoring is the expected number of matching pairs over all pairs of records, so weights
    of every field, the blocked ones too, count when a pair is scored.
    """
    u = estimate_u(sql, records, names, u_sample, seed)
    m = {n: _default_m(n) for n in names}
    labelled = sql.frame(
        f"select {', '.join(names)}, count(*) as n from ({vector_sql(records, labelled_pairs, names)}) "
        "group by all order by all"
    )
    labelled_count = int(labelled["n"].sum()) if len(labelled) else 0
    learnt: set[str] = set()
    if labelled_count >= MIN_LABELLED_PAIRS:
        counts = _level_counts(labelled, names)
        for name in names:
            if name not in _DETERMINISTIC_FIELDS and counts[name].sum() >= MIN_LABELLED_PAIRS:
                m[name] = normalise(name, counts[name], 0.5)
                learnt.add(name)
    record_count = int(sql.value(f"select count(*) from {records}"))
    all_pairs = record_count * (record_count - 1) / 2
    # Sorted, so the floating-point sums of EM run in one order and reruns give identical weights.
    frame = sql.frame(f"select rule_index, {', '.join(names)}, count(*) as n from {vectors} group by all order by all")
    if len(frame) == 0:
        return FellegiSunterModel(names, m, u, 1 / max(all_pairs, 2), 0, labelled_count)
    rule_index = frame["rule_index"].to_numpy(dtype=np.int64)
    patterns = frame[names].to_numpy(dtype=np.int64)
    for i, rule in enumerate(rules):
        masked = {c for feature in rule for c in BLOCKING_FEATURES[feature]}
        for j, name in enumerate(names):
            if name in masked:
                patterns[rule_index == i, j] = -1
    counts = frame["n"].to_numpy(dtype=np.float64)
    m, shares, iterations = _em(patterns, rule_index, len(rules), counts, names, m, u, max_iterations, learnt)
    per_rule = np.bincount(rule_index, weights=counts, minlength=len(rules))
    expected_matches = float((shares * per_rule).sum())
    prior = min(max(expected_matches / max(all_pairs, 1.0), 1e-12), 0.5)
    m = {name: ordered_m(name, m[name], u[name]) for name in names}
    return FellegiSunterModel(names, m, u, prior, iterations, labelled_count)


def ordered_m(name: str, m: np.ndarray, u: np.ndarray) -> np.ndarray:
    """m adjusted so that, within each level group, exact agreement weighs at least as much as any
    partial agreement, and any agreement at least as much as a difference.

    Measured on few pairs (a small file, a rare field), m/u can come out in another order: a phone one
    digit off weighing more than the same phone, or a close birth date less than a different one, which
    would rank a worse pair above a better one. Levels that break the order are pooled, as isotonic
    regression pools adjacent violators: each pooled level's m becomes its u times the pool's total m
    over its total u, which keeps the group's m summing to what it did and leaves u, which is measured
    on a large sample, alone. Partial levels are not ordered among themselves (a nickname is not more or
    less than a close spelling), only between the group's different and exact levels."""
    m = m.copy()
    for group in COMPARISONS[name].level_groups:
        lowest, exact = min(group), max(group)
        pool = {level: {level} for level in group}  # each level's pool, shared by the levels in it
        while True:
            ratio = {level: m[level] / u[level] for level in group}
            # The worst breach: a partial level above exact, or below different (or exact below different).
            breaches = [
                (ratio[low] - ratio[high], low, high)
                for low, high in [(level, exact) for level in group if level != exact]
                + [(lowest, level) for level in group if level not in (lowest, exact)]
                if ratio[low] > ratio[high] * (1 + 1e-12) and pool[low] is not pool[high]
            ]
            if not breaches:
                break
            _, low, high = max(breaches)
            merged = pool[low] | pool[high]
            members = sorted(merged)
            pooled = m[members].sum() / u[members].sum()
            m[members] = u[members] * pooled
            for level in members:
                pool[level] = merged
    return m


def term_frequency_columns(names: list[str]) -> list[str]:
    """The matching records' columns whose exact agreement the comparisons `names` weigh by how common
    the value is, once each, in the comparisons' order."""
    return list(dict.fromkeys(c for c in (COMPARISONS[n].tf_column for n in names) if c is not None))


def build_term_frequencies(sql: Sql, records: str, tables: Mapping[str, str]) -> None:
    """Fill the caller's temp table `tables[column]` with `(value, tf, log2_tf)`, each value's share of the
    matching `records` that hold one and its logarithm (_add_log2), for every column of `tables` (see
    term_frequency_columns)."""
    for column, table in tables.items():
        sql.create_table_as(
            table,
            f"""select {column} as value, count(*) / sum(count(*)) over () as tf
                from {records} where {column} is not null group by 1""",
            temporary=True,
        )
        _add_log2(sql, table)


# A share never counts as under one in a billion: the weight of agreeing on a value stays finite.
_MIN_TF = 1e-9


def _add_log2(sql: Sql, table: str) -> None:
    """Give the term-frequency table `table(value, tf)` the column `log2_tf`, the base-2 logarithm of each
    share (at least _MIN_TF), taken here in Python once per distinct share. The engines' own log2 differ in
    the last bits (Spark divides two natural logarithms): at a million people that reordered links of
    equal strength and so changed which of two conflicting links was made. A share is a quotient of two
    counts, the same double on both engines, and so is its logarithm taken here."""
    shares = [tf for (tf,) in sql.rows(f"select distinct tf from {table} where tf is not null")]
    logs = pd.DataFrame(
        {"tf": pd.Series(shares, dtype="float64"), "log2_tf": [math.log2(max(tf, _MIN_TF)) for tf in shares]}
    )
    with sql.registered(f"{table}_logs", logs) as frame:
        sql.create_table_as(
            table,
            f"""select t.value, t.tf, coalesce(l.log2_tf, {math.log2(_MIN_TF)!r}) as log2_tf
                from {table} t left join {frame} l on l.tf = t.tf""",
            temporary=True,
        )


# The term frequencies the model was trained with, kept beside it: a kept model scores with them, so a
# pair's weight on a value seen at training depends on the two records alone, not on what else has
# arrived since (a new "Smith" would otherwise move the weight of every Smith pair, and a pair scored last
# run could not be kept). Only values on two or more records are kept, under their md5 (as hex text, which
# DuckDB and Spark compute alike), and no name is stored as written. A value not kept (on one record at
# training, or new since) counts as many records' shares of training as it is on now: one record's share
# if it is on one, as at training, but twenty "Hans Müller"s arriving in Hamburg after a model trained on
# American names weigh as common, not as the rarest name there is (pairs.py rescores their records when
# their number changes).
KEPT_TERM_FREQUENCIES = "identity.model_term_frequencies"


def save_term_frequencies(sql: Sql, records: str, columns: list[str]) -> None:
    """Keep the term frequencies of the matching `records` for `columns` with the model being saved."""
    selects = [
        f"""select {sql_literal(column)} as column_name, md5({column}::varchar) as value_hash,
                   count(*) / sum(count(*)) over () as tf, count(*) as records,
                   1.0 / sum(count(*)) over () as unseen_tf
            from {records} where {column} is not null group by {column}"""
        for column in columns
    ]
    counted = " union all ".join(selects) or (
        """select null::varchar as column_name, null::varchar as value_hash, null::double as tf,
                  null::bigint as records, null::double as unseen_tf where false"""
    )
    sql.create_table_as(
        KEPT_TERM_FREQUENCIES,
        f"""with counted as ({counted})
            select column_name, value_hash, tf, unseen_tf from counted where records > 1
            union all  -- per column, the share of a value on one record (there even when every value is unique)
            select column_name, null, null, any_value(unseen_tf) from counted group by 1""",
    )


def has_kept_term_frequencies(sql: Sql, columns: list[str]) -> bool:
    """Whether term frequencies are kept with the model for every one of `columns`."""
    if not sql.table_exists(KEPT_TERM_FREQUENCIES):
        return False
    # Kept by earlier versions under md5_number (a 128-bit integer Spark cannot hold): not this version's
    # key, so they are derived again, from the records now, and kept anew.
    kind = sql.value(f"select typeof(value_hash) from {KEPT_TERM_FREQUENCIES} limit 1")
    if kind is not None and str(kind).lower() not in ("varchar", "string"):
        return False
    kept = {c for (c,) in sql.rows(f"select distinct column_name from {KEPT_TERM_FREQUENCIES}")}
    return set(columns) <= kept


def fill_kept_term_frequencies(sql: Sql, records: str, tables: Mapping[str, str]) -> None:
    """Fill `tables` (as build_term_frequencies does, `log2_tf` too) from the kept term frequencies
    (has_kept_term_frequencies), a value not among them getting the share at training of a value on as
    many records as it is on among `records` (see KEPT_TERM_FREQUENCIES), at most all of them."""
    for column, table in tables.items():
        sql.create_table_as(
            table,
            f"""
            with seen as (
                select {column} as value, count(*) as records from {records} where {column} is not null group by 1
            ),
            kept as (select value_hash, tf from {KEPT_TERM_FREQUENCIES} where column_name = {sql_literal(column)})
            select s.value, coalesce(k.tf, least(1.0, s.records * (select max(unseen_tf) from {KEPT_TERM_FREQUENCIES}
                                                                   where column_name = {sql_literal(column)}))) as tf
            from seen s left join kept k on k.value_hash = md5(s.value::varchar)
            """,
            temporary=True,
        )
        _add_log2(sql, table)


def unseen_values_sql(column: str, values: str) -> str:
    """SQL of the `value`s of select `values` that the kept term frequencies of `column` do not hold: those
    whose share follows how many records hold them now (fill_kept_term_frequencies)."""
    return f"""select value from ({values}) v where not exists (
                   select 1 from {KEPT_TERM_FREQUENCIES} k
                   where k.column_name = {sql_literal(column)} and k.value_hash = md5(v.value::varchar))"""


def scoring_sql(
    model: FellegiSunterModel,
    records: str,
    vectors: str,
    term_frequencies: Mapping[str, str],
    min_probability: float,
) -> str:
    """SELECT over `vectors` (the candidate pairs' comparison levels) of the pairs scoring at least
    `min_probability`, with each field's weight, the match weight and the match probability. Term
    frequencies are read from the tables `term_frequencies` names per column (build_term_frequencies),
    the left record's value from the matching `records`.

    Nine CASEs over millions of pairs cost seconds, but the pairs show a few thousand distinct level
    patterns: each pattern's weight, less the term-frequency parts, is summed once, and a pair's weight
    is that plus its term-frequency parts. Only the pairs it keeps get their per-field weights, summed
    afresh (a tolerance keeps the pairs the two sums could place either side of the threshold).
    """
    names = model.names
    tf_names = [n for n in names if COMPARISONS[n].tf_column in term_frequencies]

    def level_weight(name: str, exact: str | None) -> str:
        top = COMPARISONS[name].exact_level
        whens = " ".join(
            f"when {level} then {exact if exact is not None and level == top else repr(model.weight(name, level))}"
            for level in range(len(model.m[name]))
        )
        return f"coalesce(case {name} {whens} end, 0.0)"

    def tf_weight(name: str, log2_tf: str) -> str:
        # Exact agreement on value v: log2(m / P(a stranger has v)), the logarithms taken in Python (see
        # _add_log2), so that the one subtraction left gives the same double on every engine.
        return f"({math.log2(float(model.m[name][COMPARISONS[name].exact_level]))!r} - {log2_tf})"

    prior = math.log2(model.prior / (1 - model.prior))
    floor = math.log2(min_probability / (1 - min_probability)) - 1e-6
    levels = ", ".join(names)
    base = " + ".join(level_weight(n, "0.0" if n in tf_names else None) for n in names) or "0.0"
    tf_terms = " + ".join(
        f"case when v.{n} = {COMPARISONS[n].exact_level} then {tf_weight(n, f't_{n}.log2_tf')} else 0.0 end"
        for n in tf_names
    )
    tf_values = "".join(f", t_{n}.log2_tf as log2_tf_{n}" for n in tf_names)
    joins = " ".join(
        f"left join {term_frequencies[COMPARISONS[n].tf_column]} t_{n} on t_{n}.value = lrec.{COMPARISONS[n].tf_column}"
        for n in tf_names
    )
    weights = ", ".join(
        f"{level_weight(n, tf_weight(n, f'log2_tf_{n}') if n in tf_names else None)} as w_{n}" for n in names
    )
    total = " + ".join(f"w_{n}" for n in names) or "0.0"
    patterns = (
        f"join (select {levels}, {base} as base from (select distinct {levels} from {vectors})) p using ({levels})"
        if names
        else "cross join (select 0.0 as base) p"
    )
    return f"""
        with kept as (
            select v.*{tf_values}
            from {vectors} v
            {patterns}
            join {records} lrec on lrec.node_id = v.l
            {joins}
            where {prior!r} + p.base + {tf_terms or "0.0"} >= {floor!r}
        ),
        weighed as (select kept.*{", " if weights else ""}{weights} from kept)
        select *, {prior!r} + {total} as match_weight,
               1.0 / (1.0 + pow(2.0, -({prior!r} + {total}))) as match_probability
        from weighed
    """
