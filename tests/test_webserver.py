"""The real thing, as `make dev` runs it: the CLI materializes everything, then the webserver serves it.

Starts `dagster job execute` and `dagster dev` as subprocesses on a temporary instance and reads the
asset graph, materializations and check results back over GraphQL.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from demo.generate import generate
from tests.fixtures import REPO, write_config

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    description
    assetMaterializations(limit: 1) { runId }
    assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}")
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        # Polling a server that is starting: the wait is on the server, not a fixed sleep.
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


RUNS_IN_FLIGHT = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) { ... on Runs { results { runId } } } }
"""


LANDING_SENSOR_TICKS = """
{ sensorsOrError(
    repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "cdp_assets.definitions"}
  ) { ... on Sensors { results { name sensorState { ticks(limit: 1) { status } } } } } }
"""


def _graphql(url: str, query: str) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    return response.json()["data"]


def _wait_for_runs_to_settle(url: str, timeout: float = 240) -> None:
    """The daemon's landing sensor looks at the files once the UI starts and may launch extract runs that
    find nothing new; their checks are in progress until they end, so the graph is read after the sensor's
    first tick and the runs it started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sensors = _graphql(url, LANDING_SENSOR_TICKS)["sensorsOrError"]["results"]
        ticked = any(s["name"] == "landing_files_sensor" and s["sensorState"]["ticks"] for s in sensors)
        if ticked and not _graphql(url, RUNS_IN_FLIGHT)["runsOrError"]["results"]:
            return
        # Polling the daemon's progress: the wait is on its tick and runs, not a fixed sleep.
        time.sleep(1)
    raise TimeoutError(f"runs were still in flight after {timeout}s")


@pytest.fixture
def environment(tmp_path: Path, destination_server) -> dict[str, str]:
    generate(people=150, seed=11, out_dir=tmp_path / "landing", truth_path=tmp_path / "truth.csv")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    # This checkout's modules (the instance's run launcher among them) first, whatever checkout the virtual
    # environment was installed from.
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    config = write_config(tmp_path, destination_server.url)
    return {**os.environ, "DAGSTER_HOME": str(home), "CDP_CONFIG": str(config), "PYTHONPATH": path}


def test_cli_materializes_everything_and_the_webserver_shows_it(environment: dict[str, str]):
    executed = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "cdp_assets.definitions", "-j", "full_refresh"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert executed.returncode == 0, executed.stderr[-3000:]

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_server(url, process)
        _wait_for_runs_to_settle(url)
        response = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=60)
        response.raise_for_status()
        nodes = response.json()["data"]["assetNodes"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {
        "raw/crm_contacts",
        "clean/person_records",
        "identity/clusters",
        "profiles/golden_profiles",
        "segments/high_value",
        "syncs/high_value_csv",
    } <= set(by_key)
    unmaterialized = [k for k, n in by_key.items() if not n["assetMaterializations"]]
    # Privacy requests are not part of a refresh: only a request (the sensor, the Launchpad) materializes them.
    assert unmaterialized == ["privacy/requests"]
    statuses = {
        (key, check["name"]): (check["executionForLatestMaterialization"] or {}).get("status")
        for key, node in by_key.items()
        for check in node["assetChecksOrError"].get("checks", [])
    }
    # Checks no refresh runs: the rebuild check (its own job) and a source's freshness (its sensor, against
    # the clock). Every other check passed in the refresh.
    outside = {("profiles/golden_profiles", "equals_a_rebuild"), ("raw/web_events", "fresh")}
    assert outside <= set(statuses)
    refreshed = {k: v for k, v in statuses.items() if k not in outside}
    assert refreshed and set(refreshed.values()) == {"SUCCEEDED"}, {
        k: v for k, v in refreshed.items() if v != "SUCCEEDED"
    }
    assert by_key["identity/clusters"]["groupName"] == "identity"
