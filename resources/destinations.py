"""Destination clients and delivery: how changes reach the tools that act on them.

A client knows one destination's wire format and says, per batch, only one of three things: accepted
(returns), try again later (`TransientError`: connection failure, timeout, 5xx, 429 with its
Retry-After), or rejected (`RejectedError`, a 4xx, with the rows it blamed when the destination says).
`deliver` owns everything else, the same for every destination: batching, the rate limit, exponential
backoff with jitter, and splitting a rejected batch until the bad rows are isolated, so one bad row
never fails the rows beside it. Every batch carries an idempotency key that is new for each new batch
and kept by every resend of the same batch (`batch_id`).
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import requests

from resources.config.destinations import MERGED_FROM
from resources.retry import (
    RateLimiter,
    RetryPolicy,
    TransientError,
    is_transient_status,
    retry_after,
    with_retries,
)

DEFAULT_RETRY = RetryPolicy()

# `erase` removes a person a privacy request erased: like `remove`, in each destination's own form of it.
Operation = Literal["add", "update", "remove", "erase"]
REMOVALS = ("remove", "erase")


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

    def exact_row(self) -> dict[str, Any]:
        """The fields with every number that has a fraction as the Decimal its JSON text writes (a money
        total of 0.10 stays 0.10, never the nearest double): for a destination with an exact numeric type."""
        if self._payload is None:
            return self.row
        return json.loads(self._payload, parse_float=Decimal)

    @property
    def payload(self) -> str:
        """The fields as JSON object text."""
        if self._payload is None:
            self._payload = json.dumps(self._row or {}, sort_keys=True, default=str)
        return self._payload

    def __repr__(self) -> str:
        return f"Change({self.key!r}, {self.operation!r})"


def merged_keys(change: Change) -> tuple[list[str], str]:
    """The keys merged into the change's key (MERGED_FROM), and its fields without them as JSON text."""
    payload = change.payload
    if f'"{MERGED_FROM}"' not in payload:
        return [], payload
    row = dict(change.row)
    merged = row.pop(MERGED_FROM, None)
    if not isinstance(merged, list):
        return [], payload
    return [str(key) for key in merged], json.dumps(row, separators=(",", ":"), ensure_ascii=False)


