"""Destination syncs: deliver segment members to the tools that act on them.

The file destination writes one CSV or Parquet file per run into its folder, named by time, so a
downstream job picks up complete files only (DuckDB writes to a temporary name and renames). Every
export is logged in `syncs.file_exports`.

Row-level destinations (webhook, rest, hashed_audience, postgres) send only what changed since the
destination last acknowledged it, in the destination's sync mode, with consent enforced; see
`sync_state` for the bookkeeping and `resources.destinations` for delivery and retries.
"""

import codecs
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from cdp_assets.metadata import redact, redact_errors, table_metadata
from cdp_assets.profiles.assets import GOLDEN_PROFILES
from cdp_assets.segments.assets import segment_key
from cdp_assets.syncs.erasures import deliver_erasures, pending_erasures
from cdp_assets.syncs.state import (
    BatchOpener,
    batches_in_flight,
    complete_sql,
    consented_sql,
    ensure_tables,
    fold_acknowledged,
    forget_rows_held,
    plan_sync,
    record_absorbed,
    record_batch,
    record_outcome,
    record_rejected,
    rows_held,
)
from resources.config import CDPConfig, FileDestinationConfig, RowDestinationConfig
from resources.config.base import MissingSecretError
from resources.config.refresh import UNAVAILABLE_DESTINATION
from resources.destinations import (
    Change,
    Delivery,
    DestinationClient,
    HashedAudienceClient,
    RateLimiter,
    RestClient,
    RetryPolicy,
    WebhookClient,
    deliver,
)
from resources.durable import fsync_path
from resources.sql import Sql
from resources.warehouse import Warehouse, owner_only, sql_literal, utc_now

GROUP = "destination_syncs"
# Bump when what a sync sends or records changes.
CODE_VERSION = "2"

# A spreadsheet opening a CSV evaluates a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# A text that is only a signed number (an E.164 phone) is read by a spreadsheet as that number, nothing else.
SIGNED_NUMBER = "[+-][0-9]+([.][0-9]+)?"


def spreadsheet_safe_text(value: str) -> str:
    """One text cell made inert for spreadsheets by the rule `spreadsheet_safe` applies in SQL, for the CSV
    files written from Python (an access request's bundle, which a privacy officer opens in Excel)."""
    if value[:1] in FORMULA_TRIGGERS and not re.fullmatch(SIGNED_NUMBER, value):
        return "'" + value
    return value


def spreadsheet_safe(sql: Sql, query: str) -> str:
    """The query with its text columns made inert for spreadsheets: a value starting with a formula trigger
    gets a leading single quote, so Excel, LibreOffice or Google Sheets show it as text instead of running
    `=HYPERLINK(...)` or a DDE command when a marketer opens the export.

    Only VARCHAR columns are touched: numbers, dates, booleans and lists are typed, so a negative number
    stays a number and a list always starts with '['. A text value that is only a signed number (an E.164
    phone) is left as it is: a spreadsheet reads it as that number and nothing else, and the file's other
    readers (upload jobs) need the phone intact. Cells holding a comma, quote or line break are quoted by
    DuckDB's CSV writer.
    """
    triggers = ", ".join(f"chr({ord(c)})" for c in FORMULA_TRIGGERS)
    selected = []
    for name, column_type in sql.column_types(query):
        column = '"' + name.replace('"', '""') + '"'
        if column_type == "VARCHAR":
            selected.append(
                f"case when left({column}, 1) in ({triggers})"
                f" and not regexp_full_match({column}, '{SIGNED_NUMBER}')"
                f" then chr(39) || {column} else {column} end as {column}"
            )
        else:
            selected.append(column)
    return f"select {', '.join(selected)} from ({query})"


def export_files(config: CDPConfig, destination: FileDestinationConfig) -> list[Path]:
    """Every file the destination has written (the current one and all earlier ones), oldest first."""
    folder = config.resolve(destination.path) / destination.name
    return sorted(p for p in folder.glob(f"*.{destination.format}") if not p.name.startswith("."))


