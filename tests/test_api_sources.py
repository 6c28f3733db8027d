"""API sources: a poll against a real local ticket API (demo/api_server.py) that pages four ways and injects
5xx, 429 with Retry-After, and pages that are not JSON; the cursor, the auth header, the rate limit, and
the poll as a Dagster job whose pages the landing sensor and the extract pick up like dropped files."""

import fcntl
import json
import logging
import random
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
import yaml

from cdp_assets.definitions import build_definitions
from demo.api_server import ApiFaults, ApiServer, make_tickets
from resources.api_source import CURSOR_FILE, PollError, poll_source, read_cursor
from resources.config import ConfigError, load_config
from resources.config.base import MissingSecretError, shown_url
from resources.config.sources import SourceConfig
from resources.retry import RetryPolicy, TransientError, retry_after, with_retries
from tests.fixtures import write_config

STYLES = {
    "cursor": {"style": "cursor", "cursor_path": "meta.next_cursor"},
    "next_url": {"style": "next_url", "next_url_path": "links.next"},
    "page": {"style": "page", "page_size_param": "per_page", "page_size": 40},
    "link": {"style": "link_header"},
}
FAST_RETRY = {"max_attempts": 8, "base_delay_seconds": 0.001, "max_delay_seconds": 0.01, "timeout_seconds": 5}


def ticket_source(url: str, **http: object) -> SourceConfig:
    """The tickets as an events source: one event per ticket version, identified by the ticket id."""
    return SourceConfig.model_validate(
        {
            "name": "helpdesk",
            "format": "http",
            "role": "events",
            "record_id": "id",
            "fields": {"occurred_at": "updated_at", "event": {"value": "Ticket Updated"}, "status": "status"},
            "identifiers": [{"path": "requester_email", "type": "email"}],
            "http": {
                "url": url,
                "records_key": "tickets",
                "incremental": {"field": "updated_at"},
                "retry": FAST_RETRY,
                "records_per_file": 100,
                **http,
            },
        }
    )


def landed(landing: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((landing / "helpdesk").glob("*.jsonl")) for line in f.open()]


# --------------------------------------------------------------------------- configuration and retries


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("http"), r"sources\[1\] \(helpdesk\): .*needs an 'http' section"),
        (lambda s: s.update(glob="x/*.jsonl"), r"glob: an http source lands its pages in <landing>/<name>/"),
        (lambda s: s["http"]["pagination"].pop("cursor_path"), r"\.http\.pagination: .*needs cursor_path"),
        (lambda s: s["http"].update(headers={"X-Api-Key": "s3cret"}), r"\.http\.headers: header 'X-Api-Key'"),
        (lambda s: s["http"].update(schedule="every hour"), r"\.http\.schedule: 'every hour' is not a cron"),
        (lambda s: s["http"].update(url="ftp://x"), r"\.http\.url: not an http\(s\) URL with a host"),
        (lambda s: s.update(name="crm"), r"sources\[1\] \(crm\): its polls land in the folder 'crm/'"),
        (lambda s: s["http"].update(params={"api_key": "s3cret"}), r"\.http\.params: .*'api_key' carries a secret"),
        (
            lambda s: s["http"].update(url="https://x.org/t?access_token=s3"),
            r"\.http\.url: .*query_param: access_token",
        ),
        (lambda s: s["http"].update(url="https://me:pw@x.org/t"), r"\.http\.url: holds a user and password"),
    ],
)
def test_invalid_api_source_configuration_names_the_key(tmp_path, change, message):
    source = {
        "name": "helpdesk",
        "format": "http",
        "role": "events",
        "fields": {"occurred_at": "updated_at"},
        "http": {"url": "https://api.example.com/tickets", "pagination": {"style": "cursor", "cursor_path": "m.n"}},
    }
    change(source)
    person = {"name": "contacts", "format": "csv", "glob": "crm/*.csv", "role": "person"}
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump({"sources": [person, source]}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.unit
def test_an_http_source_reads_its_own_landing_folder():
    source = ticket_source("https://api.example.com/tickets")
    assert source.glob == "helpdesk/*.jsonl"
    assert source.http.schedule == "*/15 * * * *"


@pytest.mark.unit
def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    def response(value: str) -> requests.Response:
        made = requests.Response()
        made.headers["Retry-After"] = value
        return made

    assert retry_after(response("7")) == 7.0
    in_a_minute = format_datetime(datetime.fromtimestamp(datetime.now(UTC).timestamp() + 60, UTC), usegmt=True)
    assert 50 < retry_after(response(in_a_minute)) <= 60
    assert retry_after(response("soon")) is None


@pytest.mark.unit
def test_with_retries_waits_at_least_retry_after_and_gives_up_after_max_attempts():
    slept: list[float] = []
    outcomes = iter([TransientError("429", retry_after=20.0), TransientError("503"), "done"])

    def call() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=4)
    assert with_retries(call, policy, rng=random.Random(1), sleep=slept.append) == "done"
    assert slept[0] == 20.0 and 0.25 <= slept[1] <= 1.0

    def always() -> None:
        raise TransientError("HTTP 503")

    with pytest.raises(TransientError, match="503"):
        with_retries(always, policy, rng=random.Random(1), sleep=slept.append)


