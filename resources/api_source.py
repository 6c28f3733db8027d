"""Polling an HTTP API source into the landing folder.

A poll walks the API's pages (cursor in the body, next-page URL, page numbers or the `Link` header),
retrying throttled and failing requests, and writes the records as JSON-lines files under
`<landing>/<source>/`, each published by an atomic rename: the landing sensor, the extract, quarantine
and replay then treat them as files any other system dropped.

The incremental cursor (the newest value of a record field such as `updated_at`) lives beside the pages
in `<landing>/<source>/.cursor.json`, not in the warehouse: a poll never competes with a run for DuckDB's
single writer, and the cursor always describes the files that are actually there. It is saved only
after the records it covers are published, so a poll that fails (a page that is not JSON, a server
still down after every retry) leaves it where it was and the next poll asks again.

Most APIs filter inclusively (`updated_since=T` returns records changed at T too), so the records at
exactly the cursor's value come back on the next poll. The cursor keeps a fingerprint of each of them
and they are not landed twice, unless they changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests

from resources.config import SourceConfig
from resources.config.base import shown_url
from resources.durable import fsync_path, replace_atomically
from resources.retry import RateLimiter, RetryPolicy, TransientError, is_transient_status, retry_after, with_retries

CURSOR_FILE = ".cursor.json"
_LOCK_FILE = ".poll.lock"
_PARTIAL_SUFFIX = ".partial"


class PollError(Exception):
    """A poll failed; the message names the source, the URL and the HTTP status."""


@dataclass
class PollReport:
    """What one poll fetched and landed."""

    pages: int = 0
    records: int = 0
    files: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0
    skipped_unchanged: int = 0
    # Records a page repeated from an earlier page of the same poll (pages that overlap as the listing
    # shifts under the poll): landed once.
    skipped_repeated: int = 0
    without_cursor_value: int = 0
    cursor_before: Any = None
    cursor_after: Any = None


def source_folder(landing: Path, source: SourceConfig) -> Path:
    """Where an http source's pages land: the folder its glob (`<name>/*.jsonl`) reads."""
    return landing / source.name


def read_cursor(landing: Path, source: SourceConfig) -> dict[str, Any]:
    """The saved cursor state: `value` (sent as the incremental parameter) and `boundary` (fingerprints of the
    records landed at exactly that value); empty before the first poll."""
    path = source_folder(landing, source) / CURSOR_FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PollError(
            f"API source '{source.name}': cursor file {path} is unreadable ({exc}); delete it to poll from the start"
        ) from None
    return state if isinstance(state, dict) else {}


