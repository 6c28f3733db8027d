"""Destination syncs: deliver segment members to the tools that act on them.

The file destination writes one CSV or Parquet file per run into its folder, named by time, so a
downstream job picks up complete files only (DuckDB writes to a temporary name and renames). Every
export is logged in `syncs.file_exports`.
"""

from datetime import UTC, datetime

import dagster as dg

from cdp_assets.clean import sql_literal
from cdp_assets.segments import SEGMENT_MEMBERSHIP
from resources.config import CDPConfig, FileDestinationConfig
from resources.warehouse import Warehouse

GROUP = "destination_syncs"


def export_file(conn, config: CDPConfig, destination: FileDestinationConfig, run_id: str) -> dict[str, object]:
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
    conn.execute(f"copy ({query}) to {sql_literal(str(partial))} ({options})")
    partial.rename(target)
    rows = conn.execute(f"select count(*) from ({query})").fetchone()[0]
    conn.execute(
        """create table if not exists syncs.file_exports (
               destination varchar, segment varchar, run_id varchar, file varchar, rows bigint,
               exported_at timestamp)"""
    )
    conn.execute(
        "insert into syncs.file_exports values (?, ?, ?, ?, ?, ?)",
        [
            destination.name,
            destination.segment,
            run_id,
            str(target),
            rows,
            datetime.now(UTC).replace(tzinfo=None),
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
