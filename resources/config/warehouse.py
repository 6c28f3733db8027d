"""The warehouse file and the landing folder."""

from __future__ import annotations

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
