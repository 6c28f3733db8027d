"""The read snapshot: the public `cdp.*` tables published as their own DuckDB file after every refresh.

BI tools and scripts read this file, not the warehouse: DuckDB lets no other process open the warehouse
while a run writes it, and a reader that got in between two steps would see new cleaned tables beside
old profiles. The snapshot is built only after every stage that writes a public table has succeeded in
the run, and swapped in atomically, so readers always see one refresh's tables, all of them, and never
wait for or block a run.

Each refresh starts the new file from a copy of the published one and replaces only the rows that differ
from the warehouse's (see `publish_read_snapshot`), so a small delta writes a small part of the snapshot.
"""

from collections.abc import Sequence

import dagster as dg

from cdp_assets.metadata import markdown_table, table_metadata
from resources.config import CDPConfig
from resources.warehouse import Warehouse

GROUP = "read_snapshot"
READ_SNAPSHOT = dg.AssetKey(["cdp", "read_snapshot"])
# Bump when what the snapshot holds or how it is published changes.
CODE_VERSION = "2"


def build_read_snapshot_asset(config: CDPConfig, writers: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """The snapshot asset, downstream of `writers`: every asset that writes a table in schema `cdp`."""
    if config.warehouse.engine == "spark":
        path = config.resolve(config.warehouse.spark.read_snapshot) / "current"
        kind = f"a folder of parquet tables ({path})"
    else:
        path = config.read_snapshot_path
        kind = f"one read-only DuckDB file ({path.name})"

    @dg.asset(
        key=READ_SNAPSHOT,
        group_name=GROUP,
        description=f"The public cdp.* tables, one refresh's consistent state, for BI tools: {kind}.",
        deps=list(writers),
        code_version=CODE_VERSION,
        # Tables of the snapshot file, not of the warehouse: every cdp.* table copied, and when it was published.
        metadata={"path": dg.MetadataValue.path(str(path)), **table_metadata("main.snapshot_info", "cdp.*")},
    )
    def read_snapshot(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            report = warehouse.publish_read_snapshot(sql, context.run.run_id, incremental=True)
        counts = report.rows
        published = warehouse.snapshot_path()
        size = sum(f.stat().st_size for f in published.rglob("*") if f.is_file()) if published.is_dir() else None
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(published)),
                "size_bytes": dg.MetadataValue.int(size if size is not None else published.stat().st_size),
                "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
                "tables": dg.MetadataValue.md(
                    markdown_table([{"table": f"cdp.{t}", "rows": n} for t, n in counts.items()])
                ),
                **{f"{table}_rows": dg.MetadataValue.int(n) for table, n in counts.items()},
                "tables_copied_whole": ", ".join(report.copied_whole) or "none",
                "rows_replaced": dg.MetadataValue.int(sum(report.rows_replaced.values())),
            }
        )

    return read_snapshot
