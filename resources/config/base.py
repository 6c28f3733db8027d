"""What every part of the configuration shares: strict models, the name rule, and how remote calls
authenticate and retry (destinations and API sources alike)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A span of time as people write it in the file: '90 days', '12 hours', '1 week' (never zero: a window of
# nothing, or a source expected every 0 days, is a mistake, not a setting).
DURATION_RE = re.compile(r"^\s*0*([1-9]\d*)\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_span(value: str | None) -> str | None:
    """A span of time a clock counts down ('30 minutes', '12 hours', '1 day', '2 weeks'), as the file gives
    it. Months and years are refused: their length depends on the calendar, and nothing waits that long."""
    match = DURATION_RE.match(value) if value is not None else None
    if value is not None and (match is None or match.group(2).lower() in ("month", "year")):
        raise ValueError(f"'{value}' must look like '30 minutes', '12 hours', '1 day' or '2 weeks'")
    return value


def span(value: str) -> timedelta:
    """A span that passed `check_span`, as a timedelta."""
    match = DURATION_RE.match(value)
    assert match is not None, value
    return timedelta(**{f"{match.group(2).lower()}s": int(match.group(1))})


def _env_name(value: str) -> str:
    if not _ENV_NAME_RE.match(value):
        raise ValueError(
            f"'{value}' is not an environment variable name (letters, digits and '_', not starting with a digit): "
            "the file names the variable, the secret itself stays in the environment"
        )
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # Not echoed: a URL's path or query may carry a token, and this message is shown and logged.
        raise ValueError("not an http(s) URL with a host; write it whole, e.g. https://host:8080/path")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
    return value


# The name of an environment variable holding a secret, an address the platform calls or links to, and
# an IANA time zone.
EnvName = Annotated[str, AfterValidator(_env_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Names of query parameters (and URL parts) that carry a secret: api_key, access_token, client_secret,
# password, signature... They belong under `auth`, and their values are never shown.
SECRET_NAME_RE = re.compile(r"key|token|secret|pass|pwd|sig|auth|cred", re.IGNORECASE)


def shown_url(url: str, hidden: tuple[str, ...] = ()) -> str:
    """`url` as messages, logs and metadata show it: a user and password in it, and the values of query
    parameters whose names carry secrets (or are `hidden`, such as auth's own query parameter), replaced by
    ***. Pages and cursors stay visible, since they say where a poll stopped."""
    parts = urlsplit(url)
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{name}=***" if (SECRET_NAME_RE.search(name) or name in hidden) and sep else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class AuthConfig(_Strict):
    """A secret read from the environment at run time, sent as a header (or, for an API source, a query
    parameter): never written in the file, never logged."""

    env: EnvName = Field(description="Environment variable holding the token.")
    header: str = "Authorization"
    scheme: str | None = Field("Bearer", description="Prefix before the token, e.g. Bearer; null for none.")
    query_param: str | None = Field(
        None,
        description="API sources only: send the token as this query parameter (e.g. api_key) instead of a header; "
        "messages show it as ***.",
    )

    def _token(self, owner: str) -> str:
        token = os.environ.get(self.env)
        if not token:
            raise MissingSecretError(f"{owner}: environment variable {self.env} (auth) is not set")
        return token

    def headers(self, owner: str) -> dict[str, str]:
        """The header with its secret read from the environment now (a rotated token is picked up by the
        next run); `owner` names what needs it in the error when the variable is not set. None when the
        token goes in a query parameter (see `params`)."""
        if self.query_param:
            return {}
        token = self._token(owner)
        return {self.header: f"{self.scheme} {token}" if self.scheme else token}

    def params(self, owner: str) -> dict[str, str]:
        """The query parameter carrying the token, when it goes in one."""
        return {self.query_param: self._token(owner)} if self.query_param else {}


class MissingSecretError(Exception):
    """An environment variable the configuration names for a secret is not set."""


class RetryConfig(_Strict):
    max_attempts: int = Field(6, ge=1, le=20)
    base_delay_seconds: float = Field(0.5, ge=0)
    max_delay_seconds: float = Field(30.0, ge=0)
    timeout_seconds: float = Field(10.0, gt=0, description="Per request.")
    longest_retry_after_seconds: float = Field(
        300.0,
        ge=0,
        description="The longest Retry-After waited out within a run: a server asking for longer is called "
        "again by a later run, not held on to.",
    )


# Five cron fields (minute hour day-of-month month day-of-week), each numbers, names, ranges, steps or '*'.
_CRON_RE = re.compile(r"^\s*[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+){4}\s*$")


def check_cron(value: str | None) -> str | None:
    """A schedule's cron expression as the file gives it, or an error saying what one looks like. Values out
    of range (minute 61, month 13, 30 February) are refused here with the key named, through the check
    Dagster itself applies when it builds the schedule, which would otherwise fail the definitions
    without naming the file."""
    from dagster._utils.schedules import is_valid_cron_string

    if value is not None and not _CRON_RE.match(value):
        raise ValueError(f"'{value}' is not a cron expression of five fields, e.g. '0 0 * * *' (every midnight)")
    if value is not None and not is_valid_cron_string(value):
        raise ValueError(
            f"'{value}' is not a valid cron expression: a field is out of range (minute 0-59, hour 0-23, "
            "day of month 1-31, month 1-12, day of week 0-7) or names a day that never comes"
        )
    return value
