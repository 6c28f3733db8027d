"""Declarative automation, on from the start: downstream stages follow their inputs.

Dagster's default automation sensor starts stopped; a CDP whose profiles silently stop refreshing
after a new file lands is worse than none, so the platform ships its own, running by default.
"""

import dagster as dg

automation_sensor = dg.AutomationConditionSensorDefinition(
    "cdp_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes cleaned records, identity, profiles, segments and syncs after their inputs change.",
)
