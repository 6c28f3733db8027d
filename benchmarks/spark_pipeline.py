"""The whole pipeline on Spark against DuckDB: a full refresh, a delta and a run with nothing new.

    python -m benchmarks.spark_pipeline [--people 300] [--workdir DIR] [--full-refresh-only] [--spark-only]
        [--through clean|identity | --after identity [--reuse]] [--spark-conf spark.driver.memory=12g ...]
        [--duckdb-memory-limit 3GB] [--max-pairs-per-rule N] [--steps 8]
    python -m benchmarks.spark_pipeline --febrl 1 2 3 4

The demo is generated at `--people` with one CRM file and one day of web events held back. Each step runs
`full_refresh` on DuckDB (in this process) and on Spark (`dagster job execute` with `warehouse.engine:
spark`, its own process and JVM, as a user runs it): the full refresh, then the held-back files land
(new and updated contacts, a day of events) and both refresh again, then both refresh with nothing new.
After each step every public table is compared, DuckDB's warehouse with the Spark read snapshot
(`current/<table>/`), leaving out only the columns that say when the run happened. Prints each engine's
seconds and peak resident memory per step (DuckDB's in this process, Spark's of the job's process tree,
JVM included), the Spark run's slowest steps (from its event log) and, per table, its rows and the rows
only one engine has. With `--febrl`, FEBRL's data sets (as benchmarks/identity.py loads them) take the
demo's place, one full refresh each. At scale, `--spark-conf` gives the Spark session a larger driver and
`--duckdb-memory-limit` bounds the DuckDB runs sharing the machine. `--spark-only` leaves DuckDB out (no
comparison): how each Spark step's time grows at a size where running both engines would double a run of
hours. `--through clean` (or `identity`), with `--spark-only --full-refresh-only`, runs only the full
refresh's extract and cleaning (and identity), with their checks: the steps' growth where the whole
pipeline would run for hours. `--after identity`, with the same two options, times the rest of the full
refresh (profiles, segments, syncs, the read snapshot) on Spark alone: DuckDB runs the stages through
identity (`dagster asset materialize`, untimed), every table they wrote (the raw tables aside, which
nothing after identity reads) is copied into the Spark warehouse through parquet, and Spark runs the
`full_refresh` job's remaining steps (`dagster job execute --op-selection`); the two engines give the
same tables through identity at 1M people (docs/performance.md), so Spark starts from what its own run
would have written. `--reuse` keeps the work folder's landing files and DuckDB warehouse from an earlier
`--after` run of the same size.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from benchmarks.identity import _step_seconds
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from demo.configs import relocated_config
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CONFIG_ENV_VAR, load_config

REPO = Path(__file__).resolve().parents[1]
HELD_BACK = ("crm/contacts_2025-06.csv", "web/events_2025-06-30.jsonl")
# When the run happened (and which run it was): the only columns the engines may give differently.
RUN_TIME_COLUMNS = frozenset(
    {
        "run_id",
        "changed_at",
        "quarantined_at",
        "recorded_at",
        "profile_built_at",
        "entered_at",
        "computed_at",
        "exited_at",
    }
)
# The demo configuration's warehouse section for Spark, its folders beside the configuration file.
SPARK_WAREHOUSE = {
    "engine": "spark",
    "path": "warehouse.duckdb",
    "spark": {"warehouse_dir": "spark-warehouse", "read_snapshot": "spark-read-snapshot"},
}
DAGSTER_JOB = [sys.executable, "-m", "dagster", "job", "execute", "-m", "cdp_assets.definitions", "-j", FULL_REFRESH]
DAGSTER_MATERIALIZE = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cdp_assets.definitions"]
# `--through`: the full refresh's assets up to a stage, and everything they read, with their checks.
THROUGH = {
    "clean": "*clean/person_records,*clean/transactions,*clean/events",
    "identity": "*identity/clusters",
}
# `--after`: the stages (asset key prefixes) DuckDB runs before Spark takes over.
BEFORE = {"identity": ("raw", "clean", "identity")}


def spark_command(through: str | None) -> list[str]:
    """The Spark run: the whole `full_refresh` job, or its assets up to stage `through` (THROUGH)."""
    if through is None:
        return DAGSTER_JOB
    return materialize_command(THROUGH[through])


def materialize_command(selection: str) -> list[str]:
    """`dagster asset materialize` of the assets `selection` names (with their checks), as a user runs it."""
    return [*DAGSTER_MATERIALIZE, "--select", selection]


def after_command(config: Path, after: str) -> list[str]:
    """The `full_refresh` job's steps that come after stage `after` (BEFORE), as an op selection of the job:
    the job leaves out the rebuild check, which a selection of the assets would run with the profiles."""
    job = build_definitions(load_config(config)).resolve_job_def(FULL_REFRESH)
    ops = sorted(name for name in job.graph.node_dict if name.split("__")[0] not in BEFORE[after])
    return [*DAGSTER_JOB, "--op-selection", ",".join(ops)]


def seed_spark(duckdb_config: Path, spark_config: Path, export: Path) -> dict[str, int]:
    """Copy every table of the DuckDB warehouse but the raw ones into the Spark warehouse (meant for a
    child process, whose JVM then lets go of the metastore): each written as parquet by DuckDB, read by
    Spark and saved as the table. An empty table the Spark warehouse already has (a shared one, created as
    Spark's own types) is left as it is. Returns the rows copied per table."""
    from resources.spark.warehouse import spark_warehouse_resource

    export.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(load_config(duckdb_config).warehouse_path), read_only=True)
    tables = conn.execute(
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = current_database() and not temporary and schema_name <> 'raw' order by 1, 2"
    ).fetchall()
    files = {}
    for schema, table in tables:
        files[(schema, table)] = export / f"{schema}.{table}.parquet"
        target = str(files[(schema, table)]).replace("'", "''")
        conn.execute(f'copy "{schema}"."{table}" to \'{target}\' (format parquet)')
    counts = {f"{s}.{t}": int(conn.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0]) for s, t in tables}
    conn.close()
    warehouse = spark_warehouse_resource(load_config(spark_config))
    session = warehouse.session()
    for (schema, table), path in files.items():
        if counts[f"{schema}.{table}"] == 0 and session.catalog.tableExists(f"{schema}.{table}"):
            continue
        rows = session.read.parquet(str(path))
        rows.write.format(warehouse.table_format).mode("overwrite").saveAsTable(f"{schema}.{table}")
    session.stop()
    shutil.rmtree(export)
    return counts


