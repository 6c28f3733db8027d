"""Declarative automation, on from the start: downstream stages follow their inputs.

Dagster's default automation sensor starts stopped; a CDP whose profiles silently stop refreshing
after a new file lands is worse than none, so the platform ships its own, running by default.
"""

import dagster as dg

from resources.config import CDPConfig

# Dagster's run tag giving how many times a run is retried (run_retries in dagster.yaml).
MAX_RETRIES_TAG = "dagster/max_retries"


def build_automation_sensor(config: CDPConfig) -> dg.AutomationConditionSensorDefinition:
    """The sensor, its runs tagged to be started again when their process dies, `refresh.crashed_run_retries`
    times at most: it requests a stage again only when its inputs change once more, so without a retry a new
    file's people stay out of the profiles until the next file. The shipped dagster.yaml turns on Dagster's
    run retries for crashed runs only, for runs so tagged."""
    return dg.AutomationConditionSensorDefinition(
        "cdp_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        run_tags={MAX_RETRIES_TAG: str(config.refresh.crashed_run_retries)},
        description="Materializes cleaned records, identity, profiles, segments and syncs after their inputs change.",
    )
