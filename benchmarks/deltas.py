"""Refresh time after small deltas, against a full refresh, with the rebuild check after each.

    python -m benchmarks.deltas [--people 100000] [--deltas 10] [--seed 42] [--workdir DIR] [--check-every 1]
                                [--memory-limit 1500MB] [--delta-memory-limit 1GB] [--steps N] [--unread-deltas]

The demo generator writes the customer base; `deltas`% of every landing file is held back (as
benchmarks/id_stability.py does). A full refresh loads the rest; then each delta releases 1% of the lines
as new files (new records, new orders and events) and re-sends 1% of the CRM contacts with a later
modification time (updated records), the `full_refresh` job runs again (cleaning, profiles and segments
work incrementally; identity scores only the pairs of changed records), and the `rebuild_check` job
compares the warehouse with a rebuild from the raw rows. With `--unread-deltas`, two more deltas follow,
of changes identity does not read: 1% of the CRM contacts sent again with only the e-mail opt-in and the
modification time changed, then 1% of the web events sent again as new events of the same browsers
(identity keeps its result; profiles, segments and syncs take the change). Every job runs in its own child
process, so each peak RSS is that run's. Prints per run the wall time, its share of the full refresh, the
seconds per stage, what identity rescored, the customers the profiles recomputed and whether the check
passed; with `--steps N`, also the N slowest steps and the N steps during which the process was largest
(resident memory sampled every 50 ms and put down to the step running then, so a step's figure includes
what earlier steps left allocated).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.id_stability import _crm_updates, _hold_back, _release
from benchmarks.identity import _max_rss_mb, _step_windows, rss_samples, run_child

# Stages as the step keys begin; anything else (read snapshot, checks) is "other".
STAGES = ("raw", "clean", "identity", "profiles", "segments", "syncs")


def _metadata(result: Any, step: str) -> dict[str, Any]:
    """The materialization metadata of one asset's step, values only."""
    events = result.asset_materializations_for_node(step)
    return {k: v.value for k, v in events[0].metadata.items()} if events else {}


