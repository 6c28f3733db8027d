"""Refresh without new data: the time-windows schedule, calendar days in the configured zone, source
freshness checks and run-failure alerts to a webhook."""

import json
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.definitions import build_definitions
from cdp_assets.profiles.assets import build_profiles
from resources.config import ConfigError, load_config
from resources.config.refresh import AS_OF_TAG
from resources.sql import Sql
from sensors.alerts import alert_text
from sensors.freshness import freshness_evaluation
from sensors.schedules import TIME_WINDOWS_SCHEDULE, build_time_windows_schedule

ORDER_AT = datetime(2026, 3, 1, 3, 0)  # 22:00 on 28 February in New York


def write_config(folder: Path, **top: object) -> Path:
    """A CRM person source and a shop orders source linked by e-mail, a lapsed-buyers segment."""
    raw: dict[str, object] = {
        "warehouse": {"path": str(folder / "warehouse.duckdb")},
        "landing": {"path": str(folder / "landing"), "settle_seconds": 0},
        "profiles": {"as_of": "now"},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "email": "email"},
                "identifiers": [{"path": "email", "type": "email"}],
            },
            {
                "name": "orders",
                "format": "csv",
                "glob": "orders/*.csv",
                "role": "transactions",
                "record_id": "id",
                "event_id": "id",
                "fields": {"occurred_at": "at", "amount": "total"},
                "identifiers": [{"path": "email", "type": "email"}],
                "expected_every": "1 day",
            },
        ],
        "segments": [{"name": "lapsed", "where": "order_count > 0 and days_since_last_order > 90"}],
        **top,
    }
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "landing" / "crm").mkdir(parents=True)
    (folder / "landing" / "orders").mkdir(parents=True)
    (folder / "landing" / "crm" / "people.csv").write_text("id,first,email\nc1,Ann,ann@example.org\n")
    (folder / "landing" / "orders" / "orders.csv").write_text(
        f"id,at,total,email\no1,{ORDER_AT.isoformat()}Z,25.00,ann@example.org\n"
    )
    return path


def days_since(folder: Path) -> list[tuple]:
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute("select days_since_last_order, traits_as_of from cdp.golden_profiles").fetchall()


@pytest.mark.unit
def test_the_schedule_measures_from_its_tick_and_skips_when_windows_do_not_move(tmp_path):
    config = load_config(write_config(tmp_path, refresh={"timezone": "America/New_York"}))
    schedule = build_time_windows_schedule(config)
    assert schedule is not None and schedule.execution_timezone == "America/New_York"
    tick = datetime(2026, 3, 2, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    request = schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert isinstance(request, dg.RunRequest)
    assert request.tags[AS_OF_TAG] == "2026-03-02 05:00:00"  # the tick in UTC, whenever the run starts
    assert request.run_key == "time_windows:2026-03-02 05:00:00"

    historical = config.model_copy(update={"profiles": config.profiles.model_copy(update={"as_of": "latest_activity"})})
    skipped = build_time_windows_schedule(historical)(dg.build_schedule_context(scheduled_execution_time=tick))
    assert isinstance(skipped, dg.SkipReason) and "latest_activity" in skipped.skip_message
    off = config.model_copy(update={"refresh": config.refresh.model_copy(update={"time_windows": None})})
    assert build_time_windows_schedule(off) is None


@pytest.mark.dagster
def test_the_nightly_job_runs_the_refreshed_assets_checks_but_not_the_rebuild_check():
    """The rebuild check costs a refresh of its own: it runs on its own schedule, not with every tick."""
    from cdp_assets.definitions import defs

    schedule = next(s for s in defs.schedules if s.name == TIME_WINDOWS_SCHEDULE)
    job = defs.resolve_job_def(schedule.job_name)
    assert {"profiles__golden_profiles", "segments__lapsed_buyers"} <= set(job.graph.node_names())
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert {"one_profile_per_customer", "members_have_profiles", "every_change_delivered"} <= checks
    assert "equals_a_rebuild" not in checks


@pytest.mark.unit
@pytest.mark.parametrize(
    ("refresh", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "refresh.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"time_windows": "every day"}, "refresh.time_windows: 'every day' is not a cron expression"),
    ],
)
def test_refresh_settings_are_validated_at_load(tmp_path, refresh, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, refresh=refresh))


