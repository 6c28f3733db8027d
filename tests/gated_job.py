"""A job for the run-monitoring test: it holds its run open until the test releases it, like a long refresh.

Loaded by a Dagster code server from a workspace file the test writes; the test kills the run's process
while the op waits, then checks that Dagster fails the run and moves the queue on. The gate itself, `hold`,
also stops a refresh at a chosen statement for the tests that kill one there (tests/test_refresh_kill.py).
"""

import os
import time
from pathlib import Path

import dagster as dg


class GateConfig(dg.Config):
    folder: str  # the op writes `started` here with its pid, then waits for `release` (if `wait`)
    wait: bool = True


def hold(folder: Path, wait: bool = True) -> None:
    """Write `started_<pid>` (holding the pid) in `folder`, then block until the test creates `release`
    there (if `wait`): the process is then at a known point, for the test to kill or let go."""
    (folder / f"started_{os.getpid()}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while wait and not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder / 'release'} did not appear within 600 s")
        time.sleep(0.1)  # waiting for the test's file, bounded by the deadline above


@dg.op
def wait_for_release(config: GateConfig) -> None:
    """Signals that the run executes, then blocks until the test creates the release file."""
    hold(Path(config.folder), config.wait)


@dg.job(executor_def=dg.in_process_executor)
def gated() -> None:
    wait_for_release()


defs = dg.Definitions(jobs=[gated])


def refresh_held_at(config_path: str, folder: str, statement: str, occurrence: int) -> None:
    """Run the platform's full refresh (configuration `config_path`, an ephemeral instance) and `hold` it,
    without a release, just before its `occurrence`-th warehouse statement matching regex `statement`:
    the test kills the process there. Statements are matched as the SQL runner receives them
    (`create_table_as` as `create table <name> as <select>`)."""
    import re

    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from resources.config import load_config
    from resources.sql import Sql

    pattern = re.compile(statement, re.IGNORECASE | re.DOTALL)
    seen = 0

    def gate(text: str) -> None:
        nonlocal seen
        if pattern.search(text):
            seen += 1
            if seen == occurrence:
                hold(Path(folder))

    execute, create_table_as = Sql.execute, Sql.create_table_as

    def gated_execute(self: Sql, sql: str, params: object = None) -> None:
        gate(sql)
        execute(self, sql, params)

    def gated_create_table_as(self: Sql, name: str, select: str, params: object = None, **kwargs: bool) -> None:
        gate(f"create table {name} as {select}")
        create_table_as(self, name, select, params, **kwargs)

    Sql.execute, Sql.create_table_as = gated_execute, gated_create_table_as  # type: ignore[method-assign]
    defs = build_definitions(load_config(Path(config_path)))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance, raise_on_error=False)
    # Reaching the end means the gate was never met: the test sees the exit instead of `started_<pid>`.
    raise SystemExit(f"the refresh ended ({'success' if result.success else 'failure'}) without meeting the gate")


if __name__ == "__main__":
    import sys

    refresh_held_at(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
