"""The whole pipeline on Spark: `full_refresh` run headless, as a user runs it, with `warehouse.engine:
spark`, gives the public tables a DuckDB run of the same landing files gives, row for row, customer ids
included.

The Spark run is `dagster job execute` in its own process (its own JVM, the Hive catalogue in the
warehouse folder); its tables are read from the read snapshot it publishes (`current/<table>/` parquet),
which is what readers of a Spark deployment open. Only the columns that say when the run happened differ.
"""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from benchmarks.spark_pipeline import DAGSTER_JOB, compare, engine_configs
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CONFIG_ENV_VAR, load_config
from tests.fixtures import KNOWN_BAD_CRM

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def both_engines(spark, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201 - skips without Java
    """One landing folder refreshed on DuckDB (in process) and on Spark (`dagster job execute`)."""
    folder = tmp_path_factory.mktemp("engines")
    landing = folder / "landing"
    generate(people=300, seed=11, out_dir=landing, truth_path=folder / "ground_truth.csv")
    (landing / "crm" / "known_bad.csv").write_text(KNOWN_BAD_CRM)
    with DestinationServer(host="127.0.0.1", port=0) as server:
        configs = engine_configs(folder, landing, server.url)
        duck = load_config(configs["duckdb"])
        result = (
            build_definitions(duck)
            .resolve_job_def(FULL_REFRESH)
            .execute_in_process(instance=dg.DagsterInstance.ephemeral())
        )
        assert result.success
        home = folder / "dagster_home"
        home.mkdir()
        env = {**os.environ, CONFIG_ENV_VAR: str(configs["spark"]), "DAGSTER_HOME": str(home)}
        done = subprocess.run(
            DAGSTER_JOB,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    return duck.warehouse_path, folder / "spark" / "spark-read-snapshot" / "current"


def test_every_public_table_is_the_same_on_spark_and_duckdb(both_engines) -> None:  # noqa: ANN001
    warehouse, snapshot = both_engines
    found = compare(warehouse, snapshot)
    assert {"golden_profiles", "identity_map", "segment_membership", "quarantine"} <= set(found)
    assert sorted(p.name for p in snapshot.iterdir() if p.is_dir()) == sorted(found)
    differing = {table: counts for table, counts in found.items() if counts[1:] != (0, 0)}
    assert differing == {}, "public tables differ: (rows, only on DuckDB, only on Spark)"
    assert found["golden_profiles"][0] > 300 and found["quarantine"][0] > 0
    # Customer data on disk is its owner's only, on Spark as on DuckDB: the folders holding the tables.
    for folder in (snapshot.parent, snapshot.parent.parent / "spark-warehouse"):
        assert folder.stat().st_mode & 0o077 == 0, folder
