"""The similarity functions DuckDB has and Spark lacks, strip_accents and json_merge_patch, as the project's
own Java UDFs.

Spark has no Jaro-Winkler, and the Java UDFs others publish differ from DuckDB's on about one name pair
in a hundred (another match window, transpositions halved as a fraction, bytes instead of characters),
which would move pairs across the matching thresholds. The sources in resources/spark/java/ follow
DuckDB's definitions exactly (see each class's comment); they are compiled here with `javac` against
the jars of the installed pyspark into build/spark/cdp-spark-udfs.jar, from source, never downloaded
and never committed. `make spark` builds the jar; `ensure_jar()` rebuilds it when a source is newer.

The UDFs are registered under `cdp_<DuckDB name>` (resources/spark/dialect.py rewrites the calls):
Spark's own `levenshtein` is left alone, and no name can be mistaken for a built-in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from resources.spark.dialect import UDF_NAMES

SOURCES = Path(__file__).resolve().parent / "java"
BUILD_DIR = Path(__file__).resolve().parents[2] / "build" / "spark"
JAR_NAME = "cdp-spark-udfs.jar"

# DuckDB function -> (Java class, Spark SQL return type).
UDF_CLASSES: dict[str, tuple[str, str]] = {
    "jaro_winkler_similarity": ("cdp.spark.JaroWinklerSimilarity", "double"),
    "levenshtein": ("cdp.spark.Levenshtein", "bigint"),
    "damerau_levenshtein": ("cdp.spark.DamerauLevenshtein", "bigint"),
    "hamming": ("cdp.spark.Hamming", "bigint"),
    "strip_accents": ("cdp.spark.StripAccents", "string"),
    "json_merge_patch": ("cdp.spark.JsonMergePatch", "string"),
}


class UdfBuildError(RuntimeError):
    """The UDF jar could not be built (no javac, no pyspark, or a compile error)."""


def pyspark_jars() -> Path:
    """The folder of jars the installed pyspark runs on: what the UDFs compile against."""
    try:
        import pyspark
    except ImportError:
        raise UdfBuildError("pyspark is not installed: pip install 'dagster-cdp[spark]'") from None
    return Path(pyspark.__file__).resolve().parent / "jars"


def jar_needs_build(build_dir: Path | None = None) -> bool:
    """Whether the UDF jar is missing or older than a source, so that a session would compile it first (and
    needs javac, which a Java runtime without its development kit lacks)."""
    jar = (build_dir or BUILD_DIR) / JAR_NAME
    return not jar.exists() or any(s.stat().st_mtime > jar.stat().st_mtime for s in SOURCES.rglob("*.java"))


def ensure_jar(build_dir: Path = BUILD_DIR) -> Path:
    """The UDF jar, compiled now if it is missing or older than a source."""
    jar = build_dir / JAR_NAME
    sources = sorted(SOURCES.rglob("*.java"))
    if not jar_needs_build(build_dir):
        return jar
    javac = shutil.which("javac")
    if javac is None:
        raise UdfBuildError("javac is not installed: apt-get install openjdk-17-jdk-headless")
    classpath = ":".join(str(p) for p in sorted(pyspark_jars().glob("*.jar")))
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as classes:
        done = subprocess.run(
            [javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", classes, *map(str, sources)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise UdfBuildError(f"javac failed:\n{done.stderr}")
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n\n")
            for compiled in sorted(Path(classes).rglob("*.class")):
                archive.write(compiled, compiled.relative_to(classes).as_posix())
        partial.replace(jar)
    return jar


def register(spark: Any) -> None:
    """Register every UDF in the session (whose classpath holds the jar, see `ensure_jar`)."""
    from pyspark.sql.types import DoubleType, LongType, StringType

    types = {"double": DoubleType(), "bigint": LongType(), "string": StringType()}
    for duckdb_name, (java_class, returns) in UDF_CLASSES.items():
        spark.udf.registerJavaFunction(UDF_NAMES[duckdb_name], java_class, types[returns])


if __name__ == "__main__":
    try:
        print(ensure_jar())
    except UdfBuildError as exc:
        sys.exit(str(exc))
