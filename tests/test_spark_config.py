"""`warehouse.engine`: DuckDB by default; Spark accepted with its settings, refused at load with one line
when this machine lacks what it needs, after every segment condition was translated for Spark."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

from resources.config import ConfigError, load_config
from resources.spark import engine
from resources.spark.dialect import condition_to_spark

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, warehouse: dict, segments: list[dict] | None = None) -> Path:
    raw = {
        "warehouse": warehouse,
        "sources": [{"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"}],
        "segments": segments or [{"name": "buyers", "where": "order_count > 0"}],
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_duckdb_is_the_default_engine(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {}))
    assert config.warehouse.engine == "duckdb"
    assert config.warehouse.spark.master == "local[2]" and config.warehouse.spark.table_format == "parquet"


def test_spark_is_accepted_with_its_settings(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine, "missing_runtime", lambda: [])
    path = write(tmp_path, {"engine": "spark", "spark": {"master": "local[4]", "table_format": "orc"}})
    config = load_config(path)
    assert config.warehouse.engine == "spark"
    assert (config.warehouse.spark.master, config.warehouse.spark.table_format) == ("local[4]", "orc")
    assert config.warehouse.spark.read_snapshot == "data/spark-read-snapshot"


def test_spark_without_pyspark_or_java_says_what_to_install(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine, "missing_runtime", lambda: ["java"])
    with pytest.raises(ConfigError, match=r"needs pyspark and a Java 17 runtime: pip install 'dagster-cdp\[spark\]'"):
        load_config(write(tmp_path, {"engine": "spark"}))


def test_a_segment_spark_cannot_run_is_named_with_the_construct(tmp_path: Path) -> None:
    segments = [
        {"name": "buyers", "where": "order_count > 0"},
        {"name": "lapsed", "where": "date_diff('week', last_order_at, current_date) > 4"},
    ]
    with pytest.raises(ConfigError, match=r"segments\[1\] \(lapsed\)\.where: date_diff\('week', \.\.\.\) does not run"):
        load_config(write(tmp_path, {"engine": "spark"}, segments))
    # On DuckDB the same segment is fine: the Spark translation is checked only when Spark is chosen.
    assert load_config(write(tmp_path, {}, segments)).segments[1].name == "lapsed"


def test_unknown_engine_and_spark_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warehouse.engine"):
        load_config(write(tmp_path, {"engine": "postgres"}))
    with pytest.raises(ConfigError, match="warehouse.spark.table_format"):
        load_config(write(tmp_path, {"engine": "spark", "spark": {"table_format": "delta"}}))


def test_every_shipped_segment_translates_to_spark() -> None:
    config = load_config(REPO / "cdp.yaml")
    translated = {s.name: condition_to_spark(s.where) for s in config.segments}
    assert len(translated) == len(config.segments) > 0
    assert all(translated.values())


def test_spark_problems_come_with_the_others_in_one_message(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine, "missing_runtime", lambda: ["java"])
    segments = [
        {"name": "lapsed", "where": "date_diff('week', last_order_at, current_date) > 4"},
        {"name": "broken", "where": "order_count >"},
    ]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"engine": "spark"}, segments))
    keys = [line.split(": ")[0].strip() for line in str(info.value).splitlines()[1:]]
    # The condition DuckDB cannot bind is reported once, not again as one Spark cannot translate.
    assert keys == ["segments[1] (broken).where", "segments[0] (lapsed).where", "warehouse.engine"]


def test_spark_settings_of_the_configuration_go_to_the_session_and_those_results_depend_on_are_refused(
    tmp_path: Path,
) -> None:
    """`warehouse.spark.conf` goes to the session over the platform's defaults (tests/test_spark_runner.py
    starts a session with it); the settings the results depend on are refused, saying why."""
    from resources.spark.warehouse import spark_warehouse_resource

    conf = {"spark.sql.shuffle.partitions": 7, "spark.driver.memory": "1200m", "spark.sql.adaptive.enabled": False}
    config = load_config(write(tmp_path, {"spark": {"conf": conf}}))
    assert spark_warehouse_resource(config).conf == {
        "spark.sql.shuffle.partitions": "7",
        "spark.driver.memory": "1200m",
        "spark.sql.adaptive.enabled": "false",
    }
    for key, reason in [
        ("spark.sql.session.timeZone", "set by the platform: dates and times are computed in UTC"),
        ("spark.sql.warehouse.dir", "use warehouse.spark.warehouse_dir"),
        ("hive.exec.dynamic.partition", "not a Spark setting"),
    ]:
        with pytest.raises(ConfigError, match=rf"warehouse\.spark\.conf.*{reason}"):
            load_config(write(tmp_path, {"spark": {"conf": {key: "x"}}}))


def test_a_master_spark_could_not_parse_is_refused_at_load_naming_the_key(tmp_path: Path) -> None:
    """A misspelt master used to load, then fail every step of the run with a Java error that never named
    `warehouse.spark.master`."""
    for master in ["local[two]", "lcoal[2]", "local[0]", "spark://cluster", "spark//host:7077", "k8s:/x"]:
        with pytest.raises(
            ConfigError, match=rf"warehouse\.spark\.master: '{re.escape(master)}' is not a Spark master"
        ):
            load_config(write(tmp_path, {"spark": {"master": master}}))
    for master in [
        "local",
        "local[*]",
        "local[4]",
        "local[2, 3]",
        "spark://h1:7077,h2:7077",
        "yarn",
        "k8s://https://k:6443",
    ]:
        assert load_config(write(tmp_path, {"spark": {"master": master}})).warehouse.spark.master == master


def test_a_spark_memory_or_count_setting_that_could_not_start_a_session_is_refused_at_load(tmp_path: Path) -> None:
    """`spark.driver.memory: lots` used to load, then stop the JVM at every step's start with
    `JAVA_GATEWAY_EXITED`, its reason only on the process's stderr; a count that is not a number failed every
    step with the reason masked. Each is named with its value and what would be taken."""
    refused = {
        "spark.driver.memory": ["lots", "4gb", "1024", "-1g"],
        "spark.executor.memory": ["4 gigs", "1.5g"],
        "spark.sql.shuffle.partitions": ["abc", 0, "2.5", True],
        "spark.executor.cores": [-1],
    }
    for key, values in refused.items():
        for value in values:
            with pytest.raises(
                ConfigError, match=rf"warehouse\.spark\.conf: '{re.escape(key)}' is '{re.escape(str(value))}', not"
            ):
                load_config(write(tmp_path, {"spark": {"conf": {key: value}}}))
    taken = {"spark.driver.memory": "512M", "spark.executor.memory": "2gb", "spark.sql.shuffle.partitions": 400}
    assert load_config(write(tmp_path, {"spark": {"conf": taken}})).warehouse.spark.conf == taken


def test_a_java_runtime_without_javac_is_refused_at_load_when_the_udf_jar_is_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a JRE and no jar, loading used to pass (it asked only for a Java runtime), and every step of the
    run then failed compiling the UDFs. A jar already built needs no compiler."""
    from resources.spark import udfs

    java = shutil.which("java")
    if java is None or importlib.util.find_spec("pyspark") is None:
        pytest.skip("needs pyspark and java")
    jre = tmp_path / "jre-bin"
    jre.mkdir()
    (jre / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(jre))
    build = tmp_path / "build"
    monkeypatch.setattr(udfs, "BUILD_DIR", build)
    with pytest.raises(ConfigError, match=r"UDF jar .* no javac to build it: apt-get install openjdk-17-jdk-headless"):
        load_config(write(tmp_path, {"engine": "spark"}))
    build.mkdir()
    (build / udfs.JAR_NAME).write_bytes(b"built by make spark elsewhere")
    assert load_config(write(tmp_path, {"engine": "spark"})).warehouse.engine == "spark"