@pytest.mark.unit
def test_a_retry_after_longer_than_a_run_waits_is_left_to_a_later_run():
    """ "Come back in an hour" would hold the run, and the warehouse's one writer, for the hour."""
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=4, longest_retry_after=300)

    def throttled() -> None:
        raise TransientError("HTTP 429", retry_after=3600.0)

    with pytest.raises(TransientError, match="again in 3600 s, longer than the 300 s a run waits") as raised:
        with_retries(throttled, policy, rng=random.Random(1), sleep=slept.append)
    assert slept == [] and raised.value.attempts == 1
    outcomes = iter([TransientError("429", retry_after=300.0), "done"])

    def once() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(once, policy, rng=random.Random(1), sleep=slept.append) == "done" and slept == [300.0]


# --------------------------------------------------------------------------- polls against the local API


@pytest.mark.stage
@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_lands_every_record_once_through_5xx_and_429(tmp_path, style):
    faults = ApiFaults(fail_rate=0.2, rate_limit_rate=0.1, retry_after="0")
    with ApiServer(make_tickets(450), page_size=40, faults=faults, seed=11) as api:
        source = ticket_source(f"{api.url}/tickets/{style}", pagination=STYLES[style])
        report = poll_source(source, tmp_path, rng=random.Random(1))
        failures = api.requests_with(500) + api.requests_with(503) + api.requests_with(429)
    records = landed(tmp_path)
    assert sorted(r["id"] for r in records) == [f"T{i:07d}" for i in range(1, 451)]
    assert failures > 0 and report.retries == failures
    assert report.records == 450 and len(report.files) == 4  # about 100 records a file, whole pages: 120/120/120/90
    assert read_cursor(tmp_path, source)["value"] == "2025-01-01T00:07:30Z"  # the newest updated_at


@pytest.mark.stage
def test_retry_after_of_a_429_is_honoured(tmp_path):
    slept: list[float] = []
    with ApiServer(make_tickets(10), faults=ApiFaults(script=["429"], retry_after="7")) as api:
        report = poll_source(ticket_source(f"{api.url}/tickets/all"), tmp_path, sleep=slept.append)
    assert slept == [7.0] and report.retries == 1 and report.records == 10


@pytest.mark.stage
def test_a_poll_asked_to_come_back_after_longer_than_a_run_waits_fails_at_once_keeping_its_cursor(tmp_path):
    slept: list[float] = []
    with ApiServer(make_tickets(30), page_size=10, faults=ApiFaults(script=["ok", "429"], retry_after="3600")) as api:
        source = ticket_source(f"{api.url}/tickets/cursor", pagination=STYLES["cursor"])
        with pytest.raises(PollError) as raised:
            poll_source(source, tmp_path, sleep=slept.append)
        requests_made = len(api.log)
    assert slept == [] and requests_made == 2
    assert str(raised.value) == (
        f"API source 'helpdesk': {api.url}/tickets/cursor?cursor=2 answered HTTP 429, asking to be called again "
        "in 3600 s, longer than the 300 s a run waits (retry.longest_retry_after_seconds): left to a later run"
    )
    assert read_cursor(tmp_path, source) == {}  # the next poll starts where this one did