def run_here(config_path: Path, job_name: str, out: Path) -> None:
    """Run one job in this (child) process and write its figures to `out`."""
    import dagster as dg

    from cdp_assets.consistency.checks import CHECK_NAME
    from cdp_assets.definitions import build_definitions
    from resources.config import load_config

    job = build_definitions(load_config(config_path)).resolve_job_def(job_name)
    with dg.instance_for_test() as instance:
        with rss_samples(0.05) as samples:
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance, raise_on_error=False)
            wall = time.perf_counter() - started
        windows = _step_windows(instance, result.run_id)
    steps = {step: end - start for step, (start, end) in windows.items()}
    step_peaks = {
        step: max((mb for at, mb in samples if start <= at <= end), default=0) for step, (start, end) in windows.items()
    }
    stages = {stage: 0.0 for stage in (*STAGES, "other")}
    for step, seconds in steps.items():
        prefix = step.split("__")[0]
        stages[prefix if prefix in STAGES else "other"] += seconds
    failures = [
        f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
        for e in result.all_events
        if e.is_step_failure and e.event_specific_data is not None and e.event_specific_data.error is not None
    ]
    figures: dict[str, Any] = {
        "success": result.success,
        "failures": failures,
        "wall_s": round(wall, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "steps_s": {k: round(v, 2) for k, v in sorted(steps.items(), key=lambda kv: -kv[1])},
        "peak_rss_mb": _max_rss_mb(),
        "step_peak_rss_mb": dict(sorted(step_peaks.items(), key=lambda kv: -kv[1])),
    }
    if job_name == "rebuild_check":
        evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
        # A check that raised has no evaluation: it did not pass, and its error says why.
        figures["check_passed"] = bool(evaluations and evaluations[0].passed)
        figures["differing"] = (
            {k: v.value for k, v in evaluations[0].metadata.items() if k.startswith("differing")}
            if evaluations
            else {"error": failures}
        )
    else:
        profiles = _metadata(result, "profiles__golden_profiles")
        figures["profiles"] = {k: profiles.get(k) for k in ("mode", "reason", "customers_recomputed")}
        figures["customers"] = profiles.get("dagster/row_count")
        identity = _metadata(result, "identity__clusters")
        figures["identity"] = {
            k: identity.get(k)
            for k in ("mode", "records_rescored", "scored_pairs_kept", "deterministic_records", "seconds_by_step")
        }
        segments = [_metadata(result, s) for s in steps if s.startswith("segments__")]
        figures["segment_profiles_evaluated"] = sum(int(m.get("profiles_evaluated", 0)) for m in segments if m)
    out.write_text(json.dumps(figures))


def run_job(config_path: Path, job_name: str) -> dict[str, Any]:
    """Run a job in a fresh child process (its peak RSS its own); its figures."""
    with tempfile.TemporaryDirectory(prefix="cdp-bench-deltas-") as scratch:
        out = Path(scratch) / "result.json"
        figures = run_child("benchmarks.deltas", [str(config_path), job_name, str(out)], out, job_name)
    if not figures["success"]:
        raise RuntimeError(
            f"{job_name} did not succeed: {'; '.join(figures['failures']) or 'no step failed'}; "
            f"step times {figures['stages_s']}"
        )
    return figures


def _report(label: str, run: dict[str, Any], full: dict[str, Any], check: dict[str, Any] | None, steps: int) -> None:
    """Print one delta's figures: wall time and share of the full refresh, stages, identity and profiles."""
    print(
        f"{label}: {run['wall_s']:.1f} s = {run['wall_s'] / full['wall_s']:.0%} of the full refresh, "
        f"peak RSS {run['peak_rss_mb']:.0f} MB; {_stages(run)}"
    )
    if steps:
        print(f"  slowest steps: {_slowest(run, steps)}")
    identity, profiles = run["identity"], run["profiles"]
    print(
        f"  identity {identity['mode']}: {identity.get('records_rescored') or 0:,} person records rescored, "
        f"{identity.get('scored_pairs_kept') or 0:,} scored pairs kept, deterministic layer over "
        f"{identity.get('deterministic_records') or 0:,} record nodes; seconds by step: "
        + _identity_steps(identity.get("seconds_by_step"))
    )
    print(
        f"  profiles {profiles['mode']}: {profiles['customers_recomputed']:,} of {run['customers']:,} "
        f"customers recomputed ({profiles['reason']}); segments evaluated "
        f"{run['segment_profiles_evaluated']:,} profiles; {_check_text(check)}"
    )


def _contacts_sent_once(landing: Path) -> list[dict[str, str]]:
    """The rows of the first CRM export whose contact no other CRM file sends: each is its contact's latest
    version, so sending it again as it is changes nothing identity reads."""
    files = sorted((landing / "crm").glob("*.csv"))
    sent: dict[str, int] = {}
    for path in files:  # some files are in another encoding: only their ids are read here
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            for row in csv.DictReader(handle):
                sent[row["ContactId"]] = sent.get(row["ContactId"], 0) + 1
    with files[0].open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if sent[row["ContactId"]] == 1]