def engine_configs(folder: Path, landing: Path, destination_url: str) -> dict[str, Path]:
    """The demo configuration for each engine, in `folder/<engine>/`, both loading the landing folder
    `landing` and delivering to `destination_url`."""
    configs = {}
    for engine in ("duckdb", "spark"):
        (folder / engine).mkdir(exist_ok=True)
        overrides = {"warehouse": SPARK_WAREHOUSE} if engine == "spark" else {}
        path = relocated_config(folder / engine, destination_url, **overrides)
        raw = yaml.safe_load(path.read_text())
        raw["landing"]["path"] = str(landing)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        configs[engine] = path
    return configs


def _set(config: Path, keys: list[str], value: object) -> None:
    """Set one key of a configuration file (`keys` its path), creating the mappings above it."""
    raw = yaml.safe_load(config.read_text())
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def compare(warehouse: Path, snapshot: Path) -> dict[str, tuple[int, int, int]]:
    """Per public table: its rows on DuckDB, and the rows only DuckDB and only Spark have."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    found = {}
    for (table,) in conn.execute(
        "select table_name from information_schema.tables where table_schema = 'cdp' order by 1"
    ).fetchall():
        columns = [
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'cdp' and table_name = ? "
                "order by ordinal_position",
                [table],
            ).fetchall()
            if c not in RUN_TIME_COLUMNS
        ]
        listed = ", ".join(f'"{c}"' for c in columns)
        files = str(snapshot / table / "*.parquet").replace("'", "''")
        conn.execute(f"create or replace temp view on_spark as select {listed} from read_parquet('{files}')")
        counts = [
            conn.execute(f"select count(*) from {query}").fetchone()[0]
            for query in (
                f"cdp.{table}",
                f"(select {listed} from cdp.{table} except all from on_spark)",
                f"(from on_spark except all select {listed} from cdp.{table})",
            )
        ]
        found[table] = (counts[0], counts[1], counts[2])
    conn.close()
    return found


def _tree_rss(root: int, skip: tuple[int, ...] = ()) -> int:
    """Bytes resident in process `root` and all its descendants (the Spark job's Python and its JVM), from /proc;
    the processes `skip` and theirs left out."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def run_sampled(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run `command` to its end, with the peak of its process tree's resident memory (sampled every 0.2 s)."""
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        peak, outputs = 0, []
        reader = threading.Thread(target=lambda: outputs.extend(process.communicate()))
        reader.start()
        while reader.is_alive():
            peak = max(peak, _tree_rss(process.pid))
            reader.join(0.2)
    return subprocess.CompletedProcess(command, process.returncode, *outputs), peak


def _slowest_spark_steps(dagster_home: Path, count: int) -> str:
    """The latest Spark run's `count` slowest steps, from its event log in `dagster_home`."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs(limit=1)
        steps = _step_seconds(instance, run.run_id)
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:count])


def febrl_parity(numbers: list[int], folder: Path, steps: int) -> bool:
    """FEBRL `numbers` through the whole pipeline on both engines (`full_refresh` on DuckDB in process, on
    Spark as a `dagster job execute`), every public table compared; whether all were identical."""
    from demo.febrl import write_febrl

    same = True
    for number in numbers:
        config_path, _ = write_febrl(number, folder / f"febrl{number}")
        # A fixed as-of time: with `now` the profiles' `traits_as_of` says when each engine's run happened.
        raw = {**yaml.safe_load(config_path.read_text()), "profiles": {"as_of": "2025-06-30T00:00:00"}}
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        spark_path = config_path.with_name("cdp_spark.yaml")
        spark_path.write_text(yaml.safe_dump({**raw, "warehouse": SPARK_WAREHOUSE}, sort_keys=False))
        duck = load_config(config_path)
        start = time.perf_counter()
        result = (
            build_definitions(duck)
            .resolve_job_def(FULL_REFRESH)
            .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        )
        if not result.success:
            sys.exit(f"FEBRL{number}: the DuckDB run failed")
        on_duckdb = time.perf_counter() - start
        home = config_path.parent / "dagster_home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, CONFIG_ENV_VAR: str(spark_path), "DAGSTER_HOME": str(home)}
        start = time.perf_counter()
        done, peak = run_sampled(DAGSTER_JOB, env)
        if done.returncode:
            sys.exit(f"FEBRL{number}: the Spark run failed:\n{done.stderr[-3000:]}")
        print(
            f"FEBRL{number}: DuckDB {on_duckdb:.1f} s, Spark {time.perf_counter() - start:.1f} s "
            f"(peak RSS {peak / 1024**3:.2f} GB); slowest Spark steps (s): {_slowest_spark_steps(home, steps)}",
            flush=True,
        )
        for table, (rows, only_duckdb, only_spark) in compare(
            duck.warehouse_path, config_path.parent / "spark-read-snapshot" / "current"
        ).items():
            identical = only_duckdb == only_spark == 0
            same = same and identical
            print(
                f"  cdp.{table}: {rows} rows, only DuckDB {only_duckdb}, only Spark {only_spark}: "
                f"{'identical' if identical else 'DIFFERENT'}"
            )
    return same


def _timed(command: list[str], env: dict[str, str], failure: str) -> tuple[float, int, str]:
    """Run `command` to its end: its seconds, its process tree's peak resident memory and its output; exits
    with `failure` and the end of its error output if it fails."""
    start = time.perf_counter()
    done, peak = run_sampled(command, env)
    if done.returncode:
        sys.exit(f"{failure}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, peak, done.stdout.strip()


def run_after(after: str, configs: dict[str, Path], folder: Path, reuse: bool, steps: int) -> None:
    """`--after`: DuckDB runs the stages through `after` (unless `reuse`), their tables are copied into the
    Spark warehouse, and Spark materializes the rest of the full refresh; prints what each part took."""
    if not reuse:
        home = folder / "duckdb_home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, CONFIG_ENV_VAR: str(configs["duckdb"]), "DAGSTER_HOME": str(home)}
        seconds, peak, _ = _timed(materialize_command(THROUGH[after]), env, f"DuckDB through {after} failed")
        print(f"DuckDB through {after}: {seconds:.1f} s (peak RSS {peak / 1024**3:.2f} GB)")
    paths = (configs["duckdb"], configs["spark"], folder / "seed")
    child = [sys.executable, "-m", "benchmarks.spark_pipeline", "--seed-child", *map(str, paths)]
    seconds, _, copied = _timed(child, os.environ.copy(), "copying the tables into Spark failed")
    print(f"tables copied into the Spark warehouse: {seconds:.1f} s; {copied}")
    (folder / "dagster_home").mkdir(exist_ok=True)
    env = {**os.environ, CONFIG_ENV_VAR: str(configs["spark"]), "DAGSTER_HOME": str(folder / "dagster_home")}
    seconds, peak, _ = _timed(after_command(configs["spark"], after), env, f"the Spark run after {after} failed")
    print(f"Spark after {after}: {seconds:.1f} s (peak RSS of the job's Python and JVM {peak / 1024**3:.2f} GB)")
    print(f"  Spark's slowest steps (s): {_slowest_spark_steps(folder / 'dagster_home', steps)}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--seed-child":
        counts = seed_spark(*(Path(a) for a in sys.argv[2:5]))
        print(", ".join(f"{t} {n:,}" for t, n in counts.items() if n))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--full-refresh-only", action="store_true", help="stop after the full refresh")
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a warehouse.spark.conf setting for the Spark runs (repeatable), e.g. spark.driver.memory=12g",
    )
    parser.add_argument(
        "--duckdb-memory-limit", default=None, help="warehouse.memory_limit of the DuckDB runs (e.g. 3GB)"
    )
    parser.add_argument("--steps", type=int, default=8, help="print the Spark run's N slowest steps")
    parser.add_argument("--spark-only", action="store_true", help="run Spark alone, comparing nothing")
    parser.add_argument(
        "--through",
        choices=sorted(THROUGH),
        default=None,
        help="with --spark-only --full-refresh-only: run the full refresh's stages up to this one only",
    )
    parser.add_argument(
        "--after",
        choices=sorted(BEFORE),
        default=None,
        help="with --spark-only --full-refresh-only: DuckDB runs the stages up to this one, Spark the rest (timed)",
    )
    parser.add_argument(
        "--max-pairs-per-rule",
        type=int,
        default=None,
        help="identity.matching.max_pairs_per_rule for both engines (the demo's blocks outgrow the default at 5M)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --after and --workdir: keep the landing files and DuckDB warehouse an earlier --after run left",
    )
    parser.add_argument(
        "--febrl", type=int, nargs="+", choices=[1, 2, 3, 4], help="compare FEBRL's data sets instead of the demo"
    )
    args = parser.parse_args()
    if (args.through or args.after) and not (args.spark_only and args.full_refresh_only):
        parser.error("--through and --after need --spark-only and --full-refresh-only: a part compares nothing")
    if args.through and args.after:
        parser.error("--through and --after exclude each other")
    if args.reuse and not (args.after and args.workdir):
        parser.error("--reuse needs --after and the --workdir of an earlier --after run")
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-spark-pipeline-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.febrl:
        same = febrl_parity(args.febrl, folder, args.steps)
        print(f"work folder: {folder}")
        sys.exit(0 if same else "some public tables differ")
    landing, held = folder / "landing", folder / "held"
    if not args.reuse:
        generate(people=args.people, seed=11, out_dir=landing, truth_path=folder / "ground_truth.csv")
        held.mkdir()
        for name in HELD_BACK:
            (landing / name).rename(held / Path(name).name)
    with DestinationServer(host="127.0.0.1", port=0) as server:
        configs = engine_configs(folder, landing, server.url)
        _set(configs["spark"], ["warehouse", "spark", "conf"], dict(kv.split("=", 1) for kv in args.spark_conf))
        if args.duckdb_memory_limit:
            _set(configs["duckdb"], ["warehouse", "memory_limit"], args.duckdb_memory_limit)
        if args.max_pairs_per_rule:
            for config in configs.values():
                _set(config, ["identity", "matching", "max_pairs_per_rule"], args.max_pairs_per_rule)
        if args.after:
            run_after(args.after, configs, folder, args.reuse, args.steps)
            print(f"work folder: {folder}")
            return
        duck = load_config(configs["duckdb"])
        job = build_definitions(duck).resolve_job_def(FULL_REFRESH)
        instance = dg.DagsterInstance.ephemeral()
        (folder / "dagster_home").mkdir()
        env = {**os.environ, CONFIG_ENV_VAR: str(configs["spark"]), "DAGSTER_HOME": str(folder / "dagster_home")}
        for step in ("full refresh",) if args.full_refresh_only else ("full refresh", "delta", "nothing new"):
            if step == "delta":
                for name in HELD_BACK:
                    (held / Path(name).name).rename(landing / name)
            start = time.perf_counter()
            if not args.spark_only and not job.execute_in_process(instance=instance, raise_on_error=False).success:
                sys.exit(f"{step}: the DuckDB run failed")
            on_duckdb = time.perf_counter() - start
            start = time.perf_counter()
            done, peak = run_sampled(spark_command(args.through), env)
            on_spark = time.perf_counter() - start
            if done.returncode:
                sys.exit(f"{step}: the Spark run failed:\n{done.stderr[-3000:]}")
            duckdb_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
            duckdb_text = f"DuckDB {on_duckdb:.1f} s (this process's peak RSS so far {duckdb_peak:.2f} GB), "
            print(
                f"{step}: {'' if args.spark_only else duckdb_text}"
                f"Spark {on_spark:.1f} s (peak RSS of the job's Python and JVM {peak / 1024**3:.2f} GB)",
                flush=True,
            )
            print(f"  Spark's slowest steps (s): {_slowest_spark_steps(folder / 'dagster_home', args.steps)}")
            if args.spark_only:
                continue
            found = compare(duck.warehouse_path, folder / "spark" / "spark-read-snapshot" / "current")
            for table, (rows, only_duckdb, only_spark) in found.items():
                same = "identical" if only_duckdb == only_spark == 0 else "DIFFERENT"
                print(f"  cdp.{table}: {rows} rows, only DuckDB {only_duckdb}, only Spark {only_spark}: {same}")
    print(f"work folder: {folder}")


if __name__ == "__main__":
    main()
