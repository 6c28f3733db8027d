"""What the platform writes into Dagster's storage: small tables, previews and errors, without customer data.

Everything an asset or check reports (metadata, previews, log lines, error messages) is kept in the
Dagster instance for as long as run history is, and shown to everyone with UI access. Customer data
belongs in the warehouse only, so:

- previews show the platform's own values as they are (customer ids, source and segment names, counts)
  and every other value through `mask`: enough to recognise its shape (`a***@x***.org`), not to
  identify anyone. A source may use an e-mail as its record id, so record ids are masked too;
- an exception leaving an asset or check is re-raised by `redact_errors` with its message passed
  through `redact`, which masks quoted values, e-mail addresses and long numbers. DuckDB quotes the
  value it could not convert (`Could not convert string 'ann@x.org' to INT32`), Python the value it
  could not parse.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from cdp_assets.identity.matching.blocking import BlockingRuleTooBroad
from resources.config import ConfigError
from resources.sql import Sql

# Columns a preview shows as they are: ids the platform makes, names from the configuration, counts.
# Every other column may hold a customer value and is masked.
SHOWN_COLUMNS = frozenset({"customer_id", "source", "role", "segment", "record_count", "order_count"})

_E164 = re.compile(r"\+\d{7,15}")
_EMAIL = re.compile(r"[^\s'\"<>()\[\]{},;|]+@[^\s'\"<>()\[\]{},;|]+")
# A quoted value (unterminated at the end of a line when a message was cut), an e-mail address, or a run
# of digits long enough to be a phone number, a date or an account number. A quote opens after a
# non-letter and closes before one, so `can't` opens nothing and `'O'Brien'` is one value.
# A server's address after `://` is configuration, not a customer's number: it is left as written.
_SENSITIVE = re.compile(
    r"(?<!\w)'(?:[^'\n]|'(?=\w))*'?|(?<!\w)\"(?:[^\"\n]|\"(?=\w))*\"?|"
    + _EMAIL.pattern
    + r"|(?<!://)(?<![\d.])\+?\d[\d ()./-]{5,}\d"
)
_REPO = Path(__file__).resolve().parents[1]


def mask(value: Any) -> str:
    """The one masking rule for customer values shown in Dagster: `jane.doe@example.com` -> `j***@e***.com`,
    `+14155550147` -> `+1********47`, anything else keeps its first character: `Jane` -> `J***`."""
    if value is None:
        return ""
    text = str(value).strip()
    if not text:
        return ""
    if "@" in text:
        local, _, domain = text.rpartition("@")
        host, _, suffix = domain.rpartition(".")
        shown_suffix = f".{suffix}" if host and suffix.isalpha() and len(suffix) <= 6 else ""
        return f"{local[:1]}***@{(host or domain)[:1]}***{shown_suffix}"
    if _E164.fullmatch(text):
        return text[:2] + "*" * (len(text) - 4) + text[-2:]
    return text[:1] + "***"


def redact(message: str) -> str:
    """An error message fit for Dagster's storage: its first line (DuckDB's following lines echo the
    statement and the value again), with quoted values, e-mail addresses and long numbers masked.

    Quoted absolute paths are kept: they name the platform's files (a locked warehouse), not customers."""
    first = next((line.strip() for line in str(message).splitlines() if line.strip()), "")

    def masked(match: re.Match[str]) -> str:
        text = match.group(0)
        if text[0] not in "'\"":
            return mask(text)
        quote, inner = text[0], text[1:].removesuffix(text[0]) if len(text) > 1 else ""
        return quote + (inner if inner.startswith("/") else mask(inner)) + quote

    return _SENSITIVE.sub(masked, first)


class RedactedError(Exception):
    """An asset or check failed; the message names the error and where it was raised, with values masked."""


def _redacted(exc: Exception) -> RedactedError:
    frames = [
        f"  at {Path(f.filename).resolve().relative_to(_REPO)}:{f.lineno} in {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).resolve().is_relative_to(_REPO)
        and ".venv" not in Path(f.filename).parts
        and Path(f.filename).resolve() != Path(__file__).resolve()
    ]
    return RedactedError(
        "\n".join(
            [
                f"{type(exc).__name__}: {redact(str(exc))}",
                *frames[-4:],
                "Customer values in this message are masked so that none is stored in Dagster's run history, and "
                "the full message is kept nowhere. To see the value, run the statement at the place named above "
                "against the warehouse; rows and values the cleaning refused are in cdp.quarantine.",
            ]
        )
    )


# Raised by Dagster or deliberately by the platform, with messages that name files, configuration keys and
# counts, never a customer value: passed on as they are.
_PASSED_THROUGH = (dg.Failure, dg.RetryRequested, dg.DagsterError, ConfigError, BlockingRuleTooBroad)
F = TypeVar("F", bound=Callable[..., Any])


def redact_errors(fn: F) -> F:
    """Decorate an asset or check body so that any error leaving it reaches Dagster's event log with its
    message passed through `redact` and no chained original (Dagster stores the causes too)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except _PASSED_THROUGH:
                raise
            except Exception as exc:
                raise _redacted(exc) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PASSED_THROUGH:
            raise
        except Exception as exc:
            raise _redacted(exc) from None

    return function  # type: ignore[return-value]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of a few rows; the UI renders it in the materialization's metadata."""
    if not rows:
        return "_no rows_"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def in_brief(told: list[str], total: int, shown: int = 3) -> str | None:
    """The first of a warning check's findings in one line: the check's description, which a run's log
    prints beside "did not pass" (a headless `dagster job execute` shows no metadata), so what to fix is
    named where the failure is read. `total` counts every finding, of which `told` may hold only the first."""
    if not total:
        return None
    more = f"; and {total - shown} more (see the check's details)" if total > shown else ""
    return "; ".join(told[:shown]) + more


def masked_records(records: Sequence[str]) -> str:
    """Raw JSON records as a markdown table with every value masked: the shape of the data, not its content."""
    rows = []
    for text in records:
        parsed = json.loads(text)
        rows.append({k: (mask(v) if not isinstance(v, (dict, list)) else "{…}") for k, v in parsed.items()})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return markdown_table(rows, columns) if rows else "_no rows_"


def masked_preview(sql: Sql, query: str, limit: int = 5) -> str:
    """The first rows of a query as markdown; every column not in SHOWN_COLUMNS is masked."""
    first_rows = f"select * from ({query}) limit {int(limit)}"
    names = sql.columns(first_rows)
    rows = [
        {n: ("" if v is None else v) if n in SHOWN_COLUMNS else mask(v) for n, v in zip(names, r, strict=True)}
        for r in sql.rows(first_rows)
    ]
    return markdown_table(rows, names)


# Dagster's key for the table an asset is (shown on the asset and searchable in the UI). Written as the
# metadata key itself: dagster exports no public helper for it.
TABLE_NAME = "dagster/table_name"


def table_metadata(table: str, *also: str) -> dict[str, str]:
    """Definition metadata naming the warehouse tables an asset writes: `table`, the one it stands for, as
    `dagster/table_name`, and every table it writes under `tables_written`, so the asset graph answers
    "which step fills identity.review?" without reading code."""
    return {TABLE_NAME: table, "tables_written": ", ".join((table, *also))}
