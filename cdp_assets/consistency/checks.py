"""Proof that what the refreshes left equals a rebuild from the raw rows: the `equals_a_rebuild` check.

Every refresh changes the public tables step by step: new files, re-runs, overrides, a kept matching
model, ids carried over by the registry. If any of that leaves a result a rebuild would not give (a
customer id that moved with no new data, a trait that drifted, a member that should have left), nothing
else would notice. This check copies the warehouse, rebuilds in the copy the cleaned records, identity,
the profiles and the segment members from the raw tables with the very stage code, the same kept model
and id registry, and the profiles measured from the same as-of time, then compares the copy's public
tables with the warehouse's:

- `cdp.identity_map`: the same records, each with the same customer id (so the same partition of records
  into customers, and the same ids);
- `cdp.golden_profiles`: every column but `profile_built_at`;
- `cdp.segment_membership`: the same customers in each segment.

Any difference fails the check, with the count per table and the first differing rows in its metadata
(ids as they are, record ids masked, profile values never shown: only which columns differ). It runs on
its own schedule and on demand (the `rebuild_check` job), not in every refresh: it costs one.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from cdp_assets.clean.assets import clean_activity, clean_person_records
from cdp_assets.identity.assets import resolve
from cdp_assets.metadata import markdown_table, mask, redact_errors
from cdp_assets.profiles.assets import GOLDEN_PROFILES, build_profiles
from cdp_assets.segments.assets import build_membership
from resources.config import CDPConfig
from resources.sql import Sql
from resources.warehouse import Warehouse

CHECK_NAME = "equals_a_rebuild"
REBUILD = "rebuild_copy"
FIRST_ROWS = 5
# Stamped with the time a profile was built: a rebuild is built later by construction.
BUILD_STAMPS = ("profile_built_at",)
GOLDEN_PROFILES_TABLE = "cdp.golden_profiles"


def rebuild(sql: Sql, config: CDPConfig) -> None:
    """Rebuild the cleaned records, identity, profiles and segment members on `sql` (a copy) from its raw
    tables, measuring the profiles from the as-of time the current ones were measured from."""
    as_of = sql.value("select max(traits_as_of) from cdp.golden_profiles")
    clean_person_records(sql, config, full=True)
    for role in ("events", "transactions"):
        if config.sources_with_role(role):
            clean_activity(sql, config, role, full=True)
    resolve(sql, config)
    build_profiles(sql, config, as_of)
    build_membership(sql, config)


def compare(sql: Sql) -> dict[str, list[dict[str, Any]]]:
    """The differing rows of each public table between the warehouse (`sql`) and the attached rebuild,
    every one of them (the caller shows the first)."""
    identity = sql.frame(
        f"""select coalesce(w.source, r.source) as source,
                   coalesce(w.source_record_id, r.source_record_id) as source_record_id,
                   w.customer_id as customer_now, r.customer_id as customer_rebuilt
            from cdp.identity_map w full join {REBUILD}.cdp.identity_map r using (source, source_record_id, role)
            where w.customer_id is distinct from r.customer_id
            order by 1, 2"""
    ).to_dict("records")
    columns = [c for c in sql.columns("select * from cdp.golden_profiles") if c not in BUILD_STAMPS]
    listed = ", ".join(f'"{c}"' for c in columns)
    differing = " or ".join(f'w."{c}" is distinct from r."{c}"' for c in columns if c != "customer_id")
    which = ", ".join(
        f"""case when w."{c}" is distinct from r."{c}" then '{c}' end""" for c in columns if c != "customer_id"
    )
    profiles = sql.frame(
        f"""select coalesce(w.customer_id, r.customer_id) as customer_id,
                   case when w.customer_id is null then 'only in the rebuild'
                        when r.customer_id is null then 'only in the warehouse'
                        else array_to_string(list_filter([{which}], lambda x: x is not null), ', ') end as columns
            from (select {listed} from cdp.golden_profiles) w
            full join (select {listed} from {REBUILD}.cdp.golden_profiles) r using (customer_id)
            where w.customer_id is null or r.customer_id is null or {differing or "false"}
            order by 1"""
    ).to_dict("records")
    members = sql.frame(
        f"""select coalesce(w.segment, r.segment) as segment, coalesce(w.customer_id, r.customer_id) as customer_id,
                   case when w.customer_id is null then 'only in the rebuild' else 'only in the warehouse' end
                       as member
            from (select segment, customer_id from cdp.segment_membership) w
            full join (select segment, customer_id from {REBUILD}.cdp.segment_membership) r
                 using (segment, customer_id)
            where w.customer_id is null or r.customer_id is null
            order by 1, 2"""
    ).to_dict("records")
    return {"cdp.identity_map": identity, "cdp.golden_profiles": profiles, "cdp.segment_membership": members}


def compare_with_rebuild(warehouse: Warehouse, sql: Sql, config: CDPConfig, copy_path: Path) -> dict[str, list]:
    """Copy the warehouse to `copy_path`, rebuild there, and compare; the copy is deleted, on error too."""
    with warehouse.scratch_copy(sql, copy_path, REBUILD) as copy:
        with copy.open() as scratch:
            rebuild(scratch, config)
        with copy.attached() as beside:
            return compare(beside)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A differing row as the metadata shows it: the platform's own values as they are, record ids masked."""
    return {k: mask(v) if k == "source_record_id" else v for k, v in row.items()}