class RejectedError(Exception):
    """The destination refused the batch; `row_errors` maps batch positions to reasons when it said which."""

    def __init__(self, message: str, row_errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.row_errors = row_errors or {}


# Answers that refuse the caller, not the rows: every request would get the same, so splitting the batch
# to find bad rows would only send two requests per row, and retrying changes nothing until someone fixes
# the credentials.
REFUSES_THE_CALLER = frozenset({401, 403, 407})


class RefusedError(Exception):
    """The destination refuses every request (wrong or expired credentials): the sync stops and defers what
    it has not sent, as for an outage, without retrying or splitting."""


class DestinationClient(Protocol):
    """Sends one batch (all changes of one operation kind) or raises TransientError / RejectedError."""

    def send(self, changes: Sequence[Change], batch_id: str) -> None: ...

    def close(self) -> None: ...


def batch_id(destination: str, epoch: str, sequence: int, changes: Sequence[Change]) -> str:
    """The idempotency key of one batch: the destination's epoch and the batch's sequence number, with its
    content.

    Content alone is not enough: a person who opts out, back in and out again produces the same removal
    twice, and a destination honouring the key would ignore the second as a replay. The sequence number
    makes every new batch a new key; a batch resent (a retry, or the next run after a lost answer) keeps
    the key it was given, so the destination can still drop the replay. The epoch is chosen at random
    when a destination's sequence starts, so a rebuilt warehouse, counting from 1 again, cannot reuse a
    key the destination remembers.
    """
    digest = hashlib.sha256(f"{destination}\x00{epoch}\x00{sequence}".encode())
    for change in changes:
        digest.update(f"\x00{change.operation}\x00{change.key}\x00{change.row_hash}".encode())
    return digest.hexdigest()[:32]


class BatchSequence:
    """Keys for batches within one process, for callers that keep no record of batches in flight."""

    def __init__(self, destination: str) -> None:
        self.destination, self.epoch, self.sequence = destination, secrets.token_hex(8), 0

    def open(self, changes: Sequence[Change]) -> str:
        self.sequence += 1
        return batch_id(self.destination, self.epoch, self.sequence, changes)


@dataclass
class Delivery:
    """What happened to the changes of one sync run."""

    accepted: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    deferred: list[Change] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    unavailable: str | None = None


def deliver(
    client: DestinationClient,
    destination: str,
    changes: Sequence[Change],
    *,
    batch_size: int,
    policy: RetryPolicy = DEFAULT_RETRY,
    rate_limit: float | RateLimiter | None = None,
    resend: Sequence[tuple[str, Sequence[Change]]] = (),
    open_batch: Callable[[list[Change]], str] | None = None,
    on_batch: Callable[[str, list[Change], list[tuple[Change, str]]], None] | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send `resend` (batches with the keys they were first sent with) as they are, then `changes` in new
    batches of one operation each.

    `open_batch(batch)` gives a new batch its idempotency key before its first request (the caller records
    the batch as in flight there, so a batch whose answer is lost can be resent with the same key); every
    retry of the batch reuses it. A refused batch was not applied, so the parts it is split into are new
    batches with keys of their own. `on_batch(key, accepted, failed)` runs after each batch's final answer,
    before any part of it is sent, so the caller can close the batch and record acknowledged rows at once
    (a crash later loses nothing).

    When a batch still fails transiently after every attempt the destination is taken to be down: the
    rows not yet settled are deferred to the next run instead of each waiting out its own retries. So they
    are, at once, when the destination refuses the caller (RefusedError: 401, 403, 407).
    """
    rng = rng or random.Random()
    open_batch = open_batch or BatchSequence(destination).open
    limiter = rate_limit if isinstance(rate_limit, RateLimiter) else RateLimiter(rate_limit, sleep)
    result = Delivery()
    settled: set[int] = set()

    def settle(key: str, accepted: list[Change], failed: list[tuple[Change, str]]) -> None:
        result.accepted += accepted
        result.failed += failed
        settled.update(id(c) for c in accepted)
        settled.update(id(c) for c, _ in failed)
        if on_batch is not None:
            on_batch(key, accepted, failed)

    def attempted() -> None:
        result.requests += 1

    def retried(_: TransientError) -> None:
        result.retries += 1

    def send(batch: list[Change], key: str) -> None:
        try:
            with_retries(
                lambda: client.send(batch, key),
                policy,
                limiter=limiter,
                rng=rng,
                sleep=sleep,
                on_attempt=attempted,
                on_retry=retried,
            )
        except RejectedError as exc:
            split(batch, key, exc)
        else:
            settle(key, batch, [])

    def split(batch: list[Change], key: str, exc: RejectedError) -> None:
        if len(batch) == 1:
            settle(key, [], [(batch[0], str(exc))])
            return
        blamed = {i for i in exc.row_errors if 0 <= i < len(batch)}
        if blamed:
            settle(key, [], [(batch[i], exc.row_errors[i]) for i in sorted(blamed)])
            parts = [[c for i, c in enumerate(batch) if i not in blamed]]
        else:
            settle(key, [], [])
            parts = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        for part in parts:
            if part:
                send(part, open_batch(part))

    queue: list[tuple[str | None, list[Change]]] = [(key, list(batch)) for key, batch in resend]
    queue += [(None, batch) for batch in _batches(changes, batch_size, getattr(client, "removals_first", False))]
    for index, (key, batch) in enumerate(queue):
        try:
            send(batch, key or open_batch(batch))
        except (TransientError, RefusedError) as exc:
            result.unavailable = str(exc)
            result.deferred = [c for _, rest in queue[index:] for c in rest if id(c) not in settled]
            break
    return result


def _batches(changes: Sequence[Change], batch_size: int, removals_first: bool = False) -> list[list[Change]]:
    """Changes in batches of one kind (upserts, then removals, then erasures; removals and erasures first
    when `removals_first`) and at most `batch_size` rows, in order."""
    batches: list[list[Change]] = []
    for kind in (*REMOVALS, "upsert") if removals_first else ("upsert", *REMOVALS):
        rows = [c for c in changes if (c.operation if c.operation in REMOVALS else "upsert") == kind]
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return batches


# --------------------------------------------------------------------------- HTTP destinations


def connection_problem(exc: requests.RequestException, url: str, timeout: float) -> str:
    """Why a request got no answer, in words an operator can act on: the server (scheme, host and port,
    never the path or query, which may carry a token) and the operating system's reason ("Connection
    refused", "Name or service not known"), rather than requests' nested repr of it."""
    parts = urlsplit(url)
    server = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    if isinstance(exc, requests.Timeout):
        return f"{type(exc).__name__}: no answer from {server} within {timeout:g} s"
    reason = None
    seen: BaseException | None = exc
    for _ in range(10):  # requests wraps urllib3's error, which wraps the socket's: a few levels deep
        if seen is None or reason is not None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            reason = seen.strerror
        nested = [a for a in seen.args if isinstance(a, BaseException)]
        inner = [getattr(seen, "reason", None), seen.__cause__, seen.__context__, *nested]
        seen = next((e for e in inner if isinstance(e, BaseException)), None)
    return f"{type(exc).__name__}: cannot connect to {server}: {reason or 'the connection failed'}"


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
            raise TransientError(connection_problem(exc, url, self.timeout)) from None
        if is_transient_status(response.status_code):
            raise TransientError(f"HTTP {response.status_code}", retry_after(response))
        if response.status_code in REFUSES_THE_CALLER:
            raise RefusedError(
                f"HTTP {response.status_code}: {response.text[:300]} (the destination refuses every request: "
                "check its credentials)"
            )
        if response.status_code >= 400:
            raise RejectedError(f"HTTP {response.status_code}: {response.text[:300]}", _row_errors(response))

    def close(self) -> None:
        self.session.close()


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
        events = ",".join(self._event(c, audience) for c in changes)
        self.post(self.url, f'{{"batch_id": "{batch_id}", "events": [{events}]}}', batch_id)

    def _event(self, change: Change, audience: str) -> str:
        """One event. A member whose key absorbed customer ids merged into it is one update naming them
        (`previous_keys`, and the first as `previous_key`), not an exit of each merged id beside an update of
        the survivor. An erased person is an `erased` event with the key alone: nothing more is sent."""
        if change.operation == "erase":
            return f'{{"type": "erased", "key": {json.dumps(change.key)}, "audience": {audience}}}'
        merged, properties = merged_keys(change)
        previous = f'"previous_key": {json.dumps(merged[0])}, "previous_keys": {json.dumps(merged)}, ' if merged else ""
        return (
            f'{{"type": "{self._TYPES[change.operation]}", "key": {json.dumps(change.key)}, {previous}'
            f'"audience": {audience}, "properties": {properties}}}'
        )


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
        if changes[0].operation in REMOVALS:
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

    # An audience is a set of hashes, not of keys: a member whose e-mail changed has its old hash removed
    # and its new one added (plan_sync), and removing first leaves a hash both carry in the audience.
    removals_first = True

    def __init__(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(timeout, headers)
        self.url = url

    def send(self, changes: Sequence[Change], batch_id: str) -> None:
        members = [{k: v for k, v in c.row.items() if v is not None} for c in changes]
        side = "remove" if changes[0].operation in REMOVALS else "add"
        self.post(self.url, json.dumps({"batch_id": batch_id, side: members}), batch_id)
