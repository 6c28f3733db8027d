"""A run whose process is killed does not stop the platform: it is marked failed and the run queue moves on.

The shipped dagster.yaml allows one run at a time. A run killed outright (out of memory, `kill -9`, the
machine or `dagster dev` going down with it) never records its end; unless something notices, it stays
STARTED and every later run waits in the queue forever. These tests run the real daemon on an instance
made from the shipped dagster.yaml, with a job that holds its run open until the test releases it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from resources.config import load_config
from resources.run_launcher import RUN_HOST_TAG, LocalProcessRunLauncher, RunProcess, process_is_alive
from sensors.automation import MAX_RETRIES_TAG, build_automation_sensor
from tests.fixtures import REPO, wait_for

BIN = Path(sys.executable).parent
GATED_JOB = REPO / "tests" / "gated_job.py"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A Dagster instance folder with the shipped dagster.yaml, its monitoring poll shortened for the test."""
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    settings.setdefault("run_monitoring", {})["poll_interval_seconds"] = 2
    (folder / "dagster.yaml").write_text(yaml.safe_dump(settings))
    return folder


@pytest.fixture
def environment(home: Path, tmp_path: Path) -> dict[str, str]:
    # This checkout's modules first, whatever checkout the virtual environment was installed from.
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {"load_from": [{"python_file": {"relative_path": str(GATED_JOB), "working_directory": str(REPO)}}]}
        )
    )
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": path, "WORKSPACE": str(workspace)}


@contextmanager
def daemon(environment: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` in its own process group, stopped with SIGINT (SIGKILL if it hangs)."""
    process = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", environment["WORKSPACE"]],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def submit(environment: dict[str, str], gate: Path, wait: bool, tags: Mapping[str, str] | None = None) -> None:
    """Put a run of the gated job in the run queue, as the UI, a sensor or `dagster job launch` would, with
    the `tags` a sensor would give it."""
    config = {"ops": {"wait_for_release": {"config": {"folder": str(gate), "wait": wait}}}}
    launched = subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", environment["WORKSPACE"], "-j", "gated"]
        + ["--config-json", json.dumps(config)]
        + (["--tags", json.dumps(dict(tags))] if tags else []),
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None, run_id
    return run.status


def _only_run_id(instance: dg.DagsterInstance, exclude: set[str]) -> str:
    runs = [r.run_id for r in instance.get_runs() if r.run_id not in exclude]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.dagster
def test_shipped_instance_monitors_runs_with_a_launcher_that_checks_the_run_process(home: Path):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert isinstance(instance.run_launcher, LocalProcessRunLauncher)
        # The default launcher cannot resume a run; a positive value would make monitoring try and fail.
        assert instance.run_monitoring_max_resume_run_attempts == 0
        # Crashed runs are retried when their tags ask for it (the automation sensor's); failed steps are not.
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0
        assert not instance.run_retries_retry_on_asset_or_op_failure


@pytest.mark.e2e
def test_a_killed_automation_run_is_started_again_and_completes(
    home: Path, environment: dict[str, str], tmp_path: Path
):
    gate = tmp_path / "gate"
    gate.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with daemon(environment):
            # A run as the automation sensor launches it (cleaning to syncs after a new file), with its tags.
            tags = build_automation_sensor(load_config(REPO / "cdp.yaml")).run_tags
            assert tags[MAX_RETRIES_TAG] == "3"
            submit(environment, gate, wait=True, tags=tags)
            killed = _only_run_id(instance, set())
            started = wait_for(lambda: list(gate.glob("started_*")), "the run's op starting")
            os.kill(int(started[0].read_text()), signal.SIGKILL)  # out of memory: the run's process alone
            wait_for(lambda: _status(instance, killed) == dg.DagsterRunStatus.FAILURE, "the killed run failing")
            (gate / "release").write_text("")
            retried = wait_for(
                lambda: [r for r in instance.get_runs() if r.parent_run_id == killed and r.is_finished],
                "the killed run's retry finishing",
            )
        assert [r.status for r in retried] == [dg.DagsterRunStatus.SUCCESS]
        assert len(instance.get_runs()) == 2


@pytest.mark.e2e
def test_a_killed_run_is_failed_and_the_queued_run_after_it_succeeds(
    home: Path, environment: dict[str, str], tmp_path: Path
):
    gate = tmp_path / "gate"
    gate.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with daemon(environment) as first_daemon:
            submit(environment, gate, wait=True)
            stuck = _only_run_id(instance, set())
            started = wait_for(lambda: list(gate.glob("started_*")), "the first run's op starting")
            assert _status(instance, stuck) == dg.DagsterRunStatus.STARTED
            # The host runs out of memory and everything goes: daemon, code server and the run's process at
            # once (one signal to the whole process group), so nothing is left to record the run's end.
            os.killpg(first_daemon.pid, signal.SIGKILL)
            first_daemon.wait(timeout=30)
            worker = int(started[0].read_text())
            wait_for(lambda: not _alive(worker), "the run's process ending")

        # The operator starts the platform again and a sensor (here: the CLI) queues the next run.
        submit(environment, gate, wait=False)
        queued = _only_run_id(instance, {stuck})
        with daemon(environment):
            wait_for(lambda: _status(instance, stuck) == dg.DagsterRunStatus.FAILURE, "the killed run failing")
            wait_for(lambda: instance.get_run_by_id(queued).is_finished, "the queued run finishing")
        assert _status(instance, queued) == dg.DagsterRunStatus.SUCCESS
        messages = [e.message for e in instance.all_logs(stuck) if e.message]
        assert any("is gone without the run having finished" in m for m in messages), messages[-5:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
def test_a_killed_job_execute_run_is_reported_dead_and_a_live_one_running(
    home: Path, environment: dict[str, str], tmp_path: Path
):
    gate = tmp_path / "gate"
    gate.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"ops": {"wait_for_release": {"config": {"folder": str(gate)}}}}))
    process = subprocess.Popen(
        [str(BIN / "dagster"), "job", "execute", "-f", str(GATED_JOB), "-j", "gated", "-c", str(config)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "job_execute.log").open("w"),
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            wait_for(lambda: list(gate.glob("started_*")) or process.poll() is not None, "the run's op starting")
            log = (tmp_path / "job_execute.log").read_text()
            assert process.poll() is None, f"dagster job execute exited with {process.returncode}: {log[-3000:]}"
            run = instance.get_runs()[0]
            launcher = instance.run_launcher
            assert launcher.check_run_worker_health(run).status.value == "RUNNING"
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            health = launcher.check_run_worker_health(run)
            assert health.status.value == "FAILED", health
            assert str(process.pid) in (health.msg or "")
            assert _status(instance, run.run_id) == dg.DagsterRunStatus.STARTED  # until monitoring fails it
            # A run that executed on another host (a daemon in another container) is not judged from here.
            instance.add_run_tags(run.run_id, {RUN_HOST_TAG: "another-host"})
            elsewhere = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
            assert elsewhere.status.value == "RUNNING", elsewhere
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.unit
def test_a_pid_reused_by_a_later_process_is_not_taken_for_the_run():
    now = time.time()
    assert process_is_alive(RunProcess(os.getpid(), now))
    # This process started after a run recorded the same pid an hour ago: that run's process is gone.
    assert not process_is_alive(RunProcess(os.getpid(), now - 3600))