def write_export(sql: Sql, query: str, path: Path, destination: FileDestinationConfig) -> int:
    """Write `query`'s rows to `path` in the destination's format, separator and mark: an export, and an
    erasure's rewrite of one, which must read in a spreadsheet as the export did. Returns the rows' count."""
    rows = sql.export(query, str(path), destination.format, delimiter=destination.delimiter)
    if destination.format == "csv" and destination.byte_order_mark:
        marked = path.with_name(path.name + ".partial")  # hidden, and removed by the next export if left
        with path.open("rb") as written, marked.open("wb") as out:
            out.write(codecs.BOM_UTF8)
            shutil.copyfileobj(written, out)
        marked.replace(path)
    return rows


def export_file(sql: Sql, config: CDPConfig, destination: FileDestinationConfig, run_id: str) -> dict[str, object]:
    """Write the segment's members (those who granted the destination's purpose, if it names one) with the
    mapped fields; returns the file and row count."""
    folder = config.resolve(destination.path) / destination.name
    folder.mkdir(parents=True, exist_ok=True)
    # What an export killed half-way left (one run at a time writes here): customers' rows in no
    # recorded file, which an erasure would not find.
    for left in folder.glob(".*.partial*"):
        if left.is_dir():
            shutil.rmtree(left)
        else:
            left.unlink()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{destination.name}-{stamp}.{destination.format}"
    partial = target.with_name("." + target.name + ".partial")
    columns = ", ".join(f'p."{f}"' for f in destination.fields)
    members = (
        "from cdp.segment_membership m join cdp.golden_profiles p using (customer_id) "
        f"where m.segment = {sql_literal(destination.segment)} and {consented_sql(destination.purpose)}"
    )
    missing = (
        int(sql.value(f"select count(*) {members} and not ({complete_sql(destination)})"))
        if destination.required
        else 0
    )
    query = f"select {columns} {members} and {complete_sql(destination)} order by p.customer_id"
    if destination.format == "csv":
        query = spreadsheet_safe(sql, query)
    rows = write_export(sql, query, partial, destination)
    owner_only(partial)
    partial.rename(target)
    removed = _keep_latest(config, destination)
    sql.execute(
        "insert into syncs.file_exports values (?, ?, ?, ?, ?, ?)",
        [
            destination.name,
            destination.segment,
            run_id,
            str(target),
            rows,
            utc_now(),
        ],
    )
    return {"file": str(target), "rows": int(rows), "missing_required": missing, "files_removed": removed}


def _keep_latest(config: CDPConfig, destination: FileDestinationConfig) -> int:
    """Delete the destination's files but the latest `keep_files` (their names sort by their time); returns
    how many went. Each old file is a copy of people who may since have left the segment or said no."""
    if destination.keep_files is None:
        return 0
    older = export_files(config, destination)[: -destination.keep_files]
    for path in older:
        path.unlink()
    if older:
        fsync_path(older[0].parent)
    return len(older)


def build_sync_asset(config: CDPConfig, destination: FileDestinationConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=["syncs", destination.name],
        group_name=GROUP,
        description=f"Exports segment '{destination.segment}' to a {destination.format.upper()} file per run.",
        deps=[segment_key(destination.segment), GOLDEN_PROFILES],
        kinds={destination.format},
        code_version=CODE_VERSION,
        metadata={
            "segment": destination.segment,
            "fields": ", ".join(destination.fields),
            "required": ", ".join(destination.required) or "none",
            **table_metadata("syncs.file_exports"),
        },
    )
    @redact_errors
    def sync(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            outcome = export_file(sql, config, destination, context.run_id)
        context.log.info(f"{destination.name}: wrote {outcome['rows']} rows to {outcome['file']}")
        if outcome["missing_required"]:
            context.log.info(
                f"{destination.name}: left out {outcome['missing_required']} members with no value in a required "
                f"field ({', '.join(destination.required)})"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(outcome["rows"])),
                "file": dg.MetadataValue.path(str(outcome["file"])),
                "missing_required": dg.MetadataValue.int(int(outcome["missing_required"])),
                "files_removed": dg.MetadataValue.int(int(outcome["files_removed"])),
            }
        )

    return sync


# --------------------------------------------------------------------------- row-level destinations

CHECK_DELIVERED = "every_change_delivered"


