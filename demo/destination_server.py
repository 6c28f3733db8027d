"""A local stand-in for the marketing tools a CDP activates audiences into.

Activation code is only trustworthy once it has been seen to survive what real destinations do: fail
with 500s, throttle with 429s, reject a batch because of one bad record, and, worst of all, apply a
batch and then time out before the client hears about it. This server does all of that on demand,
against real HTTP, and remembers exactly what it applied, so a sync can be demonstrated and tested
end to end without an ad account.

It speaks three shapes a CDP sends:

* ``POST /webhook/{name}``: audience events (entered, updated, exited) for event-driven tools.
* ``POST /rest/{name}/upsert`` and ``POST /rest/{name}/delete``: a keyed record store, like a CRM.
* ``POST /audiences/{name}/members``: a hashed audience, like Customer Match or custom audiences.

Inspection: ``GET /state/{webhook|rest|audiences}/{name}``, ``GET /requests`` (every request with the
status returned and the fault injected), ``POST /reset``.

Every mutating request carries a ``batch_id`` (or an ``Idempotency-Key`` header). A batch id already
applied successfully to the same path is acknowledged with ``{"duplicate": true}`` and not applied
again, which is what makes retrying after a timeout safe.

Faults come from one seeded ``random.Random`` draw per mutating request, after any scripted faults,
so a seed reproduces the same sequence of outcomes for a sequential client.

    python -m demo.destination_server --host 127.0.0.1 --port 8765 \\
        [--fail-rate 0.3 --rate-limit-rate 0.1 --timeout-rate 0.05 --seed 1] [--token T] [--verbose]
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

FAULT_500 = "500"
FAULT_429 = "429"
FAULT_TIMEOUT = "timeout"
FAULT_DROP = "drop"
FAULT_401 = "401"  # an expired token: the request is refused whatever its rows
NO_FAULT = "ok"
SCRIPT_TOKENS = frozenset({FAULT_500, FAULT_429, FAULT_TIMEOUT, FAULT_DROP, FAULT_401, NO_FAULT})

KINDS = ("webhook", "rest", "audiences")
# `erased`: a privacy erasure; the key leaves every audience of the webhook.
EVENT_TYPES = frozenset({"audience_entered", "audience_exited", "audience_updated", "erased"})
IDENTIFIERS = ("email_sha256", "phone_sha256")
MAX_BODY_BYTES = 16 * 1024 * 1024

_LOWER_SHA256 = re.compile(r"[0-9a-f]{64}")
_POLL_SECONDS = 0.05  # how soon stop() is noticed; the default half second makes every test teardown slow


@dataclass(frozen=True)
class Faults:
    """How often the server misbehaves; ``script`` outcomes are served first, in order, then the rates apply.

    Script entries are ``"500"``, ``"429"``, ``"401"``, ``"timeout"``, ``"drop"`` or ``"ok"``, so a test can stage an
    exact sequence of failures without depending on a random draw. ``"drop"`` applies the batch and then
    closes the connection without answering: the lost acknowledgement of ``"timeout"``, without a clock.
    """

    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 2.0
    script: Sequence[str] = ()

    def __post_init__(self) -> None:
        rates = {
            "fail_rate": self.fail_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "timeout_rate": self.timeout_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {sum(rates.values())}")
        if self.timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must not be negative, got {self.timeout_seconds}")
        unknown = [entry for entry in self.script if entry not in SCRIPT_TOKENS]
        if unknown:
            raise ValueError(f"unknown script entries {unknown}; expected any of {sorted(SCRIPT_TOKENS)}")
        object.__setattr__(self, "script", tuple(self.script))


class _BadRequest(Exception):
    """A request the destination refuses as a whole, carrying the per-item errors a client needs to split it."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _error(message: str, index: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"index": index, "message": message, **extra}


