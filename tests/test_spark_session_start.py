"""A Spark session that cannot start (a standalone master that does not answer, a driver memory Java refuses)
fails the run's first step with a message naming `warehouse.spark.master` and `warehouse.spark.conf` and
Spark's reason, unmasked, and the run's other steps with the same message at once, without starting a JVM
again. Each run is `dagster asset materialize` in a process of its own: a process has one JVM, and this
one's is the `spark` fixture's."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resources.config import CONFIG_ENV_VAR

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")


def materialize_two_sources(tmp_path: Path, spark_settings: dict) -> str:
    """Materialize `raw/crm` and `raw/shop` on Spark with `spark_settings`; the run's whole output."""
    landing = tmp_path / "landing"
    (landing / "crm").mkdir(parents=True)
    (landing / "shop").mkdir()
    (landing / "crm" / "c.csv").write_text("id,email\nC1,ann@example.org\n")
    (landing / "shop" / "s.jsonl").write_text('{"id": "S1", "email": "bob@example.org"}\n')
    person = {"role": "person", "record_id": "id", "fields": {"email": "email"}}
    raw = {
        "warehouse": {"engine": "spark", "spark": {"warehouse_dir": str(tmp_path / "sw"), **spark_settings}},
        "landing": {"path": str(landing)},
        "sources": [
            {"name": "crm", "format": "csv", "glob": "crm/*.csv", **person},
            {"name": "shop", "format": "jsonl", "glob": "shop/*.jsonl", **person},
        ],
    }
    config = tmp_path / "cdp.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, CONFIG_ENV_VAR: str(config), "DAGSTER_HOME": str(home)}
    command = [str(DAGSTER), "asset", "materialize", "-m", "cdp_assets.definitions", "--select", "raw/crm,raw/shop"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_standalone_master_that_does_not_answer_fails_the_run_naming_it(spark, tmp_path: Path) -> None:  # noqa: ANN001
    with socket.socket() as closed:  # bound, never listening: a connection to it is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        output = materialize_two_sources(tmp_path, {"master": f"spark://127.0.0.1:{port}"})
    expected = (
        f"The Spark session could not start with warehouse.spark.master 'spark://127.0.0.1:{port}' and the "
        f"settings of warehouse.spark.conf: no master answers (127.0.0.1:{port}: Connection refused)"
    )
    assert output.count(expected) >= 2, output[-3000:]  # both steps, the same words
    assert "Customer values in this message are masked" not in output
    assert "StandaloneAppClient" not in output  # Spark never tried: no minute of retries per step


def test_a_driver_memory_java_refuses_fails_the_first_step_and_the_others_at_once(spark, tmp_path: Path) -> None:  # noqa: ANN001
    output = materialize_two_sources(tmp_path, {"conf": {"spark.driver.memory": "1k"}})
    expected = "The Spark session could not start with warehouse.spark.master 'local[2]' and the settings of "
    assert output.count(expected + "warehouse.spark.conf: Java exited as it started") >= 2, output[-3000:]
    assert "Customer values in this message are masked" not in output
    # Java said why once, on the run's standard error: the second step did not start a JVM again.
    assert output.count("Too small maximum heap") == 1, output[-3000:]


def test_a_warehouse_folder_that_cannot_be_made_fails_the_run_naming_its_key(tmp_path: Path) -> None:
    """A `warehouse_dir` under a file used to fail the run's resources with a bare NotADirectoryError."""
    import dagster as dg

    from resources.spark.warehouse import SparkWarehouse

    (tmp_path / "a_file").write_text("not a folder")
    folder = tmp_path / "a_file" / "spark-warehouse"
    warehouse = SparkWarehouse(warehouse_dir=str(folder), read_snapshot=str(tmp_path / "snapshot"))
    with pytest.raises(dg.Failure) as failure:
        warehouse.setup_for_execution(dg.build_init_resource_context())
    assert failure.value.description == (
        f"warehouse.spark.warehouse_dir '{folder}' cannot be used as a folder: Not a directory. "
        "Point it at a folder this user can create and write in cdp.yaml."
    )


def test_a_setting_spark_refuses_is_named_with_spark_s_own_reason(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """Spark wraps the reason in "Error while instantiating 'HiveSessionStateBuilder'"; the message gives the
    reason itself, which names the setting and its value."""
    output = materialize_two_sources(tmp_path, {"conf": {"spark.sql.autoBroadcastJoinThreshold": "lots"}})
    expected = (
        "The Spark session could not start with warehouse.spark.master 'local[2]' and the settings of "
        "warehouse.spark.conf: org.apache.spark.SparkIllegalArgumentException: [INVALID_CONF_VALUE.TYPE_MISMATCH] "
        "The value 'lots' in the config \"spark.sql.autoBroadcastJoinThreshold\" is invalid."
    )
    assert output.count(expected) >= 2, output[-3000:]
    assert "Customer values in this message are masked" not in output
