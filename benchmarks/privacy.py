"""Erase a batch of people from a materialized demo platform: the batch's time, the warehouse's size before and
after, whether any byte of them is left, whether the destinations still hold them, and whether replaying
every original landing file brings any back.

    python -m benchmarks.privacy --people 100000 --erase 100

The demo is generated and refreshed first (not timed here; see benchmarks.full_refresh), with the demo
destination server in this process. The people erased are chosen at random (seeded) among customers with
an e-mail, and erased by e-mail through one requests file, as a user would.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _searched_files(folder: Path, config, home: Path) -> list[Path]:  # type: ignore[no-untyped-def]
    paths = [config.warehouse_path, Path(f"{config.warehouse_path}.wal"), config.read_snapshot_path]
    files = [p for p in paths if p.exists()]
    for root in (config.landing_path, folder / "exports", home, config.privacy_requests_path):
        files += [p for p in root.rglob("*") if p.is_file()]
    return files


def _grep(files: list[Path], patterns: list[str], folder: Path, *, regex: bool = False) -> dict[str, set[str]]:
    """Each text matching one of the patterns in the files' bytes (case-insensitive, lower-cased), with the files
    (relative to `folder`) holding it; fixed strings unless `regex` (POSIX extended)."""
    listed = folder / ".patterns"
    listed.write_text("".join(f"{n}\n" for n in patterns))
    found: dict[str, set[str]] = {}
    for path in files:
        out = subprocess.run(
            ["grep", "-a", "-o", "-i", "-E" if regex else "-F", "-f", str(listed), str(path)],
            capture_output=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        ).stdout
        for match in set(out.decode("latin-1").lower().split("\n")) - {""}:
            found.setdefault(match, set()).add(str(path.relative_to(folder)))
    listed.unlink()
    return found


def _standalone(files: list[Path], emails: set[str], folder: Path) -> set[str]:
    """The addresses found on their own, not only inside a longer address (`matthew.miller@...` holds
    `w.miller@...`): preceded by no address character, followed by none (a dot only before a non-letter)."""
    if not emails:
        return set()
    before, after = "(^|[^a-z0-9._%+-])", r"($|[^a-z0-9_%+.-]|\.($|[^a-z]))"
    patterns = [before + re.sub(r"([.+*?^$()\[\]{}|\\])", r"\\\1", e) + after for e in sorted(emails)]
    matches = _grep(files, patterns, folder, regex=True)
    return {e for e in emails for m in matches if e in m}


def run(people: int, erase: int, folder: Path, replay: bool = True) -> dict[str, object]:
    import dagster as dg
    import duckdb

    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from demo.configs import relocated_config
    from demo.destination_server import DestinationServer
    from demo.generate import generate
    from resources.config import load_config

    os.environ.setdefault("CDP_PRIVACY_KEY", "benchmark-key-" + "0" * 32)
    generate(people=people, seed=42, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    originals = folder / "original_landing"
    shutil.copytree(folder / "landing", originals)
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (REPO / "dagster.yaml").read_text() + f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
    )
    with DestinationServer(port=0) as server, dg.DagsterInstance.from_config(str(home)) as instance:
        config = load_config(relocated_config(folder, server.url))
        defs = build_definitions(config)
        started = time.perf_counter()
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        refresh_s = time.perf_counter() - started
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            candidates = conn.execute(
                # People with an e-mail of their own: not a junk value (none@none.com) or a shared mailbox, which
                # an erasure by e-mail rightly refuses (needs_review) and other customers keep.
                """select customer_id, email from cdp.golden_profiles
                   where email is not null
                     and email not in (select id_value from identity.blocked_identifiers)
                     and email not in (select id_value from identity.shared_identifiers)
                   qualify count(*) over (partition by lower(email)) = 1 order by customer_id"""
            ).fetchall()
            chosen = random.Random(7).sample(candidates, erase)
            ids = [c for c, _ in chosen]
            values: set[str] = {e.lower() for _, e in chosen}
            for phone, first, last in conn.execute(
                """select p.phone, p.first_name, p.last_name from clean.person_records p
                   join cdp.identity_map m using (source, source_record_id) where list_contains(?, m.customer_id)""",
                [ids],
            ).fetchall():
                values |= {re.sub(r"\D", "", phone)} if phone else set()
                values |= {n for n in (first, last) if n}
        size_before = config.warehouse_path.stat().st_size
        requests = config.privacy_requests_path
        requests.mkdir(parents=True, exist_ok=True)
        (requests / "batch.csv").write_text(
            "type,id_type,value,reference\n" + "".join(f"erase,email,{e},B-{i}\n" for i, (_, e) in enumerate(chosen))
        )
        started = time.perf_counter()
        result = defs.resolve_job_def("privacy_request").execute_in_process(
            instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests_file": "batch.csv"}}}}
        )
        erase_s = time.perf_counter() - started
        assert result.success
        size_after = config.warehouse_path.stat().st_size
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            statuses = dict(conn.execute("select status, count(*) from privacy.requests group by 1").fetchall())
            tables_touched = conn.execute(
                "select count(distinct t) from privacy.requests, unnest(map_keys(rows_removed)) u(t)"
            ).fetchone()[0]
        # Names and phones other people share may stay; e-mails are searched exactly, as bytes, case-folded:
        # grep's fixed-string search takes every address in one pass over each file (a search per address and
        # file would read the gigabytes of a large warehouse a thousand times).
        files = _searched_files(folder, config, home)
        where_found = _grep(files, [e.lower() for _, e in chosen], folder)
        left = set(where_found)
        emails_left = len(left)
        where_left = sorted({f for found in where_found.values() for f in found})

        # The byte search is a substring search: an erased address inside a longer one that a customer who was
        # not erased has is found but is not theirs.
        still_carried = len(left - _standalone([folder / f for f in where_left], left, folder))
        seconds = result.asset_materializations_for_node("privacy__requests")[0].metadata["seconds_per_step"].value
        held = json.dumps(
            [
                server.state("webhook", "viewed_not_bought"),
                server.state("rest", "crm"),
                server.state("audiences", "champions"),
            ]
        )
        in_destinations = sum(1 for c in ids if c in held)
        if not replay:
            back = quarantined = None
        else:
            back, quarantined = _replay(defs, instance, config, originals, chosen)
    return {
        "people": people,
        "erased": erase,
        "refresh_s": round(refresh_s, 1),
        "erase_batch_s": round(erase_s, 1),
        "erase_seconds_per_step": seconds,
        "warehouse_mb_before": round(size_before / 1e6, 1),
        "warehouse_mb_after": round(size_after / 1e6, 1),
        "statuses": statuses,
        "tables_with_rows_removed": tables_touched,
        "erased_emails_found_on_disk": emails_left,
        "of_which_only_inside_a_longer_kept_address": still_carried,
        "files_holding_them": where_left,
        "erased_ids_held_by_destinations": in_destinations,
        "back_after_replaying_every_landing_file": back,
        "replayed_rows_quarantined_as_erased": quarantined,
    }


def _replay(defs, instance, config, originals: Path, chosen: list) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Put every original landing file back, refresh, and count the erased people found again."""
    import duckdb

    from cdp_assets.definitions import FULL_REFRESH

    shutil.rmtree(config.landing_path)
    shutil.copytree(originals, config.landing_path)
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        back = conn.execute(
            "select count(*) from cdp.golden_profiles where list_contains(?, lower(email))",
            [[e.lower() for _, e in chosen]],
        ).fetchone()[0]
        quarantined = conn.execute("select count(*) from cdp.quarantine where reason = 'erased person'").fetchone()[0]
    return int(back), int(quarantined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--erase", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run if given")
    parser.add_argument("--no-replay", action="store_true", help="skip replaying the landing files (a second refresh)")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-privacy-bench-"))
    try:
        shutil.rmtree(root / "platform", ignore_errors=True)
        (root / "platform").mkdir(parents=True)
        figures = run(args.people, args.erase, root / "platform", replay=not args.no_replay)
        for key, value in figures.items():
            print(f"{key:42s} {value}")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
