"""Poll schedules: one job and one schedule per API source, on the cron its configuration gives.

A schedule per source (rather than one for all) lets each API be polled as often as its rate limits
and its data's freshness call for, and shows each in the UI with its own history and on/off switch.
"""

from typing import Any

import dagster as dg

from resources.config import CDPConfig
from resources.landing import api_sources, poll_key


def poll_job_name(source_name: str) -> str:
    return f"poll_{source_name}"


def build_poll_jobs_and_schedules(config: CDPConfig) -> tuple[list[Any], list[dg.ScheduleDefinition]]:
    """The poll job of every API source (asset jobs, whose type Dagster does not export), and the schedule of
    each that has a cron."""
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    for source in api_sources(config):
        assert source.http is not None
        job = dg.define_asset_job(
            poll_job_name(source.name),
            selection=[poll_key(source)],
            description=f"Polls API source '{source.name}' and lands its new records; the landing sensor loads them.",
            tags={"cdp/source": source.name},
        )
        jobs.append(job)
        if source.http.schedule:
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{poll_job_name(source.name)}_schedule",
                    job=job,
                    cron_schedule=source.http.schedule,
                    execution_timezone="UTC",
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                    description=f"Polls API source '{source.name}' on '{source.http.schedule}' (UTC).",
                )
            )
    return jobs, schedules
