"""The destination retry sensor: runs again a sync whose destination was unavailable, until it gets through.

A sync that finds its destination down (every retry of a batch failing, timing out, or the caller refused)
defers its changes and fails. Nothing else would send them while the segment stays as it is: automation
starts a sync when its segment changes, and the time-windows refresh once a day. So this sensor looks at
each HTTP or database destination's sync in Dagster's own records (never the warehouse, which a run may be
writing): when its latest attempt failed because the destination was unavailable, it launches the sync
alone after `refresh.destination_retry.first_after`, then waits twice as long after each retry that fails
again, up to `longest_wait`, and goes on until one succeeds. A retry resends the unanswered batch first,
with its idempotency key, then the deferred changes; a change since is part of the same diff.

Failures of another kind (a bug, a failed upstream check) are not retried: the run-failure alert reports
them, and running them again would fail the same way. File exports write a local file and are not
retried either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from resources.config import CDPConfig
from resources.config.refresh import RETRY_ATTEMPT_TAG, UNAVAILABLE_DESTINATION

SENSOR_NAME = "destination_retry"
CHECK_INTERVAL_SECONDS = 60


def sync_key(destination: str) -> dg.AssetKey:
    """A destination's sync asset (cdp_assets/syncs/assets.py; a sensor never imports the stages)."""
    return dg.AssetKey(["syncs", destination])


def _outage_attempt(instance: dg.DagsterInstance, run: dg.DagsterRun, destination: str) -> int | None:
    """The number of the retry that follows `run`: one more than the retries in a row before it that found
    the destination unavailable. None when the run's sync failed for another reason."""
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        data = event.step_failure_data if event else None
        user = data.user_failure_data if data else None
        marker = user.metadata.get(UNAVAILABLE_DESTINATION) if user else None
        if marker is not None and getattr(marker, "value", marker) == destination:
            return int(run.tags.get(RETRY_ATTEMPT_TAG, "0")) + 1
    return None


def build_destination_retry_sensor(
    config: CDPConfig, clock: Callable[[], float] = time.time
) -> dg.SensorDefinition | None:
    """The sensor, or None when `refresh.destination_retry` is null or no destination is retried. `clock`
    gives the current time (seconds since the epoch); tests move it instead of waiting."""
    retry = config.refresh.destination_retry
    names = [d.name for d in config.destinations if d.type != "file"]
    if retry is None or not names:
        return None

    @dg.sensor(
        name=SENSOR_NAME,
        description=(
            "Runs again the sync of a destination that was unavailable, after refresh.destination_retry.first_after "
            "and then twice as long each time (up to longest_wait), until its deferred changes get through."
        ),
        minimum_interval_seconds=CHECK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[sync_key(name) for name in names],
    )
    def destination_retry(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock()
        requests: list[dg.RunRequest] = []
        waiting: list[str] = []
        records = context.instance.get_asset_records([sync_key(name) for name in names])
        entries = {record.asset_entry.asset_key: record.asset_entry for record in records}
        for name in names:
            entry = entries.get(sync_key(name))
            run_id = entry.last_run_id if entry else None  # the latest run to take up the sync
            record = context.instance.get_run_record_by_id(run_id) if run_id else None
            if record is None or record.dagster_run.status != dg.DagsterRunStatus.FAILURE or record.end_time is None:
                continue  # never run, got through, or a run of it is queued or under way
            attempt = _outage_attempt(context.instance, record.dagster_run, name)
            if attempt is None:
                continue
            due = record.end_time + retry.wait(attempt).total_seconds()
            if now < due:
                at = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                waiting.append(f"'{name}' retries at {at}")
                continue
            requests.append(
                dg.RunRequest(
                    # One retry per failed run, however many ticks see it.
                    run_key=f"{name}:{record.dagster_run.run_id}",
                    asset_selection=[sync_key(name)],
                    tags={RETRY_ATTEMPT_TAG: str(attempt)},
                )
            )
        if requests:
            return dg.SensorResult(run_requests=requests)
        reason = "; ".join(waiting) if waiting else "no destination is waiting for a retry"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason))

    return destination_retry
