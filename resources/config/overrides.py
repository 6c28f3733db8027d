"""Manual identity overrides: the corrections a data engineer makes by hand, one per line of a CSV file.

The file is named by `identity.overrides` in cdp.yaml and belongs in version control next to it: every
line says who decided and why, and the identity stage re-reads it on every run (editing it triggers a
refresh), so an override survives full rebuilds. Columns:

    action,record,other,author,reason
    must_link,crm/C-1001,shop/S-77,ana@example.com,Same person: confirmed on the phone
    cannot_link,email:pat@example.com,crm/C-1002,ana@example.com,Twins sharing a mailbox
    unmerge,support/T-9,,li@example.com,Ticket raised by a colleague on her behalf

- `must_link`: the two sides are one customer, whatever the matching says.
- `cannot_link`: the two sides are never one customer; it beats every automatic link.
- `unmerge`: the records of `record` leave the customer they are in and form one of their own (together,
  if there are several); automatic links do not bring them back. `other` stays empty.

A side is `<source>/<record id>` (one record of a configured source) or `<identifier type>:<value>` (every
record carrying that value once normalised, e.g. `email:Pat@Example.com`). A file that does not parse,
an unknown action or source, a missing author or reason, or overrides that contradict each other (a
cannot-link between two sides that must-links join, directly or through other lines) fail at load,
naming the lines. A side that names no record is not fatal: the identity stage lists it in a warning check.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

ACTIONS = ("must_link", "cannot_link", "unmerge")
COLUMNS = ("action", "record", "other", "author", "reason")


# A type or source name as the configuration writes them: shown in messages, unlike the values after it.
_PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class OverrideError(ValueError):
    """The overrides file cannot be used; the message names the file and lines."""


@dataclass(frozen=True)
class Side:
    """One side of an override: a record (`source`, `record_id`) or an identifier (`id_type`, `value`)."""

    text: str
    source: str | None = None
    record_id: str | None = None
    id_type: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Override:
    """One line of the overrides file."""

    line: int
    action: str
    record: Side
    other: Side | None
    author: str
    reason: str


def parse_side(text: str, sources: Collection[str], identifier_types: Collection[str]) -> Side:
    """A side's text as a record or an identifier; raise ValueError saying which forms are accepted.

    The messages never quote the side: it is a customer's e-mail, phone or record id, and the error reaches
    Dagster's run history (the identity run that read the file). What precedes the ':' or '/' is shown when
    it is short and plain, since a mistyped type or source name is the usual mistake."""
    text = text.strip()
    kind, colon, value = text.partition(":")
    if colon and kind in identifier_types:
        if not value.strip():
            raise ValueError(f"names no {kind} value after '{kind}:'")
        return Side(text, id_type=kind, value=value.strip())
    source, slash, record_id = text.partition("/")
    if slash and source in sources and record_id:
        return Side(text, source=source, record_id=record_id)
    prefix = (source if slash and (not colon or len(source) < len(kind)) else kind if colon else "").strip()
    shown = f"begins with '{prefix}', which" if prefix and _PLAIN_NAME.fullmatch(prefix) else "its value"
    raise ValueError(
        f"{shown} is neither <source>/<record id> with a configured source ({', '.join(sorted(sources))}) "
        f"nor <identifier type>:<value> with a configured type ({', '.join(sorted(identifier_types))})"
    )


def load_overrides(path: Path, sources: Collection[str], identifier_types: Collection[str]) -> list[Override]:
    """Read and check the overrides file; raise OverrideError naming the file and the offending lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OverrideError(f"{path}: cannot read the overrides file: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise OverrideError(f"{path}: line 1: the header must be exactly {','.join(COLUMNS)}; found {header}")
    overrides: list[Override] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(COLUMNS):
            raise OverrideError(
                f"{path}: line {line}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), found {len(row)}"
            )
        action, record, other, author, reason = (cell.strip() for cell in row)
        where = f"{path}: line {line}"
        if action not in ACTIONS:
            raise OverrideError(f"{where}: unknown action '{action}'; use one of {', '.join(ACTIONS)}")
        if not author or not reason:
            raise OverrideError(f"{where}: every override needs an author and a reason")
        try:
            column = "record"
            first = parse_side(record, sources, identifier_types)
            column = "other"
            second = parse_side(other, sources, identifier_types) if other else None
        except ValueError as exc:
            raise OverrideError(f"{where}: {column} {exc}") from None
        if action == "unmerge" and second is not None:
            raise OverrideError(f"{where}: unmerge takes one side; leave 'other' empty")
        if action != "unmerge" and second is None:
            raise OverrideError(f"{where}: {action} needs both 'record' and 'other'")
        if second is not None and first.text == second.text:
            raise OverrideError(f"{where}: 'record' and 'other' are the same")
        overrides.append(Override(line, action, first, second, author, reason))
    _refuse_contradictions(path, overrides)
    return overrides


def _refuse_contradictions(path: Path, overrides: list[Override]) -> None:
    """A cannot-link (or an unmerge) between sides that must-links join is a contradiction: fail naming
    the cannot-link's line and the must-link lines that join its sides."""
    parent: dict[str, str] = {}
    joined_by: dict[str, list[int]] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for override in overrides:
        if override.action == "must_link" and override.other is not None:
            a, b = find(override.record.text), find(override.other.text)
            lines = joined_by.pop(a, []) + ([] if a == b else joined_by.pop(b, [])) + [override.line]
            parent[a] = b
            joined_by[b] = lines
    for override in overrides:
        if override.action == "cannot_link" and override.other is not None:
            root = find(override.record.text)
            if root == find(override.other.text):
                must = ", ".join(str(n) for n in sorted(joined_by.get(root, [])))
                raise OverrideError(
                    f"{path}: line {override.line} says its record and other are never one customer, but "
                    f"must_link line(s) {must} join them; remove one of the two"
                )
