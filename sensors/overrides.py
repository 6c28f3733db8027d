"""The identity overrides sensor: a changed overrides file re-resolves identity, as new data would.

The overrides file (`identity.overrides` in cdp.yaml) is an input of the identity asset, but not a file
in the landing folder, so the landing sensor does not see it. This sensor reads its content hash each
tick (the file is small) and, when it differs from the last tick's, starts `identity/clusters`; the
stages downstream follow by automation. The first tick only records the hash. A file that no longer
loads is not a reason to start anything: the run would fail at load, and the definitions say why.
"""

import hashlib

import dagster as dg

from resources.config import CDPConfig

# The identity stage's asset key (cdp_assets/identity/assets.py); a sensor never imports the stages.
IDENTITY_CLUSTERS = dg.AssetKey(["identity", "clusters"])


def build_overrides_sensor(config: CDPConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name="identity_overrides_sensor",
        description="Re-resolves identity when the manual overrides file (identity.overrides) changes.",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=[IDENTITY_CLUSTERS],
    )
    def identity_overrides_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        path = config.overrides_path
        if path is None:
            return dg.SensorResult(skip_reason="no identity.overrides file is configured")
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        except OSError as exc:
            return dg.SensorResult(skip_reason=f"cannot read {path}: {exc.strerror}", cursor=context.cursor)
        if context.cursor is None or context.cursor == digest:
            return dg.SensorResult(cursor=digest)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"overrides:{digest}", asset_selection=[IDENTITY_CLUSTERS], tags={"cdp/overrides": digest}
                )
            ],
            cursor=digest,
        )

    return identity_overrides_sensor