def _headers(destination: RowDestinationConfig) -> dict[str, str]:
    """The auth header, with its secret read from the environment now and never logged."""
    if destination.auth is None:
        return {}
    try:
        return destination.auth.headers(f"Destination '{destination.name}'")
    except MissingSecretError as exc:
        raise dg.Failure(str(exc)) from None


def make_client(destination: RowDestinationConfig) -> DestinationClient:
    """The client for a destination's type: HTTP clients share one session per destination."""
    timeout = destination.retry.timeout_seconds
    if destination.type == "webhook":
        return WebhookClient(destination.url, destination.segment or "all_profiles", timeout, _headers(destination))
    if destination.type == "rest":
        return RestClient(
            destination.upsert_url,
            destination.delete_url,
            method=destination.method,
            records_key=destination.records_key,
            ids_key=destination.ids_key,
            id_field=destination.id_field,
            timeout=timeout,
            headers=_headers(destination),
        )
    if destination.type == "hashed_audience":
        return HashedAudienceClient(destination.url, timeout, _headers(destination))
    if destination.type == "postgres":
        from resources.postgres_destination import PostgresClient

        dsn = os.environ.get(destination.dsn_env)
        if not dsn:
            raise dg.Failure(
                f"Destination '{destination.name}': environment variable {destination.dsn_env} (dsn_env) is not set"
            )
        return PostgresClient(dsn, destination.table, destination.key_column, schema=destination.db_schema)
    raise ValueError(f"no client for destination type {destination.type!r}")


# A sync hands `deliver` its plan's changes this many rows at a time (rounded up to whole batches), so
# what it holds in memory is one such chunk and its batches' answers, however large the plan.
CHUNK_ROWS = 50_000


class Tally:
    """What became of a sync's changes, counted chunk by chunk: the run reports counts, and holds no
    change once its chunk is done."""

    def __init__(self, retrying: set[str]) -> None:
        self.retrying, self.retried = retrying, set[str]()
        self.done = {"add": 0, "update": 0, "remove": 0}
        self.deferred = {"add": 0, "update": 0, "remove": 0}
        self.failed = self.requests = self.retries = 0
        self.unavailable: str | None = None

    def delivered(self, delivery: Delivery) -> None:
        """One `deliver` call's outcome, added to the run's."""
        self.counted(delivery.accepted)
        self.deferring(delivery.deferred)
        self.failed += len(delivery.failed)
        self.requests += delivery.requests
        self.retries += delivery.retries
        self.unavailable = self.unavailable or delivery.unavailable

    def counted(self, changes: list[Change]) -> None:
        """Changes sent (or, in a dry run, that would be)."""
        for change in changes:
            self.done[change.operation] += 1
            if change.key in self.retrying:
                self.retried.add(change.key)

    def deferring(self, changes: list[Change]) -> None:
        """Changes left for the next run, counted by operation for the failure's message."""
        for change in changes:
            self.deferred[change.operation] += 1


