"""Segments: named groups of golden profiles, declared in the configuration, in `cdp.segment_membership`.

Each segment is its own asset, `segments/<name>`, so the asset graph shows which destination receives
which segment, and one segment can be refreshed or inspected alone: it evaluates only its own condition
and replaces only its own rows of the two membership tables. A segment removed from the configuration
has no asset any more; `segments/removed_segments` closes its open stays and drops its current members.

A segment's condition is a SQL boolean expression over the columns of `cdp.golden_profiles`; it was
checked against the allow-list and bound against that schema when the configuration loaded. It runs in
a sandbox: a separate in-memory DuckDB database without file access, over a copy of only the columns
the condition reads, so a condition can select profiles and nothing else. Membership over time is
kept in `cdp.segment_membership_history`: one row per stay in a segment, opened when a customer enters
and closed when they leave, so "who entered since yesterday" and audience entered/exited events are
queries, not reconstructions.

A segment asset re-evaluates only the profiles the profiles runs since its last evaluation changed
(`meta.profile_changes`); the other members stay as they are, so the entries and exits are those a full
evaluation gives. It evaluates every profile the first time, when its condition or this code changed,
after a full profiles run, or when its condition reads a column a run changed on every profile
(`traits_as_of`, `days_since_last_order` when the as-of time moved): see `meta.segment_evaluations`.
"""

import hashlib
from datetime import datetime

import dagster as dg
import pyarrow as pa

from cdp_assets.metadata import markdown_table, masked_preview, redact_errors, table_metadata
from cdp_assets.profiles.assets import GOLDEN_PROFILES
from cdp_assets.profiles.incremental import changed_since, forget_changes
from resources.conditions import (
    ConditionError,
    check_condition,
    failure_message,
    referenced_columns,
    sandbox,
)
from resources.config import CDPConfig, SegmentConfig
from resources.schema import profile_columns
from resources.sql import Scratch, Sql, SqlError
from resources.tables import CUSTOMER_ALIASES, SEGMENT_HISTORY, SEGMENT_MEMBERSHIP, Table
from resources.warehouse import Warehouse, sql_literal, utc_now

GROUP = "segments"
# Bump when what a segment asset computes changes (evaluation, stamping, history).
CODE_VERSION = "4"
# Not a segment name: the configuration refuses it (RESERVED_SEGMENT_NAMES), so no segment can take the key.
REMOVED_SEGMENTS = dg.AssetKey(["segments", "removed_segments"])
CHECK_MEMBERS_EXIST = "members_have_profiles"
MEMBERSHIP = SEGMENT_MEMBERSHIP.name
HISTORY = SEGMENT_HISTORY.name
# The profiles run each segment was last evaluated after, and what it was evaluated with.
EVALUATIONS = Table(
    "meta.segment_evaluations",
    {"segment": "VARCHAR", "profile_run": "BIGINT", "settings": "VARCHAR"},
    primary_key=("segment",),
)


def segment_key(name: str) -> dg.AssetKey:
    """The asset of one configured segment: `segments/<name>`."""
    return dg.AssetKey(["segments", name])


def membership_time(sql: Sql) -> datetime:
    """The time entries and exits are stamped with: the profiles' `traits_as_of`, the moment the conditions
    were evaluated for (the newest activity in replayed data, the build time under `as_of: now`).

    A time the data gives, not the wall clock, so a re-run over the same data records the same history.
    It never goes back before a time already in the history (a fixed `as_of` moved earlier), so stays never
    end before they begin; with no profiles at all, it is now.
    """
    as_of, latest = sql.row(
        """select (select max(traits_as_of) from cdp.golden_profiles),
                  (select max(greatest(entered_at, coalesce(exited_at, entered_at)))
                   from cdp.segment_membership_history)"""
    )
    stamp = as_of if as_of is not None else utc_now()
    return max(stamp, latest) if latest is not None else stamp


def segment_condition(config: CDPConfig, name: str) -> tuple[str, str]:
    """The segment's condition as it runs, and the label its errors carry (`segments[3] (champions)`).

    The condition is checked again here, not trusted from load time: a configuration built without
    `load_config` must not reach the sandbox with a condition the allow-list would refuse.
    """
    positions = [i for i, s in enumerate(config.segments) if s.name == name]
    if not positions:
        raise ValueError(f"segment '{name}' is not in the configuration")
    position = positions[0]
    label = f"segments[{position}] ({name})"
    try:
        # The clock a condition reads is the profiles' as-of time (check_condition's `clock`).
        checked = check_condition(
            config.segments[position].where, profile_columns(config), "the profile's", clock="traits_as_of"
        )
        return checked, label
    except ConditionError as exc:
        raise ConditionError(f"{label}.where: {exc}") from None


