"""Publishing the read snapshot after a refresh: in place (only changed buckets replaced) against whole.

    python -m benchmarks.read_snapshot WAREHOUSE [--before WAREHOUSE_BEFORE] [--repeat 2]

WAREHOUSE is a warehouse after a refresh; WAREHOUSE_BEFORE (default: WAREHOUSE itself, so nothing
changed) the same warehouse before it, whose snapshot is what the refresh started from. Both are copied
into a scratch folder first, the snapshot of the copy of WAREHOUSE_BEFORE is published whole, and then, from
a copy of it each time, the snapshot of WAREHOUSE is published in place and whole, alternately, each in its
own child process so its peak RSS is its own. Prints per publication the wall and CPU seconds, the peak
RSS, the tables copied whole and the rows replaced in place, and checks both publications hold the same
rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.identity import _max_rss_mb, run_child


def publish_here(warehouse: Path, start_from: Path, target: Path, mode: str, out: Path) -> None:
    """In a child: copy `start_from` to `target`, publish `warehouse`'s snapshot there, write the figures."""
    import duckdb

    from resources.sql import Sql
    from resources.warehouse import publish_read_snapshot

    if start_from.exists():
        shutil.copyfile(start_from, target)
    with duckdb.connect(str(warehouse)) as conn:
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        report = publish_read_snapshot(Sql(conn), target, mode, incremental=mode == "in place")
        wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    with duckdb.connect(str(target), read_only=True) as conn:
        digest = {
            table: conn.execute(f"select count(*), sum(hash(t)::hugeint)::varchar from cdp.{table} t").fetchall()[0]
            for table in report.rows
        }
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    figures = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": _max_rss_mb(),
        "copied_whole": report.copied_whole,
        "rows_replaced": report.rows_replaced,
        "size_mb": round(target.stat().st_size / 2**20, 1),
        "digest": {t: list(d) for t, d in digest.items()},
    }
    out.write_text(json.dumps(figures))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        warehouse, start_from, target, mode, out = sys.argv[2:7]
        publish_here(Path(warehouse), Path(start_from), Path(target), mode, Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdp-bench-snapshot-") as scratch:
        folder = Path(scratch)
        after, before = folder / "after.duckdb", folder / "before.duckdb"
        shutil.copyfile(args.warehouse, after)
        shutil.copyfile(args.before or args.warehouse, before)
        published = folder / "published.duckdb"

        def publish(warehouse: Path, start_from: Path, mode: str) -> dict:
            out = folder / "figures.json"
            return run_child(
                "benchmarks.read_snapshot",
                [str(warehouse), str(start_from), str(folder / "snapshot.duckdb"), mode, str(out)],
                out,
                f"publication {mode}",
            )

        first = publish(before, folder / "none", "whole")
        shutil.copyfile(folder / "snapshot.duckdb", published)
        print(f"snapshot before the refresh, published whole: {first['wall_s']:.1f} s, {first['size_mb']} MB")
        digests = set()
        for _ in range(args.repeat):
            for mode in ("in place", "whole"):
                (folder / "snapshot.duckdb").unlink(missing_ok=True)
                figures = publish(after, published if mode == "in place" else folder / "none", mode)
                digests.add(json.dumps(figures["digest"], sort_keys=True))
                replaced = sum(figures["rows_replaced"].values())
                print(
                    f"{mode:8}: {figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU, peak RSS "
                    f"{figures['peak_rss_mb']:.0f} MB, {figures['size_mb']} MB; copied whole: "
                    f"{', '.join(figures['copied_whole']) or 'none'}; rows replaced in place: {replaced:,} "
                    f"{figures['rows_replaced'] if mode == 'in place' else ''}"
                )
        print("both publications hold the same rows" if len(digests) == 1 else "PUBLICATIONS DIFFER")


if __name__ == "__main__":
    main()