def run_sync(
    sql: Sql,
    config: CDPConfig,
    destination: RowDestinationConfig,
    run_id: str,
    client: DestinationClient | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Settle the batches left in flight, then plan, send and record one destination's sync; returns the
    run report.

    A batch an earlier run sent without hearing the answer goes first, as it was and with its key: the
    destination either recognises the replay or applies it now. Either way the acknowledged state then
    says what the destination holds, and the plan is computed against that.
    """
    ensure_tables(sql)
    resend = [] if destination.dry_run else batches_in_flight(sql, destination.name)
    used: list[DestinationClient] = []
    limiter = RateLimiter(destination.rate_limit_per_second, sleep)  # one limit for the resends and the rest
    opener = BatchOpener(sql, destination.name)
    chunk_rows = -(-CHUNK_ROWS // destination.batch_size) * destination.batch_size

    def opened() -> DestinationClient:
        if not used:
            used.append(client or make_client(destination))
        return used[0]

    # The keys that may be in syncs.pending: unknown until the plan has read it, then those it holds and
    # this run's failures.
    may_be_pending: set[str] | None = None

    def answered(key: str, accepted: list[Change], failed: list[tuple[Change, str]]) -> None:
        record_batch(sql, destination.name, run_id, key, accepted, failed, may_be_pending)
        if may_be_pending is not None:
            may_be_pending.update(c.key for c, _ in failed)

    def send(changes: list[Change], resend: list[tuple[str, list[Change]]]) -> Delivery:
        return deliver(
            opened(),
            destination.name,
            changes,
            batch_size=destination.batch_size,
            policy=RetryPolicy.from_config(destination.retry),
            rate_limit=limiter,
            resend=resend,
            open_batch=opener.open,
            on_batch=answered,
            sleep=sleep,
        )

    def defer(changes: list[Change], tally: Tally) -> None:
        record_outcome(
            sql, destination.name, run_id, "deferred", [(c.key, c.operation, tally.unavailable) for c in changes]
        )

    erasures = {"erased": 0, "erase_pending": 0}
    ended = False
    forgotten = 0
    try:
        # A table that is not there (dropped, or `table` or `schema` changed) holds none of the rows recorded
        # as delivered to it: forgotten, they are all sent again, where only the changes since would be.
        if not destination.dry_run and destination.type == "postgres" and rows_held(sql, destination.name):
            if getattr(opened(), "table_exists", lambda: None)() is False:
                forgotten = forget_rows_held(sql, destination.name)
        # A privacy erasure this destination has not confirmed goes first, like any row it refused before.
        if not destination.dry_run and pending_erasures(sql, destination.name):
            erasures = deliver_erasures(sql, destination, opened, sleep)
        settled = send([], resend) if resend else Delivery()
        with plan_sync(sql, config, destination) as plan:
            tally = Tally(plan.retrying)
            may_be_pending = set(plan.retrying)
            tally.delivered(settled)
            record_rejected(sql, destination.name, run_id, plan)
            if not destination.dry_run:
                record_absorbed(sql, destination.name, run_id, plan)
            # A hashed audience's removals go before its additions (see HashedAudienceClient); the client is
            # opened only when there is something to send.
            removals_first = bool(
                plan.upserts + plan.removals and not destination.dry_run and getattr(opened(), "removals_first", False)
            )
            waiting = {c.key for c in settled.deferred}
            for chunk in plan.chunks(chunk_rows, removals_first):
                if destination.dry_run:
                    tally.counted(chunk)
                    record_outcome(
                        sql, destination.name, run_id, "dry_run", [(c.key, c.operation, None) for c in chunk]
                    )
                elif tally.unavailable:  # down: the rest waits (behind the unanswered batch, if that is why)
                    rest = [c for c in chunk if c.key not in waiting]
                    tally.deferring(rest)
                    defer(rest, tally)
                else:
                    delivery = send(chunk, [])
                    tally.delivered(delivery)
                    defer(delivery.deferred, tally)
        ended = True
    finally:
        for opened_client in used:
            opened_client.close()
        # What the destination accepted is in its state when the step ends, even a failing one; a failure
        # to fold while the sync fails already is left to the next sync, so the first error is the one seen.
        try:
            fold_acknowledged(sql, destination.name)
        except Exception:
            if ended:
                raise
    defer(settled.deferred, tally)
    return {
        "added": tally.done["add"],
        "updated": tally.done["update"],
        "removed": tally.done["remove"],
        "retried": len(tally.retried),
        "skipped_for_consent": plan.skipped_for_consent,
        "missing_required": plan.missing_required,
        "rejected": plan.rejected,
        "without_identifiers": plan.without_identifiers,
        "superseded": plan.superseded,
        "absorbed": plan.absorbed,
        "failed": tally.failed,
        "deferred": sum(tally.deferred.values()),
        "deferred_by_operation": {op: n for op, n in tally.deferred.items() if n},
        "resent_batches": len(resend),
        "requests": tally.requests,
        "request_retries": tally.retries,
        "dry_run": destination.dry_run,
        "unavailable": tally.unavailable,
        "table_missing_rows_sent_again": forgotten,
        **erasures,
    }


def _changes(count: int) -> str:
    return f"{count} change was" if count == 1 else f"{count} changes were"


def unavailable_message(destination: str, run_id: str, report: dict[str, object]) -> str:
    """Why a sync failed and exactly where it stopped: what the destination acknowledged before it went
    down (recorded as sent, batch by batch), what waits for the next run, and where to look."""
    counts = {k: v for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool)}
    by_operation = report.get("deferred_by_operation")
    deferred = by_operation if isinstance(by_operation, dict) else {}
    sent = {label: counts[label] for label in ("added", "updated", "removed")}
    waiting = {f"to {op}": deferred.get(op, 0) for op in ("add", "update", "remove")}

    def detail(parts: dict[str, int]) -> str:
        shown = [f"{n} {label}" for label, n in parts.items() if n]
        return f" ({', '.join(shown)})" if shown else ""

    refused = f" {_changes(counts['failed'])} refused and wait in syncs.pending." if counts["failed"] else ""
    return (
        f"Destination '{destination}' unavailable: {report['unavailable']}. "
        f"Before it failed, {_changes(sum(sent.values()))} sent and acknowledged{detail(sent)}; "
        f"{_changes(counts['deferred'])} deferred to the next run{detail(waiting)}.{refused} "
        "The next run first resends the batch it was sending (syncs.in_flight), whose answer was an error or "
        "never came, with the same idempotency key, so a batch the destination did apply is not applied "
        f"twice. Every row's outcome is in syncs.changelog (run_id '{run_id}')."
    )


def build_row_sync_asset(config: CDPConfig, destination: RowDestinationConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["syncs", destination.name])
    receives = f"segment '{destination.segment}'" if destination.segment else "every profile"
    # A segment's sync follows that segment (and the profiles it reads fields from); a sync of every profile
    # follows the profiles alone.
    deps = [segment_key(destination.segment), GOLDEN_PROFILES] if destination.segment else [GOLDEN_PROFILES]

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=f"Syncs {receives} to {destination.type} destination '{destination.name}' ({destination.mode}).",
        deps=deps,
        kinds={"postgres" if destination.type == "postgres" else "api"},
        code_version=CODE_VERSION,
        metadata={
            "segment": destination.segment or "every profile",
            "mode": destination.mode,
            "purpose": destination.purpose or "none",
            "fields": ", ".join(f"{k} <- {v}" for k, v in destination.fields.items()),
            "required": ", ".join(destination.required) or "none",
            **table_metadata(
                "syncs.destination_state", "syncs.changelog", "syncs.pending", "syncs.in_flight", "syncs.batch_sequence"
            ),
        },
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_DELIVERED,
                asset=key,
                blocking=False,
                description=(
                    "Every change of the run was accepted by the destination (failures are retried next run); an "
                    "audience member with no identifier value at all is counted (without_identifiers), not warned of."
                ),
            )
        ],
    )
    @redact_errors
    def sync(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            report = run_sync(sql, config, destination, context.run_id)
            backlog = sql.value("select count(*) from syncs.pending where destination = ?", [destination.name])
            acknowledged = sql.value(
                "select count(*) from syncs.destination_state where destination = ? and present", [destination.name]
            )
        # The destination's own words may quote a row it was sent (a database error's detail): masked here,
        # in full in syncs.changelog with the deferred rows.
        report["unavailable"] = redact(report["unavailable"]) if report["unavailable"] else None
        context.log.info(f"{destination.name}: {report}")
        if report["unavailable"]:
            raise dg.Failure(
                unavailable_message(destination.name, context.run_id, report),
                # The destination's name marks the failure as an outage, which the destination_retry sensor
                # answers by running the sync again later; other failures are not retried.
                metadata={
                    UNAVAILABLE_DESTINATION: destination.name,
                    **{k: v for k, v in report.items() if isinstance(v, int)},
                },
            )
        metadata = {
            k: dg.MetadataValue.int(int(v)) for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool)
        }
        metadata.update(
            {
                "dry_run": bool(report["dry_run"]),
                "failed_backlog": int(backlog),
                "dagster/row_count": dg.MetadataValue.int(int(acknowledged)),
            }
        )
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK_DELIVERED,
                    passed=report["failed"] == 0
                    and report["rejected"] == report["without_identifiers"]
                    and report["erase_pending"] == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "failed": int(report["failed"]),
                        "rejected": int(report["rejected"]),
                        "without_identifiers": int(report["without_identifiers"]),
                        "backlog": int(backlog),
                    },
                )
            ],
        )

    return sync
