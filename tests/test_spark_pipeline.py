"""The whole pipeline on Spark: `full_refresh` run headless, as a user runs it, with `warehouse.engine:
spark`, gives the public tables a DuckDB run of the same landing files gives, row for row, customer ids
included, and identity's own tables too (the blocked and shared identifiers, the trained model, the
evidence with match weights equal to the last bits of a double, where the engines' logarithms round
differently); and an erasure of one customer, run on each engine, leaves the same public tables again.

The Spark run is `dagster job execute` in its own process (its own JVM, the Hive catalogue in the
warehouse folder); its tables are read from the read snapshot it publishes (`current/<table>/` parquet),
which is what readers of a Spark deployment open. Only the columns that say when the run happened differ.
"""

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from benchmarks.spark_identity import EVIDENCE, SAME_ROWS, close
from benchmarks.spark_pipeline import DAGSTER_JOB, compare, engine_configs
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CONFIG_ENV_VAR, load_config
from tests.fixtures import KNOWN_BAD_CRM

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PRIVACY_KEY = {"CDP_PRIVACY_KEY": "a-test-key-of-32-characters-0123"}


@pytest.fixture(scope="module")
def both_engines(spark, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201 - skips without Java
    """One landing folder refreshed on DuckDB (in process) and on Spark (`dagster job execute`)."""
    folder = tmp_path_factory.mktemp("engines")
    landing = folder / "landing"
    generate(people=10_000, seed=11, out_dir=landing, truth_path=folder / "ground_truth.csv")
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


@pytest.fixture(scope="module")
def both_erased(both_engines):  # noqa: ANN001, ANN201
    """The same customer erased on each engine (each with its own copy of the landing folder, whose files an
    erasure rewrites): the privacy job in process on DuckDB, `dagster job execute` on Spark."""
    warehouse, snapshot = both_engines
    folder = warehouse.parent.parent
    conn = duckdb.connect(str(warehouse), read_only=True)
    [(customer,)] = conn.execute(
        "select min(customer_id) from cdp.golden_profiles where record_count >= 2 and email is not null"
    ).fetchall()
    # What must leave every file: the customer's e-mail address and the phone numbers only they have.
    [(email,)] = conn.execute(
        "select lower(email) from cdp.golden_profiles where customer_id = ?", [customer]
    ).fetchall()
    phones = [
        phone
        for (phone,) in conn.execute(
            """select p.phone from clean.person_records p join cdp.identity_map m using (source, source_record_id)
               where p.phone is not null group by p.phone
               having bool_and(m.customer_id = ?) and bool_or(m.customer_id = ?)""",
            [customer, customer],
        ).fetchall()
    ]
    conn.close()
    spark_folders = [folder / "spark", folder / "dagster_home"]
    assert _holding(spark_folders, [email]), "the search finds the customer before the erasure"
    run_config = {"ops": {"privacy__requests": {"config": {"requests": [
        {"type": "erase", "id_type": "customer_id", "value": customer}
    ]}}}}  # fmt: skip
    spark_config = folder / "spark" / "cdp.yaml"
    raw = yaml.safe_load(spark_config.read_text())
    shutil.copytree(raw["landing"]["path"], folder / "spark_landing")
    raw["landing"]["path"] = str(folder / "spark_landing")
    spark_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        for name, value in PRIVACY_KEY.items():
            env.setenv(name, value)
        result = (
            build_definitions(load_config(folder / "duckdb" / "cdp.yaml"))
            .resolve_job_def(PRIVACY_JOB)
            .execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config=run_config)
        )
    assert result.success
    (folder / "erase.yaml").write_text(yaml.safe_dump(run_config))
    env = {**os.environ, **PRIVACY_KEY, CONFIG_ENV_VAR: str(spark_config), "DAGSTER_HOME": str(folder / "dagster_home")}
    command = [*DAGSTER_JOB[:-1], PRIVACY_JOB, "-c", str(folder / "erase.yaml")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return warehouse, snapshot, customer, [email, *phones], [*spark_folders, folder / "spark_landing"]


def _holding(folders: list[Path], needles: list[str]) -> list[str]:
    """The files under `folders` that hold any of `needles` (case aside): a parquet file's rows read by
    DuckDB (its pages are compressed, so its bytes would not show a value), any other file's bytes."""
    conn = duckdb.connect()
    found = []
    for path in sorted(p for folder in folders for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            rows = conn.execute("select lower(t::varchar) from read_parquet(?) t", [str(path)]).fetchall()
            text = "\n".join(row for (row,) in rows)
        else:
            text = path.read_bytes().decode("latin-1").lower()
        found += [f"{path}: {needle}" for needle in needles if needle.lower() in text]
    conn.close()
    return found


def test_every_public_table_is_the_same_on_spark_and_duckdb(both_engines) -> None:  # noqa: ANN001
    warehouse, snapshot = both_engines
    found = compare(warehouse, snapshot)
    assert {"golden_profiles", "identity_map", "segment_membership", "quarantine"} <= set(found)
    assert sorted(p.name for p in snapshot.iterdir() if p.is_dir()) == sorted(found)
    differing = {table: counts for table, counts in found.items() if counts[1:] != (0, 0)}
    assert differing == {}, "public tables differ: (rows, only on DuckDB, only on Spark)"
    assert found["golden_profiles"][0] > 10_000 and found["quarantine"][0] > 0
    # Customer data on disk is its owner's only, on Spark as on DuckDB: the folders holding the tables.
    for folder in (snapshot.parent, snapshot.parent.parent / "spark-warehouse"):
        assert folder.stat().st_mode & 0o077 == 0, folder


def test_identitys_own_tables_are_the_same_on_spark_and_duckdb(both_engines) -> None:  # noqa: ANN001
    """What identity decided on the way to the customers, read from the Spark warehouse's own files
    (`spark-warehouse/identity.db/<table>/`), which the read snapshot does not publish."""
    warehouse, snapshot = both_engines
    conn = duckdb.connect(str(warehouse), read_only=True)

    def both(select: str, qualified: str) -> tuple[list[tuple], list[tuple]]:
        """`select` from DuckDB's table `qualified`, and from Spark's files of it, in DuckDB's column order."""
        schema, table = qualified.split(".")
        listed = ", ".join(f'"{c}"' for (c, *_) in conn.execute(f"select * from {qualified} limit 0").description)
        files = snapshot.parent.parent / "spark-warehouse" / f"{schema}.db" / table / "*.parquet"
        on_spark = select.replace(qualified, f"(select {listed} from read_parquet('{files}'))")
        assert on_spark != select, f"{qualified} is not what {select} reads"
        return conn.execute(select).fetchall(), conn.execute(on_spark).fetchall()

    for table in SAME_ROWS:
        ours, theirs = both(f"select * from {table}", table)
        assert sorted(ours) == sorted(theirs), table
    ours, theirs = both(EVIDENCE, "identity.evidence")
    assert len(ours) == len(theirs)
    assert all(all(close(a, b) for a, b in zip(x, y, strict=True)) for x, y in zip(ours, theirs, strict=True))
    # Enough happened to compare: customers joined both ways, identifiers blocked, shared values judged per
    # value (the runner's map_groups, on Spark's executors) and some linked within people.
    joined = "select count(*) from (select customer_id from cdp.identity_map group by 1 having count(*) > 1)"
    assert conn.execute(joined).fetchone()[0] > 50
    assert {"linked", "same customer (shared identifier)"} <= {row[-1] for row in ours}
    assert conn.execute("select count(*) from identity.blocked_identifiers").fetchone()[0] > 0
    grouped = "select count(*) from identity.shared_identifier_groups where person_group is not null"
    assert conn.execute(grouped).fetchone()[0] > 0
    conn.close()


def test_an_erasure_leaves_the_same_public_tables_on_both_engines(both_erased) -> None:  # noqa: ANN001
    warehouse, snapshot, customer, _, _ = both_erased
    found = compare(warehouse, snapshot)
    differing = {table: counts for table, counts in found.items() if counts[1:] != (0, 0)}
    # The id history's erasure event names the request, whose id is made from its run's: one row each.
    assert differing == {"customer_id_history": (found["customer_id_history"][0], 1, 1)}, differing
    conn = duckdb.connect()
    conn.execute(f"attach '{warehouse}' as on_duckdb (read_only)")
    erased = (
        "select event, customer_id, related_id, records, regexp_replace(reason, 'prq_\\w+', 'prq') "
        "from {} where event = 'erased'"
    )
    assert (
        conn.execute(erased.format("on_duckdb.cdp.customer_id_history")).fetchall()
        == conn.execute(erased.format(f"read_parquet('{snapshot / 'customer_id_history'}/*.parquet')")).fetchall()
        == [("erased", customer, None, 0, "privacy request prq")]
    )
    for table in ("identity_map", "golden_profiles", "segment_membership"):
        rows = conn.execute(
            f"select count(*) from read_parquet('{snapshot / table}/*.parquet') where customer_id = ?", [customer]
        ).fetchone()
        assert rows == (0,), table
    receipts = conn.execute(
        f"select status from read_parquet('{snapshot.parent.parent}/spark-warehouse/privacy.db/requests/*.parquet')"
    ).fetchall()
    conn.close()
    # The destinations (stopped with the refresh) could not confirm: the request waits for them.
    assert receipts == [("pending",)]


def test_no_file_of_the_spark_deployment_holds_the_erased_customer(both_erased) -> None:  # noqa: ANN001
    """Every table's files (the warehouse's, its read snapshot's, the metastore's), the landing folder the
    erasure rewrote and Dagster's storage: not one holds the customer's e-mail or their own phone numbers."""
    _, _, _, needles, folders = both_erased
    assert _holding(folders, needles) == []
