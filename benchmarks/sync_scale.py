"""Time a destination sync at scale against the local demo destination, over real HTTP.

    python -m benchmarks.sync_scale --members 1000000 --batch-size 5000
    python -m benchmarks.sync_scale --members 200000 --engine spark --type hashed_audience

The demo destination server runs in its own process (as a real tool would); the warehouse holds
--members consenting members of one segment. Measures the initial sync (every row sent), then a
re-sync with nothing changed (no request should be made), then a re-sync after 1% of rows changed,
each with the peak resident memory of this process and its children (Spark's JVM; the destination
server's process left out), sampled every 0.1 s. `--type hashed_audience` syncs to an audience (e-mails
hashed) instead of a REST API.
For each run it also prints what recording the batches' answers cost (`record_batch`, one call per
batch): its first and last tenth of calls, which grow apart if that cost grows with the rows already
acknowledged. `--engine spark` copies the members into a Spark warehouse (local[2], in a temporary
folder) and syncs from there.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb
import requests
import yaml

import cdp_assets.syncs.assets as sync_assets
from benchmarks.identity import rss_samples
from benchmarks.spark_pipeline import _tree_rss
from cdp_assets.syncs.assets import run_sync
from cdp_assets.syncs.state import BatchOpener
from resources.config import load_config
from resources.schema import profile_columns
from resources.sql import Sql
from resources.warehouse import bootstrap


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")
# One customer in a hundred, by the last two digits of the id (the same rows on both engines), gets a new
# first name and e-mail: a change of every destination type's fields.
CHANGE_1_IN_100 = "update cdp.golden_profiles set first_name = 'X', email = 'x.' || email where customer_id like '%00'"
# Seconds of each `record_batch` and `BatchOpener.open` call of the sync being measured.
bookkeeping: list[float] = []
opening: list[float] = []


def _timing(function: Callable[..., T], seconds: list[float]) -> Callable[..., T]:
    """`function`, appending the seconds of each call to `seconds`."""

    def timed(*args: object, **kwargs: object) -> T:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    return timed


@contextmanager
def _warehouse(args: argparse.Namespace, conn: duckdb.DuckDBPyConnection, folder: Path) -> Iterator[Sql]:
    """The runner the sync reads and records through: the DuckDB warehouse itself, or a Spark warehouse
    holding a copy of its profiles, membership and acknowledged rows (written through Parquet)."""
    if args.engine == "duckdb":
        yield Sql(conn)
        return
    from resources.spark.warehouse import SparkWarehouse

    conf = dict(item.split("=", 1) for item in args.spark_conf)
    warehouse = SparkWarehouse(warehouse_dir=str(folder / "spark"), read_snapshot=str(folder / "snapshot"), conf=conf)
    with warehouse.sql() as sql:
        for table in ("cdp.golden_profiles", "cdp.segment_membership", "syncs.destination_state"):
            parquet = folder / f"{table}.parquet"
            conn.execute(f"copy {table} to '{parquet}' (format parquet)")
            sql.spark.read.parquet(str(parquet)).write.mode("overwrite").saveAsTable(table)
        try:
            yield sql
        finally:
            sql.spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb")
    parser.add_argument("--type", choices=("rest", "hashed_audience"), default="rest")
    parser.add_argument(
        "--held-rows",
        type=int,
        default=0,
        help="rows another destination has acknowledged already (a deployment's other syncs share the state)",
    )
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    # run_sync calls record_batch by its module-level name, and opens batches through BatchOpener.
    sync_assets.record_batch = _timing(sync_assets.record_batch, bookkeeping)
    BatchOpener.open = _timing(BatchOpener.open, opening)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "demo.destination_server", "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/requests", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # waiting for the server process to listen
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "cdp.yaml"
            path.write_text(
                yaml.safe_dump(
                    {
                        "sources": [
                            {
                                "name": "crm",
                                "format": "csv",
                                "glob": "*.csv",
                                "role": "person",
                                "record_id": "id",
                                "consent": {"email_marketing": "optin"},
                            }
                        ],
                        "segments": [{"name": "vip", "where": "true"}],
                        "destinations": [
                            {
                                "name": "crm_api",
                                "segment": "vip",
                                "mode": "mirror",
                                "purpose": "email_marketing",
                                "batch_size": args.batch_size,
                                **(
                                    {
                                        "type": "rest",
                                        "upsert_url": f"{url}/rest/crm/upsert",
                                        "delete_url": f"{url}/rest/crm/delete",
                                        "fields": {
                                            "email": "email",
                                            "first_name": "first_name",
                                            "ltv": "lifetime_revenue",
                                        },
                                    }
                                    if args.type == "rest"
                                    else {
                                        "type": "hashed_audience",
                                        "url": f"{url}/audiences/a/members",
                                        "fields": {"email_sha256": "email"},
                                    }
                                ),
                            }
                        ],
                    }
                )
            )
            config = load_config(path)
            destination = config.destinations[0]
            conn = duckdb.connect(str(Path(folder) / "bench.duckdb"))
            bootstrap(conn)
            ddl = ", ".join(f'"{c}" {t}' for c, t in profile_columns(config).items())
            conn.execute(f"create table cdp.golden_profiles ({ddl})")
            conn.execute(
                f"""insert into cdp.golden_profiles (customer_id, email, first_name, lifetime_revenue,
                                                     consent_email_marketing)
                    select 'cus_' || lpad(i::varchar, 9, '0'), 'person' || i || '@example.org', 'P' || i,
                           (i % 1000)::double, true from range({args.members}) t(i)"""
            )
            conn.execute(
                "insert into cdp.segment_membership (segment, customer_id) "
                "select 'vip', customer_id from cdp.golden_profiles"
            )
            conn.execute(
                f"""insert into syncs.destination_state
                    select 'another_destination', 'cus_' || lpad(i::varchar, 9, '0'), md5(i::varchar),
                           '{{"email": "person' || i || '@example.org"}}', true, now()::timestamp
                    from range({args.held_rows}) t(i)"""
            )
            figures = {}
            with _warehouse(args, conn, Path(folder)) as sql:
                for label, prepare in (
                    ("initial sync", None),
                    ("re-sync, nothing changed", None),
                    ("re-sync, 1% changed", CHANGE_1_IN_100),
                ):
                    if prepare:
                        sql.execute(prepare)
                    bookkeeping.clear()
                    opening.clear()
                    started = time.perf_counter()
                    # This process and its children (Spark's JVM and Python workers), not the destination server.
                    with rss_samples(0.1, lambda: _tree_rss(os.getpid(), (server.pid,))) as samples:
                        report = run_sync(sql, config, destination, label)
                    peak = max(resident for _, resident in samples)
                    figures[label] = (time.perf_counter() - started, report, list(bookkeeping), sum(opening), peak)
            if args.type == "rest":
                held = len(requests.get(f"{url}/state/rest/crm", timeout=60).json()["records"])
            else:
                held = len(requests.get(f"{url}/state/audiences/a", timeout=60).json()["members"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"{args.engine}: members {args.members:,}, batch size {args.batch_size:,}, rows held for another destination "
        f"{args.held_rows:,}; destination holds {held:,} records"
    )
    for label, (seconds, report, calls, opened, peak) in figures.items():
        print(
            f"{label:28s} {seconds:7.1f} s  requests {report['requests']:5d}  added {report['added']:,}  "
            f"updated {report['updated']:,}  removed {report['removed']:,}  failed {report['failed']}  "
            f"peak RSS {peak / 2**20:,.0f} MB"
        )
        if calls:
            tenth = max(1, len(calls) // 10)
            print(
                f"{'':28s} recording answers: {len(calls)} calls, {sum(calls):.1f} s; first tenth "
                f"{sum(calls[:tenth]) / tenth:.2f} s each, last tenth {sum(calls[-tenth:]) / tenth:.2f} s each; "
                f"opening batches {opened:.1f} s"
            )
    print(f"peak RSS (client and warehouse) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
