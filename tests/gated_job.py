"""A job for the run-monitoring test: it holds its run open until the test releases it, like a long refresh.

Loaded by a Dagster code server from a workspace file the test writes; the test kills the run's process
while the op waits, then checks that Dagster fails the run and moves the queue on.
"""

import os
import time
from pathlib import Path

import dagster as dg


class GateConfig(dg.Config):
    folder: str  # the op writes `started` here with its pid, then waits for `release` (if `wait`)
    wait: bool = True


@dg.op
def wait_for_release(config: GateConfig) -> None:
    """Signals that the run executes, then blocks until the test creates the release file."""
    folder = Path(config.folder)
    (folder / f"started_{os.getpid()}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while config.wait and not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder / 'release'} did not appear within 600 s")
        time.sleep(0.1)  # waiting for the test's file, bounded by the deadline above


@dg.job(executor_def=dg.in_process_executor)
def gated() -> None:
    wait_for_release()


defs = dg.Definitions(jobs=[gated])
