"""Schedules: the time-windows refresh, the matching model's retraining, and the API sources' polls.

The time-windows refresh: profiles and everything downstream re-evaluated when the clock moves.

`orders_last_90_days` and `days_since_last_order > 90` change every day though no file lands, and the
landing sensor and automation react only to data. This schedule re-materializes the golden profiles, the
segments and the syncs at `refresh.time_windows` (cron, in `refresh.timezone`), so a lapsed buyer enters
`lapsed_buyers` on the day they lapse and the destinations hear of it. Each run carries its tick's time
(AS_OF_TAG), so the traits are measured from the tick whenever the run actually starts, and a tick is
launched once (its run key). With `profiles.as_of` other than 'now' windows do not move with the clock and
the schedule skips.

The model retraining: identity keeps the matching model it last trained, so results do not drift between
runs; at `refresh.model_retraining` (weekly by default) the `retrain_identity_model` job trains it afresh
on all the data and re-resolves identity.

The polls: one job and one schedule per API source, on the cron its configuration gives. A schedule per
source (rather than one for all) lets each API be polled as often as its rate limits and its data's
freshness call for, and shows each in the UI with its own history and on/off switch.
"""

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import dagster as dg

from resources.config import CDPConfig
from resources.config.refresh import AS_OF_TAG
from resources.landing import api_sources, poll_key

# The profiles stage's asset key (cdp_assets/profiles/assets.py); a sensor never imports the stages.
GOLDEN_PROFILES = dg.AssetKey(["profiles", "golden_profiles"])
TIME_WINDOWS_SCHEDULE = "time_windows_refresh"
MODEL_RETRAINING_SCHEDULE = "identity_model_retraining"
# The identity stage's retraining job, and the job of the check that a rebuild gives what the refreshes
# did (both defined in cdp_assets/definitions.py).
RETRAIN_JOB = "retrain_identity_model"
REBUILD_CHECK_JOB = "rebuild_check"
REBUILD_CHECK_SCHEDULE = "rebuild_check_schedule"


def build_time_windows_schedule(
    config: CDPConfig, without: Sequence[dg.AssetChecksDefinition] = ()
) -> dg.ScheduleDefinition | None:
    """The schedule, or None when `refresh.time_windows` is null. Checks on the refreshed assets run with
    them, except those in `without`: the rebuild check costs a refresh of its own and runs on its own
    schedule, not every night."""
    refresh = config.refresh
    if refresh.time_windows is None:
        return None

    @dg.schedule(
        name=TIME_WINDOWS_SCHEDULE,
        cron_schedule=refresh.time_windows,
        execution_timezone=refresh.timezone,
        target=dg.AssetSelection.assets(GOLDEN_PROFILES).downstream() - dg.AssetSelection.checks(*without),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-evaluates windowed traits, the segments reading them and the syncs with no new file.",
    )
    def time_windows_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if config.profiles.as_of != "now":
            return dg.SkipReason(
                f"profiles.as_of is '{config.profiles.as_of}': windows are measured from the data, not the clock"
            )
        tick = context.scheduled_execution_time.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        return dg.RunRequest(run_key=f"time_windows:{tick}", tags={AS_OF_TAG: tick})

    return time_windows_refresh


def _job_schedule(
    config: CDPConfig, name: str, cron: str | None, job: str, description: str
) -> dg.ScheduleDefinition | None:
    """A schedule launching `job` at `cron` in `refresh.timezone`, running by default; None when `cron` is null."""
    if cron is None:
        return None
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone=config.refresh.timezone,
        job_name=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


def build_model_retraining_schedule(config: CDPConfig) -> dg.ScheduleDefinition | None:
    """The schedule, or None when `refresh.model_retraining` is null."""
    return _job_schedule(
        config,
        MODEL_RETRAINING_SCHEDULE,
        config.refresh.model_retraining,
        RETRAIN_JOB,
        "Trains the identity matching model afresh on all the data and re-resolves identity.",
    )


def build_rebuild_check_schedule(config: CDPConfig) -> dg.ScheduleDefinition | None:
    """The schedule of the rebuild check, or None when `refresh.rebuild_check` is null."""
    return _job_schedule(
        config,
        REBUILD_CHECK_SCHEDULE,
        config.refresh.rebuild_check,
        REBUILD_CHECK_JOB,
        "Checks that a rebuild from the raw rows gives the customers, profiles and members there are.",
    )


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
