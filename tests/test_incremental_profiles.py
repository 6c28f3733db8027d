"""Profiles and segments recompute only the customers a delta affects, and leave the tables a full
recomputation gives: profiles, provenance, traits, segment members and their history; the configured
share of affected customers above which a run recomputes everyone."""

import random
import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from pydantic import ValidationError

from benchmarks.id_stability import _crm_updates, _hold_back, _release
from cdp_assets.consistency.checks import CHECK_NAME, rebuild
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.profiles.assets import GOLDEN_PROFILES, build_profiles
from cdp_assets.segments.assets import build_membership, segment_key, update_segment
from cdp_assets.snapshot.assets import READ_SNAPSHOT
from resources import warehouse
from resources.config import CDPConfig, ProfilesConfig, load_config
from resources.sql import Sql
from resources.warehouse import publish_read_snapshot
from sensors.schedules import REBUILD_CHECK_JOB
from tests.fixtures import make_platform

# Each table as compared, in a fixed order; the build stamp is the time a row was written.
TABLES = {
    "cdp.golden_profiles": "* exclude (profile_built_at)",
    "cdp.profile_provenance": "*",
    "cdp.identity_map": "*",
    "cdp.segment_membership": "* exclude (computed_at)",
    "cdp.segment_membership_history": "*",
}


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _tables(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {t: conn.execute(f"select {c} from {t} order by all").fetchall() for t, c in TABLES.items()}


@pytest.mark.dagster
def test_a_delta_recomputes_only_affected_customers_and_equals_a_full_recomputation(
    tmp_path, instance, destination_server, monkeypatch
):
    # So small a delta changes most buckets of so small a snapshot: it is updated in place however much changed.
    monkeypatch.setattr(warehouse, "SNAPSHOT_REWRITE_SHARE", 10.0)
    platform = make_platform(tmp_path, instance, destination_server.url, people=300)
    landing = platform.folder / "landing"
    held = _hold_back(landing, share=0.05)
    first = platform.refresh()
    assert first.success
    profiles = _metadata(first, dg.AssetKey(["profiles", "golden_profiles"]))
    assert (profiles["mode"], profiles["reason"]) == ("full", "first run")
    champions = _metadata(first, segment_key("champions"))
    assert champions["mode"] == "full"

    # A second run with nothing new recomputes nobody.
    idle = platform.refresh()
    assert idle.success
    metadata = _metadata(idle, dg.AssetKey(["profiles", "golden_profiles"]))
    assert (metadata["mode"], metadata["customers_recomputed"]) == ("incremental", 0)
    assert _metadata(idle, segment_key("champions"))["profiles_evaluated"] == 0

    # The warehouse before the delta, to rebuild from scratch with the delta's raw rows.
    before = tmp_path / "before.duckdb"
    shutil.copy(platform.config.warehouse_path, before)

    # The delta: new records and new activity (held-back lines), and later versions of known CRM contacts.
    _release(held, 1, 1)
    updated = _crm_updates(landing, 1, 0.02, random.Random(5))
    delta = platform.refresh()
    assert delta.success
    customers = platform.scalar("select count(*) from cdp.golden_profiles")
    metadata = _metadata(delta, dg.AssetKey(["profiles", "golden_profiles"]))
    assert metadata["mode"] == "incremental", metadata["reason"]
    assert updated <= metadata["customers_recomputed"] < 0.3 * customers
    assert metadata["affected_by_cleaned_rows"] > 0
    evaluated = _metadata(delta, segment_key("champions"))
    assert evaluated["mode"] == "incremental"
    assert metadata["customers_recomputed"] <= evaluated["profiles_evaluated"] < customers

    # The read snapshot was brought up to date by replacing some rows, and holds the warehouse's tables.
    snapshot = _metadata(delta, READ_SNAPSHOT)
    assert "golden_profiles" not in snapshot["tables_copied_whole"] and snapshot["rows_replaced"] > 0, snapshot
    fresh = platform.folder / "fresh_read.duckdb"
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        publish_read_snapshot(Sql(conn), fresh, "fresh")
    for path in (platform.config.read_snapshot_path, fresh):
        with duckdb.connect(str(path), read_only=True) as conn:
            published = {
                t: conn.execute(f"select * from cdp.{t} order by all").fetchall()
                for (t,) in conn.execute("select table_name from duckdb_tables() where schema_name = 'cdp'").fetchall()
            }
        assert (
            published == {t: platform.sql(f"select * from cdp.{t} order by all") for t in published}
            and "golden_profiles" in published
        ), path

    # What the incremental runs left equals a full recomputation over the same rows, from the same state.
    with duckdb.connect(str(platform.config.warehouse_path), read_only=True) as conn:
        incremental = _tables(conn)
        raw_tables = [
            r[0] for r in conn.execute("select table_name from duckdb_tables() where schema_name = 'raw'").fetchall()
        ]
    with duckdb.connect(str(before)) as conn:
        conn.execute(f"attach '{platform.config.warehouse_path}' as now (read_only)")
        for table in raw_tables:
            conn.execute(f'create or replace table raw."{table}" as select * from now.raw."{table}"')
        conn.execute("detach now")
        rebuild(Sql(conn), platform.config)
        full = _tables(conn)
    for table in TABLES:
        assert incremental[table] == full[table], table
    assert any(row[3] is not None for row in incremental["cdp.segment_membership_history"])  # someone exited

    # And the rebuild check, on the warehouse itself, passes.
    check = platform.defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    [evaluation] = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata

    # Time passing (profiles measured from `now`): the customers whose activity enters or leaves a window
    # are recomputed, every profile gets the new as-of time and day count, and segments reading those
    # columns are evaluated whole; the result is again a full recomputation's.
    config = platform.config.model_copy(
        update={"profiles": platform.config.profiles.model_copy(update={"as_of": "now"})}
    )
    evening, night = datetime(2025, 7, 1, 20), datetime(2025, 7, 2, 2)
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        assert build_profiles(Sql(conn), config, evening, incremental=True).reason.startswith("profile configuration")
        build_membership(Sql(conn), config)
    shutil.copy(platform.config.warehouse_path, before)
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        run = build_profiles(Sql(conn), config, night, incremental=True)
        assert run.mode == "incremental" and run.affected["time"] > 0, run
        # A tick of the evening run late (or executed again) does not take the profiles back to the evening.
        late = build_profiles(Sql(conn), config, evening, incremental=True)
        assert (late.as_of, late.mode, late.customers_recomputed) == (night, "incremental", 0), late
        figures = {s.name: update_segment(Sql(conn), config, s.name, incremental=True) for s in config.segments}
        incremental = _tables(conn)
    assert figures["lapsed_buyers"]["reason"] == "days_since_last_order changed on every profile"
    assert figures["champions"]["mode"] == "incremental"
    with duckdb.connect(str(before)) as conn:
        assert build_profiles(Sql(conn), config, night).mode == "full"
        build_membership(Sql(conn), config)
        full = _tables(conn)
    for table in TABLES:
        assert incremental[table] == full[table], table


def _with_share(path: Path, share: float) -> CDPConfig:
    """The configuration at `path` with `profiles.full_recompute_share` set to `share`."""
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("profiles", {})["full_recompute_share"] = share
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@pytest.mark.dagster
def test_the_configured_share_decides_between_a_scoped_and_a_full_run(tmp_path, instance, destination_server):
    platform = make_platform(tmp_path, instance, destination_server.url, people=150)
    landing = platform.folder / "landing"
    held = _hold_back(landing, share=0.5)
    assert platform.refresh().success

    # Half of every file again: most customers are affected, more than the default share of 30%. With a
    # share of 1 the run stays scoped, and changing the share alone forces no full run.
    _release(held, 1, 1)
    defs = build_definitions(_with_share(platform.folder / "cdp.yaml", 1.0))
    large = defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert large.success
    customers = platform.scalar("select count(*) from cdp.golden_profiles")
    metadata = _metadata(large, GOLDEN_PROFILES)
    assert metadata["mode"] == "incremental", metadata["reason"]
    assert 0.3 * customers < metadata["customers_recomputed"] < customers
    check = defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    [evaluation] = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata

    # A few contacts updated, under a share smaller than one customer: everyone is recomputed.
    _crm_updates(landing, 1, 0.01, random.Random(3))
    defs = build_definitions(_with_share(platform.folder / "cdp.yaml", 0.001))
    small = defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert small.success
    metadata = _metadata(small, GOLDEN_PROFILES)
    customers = platform.scalar("select count(*) from cdp.golden_profiles")
    assert metadata["mode"] == "full"
    assert metadata["reason"].endswith(f" of {customers} customers affected, over 0.1%"), metadata["reason"]
    assert metadata["customers_recomputed"] == customers


@pytest.mark.unit
@pytest.mark.parametrize("share", [0, -0.1, 1.5])
def test_the_share_is_above_zero_and_at_most_one(share):
    with pytest.raises(ValidationError, match="full_recompute_share"):
        ProfilesConfig.model_validate({"full_recompute_share": share})