@pytest.mark.stage
def test_a_second_poll_fetches_only_the_changed_records(tmp_path):
    with ApiServer(make_tickets(300), page_size=50) as api:
        source = ticket_source(f"{api.url}/tickets/cursor", pagination=STYLES["cursor"])
        first = poll_source(source, tmp_path)
        api.change(["T0000007", "T0000150"], datetime(2025, 3, 1, tzinfo=UTC), status="solved")
        second = poll_source(source, tmp_path)
        third = poll_source(source, tmp_path)
        sent_since = [entry["query"].get("updated_since") for entry in api.log]
    assert first.records == 300 and first.cursor_after == "2025-01-01T00:05:00Z"
    # The filter is inclusive: the second poll asks from the newest value it landed and skips that record.
    assert sent_since[0] is None and sent_since[6] == "2025-01-01T00:05:00Z"
    assert second.records == 2 and second.skipped_unchanged == 1
    assert [r["status"] for r in landed(tmp_path)[-2:]] == ["solved", "solved"]
    assert second.cursor_after == "2025-03-01T00:00:00Z"
    assert third.records == 0 and third.files == [] and third.skipped_unchanged == 2


@pytest.mark.stage
def test_a_cursor_value_of_the_other_kind_does_not_move_the_cursor(tmp_path):
    # One ticket carries its change time as epoch milliseconds among ISO times: read as a number it is
    # past every time, and sent back as updated_since it would ask for nothing the API can answer.
    odd = {**make_tickets(1)[0], "id": "T9999999", "updated_at": "1750000000000"}
    with ApiServer([*make_tickets(20), odd], page_size=5) as api:
        source = ticket_source(f"{api.url}/tickets/cursor", pagination=STYLES["cursor"])
        first = poll_source(source, tmp_path)
        api.change(["T0000003"], datetime(2025, 2, 1, tzinfo=UTC), status="solved")
        second = poll_source(source, tmp_path)
        sent_since = [entry["query"].get("updated_since") for entry in api.log]
    assert first.records == 21 and first.without_cursor_value == 1
    assert first.cursor_after == "2025-01-01T00:00:20Z"
    assert sent_since[-1] == "2025-01-01T00:00:20Z"
    assert second.cursor_after == "2025-02-01T00:00:00Z" and second.without_cursor_value == 0
    assert [r["id"] for r in landed(tmp_path)[21:]] == ["T0000003"]


@pytest.mark.stage
@pytest.mark.parametrize(("fault", "problem"), [("notjson", "the page is not JSON"), ("nokey", "no list at 'tickets'")])
def test_a_bad_page_fails_the_poll_with_url_and_status_and_leaves_the_cursor(tmp_path, fault, problem):
    with ApiServer(make_tickets(200), page_size=50) as api:
        source = ticket_source(f"{api.url}/tickets/page", pagination={"style": "page"})
        poll_source(source, tmp_path)
        cursor_file = (tmp_path / "helpdesk" / CURSOR_FILE).read_text()
        files = sorted(p.name for p in (tmp_path / "helpdesk").iterdir())
        api.change(["T0000001", "T0000002"], datetime(2025, 2, 1, tzinfo=UTC))
        api.page_size = 1
        api.script("ok", fault)  # the second page of the next poll is bad
        with pytest.raises(PollError) as failed:
            poll_source(source, tmp_path)
        assert f"{api.url}/tickets/page?" in str(failed.value) and "(HTTP 200)" in str(failed.value)
        assert problem in str(failed.value)
        assert (tmp_path / "helpdesk" / CURSOR_FILE).read_text() == cursor_file
        assert sorted(p.name for p in (tmp_path / "helpdesk").iterdir()) == files  # nothing of the failed poll
        retried = poll_source(source, tmp_path)
    assert retried.records == 2 and retried.cursor_after == "2025-02-01T00:00:00Z"


@pytest.mark.stage
def test_a_sorted_source_keeps_the_files_landed_before_a_failure_and_resumes_after_them(tmp_path):
    with ApiServer(make_tickets(250), page_size=50, faults=ApiFaults(script=["ok", "ok", "ok", "notjson"])) as api:
        source = ticket_source(
            f"{api.url}/tickets/cursor",
            pagination=STYLES["cursor"],
            incremental={"field": "updated_at", "sorted": True},
        )
        with pytest.raises(PollError, match="not JSON"):
            poll_source(source, tmp_path)
        assert len(landed(tmp_path)) == 150 and read_cursor(tmp_path, source)["value"] == "2025-01-01T00:02:30Z"
        resumed = poll_source(source, tmp_path)
    assert resumed.records == 100
    assert sorted(r["id"] for r in landed(tmp_path)) == [f"T{i:07d}" for i in range(1, 251)]


