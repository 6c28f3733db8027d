"""Poll an API source of 100,000 records over 1,000 pages through injected faults, then poll only the changes.

    python -m benchmarks.api_source [--records 100000 --page-size 100 --fail-rate 0.10 --rate-limit-rate 0.05]

The local ticket API (demo/api_server.py) answers 10% of requests with 500/503 and 5% with 429 and a
`Retry-After` (1 s by default), seeded. The first poll must land every record exactly once; the landed
files are then loaded by the source's extract asset (a real Dagster materialization into DuckDB). Then
--changed records are changed on the server and a second poll must land exactly those.
"""

import argparse
import json
import random
import resource
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from cdp_assets.definitions import build_definitions
from demo.api_server import ApiFaults, ApiServer, make_tickets
from resources.api_source import PollReport, poll_source, source_folder
from resources.config import load_config


def landed_ids(folder: Path, files: list[str]) -> Counter[str]:
    return Counter(json.loads(line)["id"] for name in files for line in (folder / name).open())


def describe(label: str, report: PollReport, seconds: float, api: ApiServer, since: int) -> None:
    statuses = Counter(entry["status"] for entry in api.log[since:])
    print(
        f"{label}: {report.records:,} records in {report.pages:,} pages, {len(report.files)} files, {seconds:.1f} s "
        f"({report.records / seconds:,.0f} records/s); {report.requests:,} requests: "
        f"{statuses.get(200, 0):,} ok, {statuses.get(500, 0) + statuses.get(503, 0):,} 5xx, "
        f"{statuses.get(429, 0):,} 429; {report.retries:,} retries, {report.waited_seconds:.1f} s waiting "
        "(backoff and Retry-After)"
    )


def extract(defs: dg.Definitions, instance: dg.DagsterInstance) -> float:
    started = time.perf_counter()
    asset = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "tickets"])]
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    assert dg.materialize(asset, instance=instance, resources=defs.resources, run_config=quiet).success
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--fail-rate", type=float, default=0.10)
    parser.add_argument("--rate-limit-rate", type=float, default=0.05)
    parser.add_argument("--retry-after", default="1", help="seconds the API's 429 answers ask to wait")
    parser.add_argument("--base-delay", type=float, default=0.05, help="backoff before the first retry of a 5xx")
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    faults = ApiFaults(fail_rate=args.fail_rate, rate_limit_rate=args.rate_limit_rate, retry_after=args.retry_after)
    tickets = make_tickets(args.records, args.seed)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ApiServer(tickets, page_size=args.page_size, faults=faults, seed=args.seed) as api,
    ):
        path = Path(tmp) / "cdp.yaml"
        crm = {"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"}
        source = {
            "name": "tickets",
            "format": "http",
            "role": "events",
            "record_id": "id",
            "fields": {"occurred_at": "updated_at", "event": {"value": "Ticket Updated"}, "status": "status"},
            "identifiers": [{"path": "requester_email", "type": "email"}],
            "http": {
                "url": f"{api.url}/tickets/cursor",
                "records_key": "tickets",
                "pagination": {"style": "cursor", "cursor_path": "meta.next_cursor"},
                "incremental": {"field": "updated_at"},
                "retry": {"max_attempts": 10, "base_delay_seconds": args.base_delay, "max_delay_seconds": 2},
            },
        }
        raw = {
            "warehouse": {"path": "warehouse.duckdb"},
            "landing": {"path": "landing", "settle_seconds": 0},
            "identity": {"identifier_types": {"email": {"normalize": "email"}}},
            "sources": [crm, source],
        }
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        api_source = config.sources[1]
        folder = source_folder(config.landing_path, api_source)
        defs = build_definitions(config)
        print(
            f"{args.records:,} records, {args.page_size} per page; faults: {args.fail_rate:.0%} 5xx, "
            f"{args.rate_limit_rate:.0%} 429 with Retry-After {args.retry_after} s; seed {args.seed}"
        )

        started = time.perf_counter()
        first = poll_source(api_source, config.landing_path)
        describe("first poll", first, time.perf_counter() - started, api, 0)
        counts = landed_ids(folder, first.files)
        expected = {t["id"] for t in tickets}
        once = sum(1 for n in counts.values() if n == 1)
        complete = set(counts) == expected and once == len(expected)
        print(
            f"  landed {sum(counts.values()):,} records, {len(counts):,} distinct ids; {once:,} exactly once; "
            f"missing {len(expected - set(counts)):,}; complete and each once: {complete}"
        )

        with dg.instance_for_test() as instance:
            seconds = extract(defs, instance)
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                rows, distinct = conn.execute(
                    "select count(*), count(distinct record->>'id') from raw.tickets"
                ).fetchone()
            print(f"  extract: {rows:,} raw rows, {distinct:,} distinct ids, {seconds:.1f} s")

            changed = random.Random(args.seed).sample(sorted(expected), args.changed)
            api.change(changed, datetime(2026, 1, 1, tzinfo=UTC), status="solved")
            since = len(api.log)
            started = time.perf_counter()
            second = poll_source(api_source, config.landing_path)
            describe("second poll", second, time.perf_counter() - started, api, since)
            again = landed_ids(folder, second.files)
            print(
                f"  landed {sum(again.values()):,} records; exactly the {len(changed):,} changed: "
                f"{set(again) == set(changed) and sum(again.values()) == len(changed)}; "
                f"{second.skipped_unchanged} resent at the cursor's value and skipped"
            )
            seconds = extract(defs, instance)
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                rows = conn.execute("select count(*) from raw.tickets").fetchone()[0]
            print(f"  extract: {rows:,} raw rows after the second poll, {seconds:.1f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
