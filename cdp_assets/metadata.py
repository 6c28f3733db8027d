"""Metadata shown in the Dagster UI: small tables and previews with personal data masked.

Run metadata is stored in the Dagster instance and visible to everyone with UI access, so customer
data in a preview is masked: enough of a value to recognise its shape, not enough to identify anyone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

# Columns that hold personal data, masked in previews.
PII_COLUMNS = frozenset(
    {
        "full_name",
        "first_name",
        "middle_name",
        "last_name",
        "email",
        "email_match_key",
        "phone",
        "address_line1",
        "address_line2",
        "address_key",
        "date_of_birth",
        "value",
        "id_value",
        "emails",
        "phones",
    }
)


def mask(value: Any) -> str:
    """`jane.doe@example.com` -> `j***@e***`; `+14155550147` -> `+1******0147`; names keep the initial."""
    if value is None:
        return ""
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain[:1]}***"
    if text.startswith("+") and text[1:].isdigit():
        return text[:2] + "*" * max(len(text) - 6, 0) + text[-4:]
    return text[:1] + "***" if text else ""


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


def masked_records(records: Sequence[str]) -> str:
    """Raw JSON records as a markdown table with every value masked: the shape of the data, not its content."""
    import json

    rows = []
    for text in records:
        parsed = json.loads(text)
        rows.append({k: (mask(v) if not isinstance(v, (dict, list)) else "{…}") for k, v in parsed.items()})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return markdown_table(rows, columns) if rows else "_no rows_"


def masked_preview(conn: duckdb.DuckDBPyConnection, query: str, limit: int = 5) -> str:
    """The first rows of a query as markdown, PII columns masked."""
    cursor = conn.execute(f"select * from ({query}) limit {int(limit)}")
    names = [d[0] for d in cursor.description]
    rows = [
        {n: (mask(v) if n in PII_COLUMNS else ("" if v is None else v)) for n, v in zip(names, r, strict=True)}
        for r in cursor.fetchall()
    ]
    return markdown_table(rows, names)