def update_segment(sql: Sql, config: CDPConfig, name: str, incremental: bool = False) -> dict[str, int | str]:
    """Evaluate one segment, replace its rows of `cdp.segment_membership` and advance its stays in the
    history; returns its size, the customers who entered and exited, how many profiles were evaluated and
    why. Other segments' rows are left as they are (only the newest stamp in the whole history is read,
    see `membership_time`), so one segment can be refreshed alone. With `incremental`, only the profiles
    changed since the segment's last evaluation are evaluated (see the module docstring). The current
    members and the changes are this step's temp tables."""
    condition, label = segment_condition(config, name)
    settings = hashlib.sha256(f"{CODE_VERSION}\x00{condition}".encode()).hexdigest()[:16]
    sql.execute(EVALUATIONS.create_sql())
    with sql.scratch("segment") as tables:
        current = tables("current_members")
        changes = tables("membership_changes")
        latest, reason, scope = _evaluation_scope(sql, name, condition, settings, incremental, tables)
        if scope is None:
            select_members(sql, condition, label, current)
            evaluated = int(sql.value("select count(*) from cdp.golden_profiles"))
        else:
            matched = tables("matched")
            select_members(sql, condition, label, matched, scope)
            sql.create_table_as(
                current,
                f"""select customer_id from {MEMBERSHIP} where segment = ?
                      and customer_id not in (select customer_id from {scope})
                    union all select customer_id from {matched}""",
                [name],
                temporary=True,
            )
            evaluated = int(sql.value(f"select count(*) from {scope}"))
        now = membership_time(sql)
        figures: dict[str, int | str] = {**_advance_membership(sql, name, now, current, changes)}
        sql.execute(f"delete from {EVALUATIONS.name} where segment = ?", [name])
        sql.execute(f"insert into {EVALUATIONS.name} values (?, ?, ?)", [name, latest, settings])
        forget_changes(
            sql,
            sql.value(
                f"select min(coalesce(profile_run, 0)) from {EVALUATIONS.name} where list_contains(?, segment)",
                [[s.name for s in config.segments]],
            ),
        )
    if scope is not None and not evaluated:
        reason = "no profile the condition reads changed since the last evaluation"
    return {
        **figures,
        "profiles_evaluated": evaluated,
        "mode": "full" if scope is None else "incremental",
        "reason": reason,
    }


def _evaluation_scope(
    sql: Sql, name: str, condition: str, settings: str, incremental: bool, tables: Scratch
) -> tuple[int | None, str, str | None]:
    """(the latest profiles run, why, the step's table of the profiles to evaluate or None for all)."""
    last = sql.row(f"select profile_run, settings from {EVALUATIONS.name} where segment = ?", [name])
    scope = tables("changed_profiles")
    columns = set(referenced_columns(condition))
    latest, full_reason = changed_since(sql, last[0] if last else None, columns, scope)
    if not incremental:
        return latest, "full evaluation asked for", None
    if last is not None and last[1] != settings:
        return latest, "the condition or the code changed", None
    if full_reason is not None:
        return latest, full_reason, None
    return latest, "only the profiles changed since the last evaluation", scope


def _advance_membership(sql: Sql, name: str, now: datetime, current: str, changes: str) -> dict[str, int]:
    """Record who entered and who left segment `name` (members now in table `current`) at `now`, in one
    transaction; `changes` is the table the step holds the entries and exits in."""
    # Who enters and who leaves, decided before the history changes: counting rows stamped `now` afterwards
    # would also count stays an earlier run opened at the same as-of time.
    sql.create_table_as(
        changes,
        f"""select customer_id, 'entered' as change from {current} c
            where not exists (select 1 from {HISTORY} h where h.exited_at is null
                              and h.segment = $segment and h.customer_id = c.customer_id)
            union all
            select customer_id, 'exited' from {HISTORY} h
            where h.segment = $segment and h.exited_at is null
              and not exists (select 1 from {current} c where c.customer_id = h.customer_id)""",
        {"segment": name},
        temporary=True,
    )
    with sql.transaction():
        sql.execute(
            # The exits joined to the aliases in one subquery: an update joins one table (MERGE on Spark).
            f"""update {HISTORY} h set exited_at = $now,
                       exit_reason = case when e.status = 'merged' then 'merged into ' || e.survivor
                                          when e.status in ('retired', 'erased') then 'id ' || e.status
                                          else 'no longer matches' end
                from (select c.customer_id, a.status, a.customer_id as survivor
                      from {changes} c left join {CUSTOMER_ALIASES.name} a on a.alias_id = c.customer_id
                      where c.change = 'exited') e
                where h.segment = $segment and h.exited_at is null and h.customer_id = e.customer_id""",
            {"segment": name, "now": now},
        )
        sql.execute(
            f"""insert into {HISTORY} (segment, customer_id, entered_at, exited_at, exit_reason)
                select $segment, customer_id, $now, null, null from {changes} where change = 'entered'
                order by customer_id""",
            {"segment": name, "now": now},
        )
        sql.execute(f"delete from {MEMBERSHIP} where segment = ?", [name])
        sql.execute(
            f"""insert into {MEMBERSHIP} (segment, customer_id, entered_at, computed_at)
                select $segment, c.customer_id, h.entered_at, $now::timestamp
                from {current} c join {HISTORY} h
                  on h.segment = $segment and h.customer_id = c.customer_id and h.exited_at is null
                order by c.customer_id""",
            {"segment": name, "now": now},
        )
    size = sql.value(f"select count(*) from {MEMBERSHIP} where segment = ?", [name])
    entered, exited = sql.row(
        f"select count(*) filter (where change = 'entered'), count(*) filter (where change = 'exited') from {changes}"
    )
    return {"size": int(size), "entered": int(entered), "exited": int(exited)}


