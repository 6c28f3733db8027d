"""Definitions load from the repository's configuration; the landing sensor and automation react to new data."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from cdp_assets.definitions import build_definitions
from resources.config import load_config
from tests.fixtures import REPO, write_config

pytestmark = pytest.mark.dagster


def test_repository_definitions_load_with_every_stage():
    from cdp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    config = load_config(REPO / "cdp.yaml")
    assert {f"raw/{s.name}" for s in config.sources} <= keys
    assert {
        "clean/person_records",
        "clean/events",
        "clean/transactions",
        "identity/clusters",
        "profiles/golden_profiles",
        "segments/segment_membership",
    } <= keys
    assert {f"syncs/{d.name}" for d in config.destinations} <= keys
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        "source_extracts",
        "cleaned_records",
        "identity",
        "golden_profiles",
        "segments",
        "destination_syncs",
        "read_snapshot",
    }
    # The read snapshot follows every stage that writes a public table, and is part of the full refresh.
    snapshot = dg.AssetKey(["cdp", "read_snapshot"])
    writers = {k for k in keys if not k.startswith(("syncs/", "cdp/"))}
    assert {k.to_user_string() for k in graph.get(snapshot).parent_keys} == writers
    assert snapshot in defs.resolve_job_def("full_refresh").asset_layer.selected_asset_keys
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key
    assert defs.resolve_job_def("full_refresh") is not None
    sensor = defs.resolve_sensor_def("cdp_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("landing_files_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def _age(path: Path, seconds: float = 60) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_landing_sensor_requests_an_extract_for_new_and_changed_files_only(tmp_path):
    config_path = write_config(tmp_path)
    raw = config_path.read_text().replace("settle_seconds: 0", "settle_seconds: 30")
    config_path.write_text(raw)
    config = load_config(config_path)
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("landing_files_sensor")
    landing = config.landing_path
    (landing / "crm").mkdir(parents=True)
    first = landing / "crm" / "contacts_1.csv"
    first.write_text("ContactId\n1\n")
    _age(first)
    fresh = landing / "crm" / "contacts_2.csv"
    fresh.write_text("ContactId\n2\n")  # still being written: too new to load

    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.asset_selection for r in result.run_requests] == [[dg.AssetKey(["raw", "crm_contacts"])]]
        request = result.run_requests[0]
        assert request.run_config["ops"]["raw__crm_contacts"]["config"] == {"skip_if_unchanged": True}
        cursor = json.loads(result.cursor)
        assert list(cursor["crm_contacts"]) == ["crm/contacts_1.csv"]

        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs))
        assert again.run_requests == []

        _age(fresh)
        later = sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor, definitions=defs))
        assert len(later.run_requests) == 1 and later.run_requests[0].run_key != request.run_key

        first.write_text("ContactId\n1\n3\n")
        _age(first, 45)
        changed = sensor(dg.build_sensor_context(instance=instance, cursor=later.cursor, definitions=defs))
        assert len(changed.run_requests) == 1


def test_extract_started_by_the_sensor_skips_materializing_when_nothing_changed(tmp_path):
    config = load_config(write_config(tmp_path))
    (config.landing_path / "support").mkdir(parents=True)
    (config.landing_path / "support" / "t.csv").write_text(
        "ticket_id,requester_email,requester_name,subject,status,priority,created_at\n"
        "T-1,a@b.org,A B,hi,open,low,2025-01-01T00:00:00Z\n"
    )
    defs = build_definitions(config)
    asset = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
    sensor_config = dg.RunConfig(ops={"raw__support_tickets": {"config": {"skip_if_unchanged": True}}})
    with dg.instance_for_test() as instance:
        first = dg.materialize(asset, instance=instance, resources=defs.resources, run_config=sensor_config)
        assert len(first.get_asset_materialization_events()) == 1
        second = dg.materialize(asset, instance=instance, resources=defs.resources, run_config=sensor_config)
        assert second.success and second.get_asset_materialization_events() == []


def test_downstream_stages_follow_a_new_extract_by_automation(tmp_path, destination_server):
    config = load_config(write_config(tmp_path, destination_server.url))
    (config.landing_path / "support").mkdir(parents=True)
    (config.landing_path / "support" / "t.csv").write_text(
        "ticket_id,requester_email,requester_name,subject,status,priority,created_at\n"
        "T-1,a@b.org,A B,hi,open,low,2025-01-01T00:00:00Z\n"
    )
    defs = build_definitions(config)
    downstream = [
        "clean/events",
        "identity/clusters",
        "profiles/golden_profiles",
        "segments/segment_membership",
        "cdp/read_snapshot",
        *[f"syncs/{d.name}" for d in config.destinations],
    ]
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert settled.total_requested == 0

        extract = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
        dg.materialize(extract, instance=instance, resources=defs.resources)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        requested = {k for k in map(dg.AssetKey.from_user_string, downstream) if result.get_num_requested(k)}
        assert requested == set(map(dg.AssetKey.from_user_string, downstream))
        assert result.get_num_requested(dg.AssetKey(["clean", "person_records"])) == 0
        assert result.get_num_requested(dg.AssetKey(["raw", "crm_contacts"])) == 0