def _is_key(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _list_field(payload: dict[str, Any], field: str, *, required: bool) -> list[Any]:
    if field not in payload:
        if required:
            raise _BadRequest([_error(f"'{field}' is required")])
        return []
    value = payload[field]
    if not isinstance(value, list):
        raise _BadRequest([_error(f"'{field}' must be a list")])
    return value


# ---------------------------------------------------------------- validation: a batch is applied whole or not at all


def _is_key_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_key(key) for key in value)


def _validate_webhook(payload: dict[str, Any]) -> list[dict[str, Any]]:
    events = _list_field(payload, "events", required=True)
    errors = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            errors.append(_error("an event must be an object", index))
        elif event.get("type") not in EVENT_TYPES:
            errors.append(_error(f"'type' must be one of {sorted(EVENT_TYPES)}", index))
        elif not _is_key(event.get("key")):
            errors.append(_error("'key' must be a non-empty string", index))
        elif not _is_key(event.get("audience")):
            errors.append(_error("'audience' must be a non-empty string", index))
        elif not isinstance(event.get("properties", {}), dict):
            errors.append(_error("'properties' must be an object", index))
        elif not _is_key_list(event.get("previous_keys", [])):
            errors.append(_error("'previous_keys' must be a list of non-empty strings", index))
    if errors:
        raise _BadRequest(errors)
    return events


def _validate_upsert(payload: dict[str, Any]) -> list[dict[str, Any]]:
    records = _list_field(payload, "records", required=True)
    errors = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append(_error("a record must be an object", index))
        elif not _is_key(record.get("id")):
            errors.append(_error("'id' must be a non-empty string", index))
    if errors:
        raise _BadRequest(errors)
    return records


def _validate_delete(payload: dict[str, Any]) -> list[str]:
    ids = _list_field(payload, "ids", required=True)
    errors = [_error("an id must be a non-empty string", index) for index, key in enumerate(ids) if not _is_key(key)]
    if errors:
        raise _BadRequest(errors)
    return ids


def _member_errors(member: object) -> list[str]:
    if not isinstance(member, dict):
        return ["a member must be an object"]
    allowed = ", ".join(IDENTIFIERS)
    problems = [f"unknown identifier '{key}' (send only {allowed})" for key in member if key not in IDENTIFIERS]
    present = [key for key in IDENTIFIERS if member.get(key) is not None]
    if not present and not problems:
        problems.append(f"a member needs at least one of {allowed}")
    for key in present:
        value = member[key]
        if not (isinstance(value, str) and _LOWER_SHA256.fullmatch(value)):
            problems.append(f"'{key}' must be 64 lower-case hex characters")
    return problems


def _member_key(member: dict[str, Any]) -> tuple[str | None, ...]:
    return tuple(member.get(key) for key in IDENTIFIERS)