@pytest.mark.stage
def test_the_auth_header_comes_from_the_environment(tmp_path, monkeypatch):
    with ApiServer(make_tickets(5), token="t0ken") as api:
        source = ticket_source(f"{api.url}/tickets/all", auth={"env": "HELPDESK_TOKEN"})
        monkeypatch.delenv("HELPDESK_TOKEN", raising=False)
        with pytest.raises(MissingSecretError, match="HELPDESK_TOKEN"):
            poll_source(source, tmp_path)
        monkeypatch.setenv("HELPDESK_TOKEN", "wrong")
        with pytest.raises(PollError, match=r"\(HTTP 401\) refused the request"):
            poll_source(source, tmp_path)
        monkeypatch.setenv("HELPDESK_TOKEN", "t0ken")
        assert poll_source(source, tmp_path).records == 5
    assert "t0ken" not in (tmp_path / "helpdesk" / CURSOR_FILE).read_text()


@pytest.mark.stage
def test_a_token_sent_as_a_query_parameter_comes_from_the_environment_and_is_never_shown(tmp_path, monkeypatch):
    """Many APIs take their key as ?api_key=: auth's query_param sends it from the environment, and every
    message shows the URL with *** in its place (and in any parameter named like a secret)."""
    with ApiServer(make_tickets(5), token="t0ken") as api:
        source = ticket_source(f"{api.url}/tickets/all", auth={"env": "HELPDESK_TOKEN", "query_param": "api_key"})
        monkeypatch.setenv("HELPDESK_TOKEN", "wrong-t0ken")
        with pytest.raises(PollError, match=r"api_key=\*\*\* \(HTTP 401\) refused the request") as refused:
            poll_source(source, tmp_path)
        assert "wrong-t0ken" not in str(refused.value)
        monkeypatch.setenv("HELPDESK_TOKEN", "t0ken")
        assert poll_source(source, tmp_path).records == 5
    assert (
        shown_url("https://me:pw@x.org/p?page=2&client_secret=s&sig=a")
        == "https://***@x.org/p?page=2&client_secret=***&sig=***"
    )


@pytest.mark.stage
@pytest.mark.parametrize("style", ["next_url", "cursor"])
def test_records_a_page_repeats_from_an_earlier_page_of_the_poll_land_once(tmp_path, style):
    """A listing that shifts under the poll serves a page starting with the last page's tail: each record
    still lands once, and the repeats are counted."""
    with ApiServer(make_tickets(100), page_size=20, faults=ApiFaults(script=["ok", "overlap", "ok", "overlap"])) as api:
        report = poll_source(ticket_source(f"{api.url}/tickets/{style}", pagination=STYLES[style]), tmp_path)
    ids = [r["id"] for r in landed(tmp_path)]
    assert sorted(ids) == [f"T{i:07d}" for i in range(1, 101)]
    assert report.skipped_repeated == 6 and report.records == 100


@pytest.mark.stage
def test_the_rate_limit_spaces_requests(tmp_path):
    slept: list[float] = []
    with ApiServer(make_tickets(100), page_size=10) as api:
        source = ticket_source(f"{api.url}/tickets/link", pagination=STYLES["link"], rate_limit_per_second=4)
        report = poll_source(source, tmp_path, sleep=slept.append)
    assert report.requests == 10 and len(slept) == 9 and sum(slept) > 9 * 0.25 * 0.9


@pytest.mark.stage
def test_a_next_page_on_another_site_is_not_followed(tmp_path):
    with ApiServer(make_tickets(30), page_size=10) as api:
        # Polled as localhost, the API names its next page by an absolute URL on 127.0.0.1: another site as
        # far as credentials go, so the poll stops rather than send the token there.
        source = ticket_source(api.url.replace("127.0.0.1", "localhost") + "/tickets/link", pagination=STYLES["link"])
        with pytest.raises(PollError, match="the next page is on another site"):
            poll_source(source, tmp_path)
    assert landed(tmp_path) == []


# --------------------------------------------------------------------------- Dagster


