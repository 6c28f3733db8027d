"""What an identity run costs when nothing changed and after a 1% delta, against a full identity run.

    python -m benchmarks.identity_delta [--demo-person-records 100000] [--delta 0.01] [--workdir DIR]

The demo generator's data (sized and cached as `benchmarks.identity` does) with the last `--delta` share
of every landing file held back; extract and clean, then identity on a fresh warehouse (full); identity
again with nothing new (unchanged: it reads nothing but fingerprints); then the held-back lines released
as new files plus `--delta`/2 of the CRM contacts re-sent with a later change, extract and clean, and
identity once more (the delta run). Each stage runs in its own process; printed: the identity step's
seconds for each run and how many id runs the registry recorded (an unchanged run records none).
"""

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

import duckdb

from benchmarks.id_stability import _crm_updates, _hold_back, _release
from benchmarks.identity import SEED, _stage_seconds, demo_config, demo_data, people_for, run_stage


def _id_runs(config_path: Path) -> int:
    from resources.config import load_config

    with duckdb.connect(str(load_config(config_path).warehouse_path), read_only=True) as conn:
        return int(conn.execute("select count(*) from identity.id_runs").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-person-records", type=int, default=100_000)
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workdir", type=Path, default=None, help="kept, with cached demo data, if given")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-identity-delta-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        people, _ = people_for(args.demo_person_records, args.seed, workdir)
        cached, _ = demo_data(people, args.seed, workdir)
        run = workdir / f"delta-people{people}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(cached / "landing", run / "landing")
        config_path, _ = demo_config(run)
        held = _hold_back(run / "landing", args.delta)
        figures: dict[str, object] = {"people": people, "delta": args.delta}
        run_stage(config_path, "extract_clean")
        for name in ("full", "unchanged"):
            identity = run_stage(config_path, "identity")
            figures[f"{name}_identity_s"] = _stage_seconds(identity, "identity__")
            figures[f"{name}_id_runs"] = _id_runs(config_path)
        _release(held, 1, 1)
        figures["updated_contacts"] = _crm_updates(run / "landing", 1, args.delta / 2, random.Random(args.seed))
        figures["delta_clean_s"] = _stage_seconds(run_stage(config_path, "extract_clean"), "clean__")
        identity = run_stage(config_path, "identity")
        figures["delta_identity_s"] = _stage_seconds(identity, "identity__")
        figures["delta_id_runs"] = _id_runs(config_path)
        print(
            f"{people:,} people, delta {args.delta:.1%}: identity full {figures['full_identity_s']} s, "
            f"unchanged {figures['unchanged_identity_s']} s, after the delta {figures['delta_identity_s']} s "
            f"(id runs recorded: {figures['full_id_runs']}, {figures['unchanged_id_runs']}, "
            f"{figures['delta_id_runs']}; "
            f"{figures['updated_contacts']} contacts updated; cleaning the delta {figures['delta_clean_s']} s)"
        )
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
