"""Declarative automation, on from the start: downstream stages follow their inputs.

Dagster's default automation sensor starts stopped; a CDP whose profiles silently stop refreshing
after a new file lands is worse than none, so the platform ships its own, running by default.
"""

import dagster as dg

# A run of this sensor whose process died (killed, out of memory; run monitoring fails it) is started again
# from where it stopped, at most this many times: the sensor itself requests a stage again only when its
# inputs change once more, so without a retry a new file's people stay out of the profiles until the next
# file. The shipped dagster.yaml turns on Dagster's run retries for crashed runs only, for runs so tagged.
CRASHED_RUN_RETRIES = 3

automation_sensor = dg.AutomationConditionSensorDefinition(
    "cdp_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags={"dagster/max_retries": str(CRASHED_RUN_RETRIES)},
    description="Materializes cleaned records, identity, profiles, segments and syncs after their inputs change.",
)
