"""One Segment call checked and stamped the way Segment's tracking API does it, before it is stored.

What the collector adds: `messageId` when the SDK sent none (deduplication in cleaning needs one),
`receivedAt`, and `timestamp` corrected for the sender's clock: a phone whose clock is an hour off sends
`timestamp` and `sentAt` from that clock, and Segment's rule
`timestamp = receivedAt - (sentAt - originalTimestamp)` keeps the time between the event and its sending
while replacing the device's clock by the collector's. The sender's value is kept as `originalTimestamp`;
RudderStack's SDKs send only that (with `sentAt`), and it is corrected the same way.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from resources.config.sources import CONTROL_CHARACTERS, FUTURE_MARGIN_DAYS, UNPAIRED_SURROGATE, text_limit

# Segment's limits.
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# The ids and the event name cleaning reads from a Segment event, with the most characters it accepts in
# each (trimmed of spaces): the canonical fields each is read as (resources/config/sources.py, the segment
# mapping), the strictest deciding. An event acknowledged with a longer value, or one holding a control
# character, would be quarantined (or lose the id or its name) once cleaned, after the SDK had been told
# it arrived.
FIELD_LIMITS = {
    "messageId": text_limit("event_id"),
    "anonymousId": min(text_limit("source_record_id"), text_limit("identifier")),
    "userId": min(text_limit("source_record_id"), text_limit("identifier")),
    "previousId": text_limit("identifier"),
    "groupId": text_limit("group_id"),
    "event": text_limit("event"),
}
MAX_MESSAGE_ID_CHARACTERS = FIELD_LIMITS["messageId"]
# Cleaning quarantines an event dated more than this after its file loaded, which is after the collector
# received it: one dated so, after its device's clock is corrected, is refused instead of acknowledged.
FUTURE_MARGIN = timedelta(days=FUTURE_MARGIN_DAYS)
_CONTROL = re.compile(CONTROL_CHARACTERS)
_SURROGATE = re.compile(UNPAIRED_SURROGATE)

CALLS: frozenset[str] = frozenset({"identify", "track", "page", "screen", "group", "alias"})
# Segment's short paths, used by some SDKs.
SHORT_PATHS: dict[str, str] = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}
_OBJECTS = ("properties", "traits", "context", "integrations")


class BadEvent(ValueError):
    """An event that cannot be stored; `status` is the HTTP status a request of only this event gets."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without offset is read as UTC)."""
    if not isinstance(value, str):
        raise BadEvent(f"{field} must be an ISO 8601 string, found {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadEvent(f"{field} is not an ISO 8601 time: {value[:40]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """UTC with milliseconds and `Z`, as Segment writes times."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _identity(event: Mapping[str, Any], field: str) -> str | None:
    """The id as text, None when absent or blank: cleaning trims spaces, so an id of spaces is none."""
    value = event.get(field)
    if value is None or (isinstance(value, str) and not value.strip(" ")):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadEvent(f"{field} must be a string, found {type(value).__name__}")
    return str(value)


def _required(event: dict[str, Any], call: str) -> None:
    """Segment's required fields per call; ids given as numbers are stored as strings."""
    for field in ("userId", "anonymousId", "previousId", "groupId"):
        value = _identity(event, field)
        if value is not None:
            event[field] = value
        else:
            event.pop(field, None)
    if call == "alias":
        missing = [f for f in ("previousId", "userId") if f not in event]
        if missing:
            raise BadEvent(f"an alias needs {' and '.join(missing)}")
        return
    if "userId" not in event and "anonymousId" not in event:
        raise BadEvent(f"a {call} needs userId or anonymousId")
    if call == "track":
        name = event.get("event")
        if name is not None and not isinstance(name, str):
            raise BadEvent(f"event must be a string (the event's name), found {type(name).__name__}")
        if not (name and name.strip()):
            raise BadEvent("a track needs event (the event's name)")
    if call == "group" and "groupId" not in event:
        raise BadEvent("a group needs groupId")
    for field in _OBJECTS:
        if field in event and event[field] is not None and not isinstance(event[field], dict):
            raise BadEvent(f"{field} must be a JSON object, found {type(event[field]).__name__}")


def _check_ids(event: Mapping[str, Any]) -> None:
    """Refuse an id or event name cleaning would refuse (FIELD_LIMITS): over its length, as cleaning
    measures it (trimmed of spaces), or holding a control character."""
    for field, limit in FIELD_LIMITS.items():
        value = event.get(field)
        if not isinstance(value, str):
            continue
        length = len(value.strip(" "))
        if length > limit:
            raise BadEvent(f"{field} is {length} characters long; at most {limit} are accepted")
        control = _CONTROL.search(value)
        if control:
            raise BadEvent(f"{field} contains control character U+{ord(control.group()):04X}")


def prepare(
    event: Any,
    call: str | None,
    received_at: datetime,
    *,
    sent_at: Any = None,
    batch_context: Mapping[str, Any] | None = None,
    size: int | None = None,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """The event as stored, or BadEvent saying why it cannot be.

    `call` is the endpoint's call (None inside a batch, where each event names its `type`); `sent_at` the
    batch's `sentAt` when the event has none; `batch_context` the batch's `context`, under the event's own
    keys; `size` the event's size as sent, when the caller knows it; `client_ip` the sender's address, put
    in `context.ip` when the event has none there (collector.client_ip).
    """
    if not isinstance(event, dict):
        raise BadEvent(f"an event must be a JSON object, found {type(event).__name__}")
    if size is None:
        size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(errors="surrogatepass"))
    if size > MAX_EVENT_BYTES:
        raise BadEvent(f"the event is {size} bytes; at most {MAX_EVENT_BYTES} are accepted", 413)
    stored = dict(event)
    stored.pop("writeKey", None)  # a secret: never written to disk
    kind = stored.get("type")
    if call is None:
        if kind not in CALLS:
            raise BadEvent(f"type must be one of {', '.join(sorted(CALLS))}, found {kind!r}")
        call = kind
    elif kind not in (None, call):
        raise BadEvent(f"type {kind!r} sent to the {call} endpoint")
    stored["type"] = call
    _required(stored, call)
    if batch_context:
        own = stored.get("context") or {}
        stored["context"] = {**batch_context, **own}
    if client_ip is not None:
        context = stored.get("context") or {}
        if not context.get("ip"):
            stored["context"] = {**context, "ip": client_ip}
    message_id = stored.get("messageId")
    if message_id is None or message_id == "":
        stored["messageId"] = str(uuid.uuid4())
    elif not isinstance(message_id, str):
        raise BadEvent(f"messageId must be a string, found {type(message_id).__name__}")
    _check_ids(stored)
    stored["receivedAt"] = format_time(received_at)
    sent = stored.get("sentAt", sent_at)
    # The device's time: Segment's SDKs send it as `timestamp`, RudderStack's as `originalTimestamp` only.
    field = "timestamp" if stored.get("timestamp") is not None else "originalTimestamp"
    original = stored.get(field)
    if original is None:
        stored["timestamp"] = stored["receivedAt"]
    else:
        happened = parse_time(original, field)
        stored["originalTimestamp"] = original
        if sent is not None:
            sent_time = parse_time(sent, "sentAt")
            stored["sentAt"] = sent if isinstance(sent, str) else format_time(sent_time)
            happened = received_at - (sent_time - happened)
        if happened > received_at + FUTURE_MARGIN:
            raise BadEvent(
                f"{field} {original[:40]} is more than {FUTURE_MARGIN_DAYS} day after the collector received it "
                f"({stored['receivedAt']}); send sentAt with it so the device's clock is corrected"
            )
        stored["timestamp"] = format_time(happened)
    return stored


def encode(event: Mapping[str, Any]) -> bytes:
    """One JSON line of UTF-8 text. Half of a surrogate pair escaped with no other half (a string a
    browser cut inside an emoji) is no character UTF-8 can write, and the warehouse would refuse the
    line: it is stored as U+FFFD, as a browser's own UTF-8 encoder writes it."""
    line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    try:
        return line.encode() + b"\n"
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", line).encode() + b"\n"