def build_rebuild_check(config: CDPConfig) -> dg.AssetChecksDefinition:
    # A multi-asset check, so that a difference both records the failed evaluation (its rows in the
    # metadata) and then fails the step: the run is red, `dagster job execute` exits non-zero and the
    # failure alert posts it. A single check's result cannot fail its run.
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=GOLDEN_PROFILES,
                description=(
                    "A rebuild from the raw rows gives the same customers and ids, profiles and segment members as "
                    "the refreshes did (run by the rebuild_check job, on its schedule or by hand); a difference "
                    "fails the run."
                ),
            )
        ],
    )
    @redact_errors
    def equals_a_rebuild(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> Iterator[dg.AssetCheckResult]:
        copy_path = config.warehouse_path.with_name(f"{config.warehouse_path.stem}_rebuild_{context.run.run_id}.duckdb")
        with warehouse.sql() as sql:
            if not sql.table_exists(GOLDEN_PROFILES_TABLE):
                # A new deployment whose first refresh has not run (the weekly schedule runs from the start):
                # there is nothing a rebuild could differ from, which is no reason to fail and alert.
                yield dg.AssetCheckResult(
                    asset_key=GOLDEN_PROFILES,
                    check_name=CHECK_NAME,
                    passed=True,
                    metadata={"compared": False},
                    description=f"nothing to compare: no refresh has built {GOLDEN_PROFILES_TABLE} yet",
                )
                return
            differences = compare_with_rebuild(warehouse, sql, config, copy_path)
        metadata: dict[str, Any] = {f"differing rows in {table}": len(rows) for table, rows in differences.items()}
        for table, rows in differences.items():
            if rows:
                metadata[f"first differing rows in {table}"] = dg.MetadataValue.md(
                    markdown_table([_shown(r) for r in rows[:FIRST_ROWS]])
                )
        differing = ", ".join(f"{len(rows)} in {table}" for table, rows in differences.items() if rows)
        yield dg.AssetCheckResult(
            asset_key=GOLDEN_PROFILES,
            check_name=CHECK_NAME,
            passed=not differing,
            metadata=metadata,
            description=f"differing rows: {differing}" if differing else None,
        )
        if differing:
            raise dg.Failure(
                description=f"The rebuild differs from the warehouse, differing rows: {differing}. The first of "
                f"them are in the metadata of the {CHECK_NAME} check on profiles/golden_profiles."
            )

    return equals_a_rebuild
