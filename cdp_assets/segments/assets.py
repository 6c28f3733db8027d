"""Segments: named groups of golden profiles, declared in the configuration, in `cdp.segment_membership`.

A segment's condition is a SQL boolean expression over the columns of `cdp.golden_profiles`; it was
checked against the allow-list and bound against that schema when the configuration loaded. It runs in
a sandbox: a separate in-memory DuckDB database without file access, over a copy of only the columns
the conditions read, so a condition can select profiles and nothing else. Membership over time is
kept in `cdp.segment_membership_history`: one row per stay in a segment, opened when a customer enters
and closed when they leave, so "who entered since yesterday" and audience entered/exited events are
queries, not reconstructions.
"""

from collections.abc import Sequence
from datetime import datetime

import dagster as dg
import duckdb

from cdp_assets.metadata import markdown_table, masked_preview, redact_errors
from cdp_assets.profiles.assets import GOLDEN_PROFILES
from resources.conditions import (
    ConditionError,
    check_condition,
    failure_message,
    referenced_columns,
    sandbox,
)
from resources.config import CDPConfig
from resources.schema import profile_columns
from resources.warehouse import Warehouse, transaction, utc_now

GROUP = "segments"
SEGMENT_MEMBERSHIP = dg.AssetKey(["segments", "segment_membership"])
CHECK_MEMBERS_EXIST = "members_have_profiles"


def membership_time(conn: duckdb.DuckDBPyConnection) -> datetime:
    """The time entries and exits are stamped with: the profiles' `traits_as_of`, the moment the conditions
    were evaluated for (the newest activity in replayed data, the build time under `as_of: now`).

    A time the data gives, not the wall clock, so a re-run over the same data records the same history.
    It never goes back before a time already in the history (a fixed `as_of` moved earlier), so stays never
    end before they begin; with no profiles at all, it is now.
    """
    as_of, latest = conn.execute(
        """select (select max(traits_as_of) from cdp.golden_profiles),
                  (select max(greatest(entered_at, coalesce(exited_at, entered_at)))
                   from cdp.segment_membership_history)"""
    ).fetchone()
    stamp = as_of if as_of is not None else utc_now()
    return max(stamp, latest) if latest is not None else stamp


def build_membership(conn: duckdb.DuckDBPyConnection, config: CDPConfig) -> dict[str, dict[str, int]]:
    """Rebuild `cdp.segment_membership` and advance its history; returns size, entered, exited per segment."""
    conditions, columns = [], profile_columns(config)
    for i, segment in enumerate(config.segments):
        try:
            conditions.append((segment.name, check_condition(segment.where, columns, "the profile's")))
        except ConditionError as exc:  # a configuration built without load_config
            raise ConditionError(f"segments[{i}] ({segment.name}).where: {exc}") from None
    select_members(conn, conditions)
    conn.execute(
        """create table if not exists cdp.segment_membership_history (
               segment varchar, customer_id varchar, entered_at timestamp, exited_at timestamp)"""
    )
    now = membership_time(conn)
    # Who enters and who leaves, decided before the history changes: counting rows stamped `now` afterwards
    # would also count stays an earlier run opened at the same as-of time.
    conn.execute(
        """create or replace temp table membership_changes as
           select segment, customer_id, 'entered' as change from current_members c
           where not exists (select 1 from cdp.segment_membership_history h where h.exited_at is null
                             and h.segment = c.segment and h.customer_id = c.customer_id)
           union all
           select segment, customer_id, 'exited' from cdp.segment_membership_history h
           where exited_at is null and not exists (
               select 1 from current_members c where c.segment = h.segment and c.customer_id = h.customer_id)"""
    )
    with transaction(conn):
        conn.execute(
            """update cdp.segment_membership_history h set exited_at = ?
               from membership_changes c
               where c.change = 'exited' and h.exited_at is null
                 and c.segment = h.segment and c.customer_id = h.customer_id""",
            [now],
        )
        conn.execute(
            """insert into cdp.segment_membership_history
               select segment, customer_id, ?, null from membership_changes where change = 'entered'""",
            [now],
        )
        conn.execute(
            """create or replace table cdp.segment_membership as
               select c.segment, c.customer_id, h.entered_at, ?::timestamp as computed_at
               from current_members c join cdp.segment_membership_history h
                 on h.segment = c.segment and h.customer_id = c.customer_id and h.exited_at is null
               order by c.segment, c.customer_id""",
            [now],
        )
    counts = conn.execute(
        """select segment, count(*) filter (where exited_at is null), 0, 0
           from cdp.segment_membership_history where exited_at is null group by 1
           union all
           select segment, 0, count(*) filter (where change = 'entered'), count(*) filter (where change = 'exited')
           from membership_changes group by 1"""
    ).fetchall()
    conn.execute("drop table membership_changes")
    totals: dict[str, list[int]] = {}
    for segment, size, entered, exited in counts:
        figures = totals.setdefault(segment, [0, 0, 0])
        for i, n in enumerate((size, entered, exited)):
            figures[i] += int(n)
    found = {segment: tuple(figures) for segment, figures in totals.items()}
    # Segments removed from the configuration show up once, with everyone exiting.
    names = [s.name for s in config.segments] + sorted(set(found) - {s.name for s in config.segments})
    return {
        name: dict(zip(("size", "entered", "exited"), map(int, found.get(name, (0, 0, 0))), strict=True))
        for name in names
    }


