"""Destination clients and delivery: how changes reach the tools that act on them.

A client knows one destination's wire format and says, per batch, only one of three things: accepted
(returns), try again later (`TransientError`: connection failure, timeout, 5xx, 429 with its
Retry-After), or rejected (`RejectedError`, a 4xx, with the rows it blamed when the destination says).
`deliver` owns everything else, the same for every destination: batching, the rate limit, exponential
backoff with jitter, and splitting a rejected batch until the bad rows are isolated, so one bad row
never fails the rows beside it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import requests

Operation = Literal["add", "update", "remove"]


class Change:
    """One row to apply at a destination: its key, what to do, and the fields to send.

    The fields are held as given, a dict or the JSON text the warehouse produced, and converted only
    when a client asks for the other form: a million-row sync should not parse and re-serialise every
    row just to post it.
    """

    __slots__ = ("key", "operation", "row_hash", "_row", "_payload")

    def __init__(
        self,
        key: str,
        operation: Operation,
        row: dict[str, Any] | None = None,
        row_hash: str = "",
        payload: str | None = None,
    ) -> None:
        self.key, self.operation, self.row_hash = key, operation, row_hash
        self._row, self._payload = row, payload

    @property
    def row(self) -> dict[str, Any]:
        if self._row is None:
            self._row = json.loads(self._payload or "{}")
        return self._row

    @property
    def payload(self) -> str:
        """The fields as JSON object text."""
        if self._payload is None:
            self._payload = json.dumps(self._row or {}, sort_keys=True, default=str)
        return self._payload

    def __repr__(self) -> str:
        return f"Change({self.key!r}, {self.operation!r})"


class TransientError(Exception):
    """The destination could not take the batch now; the same batch may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(Exception):
    """The destination refused the batch; `row_errors` maps batch positions to reasons when it said which."""

    def __init__(self, message: str, row_errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.row_errors = row_errors or {}


class DestinationClient(Protocol):
    """Sends one batch (all changes of one operation kind) or raises TransientError / RejectedError."""

    def send(self, changes: Sequence[Change], batch_id: str) -> None: ...

    def close(self) -> None: ...


def batch_id(destination: str, changes: Sequence[Change]) -> str:
    """Idempotency key derived from the batch's content: a resent batch carries the same key, so a
    destination that honours it applies the batch once even when the first answer was lost."""
    digest = hashlib.sha256(destination.encode())
    for change in changes:
        digest.update(f"\x00{change.operation}\x00{change.key}\x00{change.row_hash}".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0


@dataclass
class Delivery:
    """What happened to the changes of one sync run."""

    accepted: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    deferred: list[Change] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    unavailable: str | None = None


class _RateLimiter:
    def __init__(self, per_second: float | None, sleep: Callable[[float], None]) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._sleep = sleep

    def wait(self) -> None:
        if self._interval:
            now = time.monotonic()
            if now < self._next:
                self._sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


def deliver(
    client: DestinationClient,
    destination: str,
    changes: Sequence[Change],
    *,
    batch_size: int,
    policy: RetryPolicy = RetryPolicy(),
    rate_limit: float | None = None,
    on_batch: Callable[[list[Change], list[tuple[Change, str]]], None] | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send changes in batches of one operation each; `on_batch(accepted, failed)` runs after every batch
    so the caller can record acknowledged rows at once (a crash later loses nothing).

    When a batch still fails transiently after every attempt the destination is taken to be down: the
    remaining changes are deferred to the next run instead of each waiting out its own retries.
    """
    rng = rng or random.Random()
    limiter = _RateLimiter(rate_limit, sleep)
    result = Delivery()

    def attempt(batch: list[Change]) -> tuple[list[Change], list[tuple[Change, str]]]:
        key = batch_id(destination, batch)
        for tries in range(1, policy.max_attempts + 1):
            limiter.wait()
            result.requests += 1
            try:
                client.send(batch, key)
                return batch, []
            except TransientError as exc:
                if tries == policy.max_attempts:
                    raise
                result.retries += 1
                backoff = min(policy.max_delay, policy.base_delay * 2 ** (tries - 1)) * (0.5 + rng.random() / 2)
                sleep(max(backoff, exc.retry_after or 0.0))
            except RejectedError as exc:
                if len(batch) == 1:
                    return [], [(batch[0], str(exc))]
                blamed = {i for i in exc.row_errors if 0 <= i < len(batch)}
                if blamed:
                    bad = [(batch[i], exc.row_errors[i]) for i in sorted(blamed)]
                    rest = [c for i, c in enumerate(batch) if i not in blamed]
                    good, worse = attempt(rest) if rest else ([], [])
                    return good, bad + worse
                middle = len(batch) // 2
                left_ok, left_bad = attempt(batch[:middle])
                right_ok, right_bad = attempt(batch[middle:])
                return left_ok + right_ok, left_bad + right_bad
        raise AssertionError("unreachable")

    ordered = sorted(range(len(changes)), key=lambda i: changes[i].operation == "remove")
    pending = [changes[i] for i in ordered]
    position = 0
    while position < len(pending):
        operation = pending[position].operation
        kind = "remove" if operation == "remove" else "upsert"
        batch = []
        while (
            position < len(pending)
            and len(batch) < batch_size
            and ("remove" if pending[position].operation == "remove" else "upsert") == kind
        ):
            batch.append(pending[position])
            position += 1
        try:
            accepted, failed = attempt(batch)
        except TransientError as exc:
            result.unavailable = str(exc)
            result.deferred = batch + pending[position:]
            break
        result.accepted += accepted
        result.failed += failed
        if on_batch is not None:
            on_batch(accepted, failed)
    return result


# --------------------------------------------------------------------------- HTTP destinations


class HttpClient:
    """Shared HTTP behaviour: one `requests` session per destination, status codes mapped to errors."""

    def __init__(self, timeout: float, headers: dict[str, str] | None = None) -> None:
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", **(headers or {})})
        self.timeout = timeout

    def post(self, url: str, body: str, batch: str, method: str = "POST") -> None:
        try:
            response = self.session.request(
                method, url, data=body.encode(), timeout=self.timeout, headers={"Idempotency-Key": batch}
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}", _retry_after(response))
        if response.status_code >= 400:
            raise RejectedError(f"HTTP {response.status_code}: {response.text[:300]}", _row_errors(response))

    def close(self) -> None:
        self.session.close()


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _row_errors(response: requests.Response) -> dict[int, str]:
    """Per-row reasons from a JSON body like {"errors": [{"index": 3, "message": "..."}]}."""
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return {}
    found = {}
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict) and isinstance(error.get("index"), int):
            found[error["index"]] = str(error.get("message", "rejected"))
    return found


class WebhookClient(HttpClient):
    """Audience events in the spirit of Segment's Audience Entered / Exited."""

    _TYPES = {"add": "audience_entered", "update": "audience_updated", "remove": "audience_exited"}

    def __init__(self, url: str, audience: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(timeout, headers)
        self.url, self.audience = url, audience

    def send(self, changes: Sequence[Change], batch_id: str) -> None:
        audience = json.dumps(self.audience)
        events = ",".join(
            f'{{"type": "{self._TYPES[c.operation]}", "key": {json.dumps(c.key)}, "audience": {audience}, '
            f'"properties": {c.payload}}}'
            for c in changes
        )
        self.post(self.url, f'{{"batch_id": "{batch_id}", "events": [{events}]}}', batch_id)


class RestClient(HttpClient):
    """A generic bulk API: upserts to one endpoint, deletes to another, keys named as the API wants."""

    def __init__(
        self,
        upsert_url: str,
        delete_url: str | None,
        *,
        method: str,
        records_key: str,
        ids_key: str,
        id_field: str,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(timeout, headers)
        self.upsert_url, self.delete_url, self.method = upsert_url, delete_url, method
        self.records_key, self.ids_key, self.id_field = records_key, ids_key, id_field

    def send(self, changes: Sequence[Change], batch_id: str) -> None:
        if changes[0].operation == "remove":
            if not self.delete_url:
                raise RejectedError("this destination has no delete_url")
            body = json.dumps({"batch_id": batch_id, self.ids_key: [c.key for c in changes]})
            self.post(self.delete_url, body, batch_id, self.method)
        else:
            # Each record is the row's JSON object with the id field spliced in front, without a parse.
            records = ",".join(_with_id(json.dumps(self.id_field), json.dumps(c.key), c.payload) for c in changes)
            body = f'{{"batch_id": "{batch_id}", {json.dumps(self.records_key)}: [{records}]}}'
            self.post(self.upsert_url, body, batch_id, self.method)


def _with_id(field_json: str, key_json: str, payload: str) -> str:
    rest = payload.strip()[1:].lstrip()
    return f"{{{field_json}: {key_json}" + ("}" if rest.startswith("}") else ", " + rest)


class HashedAudienceClient(HttpClient):
    """Adds and removes members identified only by SHA-256 hashes (rows arrive already hashed)."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(timeout, headers)
        self.url = url

    def send(self, changes: Sequence[Change], batch_id: str) -> None:
        members = [{k: v for k, v in c.row.items() if v is not None} for c in changes]
        side = "remove" if changes[0].operation == "remove" else "add"
        self.post(self.url, json.dumps({"batch_id": batch_id, side: members}), batch_id)
