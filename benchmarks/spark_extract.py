"""Reading landing files on Spark: by the executors against through the driver, in one run.

    python -m benchmarks.spark_extract [--people 100000] [--landing DIR] [--workdir DIR] [--spark-conf k=v ...]

The demo generator writes the customer base (or `--landing` names a landing folder already written), and
its web events (JSON lines) and CRM contacts (CSV) are loaded into raw tables of one local[2] Spark session
twice: read by the executors (Spark's text reader, each line judged in `mapInArrow` batches, as
`warehouse.engine: spark` reads such files; a CSV file's records across lines in chunks of lines) and
read by the reader in the driver's Python, a batch at a time into Spark
(as Parquet files are). Prints, per source, each way's seconds and the driver's peak resident memory
during it (the Python process, sampled every 0.1 s; the JVM apart), and whether both loaded the same raw
rows and the same rejects.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

import cdp_assets.extract.assets as extract
from benchmarks.identity import rss_samples
from demo.generate import generate
from resources.config import load_config
from resources.spark.runner import SparkSql, spark_session
from resources.warehouse import create_shared

WAYS = ("executors", "driver")
# (folder of the landing folder, format, the source's record id): the demo's sources that grow largest.
SOURCES = (("web", "jsonl", "userId"), ("crm", "csv", "ContactId"))


def _load(
    sql: SparkSql, folder: Path, landing: Path, files: list[Path], kind: tuple[str, str, str], way: str
) -> dict[str, Any]:
    """Load `files` as source `<folder>_<way>`; its seconds, the driver's peak RSS, rows and rejects, and how
    many files the driver read."""
    name, fmt, record_id = kind
    raw = {
        "sources": [
            {
                "name": f"{name}_{way}",
                "format": fmt,
                "glob": f"{name}/*.{fmt}",
                "role": "person",
                "record_id": record_id,
            }
        ],
        "landing": {"path": str(landing)},
    }
    path = folder / f"cdp_{name}_{way}.yaml"
    path.write_text(yaml.safe_dump(raw))
    source = load_config(path).sources[0]
    extract.ensure_raw_table(sql, source)
    in_driver: list[object] = []
    read_file = extract.read_file
    started = time.perf_counter()
    with (
        rss_samples(0.1) as samples,
        mock.patch.object(extract, "readable_on_executors", lambda *_: way == "executors"),
        mock.patch.object(extract, "read_file", lambda *a, **k: in_driver.append(a) or read_file(*a, **k)),
    ):
        for file in files:
            rel = file.relative_to(landing).as_posix()
            extract.load_file(sql, source, file, rel, extract.file_sha256(file), engine="spark")
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "driver_peak_rss_mb": max(mb for _, mb in samples),
        "rows": int(sql.value(f"select count(*) from {extract.raw_table(source)}")),
        "rejects": int(sql.value("select count(*) from meta.extract_quarantine where source = ?", [source.name])),
        "files_read_by_the_driver": len(in_driver),
    }


def _only_in(sql: SparkSql, left: str, right: str, columns: str) -> int:
    return int(
        sql.value(f"select count(*) from (select {columns} from {left} except all select {columns} from {right})")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--landing", type=Path, default=None, help="a landing folder already generated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--spark-conf", nargs="*", default=[], help="key=value settings of the Spark session")
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-spark-extract-"))
    folder.mkdir(parents=True, exist_ok=True)
    landing = args.landing
    if landing is None:
        landing = folder / "landing"
        generate(people=args.people, seed=42, out_dir=landing, truth_path=folder / "truth.csv")
    conf = dict(item.split("=", 1) for item in args.spark_conf)
    spark = spark_session(master="local[2]", warehouse_dir=folder / "spark-warehouse", conf=conf)
    sql = SparkSql(spark, staged_transactions=True)
    create_shared(sql.execute)
    for kind in SOURCES:
        name, fmt, _ = kind
        files = sorted((landing / name).glob(f"*.{fmt}"))
        size = sum(f.stat().st_size for f in files)
        print(f"{name}: {len(files)} {fmt} files, {size / 1e6:,.0f} MB")
        for way in WAYS:
            print(f"  {way:9s}: {_load(sql, folder, landing, files, kind, way)}")
        rows = "_file, _row_number, record"
        rejects = "file, row_number, field, value, reason, scope"
        quarantine = "(select * from meta.extract_quarantine where source = '{}')"
        ours, theirs = f"{name}_executors", f"{name}_driver"
        differing = {
            "raw rows": _only_in(sql, f"raw.{ours}", f"raw.{theirs}", rows)
            + _only_in(sql, f"raw.{theirs}", f"raw.{ours}", rows),
            "rejects": _only_in(sql, quarantine.format(ours), quarantine.format(theirs), rejects)
            + _only_in(sql, quarantine.format(theirs), quarantine.format(ours), rejects),
        }
        print(f"  rows only one way gave: {differing}")
    spark.stop()


if __name__ == "__main__":
    main()