def _validate_members(payload: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lists = {name: _list_field(payload, name, required=False) for name in ("add", "remove")}
    errors = [
        _error(message, index, list=name)
        for name, members in lists.items()
        for index, member in enumerate(members)
        for message in _member_errors(member)
    ]
    if errors:
        raise _BadRequest(errors)
    return lists["add"], lists["remove"]


# ---------------------------------------------------------------- state


class _Store:
    """Everything the destination has applied, plus the request log; every access goes through ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.webhook: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}  # name -> audience -> key -> properties
        self.rest: dict[str, dict[str, dict[str, Any]]] = {}  # name -> id -> record
        self.audiences: dict[str, dict[tuple[str | None, ...], dict[str, str]]] = {}  # name -> key -> member
        # name -> (identifier, hash) -> keys of the members holding it: a removal finds its members by
        # identifier, as an ad platform does, without reading every member.
        self.holders: dict[str, dict[tuple[str, str], set[tuple[str | None, ...]]]] = {}
        self.applied: set[tuple[str, str]] = set()  # (path, batch_id)
        self.log: list[dict[str, Any]] = []

    def apply_webhook(self, name: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        audiences = self.webhook.setdefault(name, {})
        for event in events:
            audience, key = event["audience"], event["key"]
            if event["type"] == "erased":
                for members in audiences.values():
                    members.pop(key, None)
                for emptied in [name for name, members in audiences.items() if not members]:
                    audiences.pop(emptied)
            elif event["type"] == "audience_exited":
                members = audiences.get(audience, {})
                members.pop(key, None)
                if not members:
                    audiences.pop(audience, None)
            else:
                members = audiences.setdefault(audience, {})
                members[key] = copy.deepcopy(event.get("properties", {}))
                # An update naming previous keys folds those members into this one (merged customer ids).
                for old in event.get("previous_keys") or [event.get("previous_key")]:
                    if old not in (None, key):
                        members.pop(old, None)
        return {"events": len(events)}

    def apply_upsert(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        store = self.rest.setdefault(name, {})
        for record in records:  # a record replaces the previous version whole, so dropped fields show
            store[record["id"]] = copy.deepcopy(record)
        return {"upserted": len(records)}

    def apply_delete(self, name: str, ids: list[str]) -> dict[str, Any]:
        store = self.rest.setdefault(name, {})
        deleted = sum(store.pop(key, None) is not None for key in ids)
        return {"deleted": deleted, "missing": len(ids) - deleted}

    def apply_members(self, name: str, batch: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> dict[str, Any]:
        add, remove = batch
        members = self.audiences.setdefault(name, {})
        holders = self.holders.setdefault(name, {})
        added = 0
        for member in add:
            key = _member_key(member)
            if key not in members:
                members[key] = {k: member[k] for k in IDENTIFIERS if member.get(k) is not None}
                for identifier in members[key].items():
                    holders.setdefault(identifier, set()).add(key)
                added += 1
        removed = 0
        for member in remove:  # like the ad platforms, a removal matches on any identifier it names
            wanted = [(k, member[k]) for k in IDENTIFIERS if member.get(k) is not None]
            doomed = set().union(*(holders.get(identifier, set()) for identifier in wanted))
            for key in doomed:
                for identifier in members.pop(key).items():
                    holders[identifier].discard(key)
                    if not holders[identifier]:
                        del holders[identifier]
            removed += len(doomed)
        return {"added": added, "removed": removed, "size": len(members)}

    def snapshot(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "webhook":
            return {"audiences": copy.deepcopy(self.webhook.get(name, {}))}
        if kind == "rest":
            return {"records": copy.deepcopy(self.rest.get(name, {}))}
        members = sorted(self.audiences.get(name, {}).items(), key=lambda item: tuple(v or "" for v in item[0]))
        return {"members": [dict(member) for _, member in members], "size": len(members)}


@dataclass(frozen=True)
class _Route:
    validate: Callable[[dict[str, Any]], Any]
    apply: Callable[[_Store, str, Any], dict[str, Any]]


_MUTATIONS: dict[tuple[str, str | None], _Route] = {
    ("webhook", None): _Route(_validate_webhook, _Store.apply_webhook),
    ("rest", "upsert"): _Route(_validate_upsert, _Store.apply_upsert),
    ("rest", "delete"): _Route(_validate_delete, _Store.apply_delete),
    ("audiences", "members"): _Route(_validate_members, _Store.apply_members),
}


# ---------------------------------------------------------------- HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stopping must not wait for a request that is sleeping through an injected timeout
    destination: DestinationServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (as it does on a timeout) is expected here, so only real errors are printed."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.destination.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        self._entry = self.server.destination._log_arrival(method, self.path)
        try:
            self._dispatch(method)
        except Exception:  # a bug in the demo must answer the client rather than hang it
            self.server.handle_error(self.request, self.client_address)
            self._send(500, {"error": "internal error in the demo destination"})

    def _dispatch(self, method: str) -> None:
        destination = self.server.destination
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(400, {"error": "Content-Length must be a non-negative integer"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return
        body = self.rfile.read(length) if length else b""  # read first so keep-alive stays in step
        if destination.token is not None and not self._authorized(destination.token):
            self._send(401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"})
            return
        parts = [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]
        route = self._mutation(parts)
        if parts == ["requests"]:
            if self._only(method, "GET"):
                self._send(200, {"requests": destination.requests_log()})
        elif parts == ["reset"]:
            if self._only(method, "POST"):
                destination.reset()
                self._send(200, {"reset": True})
        elif len(parts) == 3 and parts[0] == "state" and parts[1] in KINDS and parts[2]:
            if self._only(method, "GET"):
                self._send(200, destination.state(parts[1], parts[2]))
        elif route is None:
            self._send(404, {"error": f"no such endpoint: {self.path}"})
        elif self._only(method, "POST"):
            self._mutate(route, parts[1], body)

    @staticmethod
    def _mutation(parts: list[str]) -> _Route | None:
        if len(parts) == 2 and parts[0] == "webhook" and parts[1]:
            return _MUTATIONS[("webhook", None)]
        if len(parts) == 3 and parts[1]:
            return _MUTATIONS.get((parts[0], parts[2]))
        return None

    def _mutate(self, route: _Route, name: str, body: bytes) -> None:
        destination = self.server.destination
        fault = destination._draw_fault()
        destination._annotate(self._entry, fault=None if fault == NO_FAULT else fault)
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("batch_id"), str):
            destination._annotate(self._entry, batch_id=payload["batch_id"])
        elif self.headers.get("Idempotency-Key"):
            destination._annotate(self._entry, batch_id=self.headers["Idempotency-Key"])
        if fault == FAULT_500:
            self._send(500, {"error": "injected failure"})
            return
        if fault == FAULT_429:
            self._send(429, {"error": "injected rate limit"}, {"Retry-After": "1"})
            return
        if fault == FAULT_401:
            self._send(401, {"error": "token expired"})
            return
        if not isinstance(payload, dict):
            self._send(400, {"errors": [_error("the body must be a JSON object")]})
            return
        batch_id, problem = self._batch_id(payload)
        if problem:
            self._send(400, {"errors": [_error(problem)]})
            return
        try:
            batch = route.validate(payload)
        except _BadRequest as bad:
            self._send(400, {"batch_id": batch_id, "errors": bad.errors})
            return
        scope = (urlsplit(self.path).path, batch_id)
        store = destination._store
        summary: dict[str, Any] = {}
        with store.lock:
            duplicate = scope in store.applied
            if not duplicate:
                summary = route.apply(store, name, batch)
                store.applied.add(scope)
        destination._annotate(self._entry, duplicate=duplicate)
        if scope[0].startswith("/webhook/"):  # which events arrived, without their properties, for inspection
            destination._annotate(
                self._entry,
                events=[
                    {k: e.get(k) for k in ("type", "key", "previous_key", "previous_keys")} for e in payload["events"]
                ],
            )
        if fault == FAULT_TIMEOUT:  # applied already: the client gives up, the change stays
            destination._stopping.wait(destination.faults.timeout_seconds)
        if fault == FAULT_DROP:  # applied already: the answer is lost, the client sees the connection close
            self.close_connection = True
            return
        if duplicate:
            self._send(200, {"batch_id": batch_id, "duplicate": True})
        else:
            self._send(200, {"batch_id": batch_id, "duplicate": False, **summary})

    def _batch_id(self, payload: dict[str, Any]) -> tuple[str, str | None]:
        in_body, in_header = payload.get("batch_id"), self.headers.get("Idempotency-Key")
        if in_body is not None and not _is_key(in_body):
            return "", "'batch_id' must be a non-empty string"
        if in_body and in_header and in_body != in_header:
            return "", "'batch_id' and the Idempotency-Key header disagree"
        batch_id = in_body or in_header
        if not batch_id:
            return "", "'batch_id' (or an Idempotency-Key header) is required"
        return batch_id, None

    def _authorized(self, token: str) -> bool:
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())

    def _only(self, method: str, allowed: str) -> bool:
        if method != allowed:
            self._send(405, {"error": f"use {allowed}"}, {"Allow": allowed})
        return method == allowed

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.server.destination._annotate(self._entry, status=status)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):  # the client stopped waiting (an injected timeout, usually)
            self.close_connection = True


class DestinationServer:
    """The demo destination, served from a daemon thread so tests and notebooks can drive it in-process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        faults: Faults | None = None,
        seed: int | None = None,
        token: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.faults = faults or Faults()
        self.seed = seed
        self.token = token
        self.verbose = verbose
        self._store = _Store()
        self._stopping = threading.Event()
        self._fault_lock = threading.Lock()
        self._reset_faults()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.destination = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, with the real port when the server was asked for port 0."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve in a daemon thread so the caller keeps control; returns the base URL."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name="destination-server",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        """Serve on the calling thread, for the command line."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and free the port; requests sleeping through an injected timeout are woken."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DestinationServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def state(self, kind: str, name: str) -> dict[str, Any]:
        """What a destination currently holds, as ``GET /state/{kind}/{name}`` returns it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        with self._store.lock:
            return self._store.snapshot(kind, name)

    def requests_log(self) -> list[dict[str, Any]]:
        """Every request received, in arrival order, as ``GET /requests`` returns it.

        A request is listed as soon as it arrives, with ``status`` None until it is answered, so a
        request sleeping through an injected timeout is visible while the client is still waiting.
        """
        with self._store.lock:
            return copy.deepcopy(self._store.log)

    def reset(self) -> None:
        """Forget all state, the log and applied batch ids, and restart the fault script and random sequence.

        Restarting the faults too means a demo run after a reset sees the same outcomes as the first run.
        """
        with self._store.lock:
            self._store.clear()
        self._reset_faults()

    def _log_arrival(self, method: str, path: str) -> dict[str, Any]:
        """Log a request on arrival; the handler fills in the outcome with ``_annotate``."""
        entry = {
            "time": time.time(),
            "method": method,
            "path": path,
            "batch_id": None,
            "status": None,
            "fault": None,
            "duplicate": False,
        }
        with self._store.lock:
            entry["seq"] = len(self._store.log) + 1
            self._store.log.append(entry)
        return entry

    def _annotate(self, entry: dict[str, Any], **outcome: Any) -> None:
        with self._store.lock:
            entry.update(outcome)

    def _draw_fault(self) -> str:
        """The outcome for the next mutating request: the next scripted one, else one random draw."""
        with self._fault_lock:
            if self._script:
                return self._script.pop(0)
            draw = self._random.random()
        faults = self.faults
        for fault, rate in ((FAULT_500, faults.fail_rate), (FAULT_429, faults.rate_limit_rate)):
            if draw < rate:
                return fault
            draw -= rate
        return FAULT_TIMEOUT if draw < faults.timeout_rate else NO_FAULT

    def _reset_faults(self) -> None:
        with self._fault_lock:
            self._script = list(self.faults.script)
            self._random = random.Random(self.seed)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the destination in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m demo.destination_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of mutating requests answered 500")
    parser.add_argument("--rate-limit-rate", type=float, default=0.0, help="share answered 429 (Retry-After: 1)")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share applied but answered late")
    parser.add_argument("--timeout-seconds", type=float, default=2.0, help="how late a timed-out answer comes")
    parser.add_argument(
        "--script", default="", help="comma-separated outcomes served first: 500,429,401,timeout,drop,ok"
    )
    parser.add_argument("--seed", type=int, default=None, help="makes the random faults reproducible")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every request")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            fail_rate=args.fail_rate,
            rate_limit_rate=args.rate_limit_rate,
            timeout_rate=args.timeout_rate,
            timeout_seconds=args.timeout_seconds,
            script=[entry.strip() for entry in args.script.split(",") if entry.strip()],
        )
    except ValueError as error:
        parser.error(str(error))
    server = DestinationServer(
        args.host, args.port, faults=faults, seed=args.seed, token=args.token, verbose=args.verbose
    )
    print(f"demo destination listening on {server.url}", flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A handler of its own, so `kill` stops it cleanly even where the shell that started it in the
    # background left SIGTERM ignored.
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
