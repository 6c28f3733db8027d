"""Reading JSON-lines landing files on Spark: by the executors against through the driver, in one run.

    python -m benchmarks.spark_extract [--people 100000] [--landing DIR] [--workdir DIR] [--spark-conf k=v ...]

The demo generator writes the customer base (or `--landing` names a landing folder already written), and
its JSON-lines files (the web events) are loaded into raw tables of one local[2] Spark session twice:
read by the executors (Spark's text reader, each line judged in `mapInArrow` batches, as `warehouse.engine:
spark` reads such files) and read by the reader in the driver's Python, a batch at a time into Spark (as
CSV and Parquet files are, and as JSON lines were). Prints each way's seconds and the driver's peak
resident memory during it (the Python process, sampled every 0.1 s; the JVM apart), and whether both
loaded the same raw rows and the same rejects.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

import cdp_assets.extract.assets as extract
from demo.generate import generate
from resources.config import load_config
from resources.spark.runner import SparkSql, spark_session
from resources.warehouse import create_shared

WAYS = ("executors", "driver")


def _rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def _load(sql: SparkSql, folder: Path, landing: Path, files: list[Path], way: str) -> dict[str, Any]:
    """Load `files` as source `web_<way>`; its seconds, the driver's peak RSS, rows and rejects."""
    raw = {
        "sources": [
            {"name": f"web_{way}", "format": "jsonl", "glob": "web/*.jsonl", "role": "person", "record_id": "userId"}
        ],
        "landing": {"path": str(landing)},
    }
    path = folder / f"cdp_{way}.yaml"
    path.write_text(yaml.safe_dump(raw))
    source = load_config(path).sources[0]
    extract.ensure_raw_table(sql, source)
    peak, done = [_rss_mb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak.append(_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with mock.patch.object(extract, "readable_on_executors", lambda *_: way == "executors"):
        for file in files:
            rel = file.relative_to(landing).as_posix()
            extract.load_file(sql, source, file, rel, extract.file_sha256(file), engine="spark")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return {
        "seconds": round(seconds, 1),
        "driver_peak_rss_mb": max(peak),
        "rows": int(sql.value(f"select count(*) from {extract.raw_table(source)}")),
        "rejects": int(sql.value("select count(*) from meta.extract_quarantine where source = ?", [source.name])),
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
    files = sorted((landing / "web").glob("*.jsonl"))
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} JSON-lines files, {size / 1e6:,.0f} MB")
    conf = dict(item.split("=", 1) for item in args.spark_conf)
    spark = spark_session(master="local[2]", warehouse_dir=folder / "spark-warehouse", conf=conf)
    sql = SparkSql(spark, in_order_transactions=True)
    create_shared(sql.execute)
    figures = {way: _load(sql, folder, landing, files, way) for way in WAYS}
    for way, found in figures.items():
        print(f"{way:9s}: {found}")
    rows = "_file, _row_number, record"
    rejects = "file, row_number, field, value, reason, scope"
    quarantine = "(select * from meta.extract_quarantine where source = '{}')"
    same = {
        "raw rows": _only_in(sql, "raw.web_executors", "raw.web_driver", rows)
        + _only_in(sql, "raw.web_driver", "raw.web_executors", rows),
        "rejects": _only_in(sql, quarantine.format("web_executors"), quarantine.format("web_driver"), rejects)
        + _only_in(sql, quarantine.format("web_driver"), quarantine.format("web_executors"), rejects),
    }
    print("rows only one way gave:", same)
    spark.stop()


if __name__ == "__main__":
    main()
