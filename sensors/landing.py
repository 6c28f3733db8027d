"""The landing-folder sensor: starts the sources' extracts when new or changed files appear.

One run takes every source with new or changed files at a tick: with a run per source, automation would
see the first source's extract complete while the next one waits for the warehouse, and refresh identity,
profiles and syncs once for each.

It looks only at file names, sizes and modification times, never at the warehouse: DuckDB allows one
writer per file and a sensor must not compete with a running extract for it. A file is picked up once
it has not changed for `landing.settle_seconds`, so a file still being copied is not loaded half-written.

A file is requested once: the cursor then holds its signature. So when the run that should have loaded
it fails (killed, out of memory, the warehouse held by another process past its lock timeout), the sensor
starts the source's extract again itself, from Dagster's records of the runs: when the latest run to take
up `raw/<source>` failed without materializing it, a retry is requested RETRY_FIRST_AFTER_SECONDS after
that failure, then twice as long after each retry that fails again (up to RETRY_LONGEST_WAIT_SECONDS), at
most RETRY_ATTEMPTS times in a row (the constants and `next_retry` are in resources/run_retries.py); the
run-failure alert reports each failure. The extract loads every new or changed file of the source, so the
retry, or any later run of it, loads what the failed run did not.
"""

import hashlib
import json
import time
from collections.abc import Callable

import dagster as dg

from resources.config import CDPConfig
from resources.landing import FILE_SIGNATURES, FILES_READABLE_CHECK, ExtractConfig, file_signature, source_files
from resources.run_retries import next_retry

# Retries of an extract whose run failed (see the module's docstring); the tag counts them.
RETRY_TAG = "cdp/extract_retry"


def _signatures_loaded(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    """The files the source's last extract found loaded or unchanged, with their signatures: where the
    sensor starts when it has no cursor for the source, and what a file that changed since the sensor last
    looked is compared with, so files a headless refresh already loaded (before the sensor first ran, or
    while `dagster dev` was stopped) are not extracted again. Nothing when no extract recorded them."""
    latest = instance.get_latest_materialization_event(key)
    recorded = (
        latest.asset_materialization.metadata.get(FILE_SIGNATURES) if latest and latest.asset_materialization else None
    )
    value = getattr(recorded, "value", None)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _extract_request(sources: list[str], run_key: str, tags: dict[str, str]) -> dg.RunRequest:
    """One run of the sources' extracts that loads their new and changed files (and materializes nothing for
    a source with none), with the check that every file could be read."""
    keys = [dg.AssetKey(["raw", source]) for source in sources]
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=keys,
        # The extracts' own check; a source's freshness is its own sensor's (sensors/freshness.py).
        asset_check_keys=[dg.AssetCheckKey(key, FILES_READABLE_CHECK) for key in keys],
        run_config=dg.RunConfig(ops={f"raw__{source}": ExtractConfig(skip_if_unchanged=True) for source in sources}),
        tags={"cdp/source": ",".join(sources), **tags},
    )


def _retry(instance: dg.DagsterInstance, source: str, now: float) -> tuple[dg.RunRequest | None, str | None]:
    """A retry of the source's extract when the latest run to take it up failed without materializing it
    and its wait is over (None otherwise), and when it is not over yet, when it will be."""
    key = dg.AssetKey(["raw", source])
    [record] = instance.get_asset_records([key]) or [None]
    entry = record.asset_entry if record else None
    run_id = entry.last_run_id if entry else None
    run = instance.get_run_record_by_id(run_id) if run_id else None
    if run is None or run.dagster_run.status != dg.DagsterRunStatus.FAILURE or run.end_time is None:
        return None, None  # never run, succeeded, or a run of it is queued or under way
    materialized = entry.last_materialization_record if entry else None
    if materialized is not None and materialized.run_id == run_id:
        return None, None  # the extract itself completed; a later step of that run failed
    attempt, due = next_retry(run, RETRY_TAG)
    if attempt is None:
        return None, None
    if now < due:
        return (
            None,
            f"'{source}' retries its failed extract at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(due))}",
        )
    # One retry per failed run, however many ticks see it.
    return _extract_request([source], f"{source}:retry-of:{run_id}", {RETRY_TAG: str(attempt)}), None


def build_landing_sensor(config: CDPConfig, clock: Callable[[], float] = time.time) -> dg.SensorDefinition:
    """The sensor; `clock` gives the current time (seconds since the epoch), which tests move instead of
    waiting."""
    keys = [dg.AssetKey(["raw", s.name]) for s in config.sources]

    @dg.sensor(
        name="landing_files_sensor",
        description="Starts a source's extract when new or changed files land in the landing folder.",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=keys,
    )
    def landing_files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        previous: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
        cursor: dict[str, dict[str, str]] = {}
        requests: list[dg.RunRequest] = []
        now = clock()
        settled_before = now - config.landing.settle_seconds
        waiting: list[str] = []
        changed: dict[str, dict[str, str]] = {}
        for source in config.sources:
            key = dg.AssetKey(["raw", source.name])
            recorded = None if source.name in previous else _signatures_loaded(context.instance, key)
            seen = dict(previous[source.name] if recorded is None else recorded)
            for path in source_files(config, source):
                stat = path.stat()
                if stat.st_mtime > settled_before:
                    continue  # still being written, or just landed: look again next tick
                rel = path.relative_to(config.landing_path).as_posix()
                signature = file_signature(stat)
                if seen.get(rel) != signature:
                    # Read only when a file looks new: an extract run since the last look may have loaded it.
                    recorded = _signatures_loaded(context.instance, key) if recorded is None else recorded
                    if recorded.get(rel) != signature:
                        changed.setdefault(source.name, {})[rel] = signature
                seen[rel] = signature
            cursor[source.name] = seen
            if source.name in changed:
                continue  # the run loads the files a failed run left too
            retry, wait = _retry(context.instance, source.name, now)
            requests += [retry] if retry else []
            waiting += [wait] if wait else []
        if changed:
            # One run for every source with new files: the stages downstream then see all of them land at
            # once and automation refreshes identity, profiles and syncs once, not once per source's run.
            digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:16]
            names = sorted(changed)
            files = sum(len(found) for found in changed.values())
            requests.append(_extract_request(names, f"{'+'.join(names)}:{digest}", {"cdp/new_files": str(files)}))
        skipped = dg.SkipReason("; ".join(waiting)) if waiting and not requests else None
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True), skip_reason=skipped)

    return landing_files_sensor
