"""The cost of identity's input fingerprint in DuckDB: DuckDB's own `hash()` against the engine-independent
`portable_hash` (resources/sql.py) that replaced it.

    python -m benchmarks.portable_hash [--rows 1000000] [--repeat 3]

Identity fingerprints every cleaned person record on every run (cdp_assets/identity/inputs.py): a row count
and the sum of a hash of each whole row. The table here has `clean.person_records`' columns and types
(generated values, names of the demo's lengths, a quarter of the middle names NULL), made by DuckDB
itself, and so has `clean.events_identifiers` (the most numerous rows it reads: several per event).
Prints the best of `repeat` wall times of each fingerprint statement, and of the portable
hash's text alone (the columns cast and joined, no md5) to show where its time goes; then matching's
`email_one_slip` feature (a hash of each one-deletion form of every address) with either hash.
"""

from __future__ import annotations

import argparse
import time

import duckdb

from cdp_assets.identity.matching.features import EMAIL_ONE_DELETION, FEATURES
from resources.sql import Sql, portable_hash
from resources.warehouse import bootstrap

FILL = """
insert into clean.person_records by name
select 'crm' as source, 'R' || i as source_record_id, 'contacts_' || (i % 50) || '.csv' as file,
       i + 2 as row_number, timestamp '2025-01-01' + to_seconds(i) as loaded_at, (i % 3)::integer as trust,
       i % 7 <> 0 as is_latest, left(md5(i::varchar), 12) as full_name, left(md5((i + 1)::varchar), 6) as first_name,
       case when i % 4 = 0 then null else 'm' end as middle_name, left(md5((i + 2)::varchar), 8) as last_name,
       left(md5((i + 3)::varchar), 10) || '@example.com' as email,
       left(md5((i + 3)::varchar), 10) || '@example.com' as email_match_key, '+1555' || (i % 10000000) as phone,
       i || ' Main Street' as address_line1, null as address_line2, i || ' main st' as address_key,
       'City' || (i % 500) as city, 'CA' as region, lpad((i % 99999)::varchar, 5, '0') as postal_code,
       'US' as country, date '1950-01-01' + (i % 20000)::integer as date_of_birth,
       timestamp '2025-01-01' + to_seconds(i * 7) + to_microseconds(i % 1000) as updated_at
from range({rows}) r(i);
insert into clean.events_identifiers by name
select 'web' as source, 'E' || i as source_record_id, case when i % 3 = 0 then 'email' else 'anonymous_id' end
       as id_type, left(md5(i::varchar), 20) as id_value, 'events_' || (i % 50) || '.jsonl' as file,
       i + 1 as row_number
from range({rows}) r(i)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    conn = duckdb.connect()
    bootstrap(conn)
    conn.execute(FILL.format(rows=args.rows))
    sql = Sql(conn)
    for table in ("clean.person_records", "clean.events_identifiers"):
        columns = [f't."{c}"' for c in sql.columns(f"select * from {table}")]
        text = portable_hash(*columns).split("md5(", 1)[1].rsplit("), 15)", 1)[0]
        statements = {
            "duckdb hash(t)": "sum(hash(t))",
            "portable_hash (as inputs.py sums it)": f"sum({portable_hash(*columns)}::hugeint)",
            "its text alone (no md5)": f"sum(length({text}))",
        }
        print(f"{table}: {args.rows:,} rows, {len(columns)} columns; best of {args.repeat}")
        for name, expression in statements.items():
            _print_best(sql, name, f"select count(*), {expression} from {table} t", args.repeat)
    # Matching's email_one_slip feature hashes every one-deletion form of each address (about 20 each).
    form = FEATURES["email_one_slip"]
    old_form = form.replace(portable_hash(EMAIL_ONE_DELETION), f"hash({EMAIL_ONE_DELETION})")
    assert old_form != form, "the feature no longer hashes its forms with portable_hash"
    addresses = """(select email_match_key as email_key, split_part(email_match_key, '@', 1) as email_local_key
                    from clean.person_records) b"""
    print(f"email_one_slip of {args.rows:,} addresses; best of {args.repeat}")
    for name, feature in (("duckdb hash()", old_form), ("portable_hash", form)):
        _print_best(sql, name, f"select sum(len(f)) from (select {feature} as f from {addresses})", args.repeat)


def _print_best(sql: Sql, name: str, statement: str, repeat: int) -> None:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        sql.row(statement)
        best = min(best, time.perf_counter() - started)
    print(f"  {name:40s} {best:6.2f} s")


if __name__ == "__main__":
    main()
