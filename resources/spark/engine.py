"""The load-time check of `warehouse.engine: spark`.

The Spark engine's foundation (dialect, UDFs, runner) exists, but the pipeline's stages do not run on it
yet, so choosing it must stop the platform when the configuration loads, with one line saying why and
what to do, not half-way through a run. Before that line, every segment condition and trait filter is
translated to Spark SQL, so a condition that could never run on Spark (an `UnsupportedConstruct`) is
named with its segment or trait now.

The translation is checked only when Spark is chosen: on DuckDB the binder of resources/schema.py is the
judge, and a construct that only Spark lacks must not stop a DuckDB deployment.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from resources.schema import ConfigError
from resources.spark.dialect import UnsupportedConstruct, condition_to_spark

if TYPE_CHECKING:
    from resources.config import CDPConfig

INSTALL = (
    "warehouse.engine: spark needs pyspark and a Java 17 runtime: "
    "pip install 'dagster-cdp[spark]' and apt-get install openjdk-17-jre-headless"
)
NOT_YET = (
    "warehouse.engine: spark: the pipeline's stages do not run on Spark yet (resources/spark/ holds its "
    "dialect, UDFs and runner); use warehouse.engine: duckdb"
)


def missing_runtime() -> list[str]:
    """What the Spark engine needs and this machine lacks: pyspark, java."""
    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("pyspark")
    if shutil.which("java") is None:
        missing.append("java")
    return missing


def check_spark_engine(config: CDPConfig, config_path: Path) -> None:
    """Raise ConfigError when the configuration chooses Spark: naming a condition that has no Spark
    translation, else saying what to install, else that the stages do not run on Spark yet."""
    if config.warehouse.engine != "spark":
        return
    conditions = [(f"segments[{i}] ({s.name}).where", s.where) for i, s in enumerate(config.segments)]
    conditions += [
        (f"profiles.traits[{i}] ({t.name}).where", t.where) for i, t in enumerate(config.profiles.traits) if t.where
    ]
    for key, condition in conditions:
        try:
            condition_to_spark(condition)
        except UnsupportedConstruct as exc:
            raise ConfigError(f"{config_path}: {key}: {exc}") from None
    if missing_runtime():
        raise ConfigError(f"{config_path}: {INSTALL}")
    raise ConfigError(f"{config_path}: {NOT_YET}")
