"""Keyed hashes of erased identifiers: what an erasure leaves behind so the person cannot come back.

A tombstone must recognise a replayed e-mail or phone without holding it. A plain SHA-256 of an e-mail can be
reversed by hashing a list of candidate addresses, so the hash is an HMAC-SHA256 under a secret key read from
the environment (`privacy.key_env`, default CDP_PRIVACY_KEY). Whoever holds the warehouse without the key
learns nothing from a tombstone; with a new key the old tombstones recognise nothing, so keep the key as long
as the tombstones.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from resources.config import CDPConfig


class PrivacyKeyMissing(RuntimeError):
    """The tombstone key is not set, so erasure (or checking new rows against tombstones) cannot run."""


def privacy_key(config: CDPConfig) -> bytes:
    """The tombstone key from the environment; a clear error naming the variable when it is not set."""
    value = os.environ.get(config.privacy.key_env, "")
    if len(value) < 16:
        raise PrivacyKeyMissing(
            f"Environment variable {config.privacy.key_env} (privacy.key_env in cdp.yaml) must hold the secret key "
            "of the erasure tombstones, at least 16 characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`). Erasure refuses to run without it, and once a person has been "
            "erased, so does extraction: new rows could not be checked against the erased identifiers."
        )
    return value.encode()


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    """The tombstone of one identifier value: HMAC-SHA256 of `kind` and the value in its match form, hex."""
    return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


def keyed_hash_sql(key: bytes, kind: str, value_sql: str) -> tuple[str, list[bytes]]:
    """SQL giving `keyed_hash(key, kind, value)` of each row's `value_sql`, and its parameters (bind them in this
    order, before any later in the statement): HMAC-SHA256 written out with the database's SHA-256 (RFC 2104),
    so a file's values are hashed where they lie instead of being fetched into Python one by one."""
    block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\0")
    outer = bytes(b ^ 0x5C for b in block)
    inner = bytes(b ^ 0x36 for b in block) + f"{kind}\x00".encode()
    return f"sha256(cast(? as blob) || unhex(sha256(cast(? as blob) || encode({value_sql}))))", [outer, inner]


def record_kind(source: str) -> str:
    """The tombstone kind of a source's record ids: a record id is only unique within its source."""
    return f"record:{source}"
