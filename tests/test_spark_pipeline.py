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
import duckdb
import pytest
import yaml

from benchmarks.spark_pipeline import DAGSTER_JOB, RUN_TIME_COLUMNS, SPARK_WAREHOUSE
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CONFIG_ENV_VAR, load_config
from tests.fixtures import KNOWN_BAD_CRM, write_config

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
        configs = {}
        for engine in ("duckdb", "spark"):
            (folder / engine).mkdir()
            overrides = {"warehouse": SPARK_WAREHOUSE} if engine == "spark" else {}
            path = write_config(folder / engine, server.url, **overrides)
            raw = yaml.safe_load(path.read_text())
            raw["landing"]["path"] = str(landing)
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            configs[engine] = path
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
    conn = duckdb.connect(str(warehouse), read_only=True)
    tables = [
        t
        for (t,) in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'cdp' order by 1"
        ).fetchall()
    ]
    assert {"golden_profiles", "identity_map", "segment_membership", "quarantine"} <= set(tables)
    assert sorted(p.name for p in snapshot.iterdir() if p.is_dir()) == tables
    for table in tables:
        columns = [
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'cdp' and table_name = ? "
                "order by ordinal_position",
                [table],
            ).fetchall()
            if c not in RUN_TIME_COLUMNS
        ]
        listed = ", ".join(f'"{c}"' for c in columns)
        files = str(snapshot / table / "*.parquet").replace("'", "''")
        conn.execute(f"create or replace temp view on_spark as select {listed} from read_parquet('{files}')")
        only_duckdb = conn.execute(
            f"select * from (select {listed} from cdp.{table} except all from on_spark)"
        ).fetchall()
        only_spark = conn.execute(
            f"select * from (from on_spark except all select {listed} from cdp.{table})"
        ).fetchall()
        count = conn.execute(f"select count(*) from cdp.{table}").fetchone()[0]
        assert (only_duckdb[:3], only_spark[:3]) == ([], []), f"cdp.{table} ({count} rows) differs"
    # Customer data on disk is its owner's only, on Spark as on DuckDB.
    written = [f for f in (snapshot / "golden_profiles").glob("*.parquet")]
    assert written and all(f.stat().st_mode & 0o077 == 0 for f in written)
    assert conn.execute("select count(*) from cdp.golden_profiles").fetchone()[0] > 300
    assert conn.execute("select count(*) from cdp.quarantine").fetchone()[0] > 0
    conn.close()
