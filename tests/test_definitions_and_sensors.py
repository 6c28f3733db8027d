"""Definitions load from the repository's configuration; the landing sensor and automation react to new data."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.definitions import build_definitions
from cdp_assets.profiles.assets import GOLDEN_PROFILES
from cdp_assets.segments.assets import REMOVED_SEGMENTS, segment_key
from resources.config import load_config
from tests.fixtures import REPO, write_config

pytestmark = pytest.mark.dagster


def test_dagster_cli_reports_an_invalid_configuration_without_a_traceback(tmp_path):
    """`dagster job execute` lets a load error escape to Python; the user sees our message, not its frames."""
    bad = tmp_path / "cdp.yaml"
    bad.write_text("warehouse:\n  path: wh.duckdb\nsources:\n  - name: crm\n    format: csvv\n")
    env = {**os.environ, "CDP_CONFIG": str(bad), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "cdp_assets.definitions", "-j", "full_refresh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert f"ConfigError: {bad}: invalid configuration" in done.stderr
    assert "sources[0] (crm).format: Input should be 'csv'" in done.stderr


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
        "segments/removed_segments",
    } <= keys
    assert {f"segments/{s.name}" for s in config.segments} <= keys
    for segment in config.segments:
        assert graph.get(segment_key(segment.name)).description == segment.description
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
        "privacy",
    }
    # The read snapshot follows every stage that writes a public table, and is part of the full refresh.
    snapshot = dg.AssetKey(["cdp", "read_snapshot"])
    writers = {k for k in keys if not k.startswith(("syncs/", "cdp/", "privacy/"))}
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


def test_files_of_several_sources_landing_together_are_loaded_by_one_run(tmp_path):
    """A CRM export and a support export dropped together are extracted by one run: automation then sees both
    sources change at once and refreshes cleaning, identity, profiles and syncs once, not once per source."""
    config = load_config(write_config(tmp_path))
    defs = build_definitions(config)
    landing = config.landing_path
    (landing / "crm").mkdir(parents=True)
    (landing / "support").mkdir(parents=True)
    for i in range(3):
        crm = landing / "crm" / f"contacts_{i}.csv"
        crm.write_text(f"ContactId,Email\n{i},p{i}@example.org\n")
        _age(crm)
    support = landing / "support" / "t1.csv"
    support.write_text(
        "ticket_id,requester_email,requester_name,subject,status,priority,created_at\n"
        "T-1,p1@example.org,P One,hi,open,low,2025-01-01T00:00:00Z\n"
    )
    _age(support)
    sensor = defs.resolve_sensor_def("landing_files_sensor")
    keys = [dg.AssetKey(["raw", "crm_contacts"]), dg.AssetKey(["raw", "support_tickets"])]
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        [request] = result.run_requests
        assert sorted(request.asset_selection) == keys
        assert request.tags["cdp/new_files"] == "4"
        run = dg.materialize(
            [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key in keys],
            instance=instance,
            resources=defs.resources,
            run_config=request.run_config,
        )
        assert run.success
        assert sorted(e.asset_key for e in run.get_asset_materialization_events()) == keys
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs))
        assert again.run_requests == []


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


def test_the_landing_sensor_starts_from_what_a_headless_refresh_already_loaded(tmp_path):
    config = load_config(write_config(tmp_path))
    folder = config.landing_path / "support"
    folder.mkdir(parents=True)
    header = "ticket_id,requester_email,requester_name,subject,status,priority,created_at\n"
    loaded = folder / "t1.csv"
    loaded.write_text(header + "T-1,a@b.org,A B,hi,open,low,2025-01-01T00:00:00Z\n")
    _age(loaded)
    defs = build_definitions(config)
    asset = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
    sensor = defs.resolve_sensor_def("landing_files_sensor")
    with dg.instance_for_test() as instance:
        # `dagster job execute` loads the file before `dagster dev` starts the sensor, which has no cursor yet.
        assert dg.materialize(asset, instance=instance, resources=defs.resources).success
        first = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert not [r for r in first.run_requests if r.tags["cdp/source"] == "support_tickets"]
        assert list(json.loads(first.cursor)["support_tickets"]) == ["support/t1.csv"]

        later = folder / "t2.csv"
        later.write_text(header + "T-2,c@d.org,C D,hello,open,low,2025-01-02T00:00:00Z\n")
        _age(later)
        second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
        [request] = [r for r in second.run_requests if r.tags["cdp/source"] == "support_tickets"]
        assert request.tags["cdp/new_files"] == "1"

        # `dagster dev` stopped, a headless refresh loads a third file (and the second), `dagster dev` starts
        # again with the sensor's cursor as it left it: both are loaded, not new.
        third = folder / "t3.csv"
        third.write_text(header + "T-3,e@f.org,E F,hey,open,low,2025-01-03T00:00:00Z\n")
        _age(third)
        assert dg.materialize(asset, instance=instance, resources=defs.resources).success
        restarted = sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor, definitions=defs))
        assert not [r for r in restarted.run_requests if r.tags["cdp/source"] == "support_tickets"]
        assert sorted(json.loads(restarted.cursor)["support_tickets"]) == [f"support/t{i}.csv" for i in (1, 2, 3)]


def _waiting_one_second_for_the_warehouse(tmp_path: Path):
    """The test configuration with `warehouse.lock_timeout_seconds: 1`: a run fails soon on a held warehouse."""
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["warehouse"]["lock_timeout_seconds"] = 1
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@contextmanager
def _warehouse_held(database: Path) -> Iterator[None]:
    """Another process holds the warehouse open meanwhile, as a notebook or a stray run would."""
    script = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()


def test_the_landing_sensor_retries_an_extract_whose_run_failed_and_stops_once_it_loads(tmp_path):
    """The sensor requests a file once; when that run fails (here the warehouse is held by another process
    past the lock timeout), nothing else would load the file until another one lands. The sensor starts the
    extract again after a wait that doubles with each failure, once per failed run, and stops once it loads."""
    from resources.run_retries import RETRY_ATTEMPTS, RETRY_FIRST_AFTER_SECONDS
    from sensors.landing import RETRY_TAG, build_landing_sensor

    config = _waiting_one_second_for_the_warehouse(tmp_path)
    folder = config.landing_path / "support"
    folder.mkdir(parents=True)
    (folder / "t1.csv").write_text(
        "ticket_id,requester_email,requester_name,subject,status,priority,created_at\n"
        "T-1,a@b.org,A B,hi,open,low,2025-01-01T00:00:00Z\n"
    )
    _age(folder / "t1.csv")
    defs = build_definitions(config)
    asset = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
    now = [time.time()]
    sensor = build_landing_sensor(config, clock=lambda: now[0])

    def ours(result: dg.SensorResult) -> list[dg.RunRequest]:
        return [r for r in result.run_requests if r.tags["cdp/source"] == "support_tickets"]

    def extract(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            asset,
            instance=instance,
            resources=defs.resources,
            run_config=request.run_config,
            tags=request.tags,
            raise_on_error=False,
        )

    def failed_at() -> float:
        [record] = instance.get_asset_records([asset[0].key])
        return instance.get_run_record_by_id(record.asset_entry.last_run_id).end_time

    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance))
        [request] = ours(first)
        with _warehouse_held(config.warehouse_path):
            assert not extract(request).success
            cursor = first.cursor
            for attempt in range(1, RETRY_ATTEMPTS + 1):
                wait = RETRY_FIRST_AFTER_SECONDS * 2 ** (attempt - 1)
                now[0] = failed_at() + wait - 1
                early = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
                assert (
                    ours(early) == []
                    and "'support_tickets' retries its failed extract at" in early.skip_reason.skip_message
                )
                now[0] = failed_at() + wait + 1
                [retry] = ours(sensor(dg.build_sensor_context(instance=instance, cursor=cursor)))
                assert retry.tags[RETRY_TAG] == str(attempt) and retry.run_key != request.run_key
                # Another tick before the retry has run asks for the same run, which Dagster starts once.
                assert (
                    ours(sensor(dg.build_sensor_context(instance=instance, cursor=cursor)))[0].run_key == retry.run_key
                )
                if attempt < RETRY_ATTEMPTS:
                    assert not extract(retry).success
                request = retry
        # The warehouse free again, the last retry loads the file, and nothing more is asked for.
        assert extract(request).success
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select count(*) from raw.support_tickets").fetchone() == (1,)
        now[0] += 86_400
        assert ours(sensor(dg.build_sensor_context(instance=instance, cursor=cursor))) == []


def test_the_landing_sensor_gives_up_retrying_after_its_attempts(tmp_path):
    """A failure that is no accident (a bug) is not retried forever: after RETRY_ATTEMPTS retries failed in
    a row, the sensor asks for none (the run-failure alert has reported each)."""
    from resources.run_retries import RETRY_ATTEMPTS
    from sensors.landing import RETRY_TAG, build_landing_sensor

    config = _waiting_one_second_for_the_warehouse(tmp_path)
    (config.landing_path / "support").mkdir(parents=True)
    (config.landing_path / "support" / "t1.csv").write_text("ticket_id\nT-1\n")
    defs = build_definitions(config)
    asset = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
    sensor = build_landing_sensor(config, clock=lambda: time.time() + 10**7)
    with _warehouse_held(config.warehouse_path), dg.instance_for_test() as instance:
        cursor = sensor(dg.build_sensor_context(instance=instance)).cursor  # the file requested once
        failed = dg.materialize(
            asset,
            instance=instance,
            resources=defs.resources,
            tags={RETRY_TAG: str(RETRY_ATTEMPTS)},
            raise_on_error=False,
        )
        assert not failed.success
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
        assert [r for r in result.run_requests if r.tags.get(RETRY_TAG)] == []


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
        *[f"segments/{s.name}" for s in config.segments],
        "segments/removed_segments",
        "cdp/read_snapshot",
        *[f"syncs/{d.name}" for d in config.destinations],
    ]
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert settled.total_requested == 0

        # One segment refreshed alone: its syncs and the snapshot follow, no other segment or sync does.
        high_value = [a for a in defs.assets if a.key == segment_key("high_value")]
        dg.materialize(high_value, instance=instance, resources=defs.resources)
        after_segment = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
        followers = {
            dg.AssetKey(["cdp", "read_snapshot"]),
            *(dg.AssetKey(["syncs", d.name]) for d in config.destinations if d.segment == "high_value"),
        }
        assert len(followers) == 3  # crm_high_value, high_value_csv and the snapshot
        all_keys = defs.resolve_asset_graph().get_all_asset_keys()
        assert {k for k in all_keys if after_segment.get_num_requested(k)} == followers
        # Run what automation asked for (the daemon would); then nothing is left to do.
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=list(followers)).success
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_segment.cursor)
        assert quiet.total_requested == 0

        extract = [a for a in defs.assets if a.key == dg.AssetKey(["raw", "support_tickets"])]
        dg.materialize(extract, instance=instance, resources=defs.resources)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        requested = {k for k in map(dg.AssetKey.from_user_string, downstream) if result.get_num_requested(k)}
        assert requested == set(map(dg.AssetKey.from_user_string, downstream))
        assert result.get_num_requested(dg.AssetKey(["clean", "person_records"])) == 0
        assert result.get_num_requested(dg.AssetKey(["raw", "crm_contacts"])) == 0


def test_each_sync_follows_the_segment_it_sends_and_the_profiles(tmp_path):
    config = load_config(write_config(tmp_path))
    raw = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    webhook = next(d for d in raw["destinations"] if d["type"] == "webhook")
    everyone = {**webhook, "name": "everyone_webhook", "segment": None}
    config = load_config(write_config(tmp_path, destinations=[*raw["destinations"], everyone]))
    graph = build_definitions(config).resolve_asset_graph()
    segments = {segment_key(s.name) for s in config.segments}
    for destination in config.destinations:
        parents = graph.get(dg.AssetKey(["syncs", destination.name])).parent_keys
        expected = {segment_key(destination.segment)} if destination.segment else set()
        assert parents & segments == expected, destination.name
        assert GOLDEN_PROFILES in parents and REMOVED_SEGMENTS not in parents, destination.name
    assert graph.get(dg.AssetKey(["syncs", "everyone_webhook"])).parent_keys == {GOLDEN_PROFILES}
    # The read snapshot follows every segment; every segment follows the profiles.
    snapshot = graph.get(dg.AssetKey(["cdp", "read_snapshot"])).parent_keys
    assert segments | {REMOVED_SEGMENTS} <= snapshot
    assert all(graph.get(k).parent_keys == {GOLDEN_PROFILES} for k in segments | {REMOVED_SEGMENTS})


def test_platform_policy_is_on_every_asset():
    from cdp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    eager = dg.AutomationCondition.eager()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        marketing = node.group_name in ("segments", "destination_syncs")
        assert node.owners == ["team:marketing-ops" if marketing else "team:data-engineering"], key
        if node.group_name in ("source_extracts", "privacy"):
            # The landing sensor starts extracts; the requests sensor or a user starts privacy requests.
            assert node.automation_condition is None, key
        else:
            assert node.automation_condition == eager, key
            assert node.code_version, key
        assert "duckdb" in node.kinds, key
        assert "dagster/code_references" in node.metadata, key
        table = node.metadata["dagster/table_name"]
        assert table.split(".")[0] in ("raw", "clean", "identity", "cdp", "syncs", "main", "privacy"), key
        assert node.metadata["tables_written"].startswith(table), key
    assert graph.get(dg.AssetKey(["profiles", "golden_profiles"])).metadata["tables_written"] == (
        "cdp.golden_profiles, cdp.profile_provenance"
    )
    assert graph.get(segment_key("high_value")).metadata["dagster/table_name"] == "cdp.segment_membership"


def test_editing_the_overrides_file_re_resolves_identity(tmp_path):
    config_path = write_config(tmp_path)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("action,record,other,author,reason\n")
    raw = yaml.safe_load(config_path.read_text())
    raw.setdefault("identity", {})["overrides"] = "overrides.csv"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(config_path)
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("identity_overrides_sensor")
    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert first.run_requests == []  # the first tick only records the file
        same = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
        assert same.run_requests == []
        overrides.write_text("action,record,other,author,reason\nunmerge,crm_contacts/C1,,ana,wrong person\n")
        edited = sensor(dg.build_sensor_context(instance=instance, cursor=same.cursor, definitions=defs))
        assert [r.asset_selection for r in edited.run_requests] == [[dg.AssetKey(["identity", "clusters"])]]
