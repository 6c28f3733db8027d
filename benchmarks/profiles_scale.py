"""Time golden profiles, traits and segments at scale on a synthetic warehouse.

    python -m benchmarks.profiles_scale --customers 1000000 --events 10000000

Builds the cleaned tables and identity map directly in DuckDB (1.5 person records per customer, three
orders per buyer, the events spread over web, e-mail and support), then runs the same functions as the
`profiles/golden_profiles` and `segments/<name>` assets with the repository's cdp.yaml
(its survivorship rules, traits and segments). Prints seconds per stage and peak memory.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from cdp_assets.profiles.assets import build_profiles
from cdp_assets.segments.assets import build_membership
from resources.config import load_config
from resources.sql import Sql
from resources.warehouse import bootstrap

REPO = Path(__file__).resolve().parents[1]


def synthesize(conn: duckdb.DuckDBPyConnection, customers: int, events: int) -> None:
    bootstrap(conn)
    conn.execute("select setseed(0.42)")
    conn.execute(
        f"""insert into clean.person_records
            select case when i % 2 = 0 then 'shop_customers' else 'crm_contacts' end, 'p' || i, 'f.csv', i,
                timestamp '2025-06-01', case when i % 2 = 0 then 70 else 90 end, true,
                null, (['Ann', 'Bob', 'Cy', 'Di', 'Ed'])[1 + (i % 5)], null, 'Name' || (i % 997),
                'u' || (i // 2) || '@example.com', 'u' || (i // 2) || '@example.com',
                '+1212' || lpad(((i // 2) % 10000000)::varchar, 7, '0'),
                (i % 9999) || ' Main St', null, (i % 9999) || ' MAIN ST', 'Springfield', 'IL', '62701', 'US',
                date '1950-01-01' + (i % 20000)::integer, timestamp '2020-01-01' + to_seconds(i % 100000000)
            from range({customers * 3 // 2}) t(i)"""
    )
    conn.execute(
        f"""insert into clean.transactions
            select 'shop_orders', 'o' || i, 'o' || i,
                timestamp '2025-06-30' - to_seconds((random() * 3e7)::bigint), round(random() * 300, 2), 'USD',
                'paid', 'o.jsonl', i, timestamp '2025-07-01'
            from range({customers * 21 // 10}) t(i)"""
    )
    conn.execute(
        f"""insert into clean.events (source, event_id, source_record_id, event, occurred_at, status, file,
                                      row_number, loaded_at)
            select s.source, 'e' || i, 'a' || (i % {customers}),
                case s.source when 'web_events' then (['Product Viewed', 'Page', 'Product Added'])[1 + i % 3]
                              when 'email_engagement' then (['delivered', 'open', 'click'])[1 + i % 3]
                              else 'Support Ticket Opened' end,
                timestamp '2025-06-30' - to_seconds((random() * 3e7)::bigint),
                case when s.source = 'support_tickets' then (['open', 'solved'])[1 + i % 2] end,
                'e.jsonl', i, timestamp '2025-07-01'
            from range({events}) t(i),
                 lateral (select case when (i % {customers}) % 10 < 7 then 'web_events'
                                      when (i % {customers}) % 10 < 9 then 'email_engagement'
                                      else 'support_tickets' end as source) s"""
    )
    conn.execute(
        f"""insert into clean.consent_statements
            select 'crm_contacts', 'p' || i, 'email_marketing', i % 3 > 0, timestamp '2025-01-01', 'f.csv', i
            from range(1, {customers * 3 // 2}, 2) t(i)"""
    )
    conn.execute(
        f"""create or replace table cdp.identity_map as
            select source, source_record_id, 'cus_' || lpad((row_number * 2 // 3)::varchar, 9, '0') as customer_id,
                'person' as role from clean.person_records
            union all
            select 'shop_orders', 'o' || i, 'cus_' || lpad((i % ({customers} * 7 // 10))::varchar, 9, '0'),
                'transactions' from range({customers * 21 // 10}) t(i)
            union all
            select distinct source, source_record_id,
                'cus_' || lpad(substr(source_record_id, 2), 9, '0'), 'events'
            from clean.events"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    args = parser.parse_args()
    config = load_config(REPO / "cdp.yaml")
    with tempfile.TemporaryDirectory(prefix="cdp-profiles-") as folder:
        conn = duckdb.connect(str(Path(folder) / "bench.duckdb"))
        started = time.perf_counter()
        synthesize(conn, args.customers, args.events)
        synthesized = time.perf_counter() - started
        counts = conn.execute(
            """select (select count(distinct customer_id) from cdp.identity_map), (select count(*) from clean.events),
                      (select count(*) from clean.transactions), (select count(*) from clean.person_records)"""
        ).fetchone()
        sql = Sql(conn)
        started = time.perf_counter()
        build_profiles(sql, config)
        profiles = time.perf_counter() - started
        started = time.perf_counter()
        changes = build_membership(sql, config)
        segments = time.perf_counter() - started
    print(f"customers {counts[0]:,}, events {counts[1]:,}, transactions {counts[2]:,}, person records {counts[3]:,}")
    print(f"synthesis (not measured)     {synthesized:6.1f} s")
    print(f"profiles + traits + provenance {profiles:6.1f} s")
    print(f"segments + history            {segments:6.1f} s")
    print(f"total                         {profiles + segments:6.1f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    print("segment sizes: " + ", ".join(f"{k} {v['size']:,}" for k, v in changes.items()))


if __name__ == "__main__":
    main()
