"""Durable, group-committed JSON-lines files for one source, published into the landing folder whole.

A request is acknowledged only once its events are on disk: written and fsynced. One fsync per request
would cap the collector at the disk's fsync rate, so requests arriving together share one (group
commit): the first waiting request becomes the leader, writes everything queued so far in one write,
fsyncs once and wakes every request it covered; requests arriving meanwhile queue for the next round.

Files are written under a hidden name (`.<name>.part`) in the source's folder and published by renaming
them to `<name>` (same folder, so the rename is atomic) once they reach `rotate_bytes` or
`rotate_seconds`; the directory is fsynced after creating and after renaming. The landing sensor ignores
hidden files, so it never sees a half-written one. After a crash (`kill -9`, power loss) the hidden
files hold every acknowledged event; `recover` cuts a torn last line (a write never acknowledged) and
publishes them when the collector starts again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from resources.durable import fsync_path

PART_SUFFIX = ".part"
LOCK_NAME = ".collector.lock"
log = logging.getLogger("collector")


class SpoolError(OSError):
    """The events could not be made durable; nothing was acknowledged for them."""


def _published_name(part: Path) -> str:
    return part.name[1 : -len(PART_SUFFIX)]


def recover(folder: Path) -> list[Path]:
    """Publish the hidden files a previous run left behind, cut after their last complete line; the files
    published, oldest first."""
    published = []
    for part in sorted(folder.glob(f".*{PART_SUFFIX}")):
        with part.open("r+b") as handle:
            data = handle.read()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        if keep == 0:
            part.unlink()
            continue
        target = folder / _published_name(part)
        os.replace(part, target)
        published.append(target)
    fsync_path(folder)
    return published


class Spool:
    """The open landing file of one source and the queue of requests waiting for it to be durable."""

    def __init__(
        self,
        folder: Path,
        *,
        rotate_bytes: int,
        rotate_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self._clock = clock
        folder.mkdir(parents=True, exist_ok=True)
        # One collector per folder: a second one would publish the first one's open file under it.
        self._lock = (folder / LOCK_NAME).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SpoolError(f"another collector is writing to {folder}") from None
        self.recovered = recover(folder)
        self._cond = threading.Condition()
        self._queue: list[bytes] = []
        self._queued = 0  # sequence number of the last request queued
        self._durable = 0  # every request up to this one is on disk
        self._failed: list[tuple[int, int, str]] = []  # (first, last, why) of rounds that failed
        self._leading = False
        self._handle = None
        self._part: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self.published: list[Path] = []
        self.commits = 0

    def append(self, data: bytes) -> None:
        """Return once `data` (whole JSON lines) is on disk; SpoolError if it could not be made durable."""
        with self._cond:
            self._queue.append(data)
            self._queued += 1
            mine = self._queued
            while self._durable < mine:
                if self._leading:
                    self._cond.wait()
                    continue
                self._lead()
            for first, last, why in self._failed:
                if first <= mine <= last:
                    raise SpoolError(why)

    def _lead(self) -> None:
        """Write and fsync everything queued, as one round; called and returning with the lock held."""
        batch, self._queue = self._queue, []
        first, last = self._durable + 1, self._queued
        self._leading = True
        self._cond.release()
        error = None
        try:
            self._write(b"".join(batch))
        except OSError as exc:
            error = f"could not store the events: {exc.strerror or exc}"
        finally:
            self._cond.acquire()
            self._leading = False
        if error is not None:
            self._failed = [*self._failed[-100:], (first, last, error)]
        self._durable = last
        self._cond.notify_all()

    def _write(self, data: bytes) -> None:
        if self._handle is None:
            self._open()
        assert self._handle is not None
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may write less than asked
                view = view[self._handle.write(view) :]
            os.fsync(self._handle.fileno())
        except OSError:
            # What reached the file is unknown: cut it back to the last acknowledged byte.
            self._handle.truncate(self._size)
            raise
        self._size += len(data)
        self.commits += 1
        if self._size >= self.rotate_bytes or self._clock() - self._opened_at >= self.rotate_seconds:
            try:
                self._publish()
            except OSError as exc:
                # The events are durable; the file stays hidden and is published when the collector next starts.
                log.error("could not publish %s: %s; it is published at the next start", self._part, exc)
                self._handle, self._part = None, None

    def _open(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self._part = self.folder / f".events-{stamp}-{secrets.token_hex(3)}.jsonl{PART_SUFFIX}"
        # Owner-only, as the warehouse and exports are: the events hold e-mails and phone numbers.
        self._handle = os.fdopen(os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb", buffering=0)
        fsync_path(self.folder)
        self._opened_at = self._clock()
        self._size = 0

    def _publish(self) -> None:
        """Rename the open file to its visible name; its content is already durable."""
        assert self._handle is not None and self._part is not None
        self._handle.close()
        target = self.folder / _published_name(self._part)
        os.replace(self._part, target)
        fsync_path(self.folder)
        self.published.append(target)
        self._handle, self._part = None, None

    def rotate_if_due(self, force: bool = False) -> Path | None:
        """Publish the open file if it is old enough (or `force`), between rounds; the file published."""
        with self._cond:
            while self._leading:
                self._cond.wait()
            if self._handle is None or self._size == 0:
                return None
            if not force and self._clock() - self._opened_at < self.rotate_seconds:
                return None
            try:
                self._publish()
            except OSError as exc:
                log.error("could not publish %s: %s; it is published at the next start", self._part, exc)
                self._handle, self._part = None, None
                return None
            return self.published[-1]

    def close(self) -> None:
        """Publish what is open; the spool can still be appended to afterwards (a new file is opened)."""
        self.rotate_if_due(force=True)

    def release(self) -> None:
        """Publish what is open and let another collector write to the folder."""
        self.close()
        self._lock.close()