def select_members(conn: duckdb.DuckDBPyConnection, conditions: Sequence[tuple[str, str]]) -> None:
    """Temp table `current_members(segment, customer_id)` from `(segment, condition SQL)` pairs.

    The conditions run in `sandbox()`, not on the warehouse connection, over an Arrow copy of the row id
    and the columns they read; only (segment, row id) pairs come back, each once (segment names are
    unique, and a row id is one profile, so no DISTINCT over customer ids). The allow-list should already
    have refused anything but an expression over those columns; if it missed something, there is no
    file, table or setting there to reach. The copy costs about half a second per million profiles with
    the demo's five segments. A condition that fails on the data (a cast of a name to a number) names
    its segment, without the values DuckDB quotes: the message goes to the run's event log.
    """
    if not conditions:
        conn.execute(
            "create or replace temp table current_members as "
            "select null::varchar as segment, null::varchar as customer_id where false"
        )
        return
    # Column names match case-insensitively, as in DuckDB.
    present = {c.lower(): c for c in conn.sql("select * from cdp.golden_profiles limit 0").columns}
    needed: dict[str, None] = {}
    for i, (name, sql) in enumerate(conditions):
        try:
            needed.update((present[c.lower()], None) for c in referenced_columns(sql) if c.lower() in present)
        except ConditionError as exc:
            raise ConditionError(f"segments[{i}] ({name}): {exc}") from None
    copied = "".join(', "' + c.replace('"', '""') + '"' for c in needed)
    profiles = conn.sql(f"select rowid as _row{copied} from cdp.golden_profiles").to_arrow_table()
    box = sandbox(conn.execute("select current_setting('TimeZone')").fetchall()[0][0])
    try:
        box.register("golden_profiles", profiles)
        box.execute("create table members (segment varchar, _row bigint)")
        for i, (name, sql) in enumerate(conditions):
            try:
                box.execute(f"insert into members select ?, _row from golden_profiles where ({sql})", [name])
            except duckdb.Error as exc:
                raise ConditionError(
                    f"segments[{i}] ({name}): the condition failed on the data: {failure_message(exc)}"
                ) from None
        members = box.sql("select segment, _row from members").to_arrow_table()
    finally:
        box.close()
    conn.register("sandboxed_members", members)
    try:
        conn.execute(
            """create or replace temp table current_members as
               select m.segment, p.customer_id
               from sandboxed_members m join cdp.golden_profiles p on p.rowid = m._row"""
        )
    finally:
        conn.unregister("sandboxed_members")


def build_segments_asset(config: CDPConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=SEGMENT_MEMBERSHIP,
        group_name=GROUP,
        description="Current members of every segment declared in the configuration (cdp.segment_membership).",
        deps=[GOLDEN_PROFILES],
        kinds={"duckdb"},
        owners=["team:marketing-ops"],
        code_version="2",
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
    @redact_errors
    def segment_membership(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            changes = build_membership(conn, config)
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
            "dagster/row_count": dg.MetadataValue.int(sum(c["size"] for c in changes.values())),
            "segments": dg.MetadataValue.md(markdown_table([{"segment": k, **v} for k, v in changes.items()])),
            "preview": dg.MetadataValue.md(preview),
        }
        # One number per segment and measure, so the UI plots each over time.
        for name, figures in changes.items():
            metadata.update({f"{name}_{measure}": dg.MetadataValue.int(n) for measure, n in figures.items()})
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
