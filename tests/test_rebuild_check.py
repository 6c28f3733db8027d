"""The rebuild check: a rebuild from the raw rows gives what the refreshes left, and any difference fails
the check naming the rows."""

import dagster as dg
import duckdb
import pytest

from cdp_assets.consistency.checks import CHECK_NAME
from cdp_assets.definitions import build_definitions
from resources.config import load_config
from sensors.schedules import REBUILD_CHECK_JOB, REBUILD_CHECK_SCHEDULE
from tests.fixtures import make_platform, write_config

pytestmark = pytest.mark.dagster


def _evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    return evaluation


def test_a_rebuild_equals_the_refreshes_and_a_difference_fails_naming_the_rows(tmp_path, instance, destination_server):
    platform = make_platform(tmp_path, instance, destination_server.url, people=300)
    refresh = platform.refresh()
    assert refresh.success
    assert all(e.check_name != CHECK_NAME for e in refresh.get_asset_check_evaluations())  # not in every refresh
    # A second refresh with no new file, then the check: ids, profiles and members as a rebuild gives them.
    assert platform.refresh().success
    check = platform.defs.resolve_job_def(REBUILD_CHECK_JOB)
    evaluation = _evaluation(check.execute_in_process(instance=instance))
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["differing rows in cdp.identity_map"].value == 0
    assert not list(tmp_path.glob("*_rebuild_*"))  # the copy is gone
    assert platform.defs.resolve_schedule_def(REBUILD_CHECK_SCHEDULE).job_name == REBUILD_CHECK_JOB

    # What a faulty incremental step could leave: a record under another customer, a trait off by one, a
    # member that should have left.
    with duckdb.connect(str(platform.config.warehouse_path)) as conn:
        moved, customer = conn.execute(
            "select source_record_id, customer_id from cdp.identity_map where role = 'person' order by all limit 1"
        ).fetchone()
        other = conn.execute(
            "select customer_id from cdp.identity_map where customer_id <> ? order by all limit 1", [customer]
        ).fetchone()[0]
        conn.execute("update cdp.identity_map set customer_id = ? where source_record_id = ?", [other, moved])
        drifted = conn.execute("select customer_id from cdp.golden_profiles order by all limit 1 offset 7").fetchone()[
            0
        ]
        conn.execute("update cdp.golden_profiles set order_count = order_count + 1 where customer_id = ?", [drifted])
        conn.execute("insert into cdp.segment_membership values ('champions', 'cus_stale', now(), now())")
    failed = check.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success  # a difference fails the run, not only the check
    evaluation = _evaluation(failed)
    assert not evaluation.passed
    assert evaluation.description == (
        "differing rows: 1 in cdp.identity_map, "
        f"{evaluation.metadata['differing rows in cdp.golden_profiles'].value} in cdp.golden_profiles, "
        "1 in cdp.segment_membership"
    )
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["differing rows in cdp.identity_map"] == 1
    assert f"| {other} | {customer} |" in metadata["first differing rows in cdp.identity_map"]
    assert metadata["differing rows in cdp.golden_profiles"] >= 1
    assert f"| {drifted} | order_count |" in metadata["first differing rows in cdp.golden_profiles"]
    assert metadata["differing rows in cdp.segment_membership"] == 1
    assert (
        "| champions | cus_stale | only in the warehouse |"
        in metadata["first differing rows in cdp.segment_membership"]
    )


def test_the_check_on_a_warehouse_no_refresh_has_built_compares_nothing_and_passes(tmp_path, instance):
    """The weekly schedule runs from the first day: before the first refresh there is nothing a rebuild could
    differ from, which must not fail the run (and page someone) with DuckDB's missing-table error."""
    defs = build_definitions(load_config(write_config(tmp_path)))
    result = defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    assert result.success
    evaluation = _evaluation(result)
    assert evaluation.passed and evaluation.metadata["compared"].value is False
    assert evaluation.description == "nothing to compare: no refresh has built cdp.golden_profiles yet"
