"""Write keys: which source an SDK's key sends to.

Keys are secrets, so they come from the environment, never from cdp.yaml:
`CDP_COLLECTOR_WRITE_KEYS="website:key1,app:key2"` and/or `CDP_COLLECTOR_WRITE_KEYS_FILE`, a file of
`source:key` lines (blank lines and `#` comments ignored). A source may have several keys (rotating a
key means adding the new one, moving the SDKs over, then removing the old one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping
from pathlib import Path

WRITE_KEYS_ENV = "CDP_COLLECTOR_WRITE_KEYS"
WRITE_KEYS_FILE_ENV = "CDP_COLLECTOR_WRITE_KEYS_FILE"


class WriteKeyError(ValueError):
    """The write keys cannot be used; the message names where they came from and what is wrong."""


def _entries(text: str, separator: str) -> list[tuple[int, str]]:
    """The entries with their place in `text` (1-based, blank ones and comments counted), so an error
    names the line of a file a person opens in an editor."""
    parts = [(number, e.strip()) for number, e in enumerate(text.split(separator), start=1)]
    return [(number, e) for number, e in parts if e and not e.startswith("#")]


def _parse(entries: list[tuple[int, str]], origin: str, sources: Collection[str], keys: dict[str, str]) -> None:
    for number, entry in entries:
        source, colon, key = entry.partition(":")
        source, key = source.strip(), key.strip()
        if not colon or not source or not key:
            raise WriteKeyError(f"{origin} {number}: expected 'source:key'")
        if source not in sources:
            raise WriteKeyError(
                f"{origin} {number}: '{source}' is not a source with format 'segment' in the configuration; "
                f"those are: {', '.join(sorted(sources)) or 'none'}"
            )
        if keys.get(key, source) != source:
            raise WriteKeyError(f"{origin} {number}: the key of '{source}' is already the key of '{keys[key]}'")
        keys[key] = source


def load_write_keys(environ: Mapping[str, str], sources: Collection[str]) -> WriteKeys:
    """The write keys from the environment, each checked to name one of `sources`."""
    keys: dict[str, str] = {}
    if environ.get(WRITE_KEYS_ENV):
        _parse(_entries(environ[WRITE_KEYS_ENV], ","), f"{WRITE_KEYS_ENV}, entry", sources, keys)
    if environ.get(WRITE_KEYS_FILE_ENV):
        path = Path(environ[WRITE_KEYS_FILE_ENV]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WriteKeyError(f"{WRITE_KEYS_FILE_ENV}={path}: cannot read it ({exc.strerror})") from None
        _parse(_entries(text, "\n"), f"{path}, line", sources, keys)
    if not keys:
        example = next(iter(sorted(sources)), "website")
        raise WriteKeyError(
            f"no write keys: set {WRITE_KEYS_ENV}='{example}:<key>' or {WRITE_KEYS_FILE_ENV} to a file of "
            "'source:key' lines"
        )
    return WriteKeys(keys)


class WriteKeys:
    """Looks a presented key up without comparing it character by character against the real ones."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._by_digest = {self._digest(k): (k, source) for k, source in keys.items()}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()

    def source_of(self, key: str | None) -> str | None:
        """The source a key sends to, or None for an unknown or missing key."""
        if not key:
            return None
        found = self._by_digest.get(self._digest(key))
        if found is None or not hmac.compare_digest(found[0].encode(), key.encode(errors="surrogateescape")):
            return None
        return found[1]

    @property
    def sources(self) -> set[str]:
        return {source for _, source in self._by_digest.values()}
