"""When the platform refreshes without a new file, and whom it tells when something goes wrong."""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from resources.config.base import EnvName, HttpUrl, TimeZoneName, _Strict, check_cron, check_span, span

# The run tag a scheduled time-windows refresh carries: the tick's time (UTC, ISO), which profiles
# measure 'now' from.
AS_OF_TAG = "cdp/as_of"
# The run tag that makes the identity stage train its matching model afresh instead of keeping the last one.
RETRAIN_TAG = "cdp/retrain_model"


# The run tag a destination retry carries: how many runs in a row have found the destination unavailable
# before this one (the destination_retry sensor waits longer after each).
RETRY_ATTEMPT_TAG = "cdp/destination_retry"
# The metadata key a sync's failure carries when its destination was unavailable: the destination's name.
UNAVAILABLE_DESTINATION = "unavailable_destination"


class DestinationRetryConfig(_Strict):
    """When a sync that found its destination down is run again, with no new change to carry it."""

    first_after: str = Field(
        "5 minutes", description="Wait after the first failed run before the first retry ('30 minutes', '1 hour')."
    )
    longest_wait: str = Field(
        "1 hour", description="The wait doubles after each failed retry, up to this; retries go on until one succeeds."
    )

    @field_validator("first_after", "longest_wait")
    @classmethod
    def _spans(cls, value: str) -> str:
        return check_span(value) or value

    @model_validator(mode="after")
    def _longest_is_longest(self) -> DestinationRetryConfig:
        # Left at its default, longest_wait gives way to a longer first_after (see `wait`).
        if "longest_wait" in self.model_fields_set and span(self.longest_wait) < span(self.first_after):
            raise ValueError(
                f"longest_wait ({self.longest_wait}) is shorter than first_after ({self.first_after}): "
                "retries wait first_after, then twice as long each time up to longest_wait"
            )
        return self

    def wait(self, attempt: int) -> timedelta:
        """The wait before retry number `attempt` (1 for the first): first_after, doubled each time, capped at
        longest_wait, or at first_after when that is longer (only the default longest_wait can be)."""
        first = span(self.first_after)
        return min(first * 2 ** (max(attempt, 1) - 1), max(span(self.longest_wait), first))


class RefreshConfig(_Strict):
    """Schedules: the daily re-evaluation of time windows and the weekly retraining of the matching model."""

    timezone: TimeZoneName = Field(
        "UTC",
        description="IANA time zone of the schedules' clock and of the calendar days 'days since' traits count.",
    )
    time_windows: str | None = Field(
        "0 0 * * *",
        description=(
            "Cron (in `timezone`) at which profiles, their windowed traits and everything downstream (segments, "
            "syncs) are re-evaluated with no new file, so a lapsed buyer enters a segment the day they lapse. "
            "Only with profiles.as_of: now; null turns it off."
        ),
    )

    model_retraining: str | None = Field(
        "0 3 * * 0",
        description=(
            "Cron (in `timezone`) at which the matching model is trained afresh on all the data and identity "
            "re-resolved (the `retrain_identity_model` job, also launchable by hand); between trainings a run "
            "keeps the last model. Null: only by hand, or when the data doubles or the settings change."
        ),
    )

    rebuild_check: str | None = Field(
        "0 5 * * 0",
        description=(
            "Cron (in `timezone`) of the `rebuild_check` job: the check that a rebuild from the raw rows gives the "
            "same customers, ids, profiles and segment members as the refreshes did. Null: only by hand."
        ),
    )

    destination_retry: DestinationRetryConfig | None = Field(
        DestinationRetryConfig(),
        description=(
            "Runs again a sync whose destination was unavailable (down, timing out, refusing the credentials), so "
            "its deferred changes reach it once it is back, though nothing new arrives. Null: only the next change "
            "to the segment, the time-windows refresh or a run by hand sends them."
        ),
    )

    crashed_run_retries: int = Field(
        3,
        ge=0,
        le=10,
        description=(
            "How many times a run of the `cdp_automation` sensor (cleaning to syncs after a new file) whose process "
            "died (killed, out of memory) is started again from where it stopped; 0: never. A run whose step "
            "failed on its own error is not retried."
        ),
    )

    @field_validator("time_windows", "model_retraining", "rebuild_check")
    @classmethod
    def _crons(cls, value: str | None) -> str | None:
        return check_cron(value)


class AlertsConfig(_Strict):
    """Where a failed run is reported: a Slack-compatible incoming webhook (`{"text": ...}`)."""

    webhook_url_env: EnvName = Field(
        "CDP_ALERT_WEBHOOK_URL",
        description="Environment variable holding the webhook URL (a secret: never in this file). Unset: no alerts.",
    )
    ui_url: HttpUrl = Field(
        "http://127.0.0.1:3000", description="The Dagster UI's address, for the link to the failed run in a message."
    )

    @property
    def webhook_url(self) -> str | None:
        """The URL, read from the environment now (it may be set after the configuration is loaded)."""
        return os.environ.get(self.webhook_url_env) or None
