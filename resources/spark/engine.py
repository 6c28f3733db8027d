"""The load-time check of `warehouse.engine: spark`.

A configuration that chooses Spark must fail when it loads, with a line for each thing that is wrong, not
half-way through a run: every segment condition and trait filter is translated to Spark SQL, so a
condition that could never run on Spark (an `UnsupportedConstruct`) is named with its segment or trait,
and a machine without pyspark or Java, or without the javac that must build the UDF jar, is told what to
install.

The translation is checked only when Spark is chosen: on DuckDB the binder of resources/schema.py is the
judge, and a construct that only Spark lacks must not stop a DuckDB deployment.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import TYPE_CHECKING

from resources.spark.dialect import UnsupportedConstruct, condition_to_spark
from resources.spark.udfs import jar_needs_build

if TYPE_CHECKING:
    from resources.config import CDPConfig

INSTALL = (
    "warehouse.engine: spark needs pyspark and a Java 17 runtime: "
    "pip install 'dagster-cdp[spark]' and apt-get install openjdk-17-jdk-headless"
)
NO_COMPILER = (
    "warehouse.engine: spark needs the platform's UDF jar (build/spark/cdp-spark-udfs.jar), which is not built "
    "or older than its sources, and this machine has no javac to build it: apt-get install "
    "openjdk-17-jdk-headless (a JDK; a Java runtime alone has no compiler), or copy in the jar `make spark` "
    "built with the same sources and pyspark"
)


def missing_runtime() -> list[str]:
    """What the Spark engine needs and this machine lacks: pyspark, java, and javac when the UDF jar must be
    compiled before a session can start (resources/spark/udfs.py)."""
    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("pyspark")
    if shutil.which("java") is None:
        missing.append("java")
    elif shutil.which("javac") is None and jar_needs_build():
        missing.append("javac")
    return missing


def spark_engine_problems(config: CDPConfig) -> list[str]:
    """When the configuration chooses Spark: each condition that has no Spark translation (naming it and
    its construct), and what to install when this machine lacks what Spark needs."""
    if config.warehouse.engine != "spark":
        return []
    conditions = [(f"segments[{i}] ({s.name}).where", s.where) for i, s in enumerate(config.segments)]
    conditions += [
        (f"profiles.traits[{i}] ({t.name}).where", t.where) for i, t in enumerate(config.profiles.traits) if t.where
    ]
    problems = []
    for key, condition in conditions:
        try:
            condition_to_spark(condition)
        except UnsupportedConstruct as exc:
            problems.append(f"{key}: {exc}")
    missing = missing_runtime()
    if missing == ["javac"]:
        problems.append(NO_COMPILER)
    elif missing:
        problems.append(INSTALL)
    return problems
