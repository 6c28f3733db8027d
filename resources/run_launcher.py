"""The run launcher the shipped dagster.yaml names: Dagster's default one, plus a check that a run's process lives.

A run whose process is killed outright (the kernel's OOM killer, `kill -9`, a host that went down with
`dagster dev`) never records its end, so it stays STARTED. With `max_concurrent_runs: 1` that one run
holds the only slot forever and every queued run waits behind it. Dagster's run monitoring daemon fails
such runs, but only through the launcher's `check_run_worker_health`, which `DefaultRunLauncher` does
not implement (it answers "not supported", so monitoring alone would never see the dead process).

This launcher launches exactly as `DefaultRunLauncher` does (a process per run on this machine, started
by the code server) and answers the health check by looking for the run's process: every run records
its pid in its event log ("Started process for run (pid: …)" from the code server, "Executing steps in
process (pid: …)" from the executor of a `dagster job execute` run), and a pid that no longer exists, is
a zombie, or now belongs to a process started after the run recorded it, means the run is dead.
It judges only runs executed on the machine the daemon runs on, which is where `DefaultRunLauncher` puts
them. Where the daemon and the code server run on different hosts or containers (their own pid
namespaces), a run that tagged its host (`RUN_HOST_TAG`, which the warehouse resource sets) and ran
elsewhere is left alone rather than failed on a pid this machine cannot see.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

import dagster as dg

# Dagster exposes the health-check result types only from its launcher package; every launcher that
# supports run monitoring (dagster-docker, dagster-k8s, dagster-aws) imports them from here.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

# The host a run executes on, tagged by the run itself (see resources/warehouse.py).
RUN_HOST_TAG = "cdp/run_host"

# A reused pid belongs to a process started after the run wrote its pid down; allow for the one-second
# resolution of the kernel's boot time when comparing.
_START_TIME_TOLERANCE_SECONDS = 2.0


@dataclass(frozen=True)
class RunProcess:
    """The process that executes a run, as the run's event log records it."""

    pid: int
    recorded_at: float  # epoch seconds of the event that named it


def run_process(instance: dg.DagsterInstance, run_id: str) -> RunProcess | None:
    """The run's orchestrating process: the first engine event of the run that names a pid.

    The first one is the run worker (or, for `dagster job execute`, the process running the steps);
    later ones may name step subprocesses that end while the run goes on.
    """
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None and str(pid.value).isdigit():
            return RunProcess(int(pid.value), entry.timestamp)
    return None


def _linux_process_start(pid: int) -> tuple[str, float] | None:
    """(state, start time in epoch seconds) of a process from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime "))
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the command name: state is field 3 of stat(5), starttime (clock ticks after boot) field 22.
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_is_alive(process: RunProcess) -> bool:
    """Whether the recorded process still runs: it exists, is no zombie, and its pid was not reused since."""
    if sys.platform.startswith("linux") and os.path.exists("/proc/self/stat"):
        found = _linux_process_start(process.pid)
        if found is None:
            return False
        state, started_at = found
        if state in ("Z", "X"):
            return False
        return started_at <= process.recorded_at + _START_TIME_TOLERANCE_SECONDS
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


class LocalProcessRunLauncher(dg.DefaultRunLauncher):
    """`DefaultRunLauncher` that lets run monitoring fail a run whose process has died."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """RUNNING while the run's process lives (or has not yet recorded its pid), FAILED once it is gone."""
        host = run.tags.get(RUN_HOST_TAG)
        if host is not None and host != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"the run executes on {host}, not checkable from here")
        process = run_process(self._instance, run.run_id)
        if process is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run has not recorded its process yet")
        if process_is_alive(process):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"process {process.pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run's process (pid {process.pid}) is gone without the run having finished: it was killed "
            "(out of memory, kill -9, or the machine or `dagster dev` stopped). Re-run the job; its steps "
            "are idempotent.",
        )
