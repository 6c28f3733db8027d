"""Segment conditions are SQL boolean expressions over `cdp.golden_profiles`, checked when the config loads.

SQL is what data engineers already write, and DuckDB's binder is a complete checker: each expression is
bound against an empty table with the exact golden-profile schema, so an unknown column or a type
mismatch fails at load time with the segment named, not half-way through a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from resources.config import CDPConfig

# Column -> DuckDB type of `cdp.golden_profiles`, minus the per-purpose consent columns.
PROFILE_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "first_name": "VARCHAR",
    "middle_name": "VARCHAR",
    "last_name": "VARCHAR",
    "email": "VARCHAR",
    "phone": "VARCHAR",
    "address_line1": "VARCHAR",
    "address_line2": "VARCHAR",
    "city": "VARCHAR",
    "region": "VARCHAR",
    "postal_code": "VARCHAR",
    "country": "VARCHAR",
    "date_of_birth": "DATE",
    "emails": "VARCHAR[]",
    "phones": "VARCHAR[]",
    "sources": "VARCHAR[]",
    "record_count": "BIGINT",
    "first_seen_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "order_count": "BIGINT",
    "lifetime_revenue": "DOUBLE",
    "average_order_value": "DOUBLE",
    "first_order_at": "TIMESTAMP",
    "last_order_at": "TIMESTAMP",
    "days_since_last_order": "BIGINT",
    "event_count": "BIGINT",
    "last_seen_at": "TIMESTAMP",
    "profile_built_at": "TIMESTAMP",
}


def profile_columns(consent_purposes: list[str]) -> dict[str, str]:
    """The full golden-profile schema for a configuration (one BOOLEAN column per consent purpose)."""
    return {**PROFILE_COLUMNS, **{f"consent_{p}": "BOOLEAN" for p in consent_purposes}}


def validate_segments(config: CDPConfig, config_path: Path) -> None:
    """Bind every segment's expression against the profile schema; raise ConfigError naming the segment."""
    from resources.config import ConfigError

    columns = profile_columns(config.consent_purposes)
    for i, destination in enumerate(config.destinations):
        unknown = [f for f in destination.fields if f not in columns]
        if unknown:
            raise ConfigError(
                f"{config_path}: destinations[{i}] ({destination.name}).fields: unknown profile column(s) "
                f"{unknown}. Columns you can use: {', '.join(columns)}"
            )
    if not config.segments:
        return
    conn = duckdb.connect(":memory:")
    try:
        ddl = ", ".join(f'"{name}" {dtype}' for name, dtype in columns.items())
        conn.execute(f"create table golden_profiles ({ddl})")
        for i, segment in enumerate(config.segments):
            if ";" in segment.where:
                raise ConfigError(
                    f"{config_path}: segments[{i}] ({segment.name}).where: a condition is one expression; "
                    "';' is not allowed"
                )
            try:
                conn.execute(f"select count(*) from golden_profiles where ({segment.where})").fetchall()
            except duckdb.Error as exc:
                message = str(exc).split("\n")[0]
                raise ConfigError(
                    f"{config_path}: segments[{i}] ({segment.name}).where: {message}. "
                    f"Columns you can use: {', '.join(columns)}"
                ) from None
    finally:
        conn.close()