def dig(value: Any, path: str | None) -> Any:
    """The value at a dotted path in parsed JSON (`meta.next_cursor`), or None; no path means the value itself."""
    if not path:
        return value
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _order_key(value: Any) -> tuple[str, float] | None:
    """A cursor value as its kind (`time` or `number`) and a number to compare: a number (or a string of
    one), or an ISO 8601 time (naive means UTC); None when it is neither, so it cannot move the cursor."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return "number", float(value)
    if isinstance(value, str):
        try:
            return "number", float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return "time", (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def _fingerprint(record: Any) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


class _Cursor:
    """The newest cursor value seen so far and the fingerprints of the records holding exactly it.

    A time and a number are not compared: a record whose value is of the other kind than the cursor's (an
    epoch number among ISO times) does not move it, since sent back as the incremental parameter it would
    be a value the API cannot read or one past all its records. The kind is the saved cursor's, else
    `incremental.start`'s; on a first poll without either, the kind most of the poll's records have.
    """

    def __init__(self, state: dict[str, Any], start: Any = None) -> None:
        saved = _order_key(state.get("value"))
        fixed = saved or _order_key(start)
        self.kind: str | None = fixed[0] if fixed else None
        # Per kind: [value, its order key, fingerprints of the records holding exactly it].
        self.newest: dict[str, list[Any]] = {}
        self.counts: dict[str, int] = {}
        self.unreadable_saved = state.get("value") if saved is None else None
        if saved is not None:
            self.newest[saved[0]] = [state["value"], saved[1], set(state.get("boundary", []))]
        self.previous = saved
        self.previous_boundary = frozenset(state.get("boundary", [])) if saved is not None else frozenset()

    def _leading(self) -> str | None:
        if self.kind is not None or not self.counts:
            return self.kind
        return max(self.counts, key=lambda kind: (self.counts[kind], kind == "time"))

    @property
    def value(self) -> Any:
        newest = self.newest.get(self._leading() or "")
        return newest[0] if newest is not None else self.unreadable_saved

    def already_landed(self, ordered: tuple[str, float] | None, fingerprint: str) -> bool:
        """A record the last poll landed with exactly the saved value, sent again by an inclusive filter."""
        return ordered is not None and ordered == self.previous and fingerprint in self.previous_boundary

    def see(self, value: Any, ordered: tuple[str, float], fingerprint: str) -> None:
        kind, key = ordered
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.kind is not None and kind != self.kind:
            return
        newest = self.newest.get(kind)
        if newest is None or key > newest[1]:
            self.newest[kind] = [value, key, {fingerprint}]
        elif key == newest[1]:
            newest[2].add(fingerprint)

    def of_other_kind(self) -> int:
        """How many records seen had a value of the other kind than the cursor's, so did not move it."""
        leading = self._leading()
        return sum(count for kind, count in self.counts.items() if kind != leading)

    def state(self) -> dict[str, Any]:
        """What is saved; from the first save on, the cursor keeps its kind."""
        self.kind = self._leading()
        value, _, boundary = self.newest.get(self.kind or "", [self.unreadable_saved, None, set()])
        return {"value": value, "boundary": sorted(boundary), "saved_at": datetime.now(UTC).isoformat()}


