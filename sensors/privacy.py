"""The privacy requests sensor: launches the privacy_request job for each requests file dropped in the folder.

Like the landing sensor it looks only at file names, sizes and modification times, never at the warehouse,
and waits until a file has settled. The run configuration names the file, never the people in it: Dagster
keeps run configuration in its storage for as long as run history.

A run that completes moves the file to `processed/`. One that fails (killed, out of memory, the warehouse
held past its lock timeout) leaves it in the folder, and its people half erased: the sensor runs the file
again, with the landing sensor's backoff (resources/run_retries.py), from Dagster's records of the
runs; the requests it already carried out are not done twice, and what it owed is finished first.
"""

import time
from collections.abc import Callable

import dagster as dg

from resources.config import CDPConfig
from resources.run_retries import next_retry

FILE_TAG = "cdp/privacy_requests_file"
# The file's name, size and modification time: a later file of the same name is another file.
SIGNATURE_TAG = "cdp/privacy_requests_signature"
RETRY_TAG = "cdp/privacy_retry"

PRIVACY_REQUESTS_ASSET = dg.AssetKey(["privacy", "requests"])


def _request(name: str, run_key: str, signature: str, tags: dict[str, str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[PRIVACY_REQUESTS_ASSET],
        run_config={"ops": {"privacy__requests": {"config": {"requests_file": name}}}},
        tags={FILE_TAG: name, SIGNATURE_TAG: signature, **tags},
    )


def _retry(instance: dg.DagsterInstance, name: str, signature: str, now: float) -> dg.RunRequest | None:
    """The file's run again when its latest run failed and the wait after it is over; None otherwise."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={SIGNATURE_TAG: signature}), limit=1)
    run = records[0] if records else None
    if run is None or run.dagster_run.status != dg.DagsterRunStatus.FAILURE or run.end_time is None:
        return None
    attempt, due = next_retry(run, RETRY_TAG)
    if attempt is None or now < due:
        return None
    return _request(name, f"{signature}:retry-of:{run.dagster_run.run_id}", signature, {RETRY_TAG: str(attempt)})


def build_privacy_requests_sensor(config: CDPConfig, clock: Callable[[], float] = time.time) -> dg.SensorDefinition:
    folder = config.privacy_requests_path

    @dg.sensor(
        name="privacy_requests_sensor",
        description="Launches the privacy_request job for each requests file (CSV) in the privacy requests folder.",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=[PRIVACY_REQUESTS_ASSET],
    )
    def privacy_requests_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock()
        settled_before = now - config.landing.settle_seconds
        requests = []
        files = sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.startswith("."))
        for path in files:
            stat = path.stat()
            if stat.st_mtime > settled_before:
                continue
            signature = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
            requests.append(_request(path.name, signature, signature, {}))
            # A run key launches once; a retry has its own.
            retry = _retry(context.instance, path.name, signature, now)
            requests += [retry] if retry else []
        return dg.SensorResult(run_requests=requests)

    return privacy_requests_sensor
