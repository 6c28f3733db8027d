"""Time a destination sync at scale against the local demo destination, over real HTTP.

    python -m benchmarks.sync_scale --members 1000000 --batch-size 5000

The demo destination server runs in its own process (as a real tool would); the warehouse holds
--members consenting members of one segment. Measures the initial sync (every row sent), then a
re-sync with nothing changed (no request should be made), then a re-sync after 1% of rows changed.
"""

import argparse
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import requests
import yaml

from cdp_assets.syncs.assets import run_sync
from resources.config import load_config
from resources.schema import profile_columns
from resources.sql import Sql
from resources.warehouse import bootstrap


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
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
                                "type": "rest",
                                "segment": "vip",
                                "mode": "mirror",
                                "purpose": "email_marketing",
                                "batch_size": args.batch_size,
                                "upsert_url": f"{url}/rest/crm/upsert",
                                "delete_url": f"{url}/rest/crm/delete",
                                "fields": {"email": "email", "first_name": "first_name", "ltv": "lifetime_revenue"},
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
            figures = {}
            for label, prepare in (
                ("initial sync", None),
                ("re-sync, nothing changed", None),
                (
                    "re-sync, 1% changed",
                    "update cdp.golden_profiles set first_name = 'X' where hash(customer_id) % 100 = 0",
                ),
            ):
                if prepare:
                    conn.execute(prepare)
                started = time.perf_counter()
                report = run_sync(Sql(conn), config, destination, label)
                figures[label] = (time.perf_counter() - started, report)
            held = len(requests.get(f"{url}/state/rest/crm", timeout=60).json()["records"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"members {args.members:,}, batch size {args.batch_size:,}; destination holds {held:,} records")
    for label, (seconds, report) in figures.items():
        print(
            f"{label:28s} {seconds:7.1f} s  requests {report['requests']:5d}  added {report['added']:,}  "
            f"updated {report['updated']:,}  failed {report['failed']}"
        )
    print(f"peak RSS (client and warehouse) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