class _PageWriter:
    """Records into JSON-lines files of whole pages, about `per_file` records each, written under a hidden
    partial name and published (renamed to `<poll stamp>-<sequence>.jsonl`) when the caller says they are
    final."""

    def __init__(self, folder: Path, per_file: int) -> None:
        self.folder, self.per_file = folder, per_file
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.sequence = 0
        self.pending: list[tuple[Path, Path]] = []  # (partial, final) closed but not yet published
        self._handle: IO[str] | None = None
        self._count = 0

    def write(self, record: Any) -> None:
        if self._handle is None:
            self.sequence += 1
            final = self.folder / f"{self.stamp}-{self.sequence:05d}.jsonl"
            partial = self.folder / f".{final.name}{_PARTIAL_SUFFIX}"
            self._handle = partial.open("w", encoding="utf-8")
            self.pending.append((partial, final))
        self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._count += 1

    @property
    def full(self) -> bool:
        """The open file has its share of records; files end between pages so a file holds whole pages."""
        return self._count >= self.per_file

    def close_file(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle, self._count = None, 0

    def publish(self) -> list[str]:
        """Publish every closed file; returns their names."""
        published = []
        for partial, final in self.pending:
            partial.replace(final)
            published.append(final.name)
        if published:
            fsync_path(self.folder)
        self.pending = []
        return published

    def discard(self) -> None:
        self.close_file()
        for partial, _ in self.pending:
            partial.unlink(missing_ok=True)
        self.pending = []


@contextmanager
def _exclusive(folder: Path, source: SourceConfig) -> Iterator[None]:
    """One poll of a source at a time: two would land the same pages twice and race on the cursor."""
    with (folder / _LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PollError(f"API source '{source.name}': another poll of this source is running") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _Fetcher:
    """GET one page with the source's retries and rate limit; returns the response and its parsed body."""

    def __init__(
        self,
        source: SourceConfig,
        session: requests.Session,
        report: PollReport,
        sleep: Callable[[float], None],
        rng: random.Random,
    ) -> None:
        assert source.http is not None
        self.source, self.http, self.session, self.report, self.rng = source, source.http, session, report, rng
        self.policy = RetryPolicy.from_config(self.http.retry)

        def timed_sleep(seconds: float) -> None:
            report.waited_seconds += seconds
            sleep(seconds)

        self.sleep = timed_sleep
        self.limiter = RateLimiter(self.http.rate_limit_per_second, timed_sleep)

    def shown(self, url: str) -> str:
        """The URL as messages show it (shown_url), auth's own query parameter hidden too."""
        return shown_url(url, (self.http.auth.query_param,) if self.http.auth and self.http.auth.query_param else ())

    def get(self, url: str, params: dict[str, Any]) -> tuple[requests.Response, Any]:
        def attempt() -> requests.Response:
            try:
                response = self.session.get(url, params=params, timeout=self.http.retry.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"{type(exc).__name__} requesting {self.shown(url)}") from None
            if is_transient_status(response.status_code):
                shown = self.shown(response.url)
                raise TransientError(f"{shown} answered HTTP {response.status_code}", retry_after(response))
            return response

        def counted() -> None:
            self.report.requests += 1

        def retried(_: TransientError) -> None:
            self.report.retries += 1

        try:
            response = with_retries(
                attempt,
                self.policy,
                limiter=self.limiter,
                rng=self.rng,
                sleep=self.sleep,
                on_attempt=counted,
                on_retry=retried,
            )
        except TransientError as exc:
            tried = f", still after {exc.attempts} attempts" if exc.attempts > 1 else ""
            raise PollError(f"API source '{self.source.name}': {exc}{tried}") from None
        where = f"API source '{self.source.name}': {self.shown(response.url)} (HTTP {response.status_code})"
        if response.status_code >= 400:
            raise PollError(f"{where} refused the request: {response.reason}")
        try:
            body = response.json()
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            raise PollError(f"{where}: the page is not JSON ({kind}; {exc})") from None
        return response, body


def _records(source: SourceConfig, where: str, body: Any) -> list[Any]:
    assert source.http is not None
    key = source.http.records_key
    records = dig(body, key)
    if not isinstance(records, list):
        found = f"keys {sorted(body)[:10]}" if isinstance(body, dict) else f"a JSON {type(body).__name__}"
        what = f"no list at '{key}'" if key else "not a JSON list"
        raise PollError(f"{where}: the page has {what} (found {found}); check http.records_key")
    return records


def poll_source(
    source: SourceConfig,
    landing: Path,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    log: Callable[[str], None] | None = None,
) -> PollReport:
    """Fetch every page the API has since the saved cursor, land its records, then save the cursor.

    Raises PollError naming the URL and status when a page cannot be had or read; the cursor then stays
    as it was (with `incremental.sorted`, at the last file published before the failure).
    """
    http = source.http
    if http is None:
        raise ValueError(f"source '{source.name}' is not an http source")
    folder = source_folder(landing, source)
    folder.mkdir(parents=True, exist_ok=True)
    report = PollReport()
    own_session = session is None
    session = session or requests.Session()
    session.headers.update({"Accept": "application/json", **http.headers})
    if http.auth is not None:
        session.headers.update(http.auth.headers(f"API source '{source.name}'"))
        session.params = {**http.auth.params(f"API source '{source.name}'")}
    try:
        with _exclusive(folder, source):
            for stale in folder.glob(f".*{_PARTIAL_SUFFIX}"):
                stale.unlink()  # left by a poll that died; its cursor was never saved
            state = read_cursor(landing, source)
            cursor = _Cursor(state, http.incremental.start if http.incremental is not None else None)
            report.cursor_before = cursor.value
            writer = _PageWriter(folder, http.records_per_file)
            checkpoint_each_file = http.incremental is not None and http.incremental.sorted

            def land() -> None:
                writer.close_file()
                report.files += writer.publish()
                if http.incremental is not None:
                    state = json.dumps(cursor.state(), indent=1)
                    replace_atomically(
                        folder / CURSOR_FILE, lambda staging: staging.write_text(state, encoding="utf-8"), mode=0o600
                    )

            landed_now: set[str] = set()  # this poll's records, by fingerprint (20 hex digits each)
            try:
                for records in _pages(source, _Fetcher(source, session, report, sleep, rng or random.Random()), cursor):
                    report.pages += 1
                    for record in records:
                        fingerprint = _fingerprint(record)
                        if fingerprint in landed_now:
                            report.skipped_repeated += 1
                            continue
                        landed_now.add(fingerprint)
                        if http.incremental is not None:
                            value = dig(record, http.incremental.field) if isinstance(record, dict) else None
                            ordered = _order_key(value)
                            if cursor.already_landed(ordered, fingerprint):
                                report.skipped_unchanged += 1
                                continue
                            if ordered is None:
                                report.without_cursor_value += 1
                            else:
                                cursor.see(value, ordered, fingerprint)
                        writer.write(record)
                        report.records += 1
                    if writer.full:
                        writer.close_file()
                        if checkpoint_each_file:
                            land()  # oldest first: every record up to the cursor is in a published file
                    if log is not None and report.pages % 100 == 0:
                        log(f"{source.name}: {report.pages} pages, {report.records} records so far")
            except PollError:
                if checkpoint_each_file:
                    land()  # the pages fetched before the failure are whole and oldest first
                else:
                    writer.discard()
                raise
            except BaseException:
                writer.discard()
                raise
            land()
            report.cursor_after = cursor.value
            report.without_cursor_value += cursor.of_other_kind()
    finally:
        if own_session:
            session.close()
    return report


def _pages(source: SourceConfig, fetcher: _Fetcher, cursor: _Cursor) -> Iterator[list[Any]]:
    """The records of each page in turn, following the source's pagination style."""
    http = source.http
    assert http is not None
    paging = http.pagination
    url = http.url
    params: dict[str, Any] = dict(http.params)
    if http.incremental is not None:
        since = cursor.value if cursor.value is not None else http.incremental.start
        if since is not None:
            params[http.incremental.param] = since
    if paging.style == "page":
        params[paging.page_param] = paging.first_page
        if paging.page_size_param and paging.page_size:
            params[paging.page_size_param] = paging.page_size
    origin = urlsplit(url)[:2]
    seen: set[str] = set()
    for _ in range(paging.max_pages):
        response, body = fetcher.get(url, params)
        where = f"API source '{source.name}': {fetcher.shown(response.url)} (HTTP {response.status_code})"
        records = _records(source, where, body)
        yield records
        if paging.style == "none":
            return
        if paging.style == "page":
            if not records or (paging.page_size and len(records) < paging.page_size):
                return
            params[paging.page_param] = int(params[paging.page_param]) + 1
            continue
        if paging.style == "cursor":
            following = dig(body, paging.cursor_path)
            if following in (None, "", False):
                return
            marker = f"cursor:{following}"
            params[paging.cursor_param] = following
        else:
            link = (
                dig(body, paging.next_url_path)
                if paging.style == "next_url"
                else response.links.get("next", {}).get("url")
            )
            if not link:
                return
            url, params = urljoin(response.url, str(link)), {}
            marker = url
            if urlsplit(url)[:2] != origin:
                raise PollError(
                    f"{where}: the next page is on another site ({urlsplit(url).netloc}); "
                    "not following it, so the source's credentials are only sent where configured"
                )
        if marker in seen:
            raise PollError(f"{where}: the next page repeats an earlier one ({marker}); the pagination loops")
        seen.add(marker)
    raise PollError(
        f"API source '{source.name}': more than {paging.max_pages} pages in one poll "
        "(http.pagination.max_pages); raise it if the API really has that many"
    )
