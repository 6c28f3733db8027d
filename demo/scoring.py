"""Score `cdp.identity_map` against a ground truth of `source,source_record_id,person_id`.

The demo generator and the FEBRL loader write such a truth; the benchmarks and the tests score with this.

Pairwise precision/recall/F1 count pairs of records put in the same customer; cluster precision/recall
count customers whose records are exactly one true person. `sources` restricts both the truth and the
clusters to some sources (the person sources, say), so records of other sources neither add pairs nor
chain clusters into the score. Usage:
    python -m demo.scoring WAREHOUSE.duckdb GROUND_TRUTH.csv [SOURCE ...]
"""

import sys
from collections.abc import Iterable

import duckdb

# The table a probabilistic matcher writes its scored candidate pairs to, one row per pair. Its column
# names live here only, so a change of schema is a change of this mapping.
EVIDENCE_TABLE = "identity.evidence"
EVIDENCE_COLUMNS = {
    "left_source": "left_source",
    "left_record_id": "left_record_id",
    "right_source": "right_source",
    "right_record_id": "right_record_id",
    "decision": "decision",
}
LINK_DECISIONS = ("linked", "same customer")
# Record-to-identifier edges that survived blocking: records sharing a value are linked deterministically.
DETERMINISTIC_LINKS_TABLE = "identity.links"


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _load_truth(conn: duckdb.DuckDBPyConnection, truth_csv: str, sources: Iterable[str] | None) -> None:
    """Temp tables `truth` (filtered to `sources`) and `joined` (truth records with their customer)."""
    conn.execute("create temp table truth as select * from read_csv(?, all_varchar = true)", [truth_csv])
    if sources is not None:
        conn.execute("delete from truth where not list_contains(?, source)", [sorted(set(sources))])
    conn.execute(
        """create temp table joined as
           select t.source, t.source_record_id, t.person_id, m.customer_id
           from truth t join cdp.identity_map m using (source, source_record_id)"""
    )


def score(warehouse: str, truth_csv: str, sources: Iterable[str] | None = None) -> dict[str, float | int]:
    """Clustered pairwise and exact-cluster scores of the records of `sources` (all sources if None).

    Pairs are counted among truth records that have a customer; `records_mapped` says how many those are,
    so records lost before identity (quarantined whole) show up instead of silently raising the scores.
    """
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        _load_truth(conn, truth_csv, sources)
        predicted, true, both = conn.execute(
            """select (select coalesce(sum(n * (n - 1) // 2), 0)
                       from (select count(*) n from joined group by customer_id)),
                      (select coalesce(sum(n * (n - 1) // 2), 0)
                       from (select count(*) n from joined group by person_id)),
                      (select coalesce(sum(n * (n - 1) // 2), 0)
                       from (select count(*) n from joined group by person_id, customer_id))"""
        ).fetchone()
        exact = conn.execute(
            """with c as (select customer_id, count(distinct person_id) persons from joined group by 1),
                    p as (select person_id, count(distinct customer_id) customers from joined group by 1),
                    pure as (select j.customer_id, j.person_id from joined j join c using (customer_id)
                             join p using (person_id) where persons = 1 and customers = 1 group by all)
               select (select count(*) from pure), (select count(*) from c), (select count(*) from p)"""
        ).fetchone()
        records, mapped = conn.execute(
            "select count(*), count(m.customer_id) from truth t "
            "left join cdp.identity_map m using (source, source_record_id)"
        ).fetchone()
    finally:
        conn.close()
    precision = both / predicted if predicted else 1.0
    recall = both / true if true else 1.0
    cluster_precision = exact[0] / exact[1] if exact[1] else 1.0
    cluster_recall = exact[0] / exact[2] if exact[2] else 1.0
    return {
        "truth_records": int(records),
        "records_mapped": int(mapped),
        "true_pairs": int(true),
        "predicted_pairs": int(predicted),
        "correct_pairs": int(both),
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": _f1(precision, recall),
        "cluster_precision": cluster_precision,
        "cluster_recall": cluster_recall,
        "cluster_f1": _f1(cluster_precision, cluster_recall),
    }


def score_cases(
    warehouse: str, truth_csv: str, cases_csv: str, sources: Iterable[str] | None = None
) -> dict[str, dict[str, float | int]]:
    """Clustered pairwise scores of each case a `cases_csv` (source, source_record_id, person_id, case) lists.

    A case's pairs are the pairs of truth records with at least one record of the case: a case record put
    with a stranger counts against its precision, one left apart from its person against its recall.
    """
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        _load_truth(conn, truth_csv, sources)
        conn.execute("create temp table cases as select * from read_csv(?, all_varchar = true)", [cases_csv])
        rows = conn.execute(
            """
            with names as (select distinct "case" from cases),
            flagged as (
                select n."case", j.person_id, j.customer_id,
                       exists (select 1 from cases c where c."case" = n."case" and c.source = j.source
                               and c.source_record_id = j.source_record_id) as in_case
                from joined j cross join names n
                where j.person_id in (select person_id from cases c where c."case" = n."case")
                   or j.customer_id in (select m.customer_id from cases c join cdp.identity_map m
                                        using (source, source_record_id) where c."case" = n."case")
            ),
            -- Pairs with at least one case record in a group: all its pairs less those of the others.
            counted as (
                select "case", kind, sum(n * (n - 1) // 2 - (n - k) * (n - k - 1) // 2) as pairs from (
                    select "case", 'predicted' as kind, count(*) as n, count(*) filter (where in_case) as k
                    from flagged group by "case", customer_id
                    union all
                    select "case", 'true', count(*), count(*) filter (where in_case)
                    from flagged group by "case", person_id
                    union all
                    select "case", 'correct', count(*), count(*) filter (where in_case)
                    from flagged group by "case", person_id, customer_id
                ) group by all
            )
            select "case",
                   (select count(*) from cases c where c."case" = n."case"),
                   coalesce(sum(pairs) filter (where kind = 'predicted'), 0),
                   coalesce(sum(pairs) filter (where kind = 'true'), 0),
                   coalesce(sum(pairs) filter (where kind = 'correct'), 0)
            from names n left join counted using ("case") group by all order by 1
            """
        ).fetchall()
    finally:
        conn.close()
    results: dict[str, dict[str, float | int]] = {}
    for case, records, predicted, true, correct in rows:
        precision = correct / predicted if predicted else 1.0
        recall = correct / true if true else 1.0
        results[case] = {
            "records": int(records),
            "true_pairs": int(true),
            "predicted_pairs": int(predicted),
            "correct_pairs": int(correct),
            "pairwise_precision": precision,
            "pairwise_recall": recall,
            "pairwise_f1": _f1(precision, recall),
        }
    return results


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    schema, name = table.split(".")
    rows = conn.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchall()
    return {r[0] for r in rows}