def _opt_outs(landing: Path, load: int, share: float, rng: random.Random) -> int:
    """`share` of the CRM contacts sent once so far (_contacts_sent_once), sent again as they are but for the
    e-mail opt-in (flipped) and a later modification time: changes identity does not read. Returns how
    many."""
    rows = _contacts_sent_once(landing)
    chosen = rng.sample(rows, max(1, int(len(rows) * share)))
    with (landing / "crm" / f"contacts_optin{load:02d}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in chosen:
            flipped = "false" if row["Email Opt In"] == "true" else "true"
            writer.writerow({**row, "Email Opt In": flipped, "Last Modified": f"2026-1{load % 3}-01T00:00:00Z"})
    return len(chosen)


def _known_visitor_events(landing: Path, load: int, share: float, rng: random.Random) -> int:
    """`share` of the web events sent again as new events (another message id) of the same browsers, those
    giving no traits: new rows of activity records identity knows, with no identifier it has not seen.
    Returns how many."""
    lines = [line for path in sorted((landing / "web").glob("*.jsonl")) for line in path.read_text().splitlines()]
    events = [json.loads(line) for line in rng.sample(lines, max(1, int(len(lines) * share)))]
    again = [e for e in events if e.get("anonymousId") and not e.get("traits")]
    (landing / "web" / f"events_again{load:02d}.jsonl").write_text(
        "".join(json.dumps({**e, "messageId": f"again-{load}-{n}"}) + "\n" for n, e in enumerate(again))
    )
    return len(again)


def _with_memory_limit(config_path: Path, limit: str, target: Path) -> None:
    """Write to `target` the configuration at `config_path` with `warehouse.memory_limit` set to `limit`."""
    raw = yaml.safe_load(config_path.read_text())
    raw["warehouse"]["memory_limit"] = limit
    target.write_text(yaml.safe_dump(raw, sort_keys=False))


def _identity_steps(table: str | None) -> str:
    """Identity's seconds by step, from its metadata's markdown table, on one line."""
    rows = [line.strip("|").split("|") for line in (table or "").splitlines()[2:]]
    return ", ".join(f"{step.strip()} {seconds.strip()}" for step, seconds in rows) or "not recorded"


def _check_text(check: dict[str, Any] | None) -> str:
    if check is None:
        return "rebuild check not run"
    verdict = "pass" if check["check_passed"] else "FAIL " + json.dumps(check["differing"])
    return f"rebuild check {verdict} ({check['wall_s']:.1f} s)"


def _stages(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in figures["stages_s"].items() if v >= 0.05)


def _slowest(figures: dict[str, Any], count: int) -> str:
    slowest = ", ".join(f"{k} {v:.1f}" for k, v in list(figures["steps_s"].items())[:count])
    largest = ", ".join(f"{k} {v:,} MB" for k, v in list(figures["step_peak_rss_mb"].items())[:count])
    return f"{slowest}\n  largest steps (peak RSS while each ran): {largest}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        config_path, job_name, out = sys.argv[2:5]
        run_here(Path(config_path), job_name, Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--deltas", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run if given")
    parser.add_argument(
        "--check-every",
        type=int,
        default=1,
        help="rebuild check after every Nth delta (and after the full refresh when 1; 0: never)",
    )
    parser.add_argument("--steps", type=int, default=0, help="also print each run's N slowest steps")
    parser.add_argument(
        "--unread-deltas",
        action="store_true",
        help="then two deltas of changes identity does not read: 1%% of CRM contacts sent again with only the "
        "opt-in changed, and 1%% of the web events sent again as new events of the same browsers",
    )
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="warehouse.memory_limit for every run (e.g. 1500MB): DuckDB spills beyond it instead of growing",
    )
    parser.add_argument(
        "--delta-memory-limit",
        default=None,
        help="warehouse.memory_limit for the delta refreshes only (the full refresh and the checks keep theirs)",
    )
    args = parser.parse_args()

    from demo.configs import relocated_config
    from demo.destination_server import DestinationServer
    from demo.generate import generate

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-deltas-"))
    try:
        shutil.rmtree(folder / "landing", ignore_errors=True)
        (folder / "warehouse.duckdb").unlink(missing_ok=True)
        generate(people=args.people, seed=args.seed, out_dir=folder / "landing", truth_path=folder / "truth.csv")
        held = _hold_back(folder / "landing", share=args.deltas / 100)
        rng = random.Random(args.seed)
        with DestinationServer(port=0) as server:
            config_path = relocated_config(folder, server.url, landing={"path": "landing", "settle_seconds": 0})
            if args.memory_limit:
                _with_memory_limit(config_path, args.memory_limit, config_path)
            delta_config = config_path
            if args.delta_memory_limit:  # the same warehouse and folders, another memory limit
                delta_config = config_path.with_name("cdp.deltas.yaml")
                _with_memory_limit(config_path, args.delta_memory_limit, delta_config)
            full = run_job(config_path, "full_refresh")
            print(
                f"full refresh, {args.people:,} people ({full['customers']:,} customers): {full['wall_s']:.1f} s, "
                f"peak RSS {full['peak_rss_mb']:.0f} MB; {_stages(full)}"
            )
            if args.steps:
                print(f"  slowest steps: {_slowest(full, args.steps)}")
            if args.check_every == 1:
                check = run_job(config_path, "rebuild_check")
                print(f"  rebuild check: {'pass' if check['check_passed'] else 'FAIL'} ({check['wall_s']:.1f} s)")
            shares = []
            for delta in range(1, args.deltas + 1):
                _release(held, delta, args.deltas)
                updates = _crm_updates(folder / "landing", delta, 0.01, rng)
                run = run_job(delta_config, "full_refresh")
                checked = args.check_every and delta % args.check_every == 0
                check = run_job(config_path, "rebuild_check") if checked else None
                shares.append(run["wall_s"] / full["wall_s"])
                _report(f"delta {delta:2d} (+1% lines, {updates} CRM updates)", run, full, check, args.steps)
            if shares:
                print(f"mean delta run: {sum(shares) / len(shares):.0%} of the full refresh")
            if args.unread_deltas:
                for made, describe in ((_opt_outs, "CRM contacts sent again, opt-in changed"),
                                       (_known_visitor_events, "new events of known browsers")):  # fmt: skip
                    count = made(folder / "landing", args.deltas + 1, 0.01, rng)
                    run = run_job(delta_config, "full_refresh")
                    check = run_job(config_path, "rebuild_check") if args.check_every else None
                    _report(f"{count:,} {describe}", run, full, check, args.steps)
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
