"""Identity does no work when nothing it reads has changed since its last run, and resolves again (to what
a rebuild gives) when the cleaned records, the configuration or its own map changed."""

import dagster as dg
import duckdb
import pytest

from cdp_assets.consistency.checks import CHECK_NAME
from cdp_assets.identity.assets import IDENTITY_CLUSTERS
from sensors.schedules import REBUILD_CHECK_JOB
from tests.fixtures import CRM_HEADER, make_platform

pytestmark = pytest.mark.dagster


def _identity(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    assert result.success
    (materialization,) = result.asset_materializations_for_node("identity__clusters")
    return {k: v.value for k, v in materialization.metadata.items()}


def _identity_checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key == IDENTITY_CLUSTERS}


def test_identity_skips_a_run_with_nothing_changed_and_resolves_changes_as_a_rebuild(
    tmp_path, instance, destination_server
):
    platform = make_platform(tmp_path, instance, destination_server.url, people=200)
    first = _identity(platform.refresh())
    assert first["mode"] == "full" and first["reason"] == "no earlier identity run is recorded"
    runs = platform.scalar("select count(*) from identity.id_runs")
    map_before = platform.sql("select * from cdp.identity_map order by all")

    # Nothing new: no matching work (no id run recorded, no candidate pairs), the tables as they were, the
    # checks reported all the same.
    refresh = platform.refresh()
    unchanged = _identity(refresh)
    assert unchanged["mode"] == "unchanged" and unchanged["records_affected"] == 0
    assert "candidate_pairs" not in unchanged and "seconds_by_step" not in unchanged
    assert unchanged["customers"] == first["customers"]
    assert unchanged["model_training"] == "kept" and unchanged["model_trained_at"] == first["model_trained_at"]
    assert platform.scalar("select count(*) from identity.id_runs") == runs
    assert platform.sql("select * from cdp.identity_map order by all") == map_before
    assert _identity_checks(refresh) == dict.fromkeys(_identity_checks(refresh), True)
    assert len(_identity_checks(refresh)) == 4

    # A delta file with a new contact and a later version of a known one: resolved again, and the map
    # is the one a rebuild from the raw rows gives, with the same ids.
    known = platform.scalar("select min(source_record_id) from clean.person_records where source = 'crm_contacts'")
    (platform.folder / "landing" / "crm" / "delta.csv").write_text(
        CRM_HEADER
        + "NEW-1,Zed,Quill,zed.quill@example.org,,,,,,US,,true,2026-01-01T00:00:00Z\n"
        + f"{known},Ann,Changed,ann.changed@example.org,,,,,,US,,true,2026-02-01T00:00:00Z\n"
    )
    changed = _identity(platform.refresh())
    assert changed["mode"] == "full" and changed["reason"] == "the cleaned records changed"
    assert platform.scalar("select count(*) from identity.id_runs") == runs + 1
    assert platform.scalar("select count(*) from cdp.identity_map where source_record_id = 'NEW-1'") == 1
    check = platform.defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    (evaluation,) = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["differing rows in cdp.identity_map"].value == 0

    # A map changed behind identity's back is not trusted: the next run resolves again and restores it.
    resolved = platform.sql("select * from cdp.identity_map order by all")
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        conn.execute("delete from cdp.identity_map where source_record_id = 'NEW-1'")
    restored = _identity(platform.refresh())
    assert restored["mode"] == "full"
    assert restored["reason"] == "cdp.identity_map changed since the last identity run"
    assert platform.sql("select * from cdp.identity_map order by all") == resolved
