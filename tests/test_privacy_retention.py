"""Retention: a source declaring `retain` loses its older rows everywhere on the retention run, landing file
included, and a later refresh does not load them again."""

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cdp_assets.definitions import build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import load_config
from tests.fixtures import Platform, write_config

pytestmark = pytest.mark.dagster


def test_rows_past_retention_are_deleted_with_their_landing_lines(
    tmp_path: Path, instance: dg.DagsterInstance, destination_server: DestinationServer
):
    generate(people=120, seed=5, out_dir=tmp_path / "landing", truth_path=tmp_path / "truth.csv")
    path = write_config(tmp_path, destination_server.url)
    raw = yaml.safe_load(path.read_text())
    # The demo's orders run to mid 2025: a retention that cuts through them.
    days = (datetime.now() - datetime(2025, 4, 1)).days
    for source in raw["sources"]:
        if source["name"] == "shop_orders":
            source["retain"] = f"{days} days"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    defs = build_definitions(config)
    platform = Platform(tmp_path, config, defs, instance, tmp_path / "truth.csv")
    assert defs.resolve_schedule_def("retention_schedule").cron_schedule == "0 3 * * *"
    assert platform.refresh().success
    cutoff = datetime.now() - timedelta(days=days)
    old = platform.scalar("select count(*) from clean.transactions where occurred_at < ?", [cutoff])
    kept = platform.scalar("select count(*) from clean.transactions where occurred_at >= ?", [cutoff])
    old_ids = [r for (r,) in platform.sql("select event_id from clean.transactions where occurred_at < ?", [cutoff])]
    assert old > 10 and kept > 10
    raw_before = platform.scalar("select count(*) from raw.shop_orders")

    run = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"privacy__requests": {"config": {"retention": True}}}}
    )
    assert run.success
    assert platform.scalar("select count(*) from clean.transactions where occurred_at < ?", [cutoff]) == 0
    assert platform.scalar("select count(*) from clean.transactions") == kept
    assert platform.scalar("select count(*) from raw.shop_orders") == raw_before - old
    [(kind, status, removed)] = platform.sql("select type, status, rows_removed from privacy.requests")
    assert (kind, status) == ("retention", "completed") and removed["raw.shop_orders"] == old
    landed = "".join(p.read_text() for p in (config.landing_path / "shop").glob("orders*.jsonl"))
    assert not any(f'"id": {i},' in landed or f'"id":{i},' in landed for i in old_ids[:50])

    assert platform.refresh().success  # the rewritten files are not loaded again
    assert platform.scalar("select count(*) from clean.transactions") == kept
    assert platform.scalar("select sum(order_count) from cdp.golden_profiles") <= kept