@pytest.mark.unit
def test_a_cron_naming_the_nth_weekday_of_the_month_is_taken(tmp_path):
    """`0 5 * * 0#1` (the first Sunday of each month, at 05:00) is a cron Dagster's schedules run: a monthly
    rebuild check must not be refused as "not a cron expression of five fields"."""
    config = load_config(write_config(tmp_path, refresh={"rebuild_check": "0 5 * * 0#1"}))
    assert build_definitions(config).resolve_schedule_def("rebuild_check_schedule").cron_schedule == "0 5 * * 0#1"


@pytest.mark.unit
def test_expected_every_is_a_span_of_time(tmp_path):
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["sources"][1]["expected_every"] = "1 month"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"sources\[1\] \(orders\)\.expected_every: '.*' must look like '30 minutes'"):
        load_config(path)


@pytest.mark.dagster
def test_a_lapsed_buyer_enters_the_segment_on_the_day_they_lapse_with_no_new_file(tmp_path):
    """Two ticks of the schedule eleven days apart, no file in between: the first measures 89 days since
    the order, the second 100; the buyer enters `lapsed` on the second, in the New York calendar."""
    config = load_config(write_config(tmp_path, refresh={"timezone": "America/New_York"}))
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    # Loaded just after the order, as time measured from now never goes back to before the last run's.
    loaded = {AS_OF_TAG: "2026-03-01 12:00:00"}
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance, tags=loaded).success
    schedule = defs.resolve_schedule_def(TIME_WINDOWS_SCHEDULE)
    job = defs.resolve_job_def(schedule.job_name)
    zone = ZoneInfo("America/New_York")
    # The order was placed on 28 February in New York (1 March in UTC): 89 New York days before 28 May.
    ticks = ((datetime(2026, 5, 28, tzinfo=zone), 89, 0), (datetime(2026, 6, 8, tzinfo=zone), 100, 1))
    for tick, days, members in ticks:
        request = schedule(dg.build_schedule_context(scheduled_execution_time=tick))
        assert job.execute_in_process(instance=instance, tags=request.tags).success
        as_of = tick.astimezone(UTC).replace(tzinfo=None)
        assert days_since(tmp_path) == [(days, as_of)]
        with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
            assert conn.execute("select count(*) from cdp.segment_membership where segment = 'lapsed'").fetchone() == (
                members,
            )


@pytest.mark.unit
def test_now_in_a_condition_reads_the_as_of_time_so_a_scheduled_tick_moves_traits_and_members(tmp_path):
    """`now()` in a segment or trait condition is the profiles' as-of time, not the machine's clock: the
    tick two weeks after the order counts it as recent and not lapsed, the tick a hundred days after
    the other way round, with no file between them and whatever day the test runs."""
    write_config(tmp_path, segments=[{"name": "lapsed", "where": "last_order_at < now() - interval 90 days"}])
    raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
    raw["profiles"]["traits"] = [
        {
            "name": "orders_lately",
            "from": "transactions",
            "aggregate": "count",
            "where": "occurred_at > now() - interval 30 days",
        }
    ]
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(tmp_path / "cdp.yaml")
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    schedule = defs.resolve_schedule_def(TIME_WINDOWS_SCHEDULE)
    job = defs.resolve_job_def(schedule.job_name)
    first = schedule(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 15, tzinfo=UTC)))
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance, tags=first.tags).success
    for tick, recent, lapsed in ((datetime(2026, 3, 15), 1, 0), (datetime(2026, 6, 9), 0, 1)):
        request = schedule(dg.build_schedule_context(scheduled_execution_time=tick.replace(tzinfo=UTC)))
        assert job.execute_in_process(instance=instance, tags=request.tags).success
        with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
            assert conn.execute("select orders_lately from cdp.golden_profiles").fetchall() == [(recent,)]
            assert conn.execute("select count(*) from cdp.segment_membership where segment = 'lapsed'").fetchone() == (
                lapsed,
            )


@pytest.mark.dagster
def test_days_since_counts_the_calendar_days_of_the_configured_zone(tmp_path):
    """At midnight in New York on 2 March, an order placed there at 22:00 on 28 February is two days old; in
    UTC (placed at 03:00 on 1 March, measured at 05:00 on 2 March) it is one."""
    path = write_config(tmp_path)
    defs = build_definitions(load_config(path))
    instance = dg.DagsterInstance.ephemeral()
    loaded = {AS_OF_TAG: "2026-03-01 12:00:00"}  # just after the order: time measured from now never goes back
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance, tags=loaded).success
    midnight_new_york = datetime(2026, 3, 2, 5, 0)
    for zone, days in (("UTC", 1), ("America/New_York", 2)):
        config = load_config(path)
        config = config.model_copy(update={"refresh": config.refresh.model_copy(update={"timezone": zone})})
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            build_profiles(Sql(conn), config, now=midnight_new_york)
        assert days_since(tmp_path) == [(days, midnight_new_york)]


