"""Customer-id stability over incremental loads, then a full rebuild.

    python -m benchmarks.id_stability [--people 10000] [--loads 10] [--seed 42]

The demo generator writes the whole customer base; 10% of every landing file is held back and released
1% per load as new files (new records), and each load also re-sends 1% of the CRM contacts with a later
modification time and a changed street (updates). After each load the platform is refreshed and every
record present before and after is checked: a record whose customer id changed must be explained by an
event of this run in `cdp.customer_id_history` (its old id merged into the new one, its new id split
from the old one, or it moved from the old id to an existing customer). Finally the raw and cleaned
tables are dropped (the id registry is kept) and everything is loaded again from the landing folder:
the ids must be the ones the last load ended with.
Prints one line per load and the totals.
"""

import argparse
import csv
import random
import shutil
import tempfile
import time
from pathlib import Path


def _hold_back(landing: Path, share: float) -> dict[Path, list[bytes]]:
    """Cut the last `share` of every landing file's lines out of it; returns them per file (header kept).
    Bytes, not text: sources keep their own encodings."""
    held: dict[Path, list[bytes]] = {}
    for path in sorted(p for p in landing.rglob("*") if p.is_file() and p.suffix in (".csv", ".jsonl")):
        lines = path.read_bytes().splitlines(keepends=True)
        header = lines[:1] if path.suffix == ".csv" else []
        body = lines[len(header) :]
        keep = len(body) - int(len(body) * share)
        path.write_bytes(b"".join(header + body[:keep]))
        held[path] = header + body[keep:]
    return held


def _release(held: dict[Path, list[bytes]], load: int, loads: int) -> None:
    """Write load `load`'s slice of every held-back file as a new file beside it."""
    for path, lines in held.items():
        header = lines[:1] if path.suffix == ".csv" else []
        body = lines[len(header) :]
        size = -(-len(body) // loads)
        part = body[(load - 1) * size : load * size]
        if part:
            path.with_name(f"{path.stem}_load{load:02d}{path.suffix}").write_bytes(b"".join(header + part))


def _crm_updates(landing: Path, load: int, share: float, rng: random.Random) -> int:
    """1% of CRM contacts again, modified later with another street: updates of existing records."""
    source = sorted((landing / "crm").glob("contacts_*.csv"))[0]
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = rng.sample(rows, max(1, int(len(rows) * share)))
    out = landing / "crm" / f"contacts_update{load:02d}.csv"
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in chosen:
            writer.writerow(
                {
                    **row,
                    "Mailing Street": f"{rng.randint(1, 999)} Update St",
                    "Last Modified": f"2026-0{1 + load % 9}-01T00:00:00Z",
                }
            )
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import dagster as dg
    import duckdb

    from cdp_assets.definitions import build_definitions
    from demo.configs import relocated_config
    from demo.destination_server import DestinationServer
    from demo.generate import generate
    from resources.config import load_config

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="id_stability_"))
    shutil.rmtree(folder / "landing", ignore_errors=True)
    generate(people=args.people, seed=args.seed, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    held = _hold_back(folder / "landing", share=args.loads / 100)
    rng = random.Random(args.seed)

    def ids(config) -> dict[tuple[str, str, str], str]:
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            rows = conn.execute("select source, source_record_id, role, customer_id from cdp.identity_map").fetchall()
        return {(s, r, role): c for s, r, role, c in rows}

    with DestinationServer(port=0) as server, dg.instance_for_test() as instance:
        config = load_config(relocated_config(folder, server.url, landing={"path": "landing", "settle_seconds": 0}))
        Path(config.warehouse_path).unlink(missing_ok=True)
        job = build_definitions(config).resolve_job_def("full_refresh")
        assert job.execute_in_process(instance=instance).success
        before = ids(config)
        print(f"initial load: {len(before):,} records, {len(set(before.values())):,} customers")
        totals = {"changed": 0, "explained": 0, "unexplained": 0}
        for load in range(1, args.loads + 1):
            _release(held, load, args.loads)
            updates = _crm_updates(folder / "landing", load, 0.01, rng)
            started = time.perf_counter()
            assert job.execute_in_process(instance=instance).success
            seconds = time.perf_counter() - started
            after = ids(config)
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                run_seq = conn.execute("select max(run_seq) from identity.id_runs").fetchone()[0]
                events = conn.execute(
                    "select event, customer_id, related_id from cdp.customer_id_history where run_seq = ?", [run_seq]
                ).fetchall()
            explained_pairs = {(old, new) for event, old, new in events if event == "merged"}
            explained_pairs |= {(old, new) for event, new, old in events if event in ("split", "moved")}
            changed = [(before[k], after[k]) for k in before.keys() & after.keys() if before[k] != after[k]]
            explained = sum(1 for pair in changed if pair in explained_pairs)
            totals["changed"] += len(changed)
            totals["explained"] += explained
            totals["unexplained"] += len(changed) - explained
            kinds = {
                e: sum(1 for row in events if row[0] == e) for e in ("issued", "merged", "split", "moved", "retired")
            }
            print(
                f"load {load:2d}: +{len(after) - len(before):,} records ({updates} updates), {seconds:.1f} s; "
                f"records whose id changed {len(changed)} (explained {explained}); events {kinds}"
            )
            before = after
        with duckdb.connect(str(config.warehouse_path)) as conn:
            tables = conn.execute(
                "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' "
                "and (table_schema in ('raw', 'clean') or (table_schema = 'meta' and table_name = 'loaded_files'))"
            ).fetchall()
            for schema, table in tables:
                conn.execute(f'drop table "{schema}"."{table}"')
        started = time.perf_counter()
        assert job.execute_in_process(instance=instance).success
        rebuilt = ids(config)
        same = sum(1 for k, v in before.items() if rebuilt.get(k) == v)
        seconds = time.perf_counter() - started
        print(f"full rebuild from the landing folder ({seconds:.1f} s): {same:,} of {len(before):,} keep their id")
        print(
            f"totals: {totals['changed']} records changed id over {args.loads} loads, {totals['explained']} "
            f"explained by a merge, split or move in cdp.customer_id_history, {totals['unexplained']} unexplained"
        )


if __name__ == "__main__":
    main()