def test_spark_folders_sharing_the_warehouse_or_landing_folder_are_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers are pointed at the read snapshot's folder and publications are made and removed in it: the
    warehouse's folder, the landing folder, a folder inside them or one holding them is refused."""
    monkeypatch.setattr(engine, "missing_runtime", lambda: [])
    for snapshot, clash in [
        ("data/spark-warehouse", "warehouse.spark.warehouse_dir"),
        ("data/spark-warehouse/snapshot", "warehouse.spark.warehouse_dir"),
        ("data", "warehouse.spark.warehouse_dir"),
        ("data/landing/snapshot", "landing.path"),
    ]:
        spark = {"warehouse_dir": "data/spark-warehouse", "read_snapshot": snapshot}
        with pytest.raises(ConfigError, match=rf"warehouse\.spark\.read_snapshot: '.*' is {re.escape(clash)} "):
            load_config(write(tmp_path, {"engine": "spark", "spark": spark}))
    spark = {"warehouse_dir": "data/landing/spark-warehouse", "read_snapshot": "data/spark-read-snapshot"}
    with pytest.raises(ConfigError, match=r"warehouse\.spark\.warehouse_dir: '.*' is in landing\.path "):
        load_config(write(tmp_path, {"engine": "spark", "spark": spark}))
    spark = {"warehouse_dir": "data/spark-warehouse", "read_snapshot": "data/spark-read-snapshot"}
    assert load_config(write(tmp_path, {"engine": "spark", "spark": spark})).warehouse.engine == "spark"
    # On DuckDB the Spark folders are not used and not judged.
    assert load_config(write(tmp_path, {"spark": {"read_snapshot": "data"}})).warehouse.engine == "duckdb"
