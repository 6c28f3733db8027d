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
