"""Segments: named groups of golden profiles, declared in the configuration, in `cdp.segment_membership`.

A segment's condition is a SQL boolean expression over the columns of `cdp.golden_profiles`; it was
bound against that schema when the configuration loaded, so here it only runs.
"""

import dagster as dg
import duckdb

from cdp_assets.clean import sql_literal
from cdp_assets.metadata import markdown_table, masked_preview
from cdp_assets.profiles import GOLDEN_PROFILES
from resources.config import CDPConfig
from resources.warehouse import Warehouse

GROUP = "segments"
SEGMENT_MEMBERSHIP = dg.AssetKey(["segments", "segment_membership"])
CHECK_MEMBERS_EXIST = "members_have_profiles"


def build_membership(conn: duckdb.DuckDBPyConnection, config: CDPConfig) -> dict[str, int]:
    """Rebuild `cdp.segment_membership(segment, customer_id, computed_at)`; returns size per segment."""
    selects = [
        f"select {sql_literal(s.name)} as segment, customer_id from cdp.golden_profiles where ({s.where})"
        for s in config.segments
    ] or ["select null::varchar as segment, null::varchar as customer_id where false"]
    conn.execute(
        "create or replace table cdp.segment_membership as "
        "select segment, customer_id, current_timestamp::timestamp as computed_at from ("
        + " union all ".join(selects)
        + ") order by segment, customer_id"
    )
    sizes = dict(conn.execute("select segment, count(*) from cdp.segment_membership group by 1").fetchall())
    return {s.name: int(sizes.get(s.name, 0)) for s in config.segments}


def build_segments_asset(config: CDPConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=SEGMENT_MEMBERSHIP,
        group_name=GROUP,
        description="Current members of every segment declared in the configuration (cdp.segment_membership).",
        deps=[GOLDEN_PROFILES],
        kinds={"duckdb"},
        owners=["team:marketing-ops"],
        code_version="1",
        automation_condition=dg.AutomationCondition.eager(),
        metadata={
            "segments": dg.MetadataValue.md(
                markdown_table(
                    [{"segment": s.name, "where": s.where, "description": s.description} for s in config.segments]
                )
            )
        },
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_MEMBERS_EXIST,
                asset=SEGMENT_MEMBERSHIP,
                blocking=True,
                description="Every member is a customer with a golden profile, once per segment.",
            ),
        ],
    )
    def segment_membership(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            sizes = build_membership(conn, config)
            orphans, duplicates = conn.execute(
                """select (select count(*) from cdp.segment_membership s
                           anti join cdp.golden_profiles p using (customer_id)),
                          (select count(*) - count(distinct (segment, customer_id)) from cdp.segment_membership)"""
            ).fetchone()
            preview = masked_preview(
                conn,
                "select m.segment, m.customer_id, p.first_name, p.email from cdp.segment_membership m "
                "join cdp.golden_profiles p using (customer_id) order by m.segment, m.customer_id",
            )
        metadata: dict[str, object] = {
            "dagster/row_count": dg.MetadataValue.int(sum(sizes.values())),
            "sizes": dg.MetadataValue.md(markdown_table([{"segment": k, "members": v} for k, v in sizes.items()])),
            "preview": dg.MetadataValue.md(preview),
        }
        metadata.update({f"size_{name}": dg.MetadataValue.int(size) for name, size in sizes.items()})
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    asset_key=SEGMENT_MEMBERSHIP,
                    check_name=CHECK_MEMBERS_EXIST,
                    passed=bool(orphans == 0 and duplicates == 0),
                    metadata={
                        "members_without_profile": int(orphans),
                        "duplicate_memberships": int(duplicates),
                    },
                )
            ],
        )

    return segment_membership