@pytest.mark.dagster
def test_a_source_that_stops_sending_is_marked_stale(tmp_path):
    """The sensor's verdict on a source with `expected_every`: stale (WARN) until a file has loaded, fresh
    after, stale again once the span has passed with no file; recorded when it changes, once an hour while
    it holds. No refresh runs the check, and the landing sensor's extracts run only their own."""
    config = load_config(write_config(tmp_path))
    defs = build_definitions(config)
    check_keys = {key for check in defs.asset_checks or [] for key in check.check_keys}
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "orders"]), "fresh") in check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "crm"]), "fresh") not in check_keys  # no expected_every
    sensor = defs.resolve_sensor_def("source_freshness")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None) -> dg.SensorResult:
        return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))

    never = tick(None)
    (verdict,) = never.asset_events
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.WARN
    assert verdict.metadata["last_loaded_at"].value == "never"
    assert tick(never.cursor).asset_events == []  # the same verdict is not recorded every minute

    refresh = defs.resolve_job_def("full_refresh").execute_in_process(instance=instance)
    assert refresh.success
    assert all(e.check_name != "fresh" for e in refresh.get_asset_check_evaluations())
    loaded = tick(never.cursor)
    (verdict,) = loaded.asset_events
    assert verdict.passed

    # Executed by hand (from the asset's page), or with the asset in a run: the same verdict.
    fresh_checks = [c for c in defs.asset_checks or [] if any(k.name == "fresh" for k in c.check_keys)]
    by_hand = dg.define_asset_job("fresh_by_hand", selection=dg.AssetSelection.checks(*fresh_checks))
    run = dg.Definitions.merge(defs, dg.Definitions(jobs=[by_hand])).resolve_job_def("fresh_by_hand")
    executed = [
        e for e in run.execute_in_process(instance=instance).get_asset_check_evaluations() if e.check_name == "fresh"
    ]
    assert [e.passed for e in executed] == [True]

    # A day and a minute after the file loaded, with no file since: stale again, recorded at once. A
    # refresh that loads nothing materializes the extract again but is no load: it does not reset the span.
    orders = next(s for s in config.sources if s.name == "orders")
    last = datetime.fromisoformat(verdict.metadata["last_loaded_at"].value).timestamp()
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    again = instance.get_latest_materialization_event(dg.AssetKey(["raw", "orders"])).timestamp
    assert again > last
    assert not freshness_evaluation(instance, orders, last + 86_460).passed
    assert not freshness_evaluation(instance, orders, (last + again) / 2 + 86_400).passed
    assert freshness_evaluation(instance, orders, last + 86_340).passed
    assert freshness_evaluation(instance, orders, last + 86_340).metadata["last_loaded_at"].value == (
        verdict.metadata["last_loaded_at"].value
    )


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _failing_run(defs: dg.Definitions, folder: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A run of the orders extract that fails with a plain error: its warehouse path is a folder."""
    failing = dg.define_asset_job("failing", selection=[dg.AssetKey(["raw", "orders"])])
    if not (folder / "warehouse.duckdb").is_dir():
        (folder / "warehouse.duckdb").mkdir()
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[failing]))
        .resolve_job_def("failing")
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert not result.success
    return result


def _ticker(defs: dg.Definitions, instance: dg.DagsterInstance):
    """The alert sensor's real ticks (Dagster's evaluation, its cursor carried from one to the next), as the
    daemon runs them: a function returning each tick's data."""
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin

    sensor = defs.resolve_sensor_def("run_failure_alerts")
    cursor: list[str | None] = [None]

    def tick():
        context = dg.SensorEvaluationContext(
            instance_ref=None,
            cursor=cursor[0],
            instance=instance,
            repository_def=defs.get_repository_def(),
            repository_name=defs.get_repository_def().name,
            code_location_origin=RegisteredCodeLocationOrigin("cdp_assets.definitions"),
        )
        data = sensor.evaluate_tick(context)
        cursor[0] = data.cursor if data.cursor is not None else cursor[0]
        return data

    return tick


