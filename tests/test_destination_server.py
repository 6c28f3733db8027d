"""The demo destination over real HTTP: what it applies, what it refuses, and the faults it injects on cue.

Each test starts its own server on a free port in-process, so tests share no state and need no fixed port.
"""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from demo.destination_server import DestinationServer, Faults
from tests.fixtures import REPO

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "0123456789abcdef" * 4

Start = Callable[..., str]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a destination with the given options and return its URL; every one is stopped afterwards."""
    servers: list[DestinationServer] = []

    def _start(**options: object) -> str:
        server = DestinationServer(host="127.0.0.1", port=0, **options)
        servers.append(server)
        return server.start()

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture
def url(start: Start) -> str:
    return start()


def post(url: str, path: str, body: dict, **kwargs: object) -> requests.Response:
    return requests.post(url + path, json=body, timeout=5, **kwargs)


def state(url: str, kind: str, name: str, **kwargs: object) -> dict:
    response = requests.get(f"{url}/state/{kind}/{name}", timeout=5, **kwargs)
    assert response.status_code == 200
    return response.json()


def event(kind: str, key: str, audience: str = "vip", **properties: object) -> dict:
    return {"type": f"audience_{kind}", "key": key, "audience": audience, "properties": properties}


# ---------------------------------------------------------------- endpoints


@pytest.mark.stage
def test_webhook_events_track_membership_and_latest_properties(url: str) -> None:
    first = post(
        url,
        "/webhook/braze",
        {
            "batch_id": "w1",
            "events": [
                event("entered", "c1", ltv=10),
                event("entered", "c2", ltv=20),
                event("entered", "c1", audience="churn_risk"),
            ],
        },
    )
    assert first.status_code == 200
    assert first.json() == {"batch_id": "w1", "duplicate": False, "events": 3}
    second = post(
        url, "/webhook/braze", {"batch_id": "w2", "events": [event("updated", "c2", ltv=25), event("exited", "c1")]}
    )
    assert second.status_code == 200
    assert state(url, "webhook", "braze") == {
        "audiences": {"vip": {"c2": {"ltv": 25}}, "churn_risk": {"c1": {}}},
    }
    post(url, "/webhook/braze", {"batch_id": "w3", "events": [event("exited", "c1", audience="churn_risk")]})
    assert state(url, "webhook", "braze") == {"audiences": {"vip": {"c2": {"ltv": 25}}}}
    assert state(url, "webhook", "another") == {"audiences": {}}  # destinations are kept apart by name


@pytest.mark.stage
def test_rest_upsert_replaces_records_and_delete_removes_them(url: str) -> None:
    upsert = post(
        url,
        "/rest/crm/upsert",
        {
            "batch_id": "r1",
            "records": [{"id": "1", "email": "a@x.com", "tier": "gold"}, {"id": "2", "email": "b@x.com"}],
        },
    )
    assert upsert.json() == {"batch_id": "r1", "duplicate": False, "upserted": 2}
    post(url, "/rest/crm/upsert", {"batch_id": "r2", "records": [{"id": "1", "email": "a@y.com"}]})
    deleted = post(url, "/rest/crm/delete", {"batch_id": "r3", "ids": ["2", "404"]})
    assert deleted.json() == {"batch_id": "r3", "duplicate": False, "deleted": 1, "missing": 1}
    assert state(url, "rest", "crm") == {"records": {"1": {"id": "1", "email": "a@y.com"}}}  # "tier" is gone


@pytest.mark.stage
def test_hashed_audience_adds_and_removes_members(url: str) -> None:
    added = post(
        url,
        "/audiences/google/members",
        {
            "batch_id": "a1",
            "add": [
                {"email_sha256": HASH_A, "phone_sha256": HASH_B},
                {"email_sha256": HASH_C},
                {"email_sha256": HASH_C},
            ],
        },
    )
    assert added.json() == {"batch_id": "a1", "duplicate": False, "added": 2, "removed": 0, "size": 2}
    # A removal naming just one of a member's identifiers removes that member.
    removed = post(url, "/audiences/google/members", {"batch_id": "a2", "remove": [{"phone_sha256": HASH_B}]})
    assert removed.json()["removed"] == 1
    assert state(url, "audiences", "google") == {"members": [{"email_sha256": HASH_C}], "size": 1}


@pytest.mark.stage
def test_a_record_without_id_fails_the_whole_batch_with_per_index_errors(url: str) -> None:
    response = post(
        url,
        "/rest/crm/upsert",
        {"batch_id": "bad", "records": [{"id": "1"}, {"email": "no-id@x.com"}, {"id": ""}, {"id": 7}, "text"]},
    )
    assert response.status_code == 400
    assert [error["index"] for error in response.json()["errors"]] == [1, 2, 3, 4]
    assert all(error["message"] for error in response.json()["errors"])
    assert state(url, "rest", "crm") == {"records": {}}  # not even the good record went in
    # The failed batch id is not burnt: the corrected batch is applied under the same id.
    assert post(url, "/rest/crm/upsert", {"batch_id": "bad", "records": [{"id": "1"}]}).json()["duplicate"] is False


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        ({"email_sha256": HASH_A.upper()}, "lower-case hex"),
        ({"email_sha256": HASH_A[:-1]}, "lower-case hex"),
        ({"email": "jane@example.com"}, "unknown identifier 'email'"),
        ({}, "at least one"),
    ],
)
@pytest.mark.stage
def test_audience_refuses_anything_but_lower_case_sha256(url: str, member: dict, fragment: str) -> None:
    response = post(
        url, "/audiences/meta/members", {"batch_id": "h1", "add": [{"email_sha256": HASH_A}], "remove": [member]}
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["index"], error["list"]) == (0, "remove")
    assert fragment in error["message"]
    assert state(url, "audiences", "meta") == {"members": [], "size": 0}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/nowhere", None, 404),
        ("get", "/state/ftp/x", None, 404),
        ("post", "/rest/crm/merge", {"batch_id": "x", "records": []}, 404),
        ("get", "/rest/crm/upsert", None, 405),
        ("post", "/webhook/x", {"events": []}, 400),  # no batch id anywhere
        ("post", "/webhook/x", {"batch_id": "x", "events": "nope"}, 400),
        ("post", "/webhook/x", {"batch_id": "x", "events": [{"type": "clicked", "key": "k", "audience": "a"}]}, 400),
    ],
)
@pytest.mark.stage
def test_malformed_requests_are_refused(url: str, method: str, path: str, body: dict | None, status: int) -> None:
    response = requests.request(method, url + path, json=body, timeout=5)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.stage
def test_a_body_that_is_not_json_is_a_400(url: str) -> None:
    response = requests.post(url + "/webhook/x", data=b"{not json", timeout=5)
    assert response.status_code == 400
    assert "JSON object" in response.json()["errors"][0]["message"]


# ---------------------------------------------------------------- idempotency


@pytest.mark.stage
def test_a_batch_id_already_applied_is_acknowledged_but_not_applied_again(url: str) -> None:
    batch = {"batch_id": "b1", "records": [{"id": "1", "v": 1}]}
    assert post(url, "/rest/crm/upsert", batch).json()["duplicate"] is False
    post(url, "/rest/crm/delete", {"batch_id": "b2", "ids": ["1"]})
    replay = post(url, "/rest/crm/upsert", batch)
    assert replay.status_code == 200
    assert replay.json() == {"batch_id": "b1", "duplicate": True}
    assert state(url, "rest", "crm") == {"records": {}}  # a re-application would have brought "1" back


@pytest.mark.stage
def test_the_idempotency_key_header_stands_in_for_batch_id(url: str) -> None:
    body = {"events": [event("entered", "c1")]}
    first = post(url, "/webhook/hub", body, headers={"Idempotency-Key": "k1"})
    post(url, "/webhook/hub", {"batch_id": "k2", "events": [event("exited", "c1")]})
    again = post(url, "/webhook/hub", body, headers={"Idempotency-Key": "k1"})
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert state(url, "webhook", "hub") == {"audiences": {}}
    clash = post(url, "/webhook/hub", {"batch_id": "k3", **body}, headers={"Idempotency-Key": "k4"})
    assert clash.status_code == 400


# ---------------------------------------------------------------- faults


@pytest.mark.stage
def test_scripted_faults_come_in_order_and_leave_state_alone_until_success(start: Start) -> None:
    url = start(faults=Faults(script=["500", "429", "ok"], fail_rate=1.0))
    batch = {"batch_id": "s1", "records": [{"id": "1"}]}
    assert requests.get(url + "/state/rest/crm", timeout=5).status_code == 200  # reads never draw a fault
    failed = post(url, "/rest/crm/upsert", batch)
    assert failed.status_code == 500
    assert state(url, "rest", "crm") == {"records": {}}
    limited = post(url, "/rest/crm/upsert", batch)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert state(url, "rest", "crm") == {"records": {}}
    succeeded = post(url, "/rest/crm/upsert", batch)
    assert succeeded.status_code == 200
    assert succeeded.json()["duplicate"] is False  # the failed attempts did not count as applied
    assert state(url, "rest", "crm") == {"records": {"1": {"id": "1"}}}
    assert post(url, "/rest/crm/upsert", {"batch_id": "s2", "records": []}).status_code == 500  # then the rate: 1.0
    log = [
        entry for entry in requests.get(url + "/requests", timeout=5).json()["requests"] if entry["method"] == "POST"
    ]
    assert [(entry["status"], entry["fault"], entry["batch_id"]) for entry in log] == [
        (500, "500", "s1"),
        (429, "429", "s1"),
        (200, None, "s1"),
        (500, "500", "s2"),
    ]


@pytest.mark.stage
def test_a_timed_out_batch_is_applied_and_its_retry_is_a_duplicate(start: Start) -> None:
    url = start(faults=Faults(script=["timeout"], timeout_seconds=0.2))
    batch = {"batch_id": "t1", "records": [{"id": "late"}]}
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(url + "/rest/crm/upsert", json=batch, timeout=0.05)
    deadline = time.monotonic() + 5
    while state(url, "rest", "crm") != {"records": {"late": {"id": "late"}}}:
        assert time.monotonic() < deadline, "the timed-out batch never showed up"
    retry = post(url, "/rest/crm/upsert", batch)
    assert retry.status_code == 200
    assert retry.json()["duplicate"] is True
    [first] = [entry for entry in requests.get(url + "/requests", timeout=5).json()["requests"] if entry["seq"] == 1]
    assert (first["fault"], first["batch_id"]) == ("timeout", "t1")


@pytest.mark.stage
def test_a_dropped_answer_leaves_the_batch_applied_and_its_resend_is_a_duplicate(start: Start) -> None:
    url = start(faults=Faults(script=["drop"]))
    batch = {"batch_id": "d1", "records": [{"id": "kept"}]}
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url + "/rest/crm/upsert", json=batch, timeout=5)
    assert state(url, "rest", "crm") == {"records": {"kept": {"id": "kept"}}}
    assert post(url, "/rest/crm/upsert", batch).json() == {"batch_id": "d1", "duplicate": True}
    log = requests.get(url + "/requests", timeout=5).json()["requests"]
    assert [(entry["fault"], entry["status"], entry["duplicate"]) for entry in log if entry["method"] == "POST"] == [
        ("drop", None, False),
        (None, 200, True),
    ]


def fault_sequence(url: str, count: int = 50) -> list[tuple[int, str | None]]:
    sequence = []
    for index in range(count):
        response = post(url, "/webhook/x", {"batch_id": f"f{index}", "events": [event("entered", str(index))]})
        sequence.append(response.status_code)
    log = requests.get(url + "/requests", timeout=5).json()["requests"]
    faults = [entry["fault"] for entry in log if entry["method"] == "POST"]
    return list(zip(sequence, faults, strict=True))


@pytest.mark.stage
def test_seeded_fault_rates_are_reproducible(start: Start) -> None:
    faults = Faults(fail_rate=0.3, rate_limit_rate=0.2, timeout_rate=0.1, timeout_seconds=0.001)
    first = fault_sequence(start(faults=faults, seed=1))
    same_seed = start(faults=faults, seed=1)
    assert fault_sequence(same_seed) == first
    assert {fault for _, fault in first} == {"500", "429", "timeout", None}  # every outcome actually occurs
    assert {status for status, _ in first} == {500, 429, 200}
    assert fault_sequence(start(faults=faults, seed=2)) != first
    assert requests.post(same_seed + "/reset", timeout=5).status_code == 200
    assert fault_sequence(same_seed) == first  # a reset restarts the sequence as well as the state


@pytest.mark.parametrize(
    "options",
    [
        {"fail_rate": 1.5},
        {"fail_rate": 0.6, "rate_limit_rate": 0.6},
        {"timeout_seconds": -1},
        {"script": ["500", "503"]},
    ],
)
@pytest.mark.unit
def test_impossible_fault_settings_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        Faults(**options)


# ---------------------------------------------------------------- auth, reset, logging


@pytest.mark.stage
def test_a_token_is_required_when_configured(start: Start) -> None:
    url = start(token="s3cret")
    batch = {"batch_id": "a1", "records": [{"id": "1"}]}
    assert post(url, "/rest/crm/upsert", batch).status_code == 401
    assert post(url, "/rest/crm/upsert", batch, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(url + "/state/rest/crm", timeout=5).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert post(url, "/rest/crm/upsert", batch, headers=good).status_code == 200
    assert state(url, "rest", "crm", headers=good) == {"records": {"1": {"id": "1"}}}


@pytest.mark.stage
def test_reset_forgets_state_log_and_applied_batches(url: str) -> None:
    batch = {"batch_id": "x1", "records": [{"id": "1"}]}
    post(url, "/rest/crm/upsert", batch)
    assert requests.post(url + "/reset", timeout=5).json() == {"reset": True}
    assert state(url, "rest", "crm") == {"records": {}}
    assert post(url, "/rest/crm/upsert", batch).json()["duplicate"] is False
    log = requests.get(url + "/requests", timeout=5).json()["requests"]
    assert [(entry["method"], entry["path"]) for entry in log] == [
        ("GET", "/state/rest/crm"),
        ("POST", "/rest/crm/upsert"),
        ("GET", "/requests"),  # logged on arrival, so the log includes the request reading it
    ]


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.stage
def test_requests_are_only_logged_to_stderr_when_verbose(
    start: Start, capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    url = start(verbose=verbose)
    capsys.readouterr()
    requests.get(url + "/state/webhook/quiet", timeout=5)
    requests.get(url + "/nowhere", timeout=5)
    err = capsys.readouterr().err
    assert ("/state/webhook/quiet" in err) is verbose
    assert ("/nowhere" in err) is verbose


@pytest.mark.e2e
def test_the_command_line_serves_with_faults_and_a_token() -> None:
    command = [sys.executable, "-m", "demo.destination_server", "--port", "0", "--script", "429", "--token", "t"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            banner = process.stdout.readline()
            assert "listening on http://127.0.0.1:" in banner
            url = banner.rsplit(" ", 1)[1].strip()
            headers = {"Authorization": "Bearer t"}
            batch = {"batch_id": "c1", "records": [{"id": "1"}]}
            assert post(url, "/rest/crm/upsert", batch, headers=headers).status_code == 429
            assert post(url, "/rest/crm/upsert", batch, headers=headers).status_code == 200
            assert post(url, "/rest/crm/upsert", batch).status_code == 401
        finally:
            process.terminate()
            _, err = process.communicate(timeout=5)
    assert err == ""  # quiet by default: no per-request lines
