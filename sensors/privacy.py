"""The privacy requests sensor: launches the privacy_request job for each requests file dropped in the folder.

Like the landing sensor it looks only at file names, sizes and modification times, never at the warehouse,
and waits until a file has settled. The run configuration names the file, never the people in it: Dagster
keeps run configuration in its storage for as long as run history.
"""

import time

import dagster as dg

from resources.config import CDPConfig

PRIVACY_REQUESTS_ASSET = dg.AssetKey(["privacy", "requests"])


def build_privacy_requests_sensor(config: CDPConfig) -> dg.SensorDefinition:
    folder = config.privacy_requests_path

    @dg.sensor(
        name="privacy_requests_sensor",
        description="Launches the privacy_request job for each requests file (CSV) in the privacy requests folder.",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=[PRIVACY_REQUESTS_ASSET],
    )
    def privacy_requests_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        settled_before = time.time() - config.landing.settle_seconds
        requests = []
        files = sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.startswith("."))
        for path in files:
            stat = path.stat()
            if stat.st_mtime > settled_before:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}",
                    asset_selection=[PRIVACY_REQUESTS_ASSET],
                    run_config={"ops": {"privacy__requests": {"config": {"requests_file": path.name}}}},
                    tags={"cdp/privacy_requests_file": path.name},
                )
            )
        return dg.SensorResult(run_requests=requests)

    return privacy_requests_sensor