def close_removed_segments(sql: Sql, config: CDPConfig) -> dict[str, int]:
    """End the stays of segments no longer in the configuration and drop their current members; returns
    how many customers exited each such segment (none once they have been closed).

    Their history is kept, closed at the same as-of stamp a segment run would use, so "who was in
    `old_campaign`" stays answerable while nothing reads as a current member of a segment that no longer
    exists. A segment added back later opens new stays.
    """
    configured = [s.name for s in config.segments]
    removed = sql.rows(
        f"""select segment, count(*) filter (where stay_open) from (
                select segment, true as stay_open from {HISTORY} where exited_at is null
                union all
                select segment, false from {MEMBERSHIP})
            where segment not in (select unnest($configured::varchar[]))
            group by 1 order by 1""",
        {"configured": configured},
    )
    if not removed:
        return {}
    now = membership_time(sql)
    with sql.transaction():
        sql.execute(
            f"""update {HISTORY} set exited_at = $now, exit_reason = 'segment removed'
                where exited_at is null and segment not in (select unnest($configured::varchar[]))""",
            {"configured": configured, "now": now},
        )
        sql.execute(
            f"delete from {MEMBERSHIP} where segment not in (select unnest($configured::varchar[]))",
            {"configured": configured},
        )
    return {segment: int(exited) for segment, exited in removed}


def build_membership(sql: Sql, config: CDPConfig) -> dict[str, dict[str, int]]:
    """Every segment's assets' work in one call, in the order a full refresh runs them: removed segments
    closed, then each configured segment updated; returns size, entered and exited per segment, removed
    segments last (size 0, everyone exiting, once)."""
    removed = close_removed_segments(sql, config)
    changes = {
        s.name: {
            k: int(v) for k, v in update_segment(sql, config, s.name).items() if k in ("size", "entered", "exited")
        }
        for s in config.segments
    }
    changes.update({name: {"size": 0, "entered": 0, "exited": n} for name, n in removed.items()})
    return changes


def select_members(sql: Sql, condition: str, label: str, target: str, scope: str | None = None) -> None:
    """Fill temp table `target(customer_id)` with the profiles matching one segment's condition SQL (among
    the customers of table `scope` when given).

    The condition runs in `sandbox()`, not on the warehouse connection, over an Arrow copy of the customer
    id and the columns it reads; only customer ids come back, each once (one profile per customer). The
    allow-list should already have refused anything but an expression over those columns; if it missed
    something, there is no file, table or setting there to reach. Each segment copies only what its own
    condition reads. On Spark the copy is made batch by batch on the executors (the runner's `map_arrow`),
    each batch in a sandbox of its own, so no profile comes to the driver; the condition is DuckDB's SQL
    on both engines. A condition that fails on the data (a cast of a name to a number) is named by
    `label`, without the values DuckDB quotes: the message goes to the run's event log.
    """
    # Column names match case-insensitively, as in DuckDB.
    present = {c.lower(): c for c in sql.columns("select * from cdp.golden_profiles limit 0")}
    try:
        needed = dict.fromkeys(present[c.lower()] for c in referenced_columns(condition) if c.lower() in present)
    except ConditionError as exc:
        raise ConditionError(f"{label}: {exc}") from None
    copied = "".join(', "' + c.replace('"', '""') + '"' for c in needed)
    among = f" where customer_id in (select customer_id from {scope})" if scope else ""
    time_zone = str(sql.value("select current_setting('TimeZone')"))
    evaluated = f"{target}_evaluated"
    sql.map_arrow(
        evaluated,
        f"select customer_id as _row{copied} from cdp.golden_profiles{among}",
        lambda profiles: sandboxed_members(profiles, condition, time_zone),
        ["_row", "_error"],
    )
    try:
        failed = sql.value(f"select min(_error) from {evaluated}")
        if failed is not None:
            raise ConditionError(f"{label}: the condition failed on the data: {failed}")
        sql.create_table_as(target, f"select _row as customer_id from {evaluated}", temporary=True)
    finally:
        sql.drop_table(evaluated)


