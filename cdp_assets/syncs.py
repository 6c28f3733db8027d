"""Destination syncs: deliver segment members to the tools that act on them.

The file destination writes one CSV or Parquet file per run into its folder, named by time, so a
downstream job picks up complete files only (DuckDB writes to a temporary name and renames). Every
export is logged in `syncs.file_exports`.

Row-level destinations (webhook, rest, hashed_audience, postgres) send only what changed since the
destination last acknowledged it, in the destination's sync mode, with consent enforced; see
`sync_state` for the bookkeeping and `resources.destinations` for delivery and retries.
"""

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import duckdb

from cdp_assets.clean import sql_literal
from cdp_assets.metadata import redact, redact_errors
from cdp_assets.profiles import GOLDEN_PROFILES
from cdp_assets.segments import SEGMENT_MEMBERSHIP
from cdp_assets.sync_state import plan_sync, record_batch, record_outcome
from resources.config import CDPConfig, FileDestinationConfig, RowDestinationConfig
from resources.destinations import (
    DestinationClient,
    HashedAudienceClient,
    RestClient,
    RetryPolicy,
    WebhookClient,
    deliver,
)
from resources.warehouse import Warehouse, utc_now

GROUP = "destination_syncs"


def export_file(
    conn: duckdb.DuckDBPyConnection, config: CDPConfig, destination: FileDestinationConfig, run_id: str
) -> dict[str, object]:
    """Write the segment's members with the mapped fields; returns the file and row count."""
    folder = config.resolve(destination.path) / destination.name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{destination.name}-{stamp}.{destination.format}"
    partial = target.with_name("." + target.name + ".partial")
    columns = ", ".join(f'p."{f}"' for f in destination.fields)
    query = (
        f"select {columns} from cdp.segment_membership m join cdp.golden_profiles p using (customer_id) "
        f"where m.segment = {sql_literal(destination.segment)} order by p.customer_id"
    )
    options = "format csv, header true" if destination.format == "csv" else "format parquet"
    rows = conn.execute(f"copy ({query}) to {sql_literal(str(partial))} ({options})").fetchone()[0]
    partial.rename(target)
    conn.execute(
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
    return {"file": str(target), "rows": int(rows)}


def build_sync_asset(config: CDPConfig, destination: FileDestinationConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=["syncs", destination.name],
        group_name=GROUP,
        description=f"Exports segment '{destination.segment}' to a {destination.format.upper()} file per run.",
        deps=[SEGMENT_MEMBERSHIP],
        kinds={"duckdb", destination.format},
        owners=["team:marketing-ops"],
        code_version="1",
        automation_condition=dg.AutomationCondition.eager(),
        metadata={"segment": destination.segment, "fields": ", ".join(destination.fields)},
    )
    @redact_errors
    def sync(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            outcome = export_file(conn, config, destination, context.run_id)
        context.log.info(f"{destination.name}: wrote {outcome['rows']} rows to {outcome['file']}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(outcome["rows"])),
                "file": dg.MetadataValue.path(str(outcome["file"])),
            }
        )

    return sync


# --------------------------------------------------------------------------- row-level destinations

CHECK_DELIVERED = "every_change_delivered"


def _headers(destination: RowDestinationConfig) -> dict[str, str]:
    """The auth header, with its secret read from the environment now and never logged."""
    if destination.auth is None:
        return {}
    token = os.environ.get(destination.auth.env)
    if not token:
        raise dg.Failure(
            f"Destination '{destination.name}': environment variable {destination.auth.env} (auth) is not set"
        )
    value = f"{destination.auth.scheme} {token}" if destination.auth.scheme else token
    return {destination.auth.header: value}


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


def run_sync(
    conn: duckdb.DuckDBPyConnection,
    config: CDPConfig,
    destination: RowDestinationConfig,
    run_id: str,
    client: DestinationClient | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Plan, send and record one destination's sync; returns the run report."""
    plan = plan_sync(conn, config, destination)
    report: dict[str, object] = {
        "added": plan.count("add"),
        "updated": plan.count("update"),
        "removed": plan.count("remove"),
        "retried": len(plan.retrying),
        "skipped_for_consent": plan.skipped_for_consent,
        "rejected": len(plan.rejected),
        "superseded": plan.superseded,
        "failed": 0,
        "requests": 0,
        "dry_run": destination.dry_run,
        "unavailable": None,
    }
    record_outcome(conn, destination.name, run_id, "rejected", [(k, None, r) for k, r in plan.rejected])
    if destination.dry_run or not plan.changes:
        if destination.dry_run:
            record_outcome(
                conn, destination.name, run_id, "dry_run", [(c.key, c.operation, None) for c in plan.changes]
            )
        return report
    client = client or make_client(destination)
    try:
        delivery = deliver(
            client,
            destination.name,
            plan.changes,
            batch_size=destination.batch_size,
            policy=RetryPolicy(
                destination.retry.max_attempts,
                destination.retry.base_delay_seconds,
                destination.retry.max_delay_seconds,
            ),
            rate_limit=destination.rate_limit_per_second,
            on_batch=lambda ok, bad: record_batch(conn, destination.name, run_id, ok, bad),
            sleep=sleep,
        )
    finally:
        client.close()
    record_outcome(
        conn,
        destination.name,
        run_id,
        "deferred",
        [(c.key, c.operation, delivery.unavailable) for c in delivery.deferred],
    )
    sent = {c.key for c in delivery.accepted}
    report.update(
        {
            "added": sum(1 for c in delivery.accepted if c.operation == "add"),
            "updated": sum(1 for c in delivery.accepted if c.operation == "update"),
            "removed": sum(1 for c in delivery.accepted if c.operation == "remove"),
            "retried": len(plan.retrying & sent),
            "failed": len(delivery.failed),
            "deferred": len(delivery.deferred),
            "requests": delivery.requests,
            "request_retries": delivery.retries,
            "unavailable": delivery.unavailable,
        }
    )
    return report


def build_row_sync_asset(config: CDPConfig, destination: RowDestinationConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey(["syncs", destination.name])
    receives = f"segment '{destination.segment}'" if destination.segment else "every profile"
    deps = [SEGMENT_MEMBERSHIP] if destination.segment else [GOLDEN_PROFILES]

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=f"Syncs {receives} to {destination.type} destination '{destination.name}' ({destination.mode}).",
        deps=deps,
        kinds={"duckdb", "postgres" if destination.type == "postgres" else "api"},
        owners=["team:marketing-ops"],
        code_version="1",
        automation_condition=dg.AutomationCondition.eager(),
        metadata={
            "mode": destination.mode,
            "purpose": destination.purpose or "none",
            "fields": ", ".join(f"{k} <- {v}" for k, v in destination.fields.items()),
        },
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_DELIVERED,
                asset=key,
                blocking=False,
                description="Every change of the run was accepted by the destination (failures are retried next run).",
            )
        ],
    )
    @redact_errors
    def sync(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            report = run_sync(conn, config, destination, context.run_id)
            backlog = conn.execute(
                "select count(*) from syncs.pending where destination = ?", [destination.name]
            ).fetchone()[0]
            acknowledged = conn.execute(
                "select count(*) from syncs.destination_state where destination = ? and present", [destination.name]
            ).fetchone()[0]
        # The destination's own words may quote a row it was sent (a database error's detail): masked here,
        # in full in syncs.changelog with the deferred rows.
        report["unavailable"] = redact(report["unavailable"]) if report["unavailable"] else None
        context.log.info(f"{destination.name}: {report}")
        if report["unavailable"]:
            raise dg.Failure(
                f"Destination '{destination.name}' unavailable after retries: {report['unavailable']}. "
                f"{report.get('deferred', 0)} changes deferred to the next run; nothing was marked as sent. "
                "The destination's full answer is in syncs.changelog.",
                metadata={k: v for k, v in report.items() if isinstance(v, int)},
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
                    passed=report["failed"] == 0 and report["rejected"] == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "failed": int(report["failed"]),
                        "rejected": int(report["rejected"]),
                        "backlog": int(backlog),
                    },
                )
            ],
        )

    return sync
