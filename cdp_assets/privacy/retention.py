"""Retention: a source may keep rows for a limited time (`retain: 730 days`); older rows are deleted daily.

A row's age is its own time where the source maps one (`occurred_at` for activity, `updated_at` for person
records), else when it was loaded; a row cleaning refused is aged by its load. Deletion goes through the
erasure machinery row by row: the raw rows, their quarantine rows and every cleaned row, identifier and
consent statement read from them (by file and line), then the landing files rewritten without them and the
warehouse compacted. Identity, profiles, traits and segments are stage outputs rebuilt from the cleaned
records, so the next refresh drops what the expired rows contributed.
"""

from datetime import datetime, timedelta

from cdp_assets.extract.assets import ensure_raw_table, raw_table
from cdp_assets.privacy.erasure import ErasureBatch, lines_of, queue_file_rewrites
from resources.config import CDPConfig
from resources.sql import Scratch, Sql
from resources.tables import (
    ACTIVITY_CONSENT,
    CLEAN_QUARANTINE,
    CONSENT_HISTORY,
    CONSENT_STATEMENTS,
    EVENTS,
    EXTRACT_QUARANTINE,
    IDENTIFIERS,
    PERSON_ATTRIBUTES,
    PERSON_RECORDS,
    ROLES,
    TRANSACTIONS,
)
from resources.warehouse import sql_literal

_CLEANED = {"person": (PERSON_RECORDS.name, "updated_at"), "events": (EVENTS.name, "occurred_at")}
_CLEANED["transactions"] = (TRANSACTIONS.name, "occurred_at")


def _expired(sql: Sql, config: CDPConfig, tables: Scratch, now: datetime) -> bool:
    """Scratch table `raw_rows(request_id, source, file, row_number)` of the rows past their source's retention."""
    selects = []
    for source in config.sources:
        if source.retain_days is None:
            continue
        cutoff = sql_literal((now - timedelta(days=source.retain_days)).isoformat(sep=" "))
        table, column = _CLEANED[source.role]
        name = sql_literal(source.name)
        selects.append(
            f"""select 'retention' as request_id, source, file, row_number from {table}
                where source = {name} and coalesce({column}, loaded_at) < {cutoff}::timestamp"""
        )
        selects.append(
            f"""select 'retention', {name}, r._file, r._row_number from {ensure_raw_table(sql, source)} r
                where r._loaded_at < {cutoff}::timestamp and not exists (
                    select 1 from {table} c where c.source = {name} and c.file = r._file
                    and c.row_number = r._row_number)"""
        )
    if not selects:
        return False
    sql.create_table_as(tables("raw_rows"), " union ".join(selects), temporary=True)
    return True


def expire(sql: Sql, config: CDPConfig, now: datetime, run_id: str) -> ErasureBatch | None:
    """Delete every row past its source's retention; None when no source declares one."""
    batch = ErasureBatch()
    with sql.scratch("retention") as tables:
        if not _expired(sql, config, tables, now):
            return None
        rows = tables("raw_rows")
        lines = lines_of(sql, tables)
        removed = batch.rows_removed.setdefault("retention", {})
        lineage = (
            f"exists (select 1 from {rows} e where e.source = t.source and e.file = t.file "
            "and e.row_number = t.row_number)"
        )
        with sql.transaction():
            for source in config.sources:
                if source.retain_days is None:
                    continue
                count = sql.value(
                    f"""select count(*) from {raw_table(source)} t where exists (select 1 from {rows} e
                        where e.source = {sql_literal(source.name)} and e.file = t._file
                        and e.row_number = t._row_number)"""
                )
                sql.execute(
                    f"""delete from {raw_table(source)} t where exists (select 1 from {rows} e
                        where e.source = {sql_literal(source.name)} and e.file = t._file
                        and e.row_number = t._row_number)"""
                )
                if count:
                    removed[raw_table(source)] = int(count)
            cleaned = [PERSON_RECORDS, EVENTS, TRANSACTIONS, CONSENT_STATEMENTS, CONSENT_HISTORY, PERSON_ATTRIBUTES]
            cleaned += ACTIVITY_CONSENT.values()
            cleaned.append(EXTRACT_QUARANTINE)
            cleaned += [IDENTIFIERS[role] for role in ROLES] + [CLEAN_QUARANTINE[role] for role in ROLES]
            for table in cleaned:
                count = sql.value(f"select count(*) from {table.name} t where {lineage}")
                sql.execute(f"delete from {table.name} t where {lineage}")
                if count:
                    removed[table.name] = int(count)
            queue_file_rewrites(sql, run_id, lines, exports=False)
    return batch
