"""What every part of the configuration shares: strict models, the name rule, and how remote calls
authenticate and retry (destinations and API sources alike)."""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict, Field

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A span of time as people write it in the file: '90 days', '12 hours', '1 week'.
DURATION_RE = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Strict):
    """A secret header read from the environment at run time: never written in the file, never logged."""

    env: str = Field(description="Environment variable holding the token.")
    header: str = "Authorization"
    scheme: str | None = Field("Bearer", description="Prefix before the token, e.g. Bearer; null for none.")

    def headers(self, owner: str) -> dict[str, str]:
        """The header with its secret read from the environment now (a rotated token is picked up by the
        next run); `owner` names what needs it in the error when the variable is not set."""
        token = os.environ.get(self.env)
        if not token:
            raise MissingSecretError(f"{owner}: environment variable {self.env} (auth) is not set")
        return {self.header: f"{self.scheme} {token}" if self.scheme else token}


class MissingSecretError(Exception):
    """An environment variable the configuration names for a secret is not set."""


class RetryConfig(_Strict):
    max_attempts: int = Field(6, ge=1, le=20)
    base_delay_seconds: float = Field(0.5, ge=0)
    max_delay_seconds: float = Field(30.0, ge=0)
    timeout_seconds: float = Field(10.0, gt=0, description="Per request.")


# Five cron fields (minute hour day-of-month month day-of-week), each numbers, names, ranges, steps or '*';
# Dagster checks the rest when it builds the schedule.
_CRON_RE = re.compile(r"^\s*[0-9A-Za-z*/,?-]+(\s+[0-9A-Za-z*/,?-]+){4}\s*$")


def check_cron(value: str | None) -> str | None:
    """A schedule's cron expression as the file gives it, or an error saying what one looks like."""
    if value is not None and not _CRON_RE.match(value):
        raise ValueError(f"'{value}' is not a cron expression of five fields, e.g. '0 0 * * *' (every midnight)")
    return value