@pytest.fixture
def webhook():
    """A Slack-compatible receiver on a free port, answering `_Webhook.status`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        _Webhook.status = 200
        _Webhook.received.clear()
        server.shutdown()


@pytest.mark.dagster
def test_a_failed_run_is_posted_to_the_alert_webhook(tmp_path, monkeypatch, webhook):
    """A run that fails posts its run id, job, the asset whose step failed, the error that failed it and a link
    to the run."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    defs = build_definitions(load_config(write_config(tmp_path, alerts={"ui_url": "http://cdp.example:3000/"})))
    with dg.instance_for_test() as instance:
        tick = _ticker(defs, instance)
        tick()
        result = _failing_run(defs, tmp_path, instance)
        tick()
    (message,) = _Webhook.received
    text = message["text"]
    assert text.startswith(f"Run {result.run_id[:8]} of failing failed.")
    # The asset, and what went wrong, not Dagster's "Error occurred while executing op" around it.
    assert "• raw/orders: RedactedError: IOException: IO Error:" in text, text
    assert "Is a directory" in text and "executing op" not in text
    assert text.endswith(f"<http://cdp.example:3000/runs/{result.run_id}|Open the run>")


@pytest.mark.dagster
def test_an_alert_the_webhook_refused_is_posted_once_it_answers_again(tmp_path, monkeypatch, webhook):
    """A webhook answering 500 (Slack down) keeps the alert: the ticks that cannot deliver it say so (the first
    skipped with the reason, the next failed), and the first tick after the webhook recovers posts it, once."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    defs = build_definitions(load_config(write_config(tmp_path)))
    with dg.instance_for_test() as instance:
        tick = _ticker(defs, instance)
        tick()
        _Webhook.status = 500
        first = _failing_run(defs, tmp_path, instance)
        held = tick()
        assert held.skip_message and "answered 500; 1 alert(s) held back" in held.skip_message
        with pytest.raises(RuntimeError, match="answered 500"):
            tick()  # nothing new to remember: the tick fails, and the UI shows it
        assert len(_Webhook.received) == 2  # both refused
        second = _failing_run(defs, tmp_path, instance)
        _Webhook.status = 200
        _Webhook.received.clear()
        tick()
        tick()
    texts = [m["text"] for m in _Webhook.received]
    assert [t.split()[1] for t in texts] == [first.run_id[:8], second.run_id[:8]], texts


@pytest.mark.dagster
def test_a_run_killed_in_a_step_is_alerted_with_that_step_and_the_reason(tmp_path, monkeypatch, webhook):
    """A run whose process died (out of memory, kill -9) has no failed step: run monitoring marks the run failed.
    The alert names the step it died in and run monitoring's reason, not "failed before any step did"."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    defs = build_definitions(load_config(write_config(tmp_path)))
    started, release = threading.Event(), threading.Event()

    @dg.asset(key=["profiles", "slow"])
    def slow() -> None:
        started.set()
        release.wait(timeout=60)

    job = dg.Definitions(assets=[slow], jobs=[dg.define_asset_job("nightly", selection=[slow])]).resolve_job_def(
        "nightly"
    )
    with dg.instance_for_test() as instance:
        tick = _ticker(defs, instance)
        tick()
        results: list[dg.ExecuteInProcessResult] = []
        worker = threading.Thread(
            target=lambda: results.append(job.execute_in_process(instance=instance, raise_on_error=False))
        )
        worker.start()
        try:
            assert started.wait(timeout=60)
            [run] = instance.get_runs()
            # What run monitoring does when it finds the run's process gone.
            instance.report_run_failed(run, "Detected run worker status FAILED: process 4242 is not running.")
            tick()
        finally:
            release.set()
            worker.join()
    (message,) = _Webhook.received
    assert message["text"].splitlines()[1] == (
        "• profiles/slow: stopped in this step: Detected run worker status FAILED: process 4242 is not running."
    ), message["text"]


@pytest.mark.dagster
@pytest.mark.parametrize("is_http", [True, False])
def test_a_webhook_that_cannot_be_reached_fails_the_tick_without_its_secret_url(tmp_path, monkeypatch, is_http):
    """A Slack webhook's URL carries its token in the path; requests' own error quotes the whole URL, and a
    tick's reason or error is kept in Dagster's storage and shown in the UI."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0/B0/s3cretT0ken" if is_http else "hooks.example/services/s3cretT0ken"
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", url)
    defs = build_definitions(load_config(write_config(tmp_path)))
    sensor = defs.resolve_sensor_def("run_failure_alerts")
    with dg.instance_for_test() as instance:
        started = sensor(dg.build_sensor_context(instance=instance))
        _failing_run(defs, tmp_path, instance)
        held = sensor(dg.build_sensor_context(instance=instance, cursor=started.cursor))
        with pytest.raises(RuntimeError) as failed:
            sensor(dg.build_sensor_context(instance=instance, cursor=held.cursor))
    message = str(failed.value)
    assert "s3cretT0ken" not in message and failed.value.__cause__ is None
    assert "s3cretT0ken" not in held.skip_reason.skip_message
    expected = (
        f"the alert webhook got no answer (ConnectionError: cannot connect to http://127.0.0.1:{port}: "
        if is_http
        else "CDP_ALERT_WEBHOOK_URL does not hold an http(s) URL (MissingSchema;"
    )
    assert message.startswith(expected), message
    assert held.skip_reason.skip_message.startswith(expected)


@pytest.mark.dagster
def test_a_run_started_outside_any_code_location_is_alerted_too(tmp_path, monkeypatch, webhook):
    """`dagster job execute` records a run with no code location; the sensor's own tick in its code location
    (not its function called by hand) must still pick that run's failure up and post it."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    defs = build_definitions(load_config(write_config(tmp_path)))
    with dg.instance_for_test() as instance:
        tick = _ticker(defs, instance)
        tick()
        result = _failing_run(defs, tmp_path, instance)
        assert result.dagster_run.remote_job_origin is None
        tick()
    (message,) = _Webhook.received
    assert message["text"].startswith(f"Run {result.run_id[:8]} of failing failed.")


