"""Retrying a remote call: exponential backoff with jitter, `Retry-After`, and a rate limit.

Destination syncs and API sources talk to other people's servers, which throttle (429), fail for a
while (5xx, dropped connections) and sometimes say when to come back. Both use this one loop, so a
fix to how a retry waits applies to every remote call the platform makes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests

from resources.config.base import RetryConfig

T = TypeVar("T")


class TransientError(Exception):
    """The remote side could not answer now; the same request may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # How many attempts had been made when the error was given up on (set by with_retries).
        self.attempts = 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    longest_retry_after: float = 300.0

    @classmethod
    def from_config(cls, retry: RetryConfig) -> RetryPolicy:
        """The policy a destination's or an API source's `retry` section asks for."""
        return cls(
            retry.max_attempts, retry.base_delay_seconds, retry.max_delay_seconds, retry.longest_retry_after_seconds
        )

    def backoff(self, tries: int, rng: random.Random) -> float:
        """The wait after the `tries`-th failed attempt: doubling from `base_delay`, capped, with jitter so
        clients that failed together do not come back together."""
        return min(self.max_delay, self.base_delay * 2 ** (tries - 1)) * (0.5 + rng.random() / 2)


class RateLimiter:
    """At most `per_second` requests per second, across every call that shares this limiter."""

    def __init__(self, per_second: float | None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._sleep = sleep

    def wait(self) -> None:
        if self._interval:
            now = time.monotonic()
            if now < self._next:
                self._sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


def with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    limiter: RateLimiter | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_attempt: Callable[[], None] | None = None,
    on_retry: Callable[[TransientError], None] | None = None,
) -> T:
    """`call()` until it returns, retrying a TransientError up to `policy.max_attempts` attempts in all.

    Each retry waits the policy's backoff or the server's `Retry-After`, whichever is longer: a server
    that says "in 20 seconds" is not asked again in 2. A `Retry-After` longer than the policy's
    `longest_retry_after` is not waited out: a server that says "in an hour" would hold the run, and the
    warehouse's one writer, for that hour, so the error is raised at once, saying so, and a later run asks
    again (a sync defers its changes; a poll keeps its cursor). The last TransientError is raised when every
    attempt failed, with `attempts` set; any other exception is raised at once.
    """
    rng = rng or random.Random()
    for tries in range(1, policy.max_attempts + 1):
        if limiter is not None:
            limiter.wait()
        if on_attempt is not None:
            on_attempt()
        try:
            return call()
        except TransientError as exc:
            exc.attempts = tries
            if tries == policy.max_attempts:
                raise
            if (exc.retry_after or 0.0) > policy.longest_retry_after:
                later = TransientError(
                    f"{exc}, asking to be called again in {exc.retry_after:.0f} s, longer than the "
                    f"{policy.longest_retry_after:g} s a run waits (retry.longest_retry_after_seconds): left to "
                    "a later run",
                    exc.retry_after,
                )
                later.attempts = tries
                raise later from None
            if on_retry is not None:
                on_retry(exc)
            sleep(max(policy.backoff(tries, rng), exc.retry_after or 0.0))
    raise AssertionError("unreachable: the last attempt returns or raises")


def retry_after(response: requests.Response) -> float | None:
    """The server's `Retry-After` in seconds: a number of seconds or an HTTP date (RFC 9110), else None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_transient_status(status: int) -> bool:
    """Throttled (429) or a server-side failure (5xx): worth asking again later."""
    return status == 429 or status >= 500
