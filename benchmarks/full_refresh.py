"""Time `full_refresh` on generated customer bases of several sizes, per stage, with peak memory.

    python -m benchmarks.full_refresh --people 10000 100000

Each size runs in its own process (peak RSS is per process) on a fresh warehouse under --workdir, with
the demo destination server in the same process for the HTTP syncs. Generation time is reported
separately and is not part of the refresh time.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(people: int, folder: Path) -> dict[str, object]:
    """Generate, then refresh twice (the second run finds no new files), inside this process."""
    import dagster as dg

    from cdp_assets.definitions import build_definitions
    from demo.configs import relocated_config
    from demo.destination_server import DestinationServer
    from demo.generate import generate
    from demo.scoring import score
    from resources.config import load_config

    started = time.perf_counter()
    counts = generate(people=people, seed=42, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    generated = time.perf_counter() - started
    server = DestinationServer(port=0)
    server.start()
    config = load_config(relocated_config(folder, server.url))
    job = build_definitions(config).resolve_job_def("full_refresh")
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance)
        first = time.perf_counter() - started
        steps: dict[str, float] = {}
        begun: dict[str, float] = {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "STEP_START":
                begun[event.step_key] = entry.timestamp
            elif event.event_type_value == "STEP_SUCCESS":
                steps[event.step_key] = round(entry.timestamp - begun[event.step_key], 2)
        started = time.perf_counter()
        job.execute_in_process(instance=instance)
        second = time.perf_counter() - started
    server.stop()
    accuracy = score(str(config.warehouse_path), str(folder / "truth.csv"))
    return {
        "people": people,
        "source_rows": sum(v for k, v in counts.items() if k != "ground_truth") if isinstance(counts, dict) else None,
        "generate_s": round(generated, 1),
        "full_refresh_s": round(first, 1),
        "rerun_no_new_files_s": round(second, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "steps_s": steps,
        "identity": {k: round(v, 4) if isinstance(v, float) else v for k, v in accuracy.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, nargs="+", default=[10_000])
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run if given")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(run_one(args.people[0], args.workdir)))
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    try:
        for people in args.people:
            folder = root / f"people-{people}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.full_refresh",
                        "--single",
                        "--people",
                        str(people),
                        "--workdir",
                        str(folder),
                    ],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            figures = json.loads(out)
            print(f"\n== {people:,} people: {figures['source_rows']:,} source rows")
            print(
                f"full_refresh {figures['full_refresh_s']} s, re-run with no new files "
                f"{figures['rerun_no_new_files_s']} s, peak RSS {figures['peak_rss_mb']} MB "
                f"(generation {figures['generate_s']} s, not included)"
            )
            for step, seconds in sorted(figures["steps_s"].items(), key=lambda kv: -kv[1]):
                print(f"  {step:40s} {seconds:7.2f} s")
            print(
                "  identity vs ground truth: "
                + ", ".join(f"{k} {v}" for k, v in figures["identity"].items() if k.startswith(("pairwise", "cluster")))
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
