"""Score `cdp.identity_map` against the demo generator's ground truth.

Pairwise precision/recall/F1 count pairs of records put in the same customer; cluster precision/recall
count customers whose records are exactly one true person. Usage:
    python -m benchmarks.identity_accuracy WAREHOUSE.duckdb GROUND_TRUTH.csv
"""

import sys

import duckdb


def score(warehouse: str, truth_csv: str) -> dict[str, float]:
    conn = duckdb.connect(warehouse, read_only=True)
    conn.execute("create temp table truth as select * from read_csv(?, all_varchar = true)", [truth_csv])
    conn.execute(
        """create temp table joined as
           select t.person_id, m.customer_id from truth t join cdp.identity_map m using (source, source_record_id)"""
    )
    predicted, true, both = conn.execute(
        """select (select sum(n * (n - 1) / 2) from (select count(*) n from joined group by customer_id)),
                  (select sum(n * (n - 1) / 2) from (select count(*) n from joined group by person_id)),
                  (select sum(n * (n - 1) / 2) from (select count(*) n from joined group by person_id, customer_id))"""
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
    precision = both / predicted if predicted else 1.0
    recall = both / true if true else 1.0
    cluster_precision = exact[0] / exact[1] if exact[1] else 1.0
    cluster_recall = exact[0] / exact[2] if exact[2] else 1.0
    return {
        "truth_records": records,
        "records_mapped": mapped,
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "cluster_precision": cluster_precision,
        "cluster_recall": cluster_recall,
        "cluster_f1": (
            2 * cluster_precision * cluster_recall / (cluster_precision + cluster_recall)
            if cluster_precision + cluster_recall
            else 0.0
        ),
    }


if __name__ == "__main__":
    for name, value in score(sys.argv[1], sys.argv[2]).items():
        print(f"{name:20s} {value:.4f}" if isinstance(value, float) else f"{name:20s} {value}")