@pytest.mark.dagster
def test_the_poll_job_lands_pages_the_landing_sensor_and_extract_load_with_missing_ids_quarantined(tmp_path):
    tickets = make_tickets(120)
    del tickets[5]["id"]  # a record without its id
    with ApiServer(tickets, page_size=25) as api, dg.instance_for_test() as instance:
        path = write_config(tmp_path)
        raw = yaml.safe_load(path.read_text())
        source = ticket_source(f"{api.url}/tickets/cursor", pagination=STYLES["cursor"], schedule="*/5 * * * *")
        raw["sources"].append(source.model_dump(exclude={"glob"}, exclude_none=True, mode="json"))
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        defs = build_definitions(config)
        schedule = defs.resolve_schedule_def("poll_helpdesk_schedule")
        assert schedule.cron_schedule == "*/5 * * * *" and schedule.job_name == "poll_helpdesk"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        # The poll writes no warehouse table, is started by its schedule alone, and feeds the source's extract.
        graph = defs.resolve_asset_graph()
        poll = graph.get(dg.AssetKey(["landing", "helpdesk"]))
        assert poll.automation_condition is None and set(poll.kinds) == {"api"}
        assert poll.owners == ["team:data-engineering"]
        assert graph.get(dg.AssetKey(["raw", "helpdesk"])).parent_keys == {poll.key}
        assert poll.key not in defs.resolve_job_def("full_refresh").asset_layer.selected_asset_keys

        result = defs.resolve_job_def("poll_helpdesk").execute_in_process(instance=instance)
        assert result.success
        [materialization] = result.asset_materializations_for_node("landing__helpdesk")
        assert materialization.metadata["dagster/row_count"].value == 120
        assert materialization.metadata["pages"].value == 5

        sensor = defs.resolve_sensor_def("landing_files_sensor")
        requested = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.asset_selection for r in requested.run_requests] == [[dg.AssetKey(["raw", "helpdesk"])]]

        job = defs.resolve_implicit_global_asset_job_def()
        keys = [dg.AssetKey(["raw", "helpdesk"]), dg.AssetKey(["clean", "events"])]
        assert job.execute_in_process(instance=instance, asset_selection=keys).success

        # A bad page fails the run naming the URL and the status; the cursor stays.
        api.change(["T0000001"], datetime(2025, 6, 1, tzinfo=UTC))
        api.script("notjson")
        failed = defs.resolve_job_def("poll_helpdesk").execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        failure = failed.failure_data_for_node("landing__helpdesk").error.message
        assert f"{api.url}/tickets/cursor" in failure and "(HTTP 200)" in failure and "not JSON" in failure
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        assert conn.execute("select count(*) from raw.helpdesk").fetchone()[0] == 120
        assert conn.execute("select count(*) from clean.events where source = 'helpdesk'").fetchone()[0] == 119
        [(reason, row)] = conn.execute(
            "select reason, row_number from clean.events_quarantine where source = 'helpdesk' and scope = 'row'"
        ).fetchall()
    assert "no record id" in reason and row == 6
    assert read_cursor(config.landing_path, config.sources[-1])["value"] == "2025-01-01T00:02:00Z"


@pytest.mark.stage
def test_a_second_poll_of_a_source_refuses_to_run_and_a_dead_polls_partial_files_are_removed(tmp_path):
    folder = tmp_path / "helpdesk"
    folder.mkdir()
    (folder / ".20250101T000000000000Z-00001.jsonl.partial").write_text('{"id": "half"}\n')
    with ApiServer(make_tickets(3)) as api:
        source = ticket_source(f"{api.url}/tickets/all")
        with (folder / ".poll.lock").open("a") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another poll of the source is running
            with pytest.raises(PollError, match="another poll of this source is running"):
                poll_source(source, tmp_path)
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)
        assert poll_source(source, tmp_path).records == 3
    assert [p.name for p in folder.iterdir() if p.name.endswith(".partial")] == []
    assert [r["id"] for r in landed(tmp_path)] == ["T0000001", "T0000002", "T0000003"]


@pytest.mark.dagster
def test_a_poll_none_of_whose_records_has_the_incremental_field_warns(tmp_path):
    """A misspelt incremental.field leaves the cursor where it was: every poll lands the listing again."""
    with ApiServer(make_tickets(12), page_size=5) as api, dg.instance_for_test() as instance:
        path = write_config(tmp_path)
        raw = yaml.safe_load(path.read_text())
        source = ticket_source(
            f"{api.url}/tickets/cursor", pagination=STYLES["cursor"], incremental={"field": "updatedAt"}
        )
        raw["sources"].append(source.model_dump(exclude={"glob"}, exclude_none=True, mode="json"))
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        defs = build_definitions(load_config(path))
        result = defs.resolve_job_def("poll_helpdesk").execute_in_process(instance=instance)
        warnings = [e.message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING and e.message]
    assert result.success
    assert any(
        "none of the 12 records landed has a usable value at incremental.field 'updatedAt'" in w for w in warnings
    ), warnings