@pytest.mark.dagster
def test_a_source_turning_stale_and_fresh_again_is_posted_to_the_alert_webhook(tmp_path, monkeypatch, webhook):
    """A WARN check nobody looks at does not wake anyone: the change of verdict is posted, once, and a message
    the webhook refused is posted on the next tick."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    config = load_config(write_config(tmp_path, alerts={"ui_url": "http://cdp.example:3000"}))
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("source_freshness")
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))

        _Webhook.status = 500
        refused = tick(None)  # never loaded: stale, but the webhook is down
        assert len(_Webhook.received) == 1
        _Webhook.status = 200
        _Webhook.received.clear()
        stale = tick(refused.cursor)
        assert [m["text"] for m in _Webhook.received] == [
            "Source orders is stale: no file has loaded for over 1 day (expected_every); last file loaded: never.\n"
            "<http://cdp.example:3000/assets/raw/orders|Open the asset>"
        ]
        same = tick(stale.cursor)
        assert len(_Webhook.received) == 1  # told once
        assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
        tick(same.cursor)
    assert len(_Webhook.received) == 2
    assert _Webhook.received[1]["text"].startswith("Source orders is fresh again: a file loaded at ")


@pytest.mark.dagster
def test_a_file_quarantined_whole_is_posted_to_the_alert_webhook_once(tmp_path, monkeypatch, webhook):
    """A broken export fails no run (its source's other files and the other sources load), so no run-failure
    alert would tell anyone that none of its rows loaded: the file is posted, once, however many extracts
    see it again."""
    monkeypatch.setenv("CDP_ALERT_WEBHOOK_URL", f"{webhook}/hook")
    config = load_config(write_config(tmp_path, alerts={"ui_url": "http://cdp.example:3000"}))
    defs = build_definitions(config)
    (tmp_path / "landing" / "crm" / "broken.csv").write_text("id;first;email\nc2;Bo;bo@example.org\n")
    with dg.instance_for_test() as instance:
        tick = _ticker(defs, instance)
        tick()
        for _ in range(2):
            assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
            tick()
        # A run that fails before the check gives a verdict (the warehouse cannot be opened) leaves the check
        # planned: what was told stands, and the next extract, finding the same file, posts nothing again.
        warehouse = tmp_path / "warehouse.duckdb"
        warehouse.rename(tmp_path / "kept.duckdb")
        warehouse.mkdir()
        failing = defs.resolve_job_def("full_refresh").execute_in_process(instance=instance, raise_on_error=False)
        assert not failing.success
        tick()
        warehouse.rmdir()
        (tmp_path / "kept.duckdb").rename(warehouse)
        assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
        tick()
    (message, failed) = _Webhook.received
    assert failed["text"].startswith("Run ")
    assert message["text"] == (
        "Source crm: files quarantined whole, none of their rows loaded: crm/broken.csv.\n"
        "<http://cdp.example:3000/assets/raw/crm|Open the asset (check files_readable has the reasons)>"
    )


@pytest.mark.unit
def test_an_alert_keeps_to_the_first_line_of_each_error():
    run = dg.DagsterRun(job_name="full_refresh", run_id="0123456789abcdef")
    text = alert_text(run, [("profiles__golden_profiles", "boom\n  Traceback ...\n" + "x" * 1000)], "http://ui")
    assert text.splitlines() == [
        "Run 01234567 of full_refresh failed.",
        "• profiles__golden_profiles: boom",
        "<http://ui/runs/0123456789abcdef|Open the run>",
    ]
