"""The collector's HTTP server: Segment's tracking API in front of one durable spool per source.

    CDP_COLLECTOR_WRITE_KEYS='website:<key>' python -m collector [--config cdp.yaml] [--host H] [--port P]

`POST /v1/identify|track|page|screen|group|alias` take one event, `POST /v1/batch` (also `/v1/b`, and
RudderStack's beacon `/beacon/v1/batch`) up to 500 KB of them, with a Content-Length or in chunks
(Transfer-Encoding: chunked); the write key is the HTTP Basic user (or, as Segment accepts, `writeKey` in
the body, or a beacon's `writeKey` query parameter).
Answers: `200 {"success": true}` once the events are on disk, with `accepted` and `rejected` (index and
reason of each event refused) for a batch; `400` invalid JSON or no valid event (the reasons say why),
`401` an unknown or missing write key, `413` a body or a single event over Segment's limits, `503` the
disk refused the write (SDKs retry it). Nothing is written for a request answered with an error.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import threading
import zlib
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from collector.events import CALLS, MAX_BATCH_BYTES, MAX_EVENT_BYTES, SHORT_PATHS, BadEvent, encode, prepare
from collector.keys import WriteKeys
from collector.spool import Spool, SpoolError, log
from resources.config.sources import MAX_JSON_NESTING, json_nesting_exceeds


class _Refused(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


class CollectorServer(ThreadingHTTPServer):
    """The HTTP server holding the write keys and one spool per source."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        keys: WriteKeys,
        folders: dict[str, Path],
        *,
        rotate_bytes: int,
        rotate_seconds: float,
        allowed_origins: tuple[str, ...] = ("*",),
        client_ip: str = "off",
        max_connections: int = 256,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.keys = keys
        # One thread per connection: without a bound, clients that open connections and stall (slowloris)
        # would make threads until memory ran out. Beyond it a connection is answered 503 and closed.
        self._slots = threading.BoundedSemaphore(max_connections)
        self.timeout_seconds = timeout_seconds
        self.allowed_origins = frozenset(allowed_origins)
        self.client_ip = client_ip
        self.spools = {
            source: Spool(folder, rotate_bytes=rotate_bytes, rotate_seconds=rotate_seconds)
            for source, folder in folders.items()
        }
        super().__init__(address, _Handler)
        self._stop = threading.Event()
        self._rotator = threading.Thread(target=self._rotate, name="collector-rotate", daemon=True)
        self._rotator.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own if a slot is free, else answer 503 and close it."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _rotate(self) -> None:
        """Publish files that reached their age although no request came to close them."""
        period = min(1.0, min((s.rotate_seconds for s in self.spools.values()), default=1.0) / 4)
        while not self._stop.wait(period):
            for spool in self.spools.values():
                spool.rotate_if_due()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()
        for spool in self.spools.values():
            spool.release()


def _log_rejected(source: str, events: list[Any], rejected: list[dict[str, Any]]) -> None:
    """Log the events a stored batch refused: its answer is a 200, whose `rejected` no SDK reads, so without
    this line nothing would say they were lost. Their index and messageId find them in the sender's logs;
    no value of theirs is written."""
    shown = []
    for refusal in rejected[:_LOGGED_REFUSALS]:
        event = events[refusal["index"]]
        message_id = event.get("messageId") if isinstance(event, dict) else None
        named = f" (messageId {message_id[:100]})" if isinstance(message_id, str) else ""
        shown.append(f"event {refusal['index']}{named}: {refusal['reason']}")
    more = f"; and {len(rejected) - len(shown)} more" if len(rejected) > len(shown) else ""
    log.warning(
        "%s: %d of a batch's %d events refused, the others stored: %s%s",
        source,
        len(rejected),
        len(events),
        "; ".join(shown),
        more,
    )


_LOGGED_REFUSALS = 5


def _error(status: int, reason: str, **extra: Any) -> dict[str, Any]:
    """An error answer: `reason`, and the same as `message` with a `code`, the keys Segment's API answers
    with and the SDKs read. RudderStack's Python SDK reads them without a default: an answer without them
    made it send a refused batch again and again for a quarter of an hour, holding up its `flush`."""
    code = _ERROR_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    return {"success": False, "code": code, "message": reason, "reason": reason, **extra}


_ERROR_CODES = {400: "invalid_request", 401: "invalid_write_key", 413: "request_too_large", 503: "unavailable"}

_BUSY_BODY = json.dumps(
    _error(503, "the collector is serving as many connections as collector.max_connections allows; retry")
).encode()
# The answer to a connection over collector.max_connections, written before any of its request is read.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _BUSY_BODY
)


