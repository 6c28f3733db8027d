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
cannot-link between two sides that must-links join, directly or through other lines) fail at load, every
mistake of the file in one error, each naming the file, the line and the column. A side that names no
record is not fatal: the identity stage lists it in a warning check.
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
    """The overrides file cannot be used: `problems` holds one message per mistake, each naming the file,
    the line and the column."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    if slash and source in sources:
        # "crm/" alone names a configured source but no record of it: saying the source is unknown would
        # send the user looking for a typo in a name that is right.
        if not record_id.strip():
            raise ValueError(f"names no record id after '{source}/'")
        return Side(text, source=source, record_id=record_id)
    prefix = (source if slash and (not colon or len(source) < len(kind)) else kind if colon else "").strip()
    shown = f"begins with '{prefix}', which" if prefix and _PLAIN_NAME.fullmatch(prefix) else "its value"
    raise ValueError(
        f"{shown} is neither <source>/<record id> with a configured source ({', '.join(sorted(sources))}) "
        f"nor <identifier type>:<value> with a configured type ({', '.join(sorted(identifier_types))})"
    )


def load_overrides(path: Path, sources: Collection[str], identifier_types: Collection[str]) -> list[Override]:
    """Read and check the overrides file; raise OverrideError listing every mistake in it, each naming the
    file, the line and the column (a file that cannot be read, or a wrong header, is the one mistake)."""
    try:
        # utf-8-sig: a file saved by Excel as "CSV UTF-8" starts with a byte order mark, which would
        # otherwise be read into the first header name and fail the header it matches.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OverrideError([f"{path}: cannot read the overrides file: {exc}"]) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise OverrideError([f"{path}: line 1: the header must be exactly {','.join(COLUMNS)}; found {header}"])
    overrides: list[Override] = []
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(COLUMNS):
            problems.append(
                f"{path}: line {line}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), found {len(row)}"
            )
            continue
        override, mistakes = _read_line(line, row, sources, identifier_types)
        problems += [f"{path}: line {line}: {mistake}" for mistake in mistakes]
        if override is not None:
            overrides.append(override)
    problems += _contradictions(path, overrides)
    if problems:
        raise OverrideError(problems)
    return overrides


def _read_line(
    line: int, row: list[str], sources: Collection[str], identifier_types: Collection[str]
) -> tuple[Override | None, list[str]]:
    """One line of five fields as an override, or None and every mistake in it as `<column>: <why>`."""
    action, record, other, author, reason = (cell.strip() for cell in row)
    mistakes: list[str] = []
    if action not in ACTIONS:
        mistakes.append(f"action: unknown action '{action}'; use one of {', '.join(ACTIONS)}")
    first: Side | None = None
    second: Side | None = None
    try:
        first = parse_side(record, sources, identifier_types)
    except ValueError as exc:
        mistakes.append(f"record: {exc}")
    if action == "unmerge" and other:
        mistakes.append("other: unmerge takes one side; leave 'other' empty")
    elif action in ACTIONS and action != "unmerge" and not other:
        mistakes.append(f"other: {action} needs both 'record' and 'other'")
    elif other:
        try:
            second = parse_side(other, sources, identifier_types)
        except ValueError as exc:
            mistakes.append(f"other: {exc}")
    if first is not None and second is not None and first.text == second.text:
        mistakes.append("other: the same side as 'record'")
    mistakes += [
        f"{column}: empty; every override needs an author and a reason"
        for column, value in (("author", author), ("reason", reason))
        if not value
    ]
    if mistakes or first is None:
        return None, mistakes
    return Override(line, action, first, second, author, reason), []


def _contradictions(path: Path, overrides: list[Override]) -> list[str]:
    """A cannot-link between sides that must-links join is a contradiction: one message per such
    cannot-link, naming its line and the must-link lines that join its sides."""
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
    problems = []
    for override in overrides:
        if override.action == "cannot_link" and override.other is not None:
            root = find(override.record.text)
            if root == find(override.other.text):
                must = ", ".join(str(n) for n in sorted(joined_by.get(root, [])))
                problems.append(
                    f"{path}: line {override.line} says its record and other are never one customer, but "
                    f"must_link line(s) {must} join them; remove one of the two"
                )
    return problems
