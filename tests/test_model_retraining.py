"""The matching model is kept between runs and trained afresh on demand, on schedule, when the settings
change or the data doubles; the model in use and when it was trained are in the identity metadata."""

import dagster as dg
import pytest

from cdp_assets.definitions import build_definitions
from cdp_assets.identity.assets import IDENTITY_CLUSTERS
from sensors.schedules import MODEL_RETRAINING_SCHEDULE, RETRAIN_JOB
from tests.fixtures import make_platform

pytestmark = pytest.mark.dagster


def _model(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    (materialization,) = result.asset_materializations_for_node("identity__clusters")
    return materialization.metadata["model_training"].value, materialization.metadata["model_trained_at"].value


def test_the_model_is_kept_until_retrained(tmp_path, instance, destination_server):
    platform = make_platform(tmp_path, instance, destination_server.url, people=300)
    first = platform.refresh()
    assert first.success
    training, trained_at = _model(first)
    assert training.startswith("trained: no kept model fits")
    weights = platform.sql("select * from identity.model order by all")

    identity_only = platform.defs.resolve_implicit_global_asset_job_def()
    again = identity_only.execute_in_process(instance=instance, asset_selection=[IDENTITY_CLUSTERS])
    assert _model(again) == ("kept", trained_at)
    assert platform.sql("select * from identity.model order by all") == weights

    retrained = platform.defs.resolve_job_def(RETRAIN_JOB).execute_in_process(instance=instance)
    training, retrained_at = _model(retrained)
    assert training == "retrained: requested" and retrained_at > trained_at
    # Run headless, it leaves the profiles and members naming the ids the identity map has.
    materialized = {e.asset_key.to_user_string() for e in retrained.get_asset_materialization_events()}
    assert {"profiles/golden_profiles", "cdp/read_snapshot"} <= materialized
    orphans = (
        "select count(*) from cdp.golden_profiles where customer_id not in (select customer_id from cdp.identity_map)"
    )
    assert platform.sql(orphans) == [(0,)]

    schedule = platform.defs.resolve_schedule_def(MODEL_RETRAINING_SCHEDULE)
    assert schedule.job_name == RETRAIN_JOB and schedule.cron_schedule == "0 3 * * 0"

    # Another matching setting: the kept model fits settings no longer in force.
    changed = platform.config.identity.matching.model_copy(update={"u_sample_pairs": 50_000})
    config = platform.config.model_copy(
        update={"identity": platform.config.identity.model_copy(update={"matching": changed})}
    )
    rerun = build_definitions(config).resolve_implicit_global_asset_job_def()
    training, _ = _model(rerun.execute_in_process(instance=instance, asset_selection=[IDENTITY_CLUSTERS]))
    assert training.startswith("trained: no kept model fits")
