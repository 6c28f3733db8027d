"""The warehouse file and the landing folder."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from resources.config.base import _Strict


class SparkConfig(_Strict):
    """Where the Spark engine runs and keeps its tables (see resources/spark/)."""

    master: str = Field("local[2]", description="Spark master URL: local[N] runs in this process's own JVM.")
    warehouse_dir: str = Field("data/spark-warehouse", description="Folder of the Spark tables' files.")
    table_format: Literal["parquet", "orc"] = Field("parquet", description="File format of the Spark tables.")
    read_snapshot: str = Field(
        "data/spark-read-snapshot",
        description="Folder of the read snapshot on Spark: the public cdp tables as parquet, `current/<table>/`.",
    )
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Spark settings for the session (spark.driver.memory, spark.sql.shuffle.partitions, ...), "
        "over the platform's defaults; the settings the platform's results depend on are refused.",
    )

    @field_validator("master")
    @classmethod
    def _a_master_url(cls, master: str) -> str:
        """Spark would take a misspelt master only when a run starts its session, and then fails each step
        with a Java error that never names this key."""
        if not MASTER_URL.fullmatch(master.strip()):
            raise ValueError(
                f"'{master}' is not a Spark master URL: local[N], local[*], spark://host:port, yarn or k8s://host:port"
            )
        return master.strip()

    @field_validator("conf")
    @classmethod
    def _settable(cls, conf: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        problems = [
            f"'{key}' is not a Spark setting (they begin with 'spark.')" for key in conf if not key.startswith("spark.")
        ]
        problems += [
            f"'{key}' is set by the platform: {PLATFORM_SPARK_SETTINGS[key]}"
            for key in conf
            if key in PLATFORM_SPARK_SETTINGS
        ]
        problems += [problem for key, value in conf.items() if (problem := _spark_value_problem(key, value))]
        if problems:
            raise ValueError("; ".join(problems))
        return conf

    def session_conf(self) -> dict[str, str]:
        """`conf` as Spark takes it: text, booleans as `true`/`false`."""
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.conf.items()}


# The Spark settings the platform sets itself (resources/spark/runner.py, `spark_session`), which a user's
# `warehouse.spark.conf` may not change, and why.
PLATFORM_SPARK_SETTINGS = {
    "spark.master": "use warehouse.spark.master",
    "spark.sql.warehouse.dir": "use warehouse.spark.warehouse_dir",
    "spark.hadoop.hive.metastore.warehouse.dir": "use warehouse.spark.warehouse_dir",
    "spark.hadoop.javax.jdo.option.ConnectionURL": "the tables' catalogue is the metastore in warehouse_dir",
    "spark.sql.catalogImplementation": "the tables' catalogue is the metastore in warehouse_dir",
    "spark.sql.session.timeZone": "dates and times are computed in UTC, as on DuckDB",
    "spark.sql.timestampType": "timestamps are DuckDB's TIMESTAMP, without time zone",
    "spark.sql.constraintPropagation.enabled": "on, a union over the runner's kept tables can fail in Spark",
    "spark.sql.execution.arrow.pyspark.enabled": "rows move between Spark and Python as Arrow",
    "spark.jars": "it holds the platform's UDF jar; add others with spark.jars.packages or spark.driver.extraClassPath",
    "spark.driver.extraJavaOptions": "it places the metastore's Derby log; use spark.driver.defaultJavaOptions",
}


# The master URLs Spark's SparkContext accepts (its createTaskScheduler): local threads, a local test
# cluster, a standalone cluster (several masters comma-separated), YARN and Kubernetes.
MASTER_URL = re.compile(
    r"local(\[(\*|[1-9][0-9]*)(\s*,\s*[0-9]+)?\])?"
    r"|local-cluster\[\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*\]"
    r"|spark://[^\s:/,]+:[0-9]+(,[^\s:/,]+:[0-9]+)*"
    r"|yarn"
    r"|k8s://\S+"
)
# Settings whose value the JVM reads as an amount of memory when the session starts: a wrong one makes the
# JVM exit before Spark can say why. The driver's heap goes to Java's -Xmx as written, which needs k, m, g
# or t (a bare number is bytes, too small a heap) and no `b`; the others are Spark byte strings.
DRIVER_MEMORY_SETTINGS = ("spark.driver.memory",)
MEMORY_SETTINGS = (
    "spark.executor.memory",
    "spark.driver.memoryOverhead",
    "spark.executor.memoryOverhead",
    "spark.driver.maxResultSize",
    "spark.executor.pyspark.memory",
)
# Settings Spark reads as a count, at or after the session's start.
COUNT_SETTINGS = (
    "spark.sql.shuffle.partitions",
    "spark.default.parallelism",
    "spark.driver.cores",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.task.cpus",
)


def _spark_value_problem(key: str, value: str | int | float | bool) -> str | None:
    """Why a value of a setting Spark reads at the session's start cannot be taken, or None."""
    text = str(value).strip()
    if key in DRIVER_MEMORY_SETTINGS and not re.fullmatch(r"[0-9]+[kKmMgGtT]", text):
        return f"'{key}' is '{value}', not an amount of memory with its unit such as 4g or 512m"
    if key in MEMORY_SETTINGS and not re.fullmatch(r"[0-9]+([kKmMgGtTpP][bB]?|[bB])?", text):
        return f"'{key}' is '{value}', not an amount of memory such as 4g or 512m"
    if key in COUNT_SETTINGS and (isinstance(value, bool) or not re.fullmatch(r"[1-9][0-9]*", text)):
        return f"'{key}' is '{value}', not a whole number of at least 1"
    return None


class WarehouseConfig(_Strict):
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="The SQL engine every stage runs on: DuckDB in this process, or Spark (see README)."
    )
    spark: SparkConfig = SparkConfig()
    path: str = "data/warehouse.duckdb"
    memory_limit: str | None = Field(None, description="DuckDB memory_limit, e.g. '4GB'; DuckDB's default if unset.")
    threads: int | None = Field(None, ge=1)
    read_snapshot: str | None = Field(
        None,
        description="The read-only copy of the public tables BI tools open; default: beside the warehouse, "
        "named <warehouse>_read.duckdb.",
    )
    lock_timeout_seconds: int = Field(
        300, ge=0, description="How long a run waits for another run, or a process holding the warehouse, to let go."
    )

    @field_validator("read_snapshot")
    @classmethod
    def _snapshot_is_a_duckdb_file(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".duckdb"):
            raise ValueError(f"'{value}' is not a .duckdb file name; readers open it with DuckDB")
        return value


class LandingConfig(_Strict):
    path: str = "data/landing"
    settle_seconds: int = Field(10, ge=0, description="The sensor loads a file once it has not changed for this long.")
