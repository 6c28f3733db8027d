"""Identity's clustering on Spark against DuckDB: the same cleaned tables resolved by both engines.

    python -m benchmarks.spark_identity [--febrl 1 2 3 4] [--demo-people 2000] [--workdir DIR] [--spark-conf k=v ...]
                                        [--duckdb-memory-limit 4GB]

Each data set is extracted and cleaned on DuckDB by materializing the assets (FEBRL loaded as a new user
would, see benchmarks/identity.py; the demo generated at `--demo-people`), then its cleaned tables are
copied into a fresh DuckDB database file and into a local[2] Spark session, and the identity stage's
own code resolves each up to the clusters (where the id registry would name the customers; the whole
pipeline is compared by benchmarks/spark_pipeline.py). Prints per data set whether the partition of
records into customers, the blocked and shared identifiers and the trained model are identical, whether
the evidence holds the same pairs and decisions with weights equal to 1e-12, and each engine's seconds,
in all and per step.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from resources.config import CDPConfig
from resources.sql import Sql

# Identity tables that must hold the same rows on both engines (the evidence is compared apart).
SAME_ROWS = (
    "identity.blocked_identifiers",
    "identity.shared_identifiers",
    "identity.shared_identifier_groups",
    "identity.separated_links",
    "identity.model",
)
EVIDENCE = "select * from identity.evidence order by left_source, left_record_id, right_source, right_record_id"


def cleaned_on_both(
    warehouse: Path, spark: Any, folder: Path, duckdb_memory_limit: str | None = None
) -> tuple[Sql, Any]:
    """The cleaned tables of `warehouse` in a fresh DuckDB database in `folder` (bootstrapped as the platform
    does; a file, so that at scale its tables and its resolve's can leave memory, within
    `duckdb_memory_limit` when given) and in the Spark session's `clean` database, through Parquet files
    written in `folder`."""
    from resources.spark.runner import SparkSql
    from resources.warehouse import bootstrap

    duck = duckdb.connect(str(folder / "cleaned.duckdb"))
    if duckdb_memory_limit:
        duck.execute(f"set memory_limit = '{duckdb_memory_limit}'")
    duck.execute("set TimeZone = 'UTC'")
    bootstrap(duck)
    duck.execute(f"attach '{warehouse}' as source (read_only)")
    spark.sql("create database if not exists clean")
    tables = duck.execute(
        "select table_name from duckdb_tables() where database_name = 'source' and schema_name = 'clean' order by 1"
    ).fetchall()
    for (table,) in tables:
        duck.execute(f"create or replace table clean.{table} as select * from source.clean.{table}")
        file = folder / f"{table}.parquet"
        duck.execute(f"copy clean.{table} to '{file}' (format parquet)")
        spark.read.parquet(str(file)).write.mode("overwrite").saveAsTable(f"clean.{table}")
    duck.execute("detach source")
    return Sql(duck), SparkSql(spark)


def drop_spark_schemas(spark: Any) -> None:
    """Forget what `cleaned_on_both` and a resolve left in the Spark session."""
    for schema in ("clean", "identity", "cdp"):
        spark.sql(f"drop database if exists {schema} cascade")


def partition(rows: list[tuple]) -> tuple[int, int, list[int]]:
    """Clusters (source, record, role, component) as a partition of the records, whatever the labels: the
    records, the customers of several records, and one hash per customer of its sorted records, sorted.
    Two engines' lists (hashed in one process) are equal when their partitions are; a list of integers
    rather than of every record, so that one engine's clusters can be let go before the other's are read."""
    groups: dict[object, list[tuple]] = {}
    for source, record, role, component in rows:
        groups.setdefault(component, []).append((source, record, role))
    joined = sum(len(group) > 1 for group in groups.values())
    return len(rows), joined, sorted(hash(tuple(sorted(group))) for group in groups.values())


def close(a: object, b: object) -> bool:
    """Equal, floats to the last bits of a double: the engines' logarithms round differently."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def compare(on_duckdb: Sql, on_spark: Any, config: CDPConfig) -> dict[str, Any]:
    """Resolve both engines' cleaned tables up to the clusters and compare what they give."""
    from cdp_assets.identity.assets import resolve

    started = time.perf_counter()
    on_duckdb_result = resolve(on_duckdb, config, clusters_only=True)
    duckdb_seconds = time.perf_counter() - started
    duckdb_partition = partition(on_duckdb_result.pop("clusters"))  # type: ignore[arg-type]
    started = time.perf_counter()
    on_spark_result = resolve(on_spark, config, clusters_only=True)
    spark_seconds = time.perf_counter() - started
    spark_partition = partition(on_spark_result.pop("clusters"))  # type: ignore[arg-type]
    records, joined, customers = duckdb_partition
    tables = {
        t: sorted(on_spark.rows(f"select * from {t}")) == sorted(on_duckdb.rows(f"select * from {t}"))
        for t in SAME_ROWS
    }
    ours, theirs = on_duckdb.rows(EVIDENCE), on_spark.rows(EVIDENCE)
    evidence = len(ours) == len(theirs) and all(
        all(close(a, b) for a, b in zip(left, right, strict=True)) for left, right in zip(ours, theirs, strict=True)
    )
    return {
        "records": records,
        "customers": len(customers),
        "joined customers": joined,
        "same partition": spark_partition == duckdb_partition,
        "same tables": tables,
        "evidence pairs": len(ours),
        "same evidence": evidence,
        "decisions": sorted({row[-1] for row in ours}),
        "duckdb_s": round(duckdb_seconds, 1),
        "spark_s": round(spark_seconds, 1),
        # Seconds per step on each engine: how each grows with the data is what a larger run's time projects from.
        "steps_s (duckdb, spark)": {
            step: (seconds, dict(on_spark_result["timings"]).get(step))  # type: ignore[call-overload]
            for step, seconds in dict(on_duckdb_result["timings"]).items()  # type: ignore[call-overload]
        },
    }