def sandboxed_members(profiles: pa.Table, condition: str, time_zone: str) -> pa.Table:
    """The `_row` of each of `profiles` (`golden_profiles` in a fresh sandbox) that `condition` picks, and
    `_error` NULL; or one row whose `_error` says, without the data, why the condition failed on them."""
    box = sandbox(time_zone)
    try:
        with box.registered("golden_profiles", profiles):
            try:
                return box.arrow(
                    f"select _row::varchar as _row, null::varchar as _error from golden_profiles where ({condition})"
                )
            except SqlError as exc:
                return pa.table({"_row": pa.array([None], pa.string()), "_error": [failure_message(exc)]})
    finally:
        box.close()


def build_segment_assets(config: CDPConfig) -> list[dg.AssetsDefinition]:
    """One asset per configured segment, then the asset that retires removed segments' rows."""
    return [*(build_segment_asset(config, s) for s in config.segments), build_removed_segments_asset(config)]


def build_segment_asset(config: CDPConfig, segment: SegmentConfig) -> dg.AssetsDefinition:
    """The asset of one segment: its members in `cdp.segment_membership`, its stays in the history."""
    key = segment_key(segment.name)

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=segment.description or f"Profiles where {segment.where}.",
        deps=[GOLDEN_PROFILES],
        code_version=CODE_VERSION,
        metadata={"where": segment.where, **table_metadata(MEMBERSHIP, HISTORY)},
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_MEMBERS_EXIST,
                asset=key,
                blocking=True,
                description="Every member is a customer with a golden profile, once.",
            ),
        ],
    )
    @redact_errors
    def members(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            figures = update_segment(sql, config, segment.name, incremental=True)
            # An anti join probes the profiles with the members: making a million profiles' ids distinct for
            # a left join cost each segment's check three times as much.
            orphans, duplicates = sql.row(
                f"""select (select count(*) from {MEMBERSHIP} m anti join cdp.golden_profiles p using (customer_id)
                            where m.segment = ?),
                           (select count(*) - count(distinct customer_id) from {MEMBERSHIP} where segment = ?)""",
                [segment.name, segment.name],
            )
            preview = masked_preview(
                sql,
                f"select m.segment, m.customer_id, p.first_name, p.email from {MEMBERSHIP} m "
                f"join cdp.golden_profiles p using (customer_id) where m.segment = {sql_literal(segment.name)} "
                "order by m.customer_id",
            )
        context.log.info(f"segment {segment.name}: {figures}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(figures["size"]),
                # One number per measure, so the UI plots each over time.
                **{measure: dg.MetadataValue.int(n) if isinstance(n, int) else n for measure, n in figures.items()},
                "preview": dg.MetadataValue.md(preview),
            },
            check_results=[
                dg.AssetCheckResult(
                    asset_key=key,
                    check_name=CHECK_MEMBERS_EXIST,
                    passed=bool(orphans == 0 and duplicates == 0),
                    metadata={
                        "members_without_profile": int(orphans),
                        "duplicate_memberships": int(duplicates),
                    },
                )
            ],
        )

    return members


def build_removed_segments_asset(config: CDPConfig) -> dg.AssetsDefinition:
    """The asset that closes what segments removed from the configuration left in the membership tables."""

    @dg.asset(
        key=REMOVED_SEGMENTS,
        group_name=GROUP,
        description=(
            "Closes the open stays of segments removed from the configuration and drops their current members "
            "(their history is kept)."
        ),
        deps=[GOLDEN_PROFILES],
        code_version=CODE_VERSION,
        metadata={"configured": ", ".join(s.name for s in config.segments), **table_metadata(MEMBERSHIP, HISTORY)},
    )
    @redact_errors
    def removed_segments(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            exited = close_removed_segments(sql, config)
        if exited:
            context.log.info(f"segments removed from the configuration, members exited: {exited}")
        return dg.MaterializeResult(
            metadata={
                "exited": dg.MetadataValue.int(sum(exited.values())),
                "removed": dg.MetadataValue.md(
                    markdown_table([{"segment": k, "exited": n} for k, n in exited.items()]) if exited else "_none_"
                ),
            }
        )

    return removed_segments
