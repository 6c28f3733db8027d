"""A two-step job on the platform's own warehouse resource, for the tests that start runs side by side.

The configuration comes from `CDP_CONFIG`, as for the platform. The first step records its start, waits
for the test's release file (with no warehouse connection open, like the gap between two stages), then
records its end; the second step records its start and end. `meta.step_log` thus shows whether two
runs' steps interleaved.
"""

import time
from pathlib import Path

import dagster as dg

from resources.config import load_config
from resources.warehouse import Warehouse, warehouse_resource


class GateConfig(dg.Config):
    folder: str  # `started_<run id>` is written here; the step then waits for `release`


def _record(warehouse: Warehouse, run_id: str, step: str, phase: str) -> None:
    with warehouse.get_connection() as conn:
        conn.execute("create sequence if not exists meta.step_order")
        conn.execute("create table if not exists meta.step_log (n bigint, run_id varchar, step varchar, phase varchar)")
        conn.execute("insert into meta.step_log select nextval('meta.step_order'), ?, ?, ?", [run_id, step, phase])


@dg.op
def first(context: dg.OpExecutionContext, warehouse: Warehouse, config: GateConfig) -> None:
    """Records its start, waits for the release file, records its end."""
    _record(warehouse, context.run_id, "first", "start")
    folder = Path(config.folder)
    (folder / f"started_{context.run_id}").write_text(context.run_id)
    deadline = time.monotonic() + 600
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder / 'release'} did not appear within 600 s")
        time.sleep(0.1)  # waiting for the test's file, bounded by the deadline above
    _record(warehouse, context.run_id, "first", "end")


@dg.op(ins={"after": dg.In(dg.Nothing)})
def second(context: dg.OpExecutionContext, warehouse: Warehouse) -> None:
    """Records its start and end."""
    _record(warehouse, context.run_id, "second", "start")
    _record(warehouse, context.run_id, "second", "end")


@dg.job(executor_def=dg.in_process_executor)
def two_steps() -> None:
    second(first())


defs = dg.Definitions(jobs=[two_steps], resources={"warehouse": warehouse_resource(load_config())})
