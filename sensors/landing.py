"""The landing-folder sensor: starts a source's extract when new or changed files appear.

It looks only at file names, sizes and modification times, never at the warehouse: DuckDB allows one
writer per file and a sensor must not compete with a running extract for it. A file is picked up once
it has not changed for `landing.settle_seconds`, so a file still being copied is not loaded half-written.
"""

import hashlib
import json
import time

import dagster as dg

from resources.config import CDPConfig
from resources.landing import FILE_SIGNATURES, ExtractConfig, file_signature, source_files

# The extract's check that every file could be read (cdp_assets/extract/assets.py); a sensor never imports
# the stages.
FILES_READABLE_CHECK = "files_readable"


def _signatures_loaded(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    """The files the source's last extract found loaded or unchanged, with their signatures: where the
    sensor starts when it has no cursor for the source, so files a headless refresh already loaded are not
    extracted again. Nothing when no extract recorded them."""
    latest = instance.get_latest_materialization_event(key)
    recorded = (
        latest.asset_materialization.metadata.get(FILE_SIGNATURES) if latest and latest.asset_materialization else None
    )
    value = getattr(recorded, "value", None)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def build_landing_sensor(config: CDPConfig) -> dg.SensorDefinition:
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
        settled_before = time.time() - config.landing.settle_seconds
        for source in config.sources:
            if source.name in previous:
                seen = dict(previous[source.name])
            else:
                seen = _signatures_loaded(context.instance, dg.AssetKey(["raw", source.name]))
            changed: dict[str, str] = {}
            for path in source_files(config, source):
                stat = path.stat()
                if stat.st_mtime > settled_before:
                    continue  # still being written, or just landed: look again next tick
                rel = path.relative_to(config.landing_path).as_posix()
                signature = file_signature(stat)
                if seen.get(rel) != signature:
                    changed[rel] = signature
                seen[rel] = signature
            cursor[source.name] = seen
            if changed:
                digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:16]
                requests.append(
                    dg.RunRequest(
                        run_key=f"{source.name}:{digest}",
                        asset_selection=[dg.AssetKey(["raw", source.name])],
                        # The extract's own check; a source's freshness is its own sensor's (sensors/freshness.py).
                        asset_check_keys=[dg.AssetCheckKey(dg.AssetKey(["raw", source.name]), FILES_READABLE_CHECK)],
                        run_config=dg.RunConfig(ops={f"raw__{source.name}": ExtractConfig(skip_if_unchanged=True)}),
                        tags={"cdp/source": source.name, "cdp/new_files": str(len(changed))},
                    )
                )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return landing_files_sensor