def _cleaned_warehouse(config_path: Path) -> CDPConfig:
    """Extract and clean the configuration's landing folder on DuckDB by materializing the assets."""
    import dagster as dg

    from cdp_assets.definitions import build_definitions
    from resources.config import load_config

    config = load_config(config_path)
    defs = build_definitions(config)
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] in ("raw", "clean")]
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("full_refresh")
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=True)
    assert result.success
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--febrl", type=int, nargs="*", default=[1, 2, 3, 4])
    parser.add_argument("--demo-people", type=int, nargs="*", default=[2000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--duckdb-memory-limit", default=None, help="the DuckDB side's memory_limit, e.g. 4GB")
    parser.add_argument(
        "--spark-conf", nargs="*", default=[], help="key=value settings of the Spark session (spark.driver.memory=10g)"
    )
    args = parser.parse_args()

    from demo.configs import relocated_config
    from demo.febrl import write_febrl
    from demo.generate import generate
    from resources.spark.runner import spark_session

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-spark-identity-"))
    sets: list[tuple[str, Path]] = []
    for number in args.febrl:
        config_path, _ = write_febrl(number, folder / f"febrl{number}")
        sets.append((f"FEBRL{number}", config_path))
    for people in args.demo_people:
        target = folder / f"demo{people}"
        generate(people=people, seed=42, out_dir=target / "landing", truth_path=target / "truth.csv")
        sets.append((f"demo {people:,} people", relocated_config(target, "http://127.0.0.1:9")))
    started = time.perf_counter()
    conf = dict(item.split("=", 1) for item in args.spark_conf)
    spark = spark_session(master="local[2]", warehouse_dir=folder / "spark-warehouse", conf=conf)
    print(f"Spark session started in {time.perf_counter() - started:.1f} s")
    try:
        for name, config_path in sets:
            config = _cleaned_warehouse(config_path)
            scratch = Path(tempfile.mkdtemp(dir=folder))
            on_duckdb, on_spark = cleaned_on_both(config.warehouse_path, spark, scratch, args.duckdb_memory_limit)
            try:
                figures = compare(on_duckdb, on_spark, config)
            finally:
                on_duckdb.close()
                drop_spark_schemas(spark)
            print(f"\n{name}: {figures}")
    finally:
        spark.stop()
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
