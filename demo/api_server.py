"""A local stand-in for a help desk's HTTP API: support tickets, paginated four ways, with injected faults.

API sources are only trustworthy once they have been seen to survive what real APIs do: throttle with
429 and a `Retry-After`, fail with 5xx for a while, and now and then answer with an HTML error page
instead of JSON. This server does that on demand, seeded, against real HTTP, and logs every request, so
a poll can be tested and benchmarked end to end.

    GET /tickets/cursor     {"tickets": [...], "meta": {"next_cursor": "..."|null}}    ?cursor=
    GET /tickets/next_url   {"tickets": [...], "links": {"next": "/tickets/next_url?..."|null}}
    GET /tickets/page       {"tickets": [...], "page": n}                               ?page=&per_page=
    GET /tickets/link       {"tickets": [...]} and `Link: <...>; rel="next"`            ?page=
    GET /tickets/all        {"tickets": [...]}                                           every ticket at once

Every listing takes `updated_since` (inclusive, like most help desks: tickets changed at or after it)
and returns tickets oldest change first. Faults come from a script, then one seeded draw per request:
`500` and `503`, `429` (with `Retry-After`), `notjson` (an HTML page answered 200), `nokey` (JSON
without the `tickets` key), `overlap` (the page starts with the previous page's last three tickets, as
when the listing shifts under a poll).

    python -m demo.api_server --port 8766 --tickets 1000 [--fail-rate 0.1 --rate-limit-rate 0.05 --seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import signal
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FAULTS = ("500", "503", "429", "notjson", "nokey", "overlap", "ok")
STYLES = ("cursor", "next_url", "page", "link", "all")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_POLL_SECONDS = 0.05


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_tickets(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` seeded tickets, each changed at its own second, from 2025-01-01 on."""
    rng = random.Random(seed)
    statuses = ("open", "pending", "solved", "closed")
    subjects = ("Refund request", "Order not delivered", "Change address", "Login problem", "Invoice copy")
    tickets = []
    for i in range(1, count + 1):
        created = _EPOCH + timedelta(seconds=i)
        tickets.append(
            {
                "id": f"T{i:07d}",
                "requester_email": f"customer{rng.randrange(count or 1)}@example.com",
                "subject": rng.choice(subjects),
                "status": rng.choice(statuses),
                "created_at": iso(created),
                "updated_at": iso(created),
            }
        )
    return tickets


@dataclass(frozen=True)
class ApiFaults:
    """How often the API misbehaves; `script` outcomes are served first, in order, then the rates apply."""

    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: str = "1"
    script: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.fail_rate and 0 <= self.rate_limit_rate and self.fail_rate + self.rate_limit_rate <= 1):
            raise ValueError("fault rates must be between 0 and 1 and add up to at most 1")
        unknown = [s for s in self.script if s not in FAULTS]
        if unknown:
            raise ValueError(f"unknown script entries {unknown}; expected any of {list(FAULTS)}")
        object.__setattr__(self, "script", tuple(self.script))


