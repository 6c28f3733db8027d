"""Normalised SHA-256 identifiers for ad-platform audiences (Google Customer Match, Meta custom audiences).

Ad platforms never receive an e-mail address or phone number in clear: both sides hash a *normalised*
form with SHA-256 and compare digests. A digest is all-or-nothing, so a single stray capital, space or
missing country code silently turns a customer into a non-match. The rules below are the ones the
platforms document:

* E-mail, both platforms: trim surrounding whitespace and lower-case.
* E-mail, Google only: for gmail.com and googlemail.com addresses, remove every ``.`` from the part
  before the ``@``. Google documents this for enhanced conversions and user-provided data in the
  Google Ads API and Campaign Manager 360; its Customer Match upload guidelines only ask for trimming
  and lower-casing, so it is opt-in here (``gmail_dots=True``). Neither platform asks for ``+tags``
  to be removed, so they are kept: ``Test.User+x@Gmail.com`` becomes ``testuser+x@gmail.com``.
* Phone, Google: E.164 with the leading ``+`` and the country code (``+14155550123``).
* Phone, Meta: digits only, country code included, no ``+``, no symbols or leading zeros
  (``14155550123``), which is E.164 without the ``+`` (``phone_plus=False``).
* Digest, both platforms: SHA-256 of the UTF-8 bytes, written as lower-case hex.

Two failure modes seen in audience syncs are designed out. A value that already is a SHA-256 hex
digest (an upstream system hashed it) is passed through, lower-cased, instead of being hashed a second
time into something no platform can match. And one bad value never fails a batch: it is set aside with
a reason, and the rest of the row and the rest of the batch go through.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from resources.identifiers import GMAIL_DOMAINS, HASHED_KINDS, parse_e164

IdentifierKind = Literal["email", "phone"]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

REASON_MISSING = "missing"
REASON_BAD_EMAIL = "not a valid e-mail address"
REASON_BAD_PHONE = "not a valid phone number"


@dataclass(frozen=True)
class HashResult:
    """One identifier's outcome, kept whole so a caller can report a rejection instead of failing on it."""

    hashed: str | None
    reason: str | None = None
    already_hashed: bool = False


def normalize_email(value: str, *, gmail_dots: bool = False) -> str | None:
    """The form both platforms hash, or None when no address could match anyone.

    The validity check is deliberately shallow (one ``@``, both sides present, no whitespace, a dot in
    the domain): its job is to keep obvious junk out of an upload, not to re-implement RFC 5322.
    """
    text = value.strip().lower()
    if text.count("@") != 1 or any(ch.isspace() for ch in text):
        return None
    local, domain = text.split("@")
    if not local or "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return None
    if gmail_dots and domain in GMAIL_DOMAINS:
        local = local.replace(".", "")
        if not local:
            return None
    return f"{local}@{domain}"


def normalize_phone(value: str, default_region: str = "US") -> str | None:
    """E.164 (``+14155550123``), reading a number without a country code as one of ``default_region``.

    Only numbers libphonenumber considers valid are returned: hashing an impossible number costs upload
    quota and can never match.
    """
    return parse_e164(value.strip(), default_region)[0]


def is_sha256_hex(value: str) -> bool:
    """True for something that already is a SHA-256 digest, so it is never hashed twice."""
    return _SHA256_HEX.fullmatch(value) is not None


def sha256_hex(normalized: str) -> str:
    """The digest in the encoding both platforms expect: lower-case hex of the UTF-8 bytes."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def hash_identifier(
    value: str | None,
    kind: IdentifierKind,
    *,
    gmail_dots: bool = False,
    default_region: str = "US",
    phone_plus: bool = True,
) -> HashResult:
    """Hash one identifier for upload, returning a reason rather than raising so a batch never fails on it.

    ``phone_plus`` selects the platform's phone form before hashing: True for Google (E.164 with ``+``),
    False for Meta (the same digits without ``+``).
    """
    if kind not in HASHED_KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}; expected 'email' or 'phone'")
    text = (value or "").strip()
    if not text:
        return HashResult(None, REASON_MISSING)
    if is_sha256_hex(text):
        return HashResult(text.lower(), None, already_hashed=True)
    if kind == "email":
        normalized = normalize_email(text, gmail_dots=gmail_dots)
        if normalized is None:
            return HashResult(None, REASON_BAD_EMAIL)
    else:
        normalized = normalize_phone(text, default_region)
        if normalized is None:
            return HashResult(None, REASON_BAD_PHONE)
        if not phone_plus:
            normalized = normalized.removeprefix("+")
    return HashResult(sha256_hex(normalized))


def _as_text(value: object) -> str | None:
    """Cell values as text, treating the empties a DataFrame produces (None, NaN) as missing."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():  # a phone number a spreadsheet stored as a float
            return str(int(value))
    return str(value)


def hash_rows(
    rows: Iterable[Mapping[str, object]],
    fields: Mapping[str, IdentifierKind],
    *,
    gmail_dots: bool = False,
    default_region: str = "US",
    phone_plus: bool = True,
) -> tuple[list[dict[str, object]], list[tuple[int, str, str]]]:
    """Hash the identifier columns of a batch, setting bad values aside instead of failing the batch.

    Returns the rows to upload and the rejects as ``(row_index, field, reason)``. A row keeps going
    as long as one identifier in it is usable (its bad fields become None and are reported); a row with
    no usable identifier cannot match anyone, so it is dropped and every one of its fields is reported.
    Every field in ``fields`` is present in the output rows (None when it had no usable value) so the
    upload has one shape; all other keys are copied unchanged.
    """
    if not fields:
        raise ValueError("fields must name at least one identifier column")
    kept: list[dict[str, object]] = []
    rejects: list[tuple[int, str, str]] = []
    for index, row in enumerate(rows):
        out = dict(row)
        problems: list[tuple[int, str, str]] = []
        usable = 0
        for field, kind in fields.items():
            result = hash_identifier(
                _as_text(row.get(field)),
                kind,
                gmail_dots=gmail_dots,
                default_region=default_region,
                phone_plus=phone_plus,
            )
            out[field] = result.hashed
            if result.hashed is not None:
                usable += 1
            elif result.reason is not None:
                problems.append((index, field, result.reason))
        if usable:
            kept.append(out)
            rejects.extend(problem for problem in problems if problem[2] != REASON_MISSING)
        else:
            rejects.extend(problems)
    return kept, rejects