# A preflight's list of header names (RFC 9110 tokens, comma-separated), echoed only when it is one.
_HEADER_LIST = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def _route(path: str) -> str | None:
    """The call a path names ('batch' for a batch), or None. RudderStack's browser SDK sends the batches it
    posts as a page closes (`navigator.sendBeacon`, which cannot set headers) to `/beacon/v1/batch`."""
    parts = path.split("?", 1)[0].rstrip("/").split("/")
    if parts[1:3] == ["beacon", "v1"] and len(parts) == 4:
        return "batch" if parts[3] == "batch" else None
    if len(parts) != 3 or parts[1] != "v1":
        return None
    name = parts[2]
    if name in ("batch", "b"):
        return "batch"
    name = SHORT_PATHS.get(name, name)
    return name if name in CALLS else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CollectorServer
    server_version = "cdp-collector"
    # The answer's headers and body are two writes: with Nagle's algorithm the body would wait for the
    # client's delayed ACK of the headers, 40 ms on Linux, on every request.
    disable_nagle_algorithm = True
    # A keep-alive connection idle this long (collector.timeout_seconds, set in `setup`) is closed, so idle
    # SDKs do not hold a thread each forever; so is one stalled in the middle of a request.
    timeout = 60.0
    # Set when an answer goes out before the body was read: the connection then closes.
    _unread = False

    def setup(self) -> None:
        self.timeout = self.server.timeout_seconds
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: a request log line per event batch would drown the terminal; errors are in the answers."""

    def _cors(self) -> None:
        """Let a browser's script read the answer when its page may send here (collector.allowed_origins): a
        browser hides an answer without it, and analytics.js would then send the stored events again."""
        origin = self.headers.get("Origin")
        if origin is None:
            return
        allowed = self.server.allowed_origins
        if "*" in allowed:
            self.send_header("Access-Control-Allow-Origin", "*")
        elif origin in allowed:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _reply(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="collector"')
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:  # noqa: N802 - the base class's name
        """A browser's preflight before a cross-origin POST with a write key in the Authorization header or a
        JSON or gzip body."""
        self._drain()
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", self._allowed_headers())
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _allowed_headers(self) -> str:
        """The request headers a preflight may allow: those the browser asks for, since SDKs add their own
        (RudderStack's sends `AnonymousId`) and a header left out makes the browser drop the events; the
        write key, not the headers, decides what is stored. Without a list (or an unreadable one), the
        headers Segment's libraries send."""
        asked = self.headers.get("Access-Control-Request-Headers", "")
        if asked and _HEADER_LIST.fullmatch(asked):
            return asked
        return "Authorization, Content-Type, Content-Encoding"

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path.rstrip("/") == "/health":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, _error(404, f"no such path {self.path[:100]}; see /v1/<call>"))

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        received_at = datetime.now(UTC)
        call = _route(self.path)
        try:
            if call is None:
                self._drain()
                raise _Refused(404, f"no such endpoint {self.path[:100]}; use /v1/{{{','.join(sorted(CALLS))},batch}}")
            header_key = self._header_key()
            if header_key is not None and self.server.keys.source_of(header_key) is None:
                self._drain()  # a wrong key is refused as such, whatever the body holds
                raise _Refused(401, "unknown write key: send the source's key as the HTTP Basic user name")
            body, size = self._body(call)
            body_key = body.get("writeKey") if isinstance(body, dict) else None
            sent_key = header_key or self._query_key() or (body_key if isinstance(body_key, str) else None)
            source = self.server.keys.source_of(sent_key)
            if source is None:
                which = "unknown" if sent_key else "missing"
                raise _Refused(401, f"{which} write key: send the source's key as the HTTP Basic user name")
            lines, accepted, rejected = self._events(call, body, size, received_at)
            try:
                self.server.spools[source].append(b"".join(lines))
            except SpoolError as exc:
                log.error("%s: %s", source, exc)
                raise _Refused(503, str(exc)) from None
        except _Refused as refused:
            self._reply(refused.status, _error(refused.status, refused.reason, **refused.extra), close=self._unread)
            return
        answer: dict[str, Any] = {"success": True}
        if call == "batch":
            answer.update(accepted=accepted, rejected=rejected)
            if rejected:
                _log_rejected(source, body["batch"], rejected)
        self._reply(200, answer)

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_BATCH_BYTES:
            self.rfile.read(int(length))
        else:
            self._unread = True

    def _body(self, call: str) -> tuple[Any, int]:
        """The parsed JSON body and its size, within the call's limit."""
        limit = MAX_BATCH_BYTES if call == "batch" else MAX_EVENT_BYTES
        length = self.headers.get("Content-Length")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = self._chunked(call, limit)
        elif length is None or not length.isdigit():
            self._unread = True
            raise _Refused(411, "send the body with a Content-Length or Transfer-Encoding: chunked")
        elif int(length) > limit:
            self._unread = True  # not read: the connection closes after the answer
            raise _Refused(413, f"the body is {length} bytes; at most {limit} are accepted for {call}")
        else:
            raw = self.rfile.read(int(length))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                raw = inflater.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise _Refused(400, f"the body is not valid gzip: {exc}") from None
            if len(raw) > limit:
                raise _Refused(413, f"the body is over {limit} bytes uncompressed; at most {limit} are accepted")
        # A batch wraps its events two levels down, so an event is held to what the extract reads either way.
        depth = MAX_JSON_NESTING + (2 if call == "batch" else 0)
        if json_nesting_exceeds(raw.decode("utf-8", errors="replace"), depth):
            raise _Refused(400, f"invalid JSON: arrays and objects nested more than {MAX_JSON_NESTING} levels deep")
        try:
            return json.loads(raw), len(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Refused(400, f"invalid JSON: {exc}") from None

    def _chunked(self, call: str, limit: int) -> bytes:
        """A body sent in chunks (HTTP/1.1's Transfer-Encoding: chunked, what a client streaming its body
        without knowing its length sends, a gzip stream say), read up to the call's limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._unread = True
                raise _Refused(400, "the chunked body is malformed: a chunk size is not a hexadecimal number") from None
            if chunk == 0:
                while self.rfile.readline(1024).strip():  # trailer fields, up to the blank line
                    pass
                return b"".join(chunks)
            size += chunk
            if size > limit:
                self._unread = True  # the rest is not read: the connection closes after the answer
                raise _Refused(413, f"the body is over {limit} bytes; at most {limit} are accepted for {call}")
            data = self.rfile.read(chunk)
            if len(data) < chunk or self.rfile.read(2) != b"\r\n":
                self._unread = True
                raise _Refused(400, "the chunked body is malformed: a chunk is shorter than its size")
            chunks.append(data)

    def _client_ip(self) -> str | None:
        """The sender's address for `context.ip` (collector.client_ip), or None. Behind a proxy the peer is
        the proxy: its X-Forwarded-For's last address is the one it saw connect, the only one it vouches
        for (earlier ones are whatever the client wrote)."""
        mode = self.server.client_ip
        if mode == "off":
            return None
        if mode == "forwarded":
            forwarded = self.headers.get_all("X-Forwarded-For") or []
            last = ",".join(forwarded).rsplit(",", 1)[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
        return self.client_address[0]

    def _query_key(self) -> str | None:
        """The write key of a `writeKey` query parameter, as a beacon, which cannot send headers, carries it."""
        keys = parse_qs(urlsplit(self.path).query).get("writeKey")
        return keys[0] if keys else None

    def _header_key(self) -> str | None:
        """The write key of a Basic Authorization header ('' if it cannot be read), None without one;
        without one, Segment's `writeKey` in the body is used."""
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""

    def _events(
        self, call: str, body: Any, size: int, received_at: datetime
    ) -> tuple[list[bytes], int, list[dict[str, Any]]]:
        """The stored lines, how many events were accepted, and each refused one's index and reason."""
        if not isinstance(body, dict):
            raise _Refused(400, f"the body must be a JSON object, found {type(body).__name__}")
        client_ip = self._client_ip()
        if call != "batch":
            try:
                return [encode(prepare(body, call, received_at, size=size, client_ip=client_ip))], 1, []
            except BadEvent as bad:
                raise _Refused(bad.status, bad.reason) from None
        events = body.get("batch")
        if not isinstance(events, list) or not events:
            raise _Refused(400, "a batch needs 'batch': a non-empty list of events")
        context = body.get("context") if isinstance(body.get("context"), dict) else None
        sent_at = body.get("sentAt")
        # In a batch no bigger than one event's limit, no event can be over it: no need to measure each.
        known = 0 if size <= MAX_EVENT_BYTES else None
        lines, rejected = [], []
        for index, event in enumerate(events):
            try:
                lines.append(
                    encode(
                        prepare(
                            event,
                            None,
                            received_at,
                            sent_at=sent_at,
                            batch_context=context,
                            size=known,
                            client_ip=client_ip,
                        )
                    )
                )
            except BadEvent as bad:
                rejected.append({"index": index, "reason": bad.reason})
        if not lines:
            raise _Refused(400, "no event of the batch is valid", rejected=rejected)
        return lines, len(lines), rejected