class ApiServer:
    """The ticket API, served from a daemon thread so tests and benchmarks drive it in-process."""

    def __init__(
        self,
        tickets: Iterable[dict[str, Any]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        page_size: int = 100,
        faults: ApiFaults | None = None,
        seed: int = 0,
        token: str | None = None,
    ) -> None:
        self.page_size = page_size
        self.faults = faults or ApiFaults()
        self.token = token
        self.lock = threading.Lock()
        # Keyed by id; a ticket without one (a broken record, to test how it is handled) by its position.
        self.tickets: dict[str, dict[str, Any]] = {t.get("id") or f"#{n}": dict(t) for n, t in enumerate(tickets)}
        self.log: list[dict[str, Any]] = []
        self._ordered: list[dict[str, Any]] | None = None
        self._order_keys: list[str] = []
        self._script = list(self.faults.script)
        self._random = random.Random(seed)
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": _POLL_SECONDS}, name="api-server", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def change(self, ids: Iterable[str], at: datetime, **fields: Any) -> None:
        """Change tickets at `at`, as an agent answering them would: their `updated_at` moves on."""
        with self.lock:
            for ticket_id in ids:
                self.tickets[ticket_id] = {**self.tickets[ticket_id], **fields, "updated_at": iso(at)}
            self._ordered = None

    def add(self, tickets: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            for ticket in tickets:
                self.tickets[ticket["id"]] = dict(ticket)
            self._ordered = None

    def script(self, *outcomes: str) -> None:
        """Serve these outcomes to the next requests, in order, before the random faults resume."""
        unknown = [o for o in outcomes if o not in FAULTS]
        if unknown:
            raise ValueError(f"unknown outcomes {unknown}; expected any of {list(FAULTS)}")
        with self.lock:
            self._script = list(outcomes)

    def requests_with(self, status: int) -> int:
        with self.lock:
            return sum(1 for entry in self.log if entry["status"] == status)

    def draw_fault(self) -> str:
        with self.lock:
            if self._script:
                return self._script.pop(0)
            draw = self._random.random()
        if draw < self.faults.fail_rate:
            return "500" if draw < self.faults.fail_rate / 2 else "503"
        if draw < self.faults.fail_rate + self.faults.rate_limit_rate:
            return "429"
        return "ok"

    def listing(self, since: str | None) -> list[dict[str, Any]]:
        """Tickets changed at or after `since`, oldest change first (ties by id), as the API pages them.

        The order is kept between changes, so a page costs a binary search rather than a sort of every ticket
        (the benchmark pages through 100,000)."""
        with self.lock:
            if self._ordered is None:
                self._ordered = sorted(self.tickets.values(), key=lambda t: (t["updated_at"], str(t.get("id"))))
                self._order_keys = [t["updated_at"] for t in self._ordered]
            ordered, keys = self._ordered, self._order_keys
        return ordered if since is None else ordered[bisect.bisect_left(keys, since) :]


class _Handler(BaseHTTPRequestHandler):
    server_version = "DemoTicketApi/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        api: ApiServer = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status = self._answer(api, parts.path, query)
        with api.lock:
            api.log.append({"path": parts.path, "query": query, "status": status})

    def _answer(self, api: ApiServer, path: str, query: dict[str, str]) -> int:
        # The token as a bearer header, or as the api_key query parameter many APIs take instead.
        given = (self.headers.get("Authorization") == f"Bearer {api.token}", query.get("api_key") == api.token)
        if api.token is not None and not any(given):
            return self._send(401, {"error": "missing or wrong API token"})
        style = path.removeprefix("/tickets/")
        if not path.startswith("/tickets/") or style not in STYLES:
            return self._send(404, {"error": f"no such listing {path}; try /tickets/{{{','.join(STYLES)}}}"})
        fault = api.draw_fault()
        if fault in ("500", "503"):
            return self._send(int(fault), {"error": "internal error"})
        if fault == "429":
            return self._send(429, {"error": "slow down"}, {"Retry-After": api.faults.retry_after})
        if fault == "notjson":
            return self._send(200, "<html><body>Gateway maintenance</body></html>", content_type="text/html")
        try:
            size = int(query.get("per_page", api.page_size))
            number = int(query.get("page", query.get("cursor", "1")))
        except ValueError:
            return self._send(400, {"error": "page, cursor and per_page must be whole numbers"})
        since = query.get("updated_since")
        listing = api.listing(since)
        start = (number - 1) * size
        if fault == "overlap":  # the listing shifted under the poll: the page starts with the last page's tail
            start = max(0, start - 3)
        body: dict[str, Any] = {"tickets": listing if style == "all" else listing[start : number * size]}
        more = style != "all" and number * size < len(listing)
        following = {**query, "page": str(number + 1)}
        following.pop("cursor", None)
        headers: dict[str, str] = {}
        if style == "cursor":
            body["meta"] = {"next_cursor": str(number + 1) if more else None}
        elif style == "next_url":
            body["links"] = {"next": f"/tickets/next_url?{urlencode(following)}" if more else None}
        elif style == "page":
            body["page"] = number
        elif style == "link" and more:
            headers["Link"] = f'<{api.url}/tickets/link?{urlencode(following)}>; rel="next"'
        if fault == "nokey":
            body = {"results": body.pop("tickets")}
        return self._send(200, body, headers)

    def _send(
        self, status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> int:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        return status


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the ticket API in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m demo.api_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500 or 503")
    parser.add_argument("--rate-limit-rate", type=float, default=0.0, help="share answered 429")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (or ?api_key=TOKEN)")
    args = parser.parse_args(argv)
    faults = ApiFaults(fail_rate=args.fail_rate, rate_limit_rate=args.rate_limit_rate)
    server = ApiServer(
        make_tickets(args.tickets, args.seed),
        args.host,
        args.port,
        page_size=args.page_size,
        faults=faults,
        seed=args.seed,
        token=args.token,
    )
    print(f"demo ticket API listening on {server.url}", flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
