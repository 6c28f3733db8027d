"""The DuckDB warehouse: the resource every stage writes through, and the tables they share.

DuckDB allows one writing process per database file, so the platform serialises runs (see dagster.yaml)
and executes steps in process; sensors never open the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import duckdb
from dagster_duckdb import DuckDBResource

from resources.config import CDPConfig

SCHEMAS = ("raw", "meta", "clean", "identity", "cdp", "syncs")

# Tables written by more than one asset, or read before their writer first ran, exist from the start so
# every query has something to read.
_BASE_TABLES = """
create table if not exists meta.loaded_files (
    source varchar, file varchar, sha256 varchar, size_bytes bigint, rows_loaded bigint,
    rows_rejected bigint, status varchar, loaded_at timestamp,
    primary key (source, file)
);
-- What the file was read with; a failed file is tried again when it changes (see cdp_assets.extract).
alter table meta.loaded_files add column if not exists read_settings varchar;
create table if not exists meta.extract_quarantine (
    stage varchar, source varchar, file varchar, row_number bigint, field varchar, value varchar,
    reason varchar, scope varchar, quarantined_at timestamp
);
create table if not exists clean.person_records (
    source varchar, source_record_id varchar, file varchar, row_number bigint, loaded_at timestamp,
    trust integer, is_latest boolean, full_name varchar, first_name varchar, middle_name varchar,
    last_name varchar, email varchar, email_match_key varchar, phone varchar, address_line1 varchar,
    address_line2 varchar, address_key varchar, city varchar, region varchar, postal_code varchar,
    country varchar, date_of_birth date, updated_at timestamp
);
create table if not exists clean.events (
    source varchar, event_id varchar, source_record_id varchar, event varchar, occurred_at timestamp,
    status varchar, file varchar, row_number bigint, loaded_at timestamp
);
create table if not exists clean.transactions (
    source varchar, event_id varchar, source_record_id varchar, occurred_at timestamp, amount double,
    currency varchar, status varchar, file varchar, row_number bigint, loaded_at timestamp
);
create table if not exists syncs.file_exports (
    destination varchar, segment varchar, run_id varchar, file varchar, rows bigint, exported_at timestamp
);
create table if not exists syncs.destination_state (
    destination varchar, key varchar, row_hash varchar, row_json varchar, present boolean,
    acknowledged_at timestamp, primary key (destination, key)
);
create table if not exists syncs.pending (
    destination varchar, key varchar, operation varchar, error varchar, attempts integer,
    first_failed_at timestamp, last_failed_at timestamp, primary key (destination, key)
);
create table if not exists syncs.changelog (
    destination varchar, run_id varchar, key varchar, operation varchar, status varchar, error varchar,
    logged_at timestamp
);
create table if not exists clean.consent_statements (
    source varchar, source_record_id varchar, purpose varchar, granted boolean, stated_at timestamp,
    file varchar, row_number bigint
);
"""
_IDENTIFIER_TABLE = """
create table if not exists clean.{role}_identifiers (
    source varchar, source_record_id varchar, id_type varchar, id_value varchar, file varchar,
    row_number bigint
);
create table if not exists clean.{role}_quarantine (
    stage varchar, source varchar, file varchar, row_number bigint, field varchar, value varchar,
    reason varchar, scope varchar, quarantined_at timestamp
);
"""
ROLES = ("person", "events", "transactions")

# The public rejects table: what extraction could not parse plus what cleaning refused.
_QUARANTINE_VIEW = """
create or replace view cdp.quarantine as
select * from meta.extract_quarantine
union all by name select * from clean.person_quarantine
union all by name select * from clean.events_quarantine
union all by name select * from clean.transactions_quarantine
"""


class Warehouse(DuckDBResource):
    """DuckDB with the platform's schemas and shared tables guaranteed to exist on every connection."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            bootstrap(conn)
            yield conn


def bootstrap(conn: duckdb.DuckDBPyConnection) -> None:
    """Create schemas and shared tables if missing; cheap and idempotent."""
    # Timestamps without an offset are read as UTC, whatever the machine's time zone.
    conn.execute("set TimeZone = 'UTC'")
    for schema in SCHEMAS:
        conn.execute(f"create schema if not exists {schema}")
    conn.execute(_BASE_TABLES)
    for role in ROLES:
        conn.execute(_IDENTIFIER_TABLE.format(role=role))
    conn.execute(_QUARANTINE_VIEW)


def utc_now() -> datetime:
    """Now in UTC without a zone: the form every timestamp column of the warehouse holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def warehouse_resource(config: CDPConfig) -> Warehouse:
    """The warehouse resource for a configuration; its folder is created so a fresh clone just works."""
    path = config.warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {}
    if config.warehouse.memory_limit:
        settings["memory_limit"] = config.warehouse.memory_limit
    if config.warehouse.threads:
        settings["threads"] = config.warehouse.threads
    return Warehouse(database=str(path), connection_config=settings)