def score_links(warehouse: str, truth_csv: str, sources: Iterable[str] | None = None) -> dict[str, float | int] | None:
    """Link-level scores: pairs the matcher decided to link, plus deterministic links, before clustering.

    Clustering by transitive closure can both add pairs (A-B and B-C make A-C) and hide where a wrong
    decision was made; scoring the decisions themselves separates matcher quality from closure effects.
    Returns None when the warehouse has no evidence table (or not the expected columns), so the harness
    runs on engines that do not score pairs.
    """
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        present = _columns(conn, EVIDENCE_TABLE)
        if not set(EVIDENCE_COLUMNS.values()) <= present:
            return None
        _load_truth(conn, truth_csv, sources)
        c = EVIDENCE_COLUMNS
        decisions = ", ".join("'" + d.replace("'", "''") + "'" for d in LINK_DECISIONS)
        evidence_pairs = f"""
            select {c["left_source"]} || chr(31) || {c["left_record_id"]} as a,
                   {c["right_source"]} || chr(31) || {c["right_record_id"]} as b
            from {EVIDENCE_TABLE} where {c["decision"]} in ({decisions})"""
        deterministic_pairs = "select null::varchar as a, null::varchar as b where false"
        link_columns = _columns(conn, DETERMINISTIC_LINKS_TABLE)
        if {"source", "source_record_id", "id_type", "id_value"} <= link_columns:
            # A value shared by several people links records only within one of them (`person_group`).
            group = "person_group" if "person_group" in link_columns else "null::integer"
            links = f"""(select distinct * from (select source, source_record_id, id_type, id_value,
                         {group} as person_group from {DETERMINISTIC_LINKS_TABLE})
                         semi join truth using (source, source_record_id))"""
            deterministic_pairs = f"""
                select l.source || chr(31) || l.source_record_id as a, r.source || chr(31) || r.source_record_id as b
                from {links} l join {links} r
                  on l.id_type = r.id_type and l.id_value = r.id_value
                 and l.person_group is not distinct from r.person_group
                where l.source || chr(31) || l.source_record_id < r.source || chr(31) || r.source_record_id"""
        conn.execute(
            f"""create temp table linked as
                with keyed as (select source || chr(31) || source_record_id as k, person_id from joined),
                     pairs as (select least(a, b) as a, greatest(a, b) as b, 'evidence' as origin
                               from ({evidence_pairs}) where a <> b
                               union all select a, b, 'deterministic' from ({deterministic_pairs}))
                select p.a, p.b, bool_or(p.origin = 'evidence') as from_evidence,
                       bool_or(p.origin = 'deterministic') as from_deterministic,
                       any_value(ka.person_id = kb.person_id) as correct
                from pairs p join keyed ka on ka.k = p.a join keyed kb on kb.k = p.b
                group by p.a, p.b"""
        )
        predicted, correct, from_evidence, from_deterministic = conn.execute(
            "select count(*), count(*) filter (where correct), count(*) filter (where from_evidence), "
            "count(*) filter (where from_deterministic) from linked"
        ).fetchone()
        true = conn.execute(
            "select coalesce(sum(n * (n - 1) // 2), 0) from (select count(*) n from joined group by person_id)"
        ).fetchone()[0]
        by_decision = dict(
            conn.execute(f"select {c['decision']}, count(*) from {EVIDENCE_TABLE} group by 1 order by 1").fetchall()
        )
    finally:
        conn.close()
    precision = correct / predicted if predicted else 1.0
    recall = correct / true if true else 1.0
    return {
        "link_pairs": int(predicted),
        "link_pairs_from_evidence": int(from_evidence),
        "link_pairs_deterministic": int(from_deterministic),
        "link_correct_pairs": int(correct),
        "link_precision": precision,
        "link_recall": recall,
        "link_f1": _f1(precision, recall),
        "evidence_rows_by_decision": {str(k): int(v) for k, v in by_decision.items()},
    }


if __name__ == "__main__":
    chosen = sys.argv[3:] or None
    results: dict[str, object] = dict(score(sys.argv[1], sys.argv[2], chosen))
    results.update(score_links(sys.argv[1], sys.argv[2], chosen) or {"link_level": "no identity.evidence table"})
    for name, value in results.items():
        print(f"{name:26s} {value:.4f}" if isinstance(value, float) else f"{name:26s} {value}")
