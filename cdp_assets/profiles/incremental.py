"""Which customers a profiles run recomputes, and what it remembers for the next run and for segments.

A customer's profile, provenance and traits depend only on the customer's own records (their latest cleaned
version, consent statements, events and transactions, up to the as-of time) and on the as-of time; the RFM
scores alone rank customers against each other, and are ranked again over everyone on every run. So a run
recomputes only the customers whose inputs changed since the last run, and gives what a full run gives:

- identity: a record that joined, left or changed customer (new records, merges, splits, moves, retired
  ids): every customer it belonged to before or belongs to now. Found by comparing `cdp.identity_map` with
  the copy of it the last run used (`meta.profiled_identity`).
- cleaned rows: a record with other rows in a cleaned table than last time, file by file (a new file, a
  file loaded again, a file gone, rows erased or past retention): found by comparing, per file, the rows
  and load time of each record with those the last run used (`meta.profiled_inputs`); only the files whose
  totals differ are compared record by record.
- time: when the as-of time moves forward from `old` to `new`, customers with activity in (`old`, `new`]
  (it now counts) and, for each trait window `w`, in (`old` - w, `new` - w] (it has left the window). Every
  profile's `traits_as_of` is set to the new time, and `days_since_last_order` counted again when the
  calendar day moved.

Everyone is recomputed when asked (the consistency check's rebuild), on the first run, when the profile
configuration, the cleaning settings or this code's version changed, when the as-of time moved back, or when
more than `profiles.full_recompute_share` of the customers are affected (a full run is then cheaper than the
joins, and rewrites the tables compactly).

Each run is a row of `meta.profile_runs`; an incremental run also lists the customers whose profile rows it
changed in `meta.profile_changes`, which segments read to re-evaluate only them (see
`cdp_assets.segments.assets`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cdp_assets.profiles.traits import timestamp_literal
from resources.conditions import reads_clock
from resources.config import CDPConfig
from resources.sql import Scratch, Sql
from resources.tables import ACTIVITY_CONSENT, CLEANED_FILES, Table

# Columns an incremental run may change on every profile without recomputing it: a segment reading one of
# them is evaluated over everyone when a run changed them (`profile_built_at` differs from a full run's).
EVERY_PROFILE_COLUMNS = ("traits_as_of", "days_since_last_order", "profile_built_at")

PROFILE_RUNS = Table(
    "meta.profile_runs",
    {
        "run_seq": "BIGINT",
        "run_id": "VARCHAR",
        "at": "TIMESTAMP",
        # full | incremental
        "mode": "VARCHAR",
        "reason": "VARCHAR",
        "settings": "VARCHAR",
        "as_of": "TIMESTAMP",
        "customers": "BIGINT",
        "customers_recomputed": "BIGINT",
        # Columns this run changed on every profile, comma-separated (see EVERY_PROFILE_COLUMNS).
        "every_profile": "VARCHAR",
    },
    primary_key=("run_seq",),
)
PROFILE_CHANGES = Table("meta.profile_changes", {"run_seq": "BIGINT", "customer_id": "VARCHAR"})
PROFILED_IDENTITY = Table(
    "meta.profiled_identity",
    {"source": "VARCHAR", "source_record_id": "VARCHAR", "role": "VARCHAR", "customer_id": "VARCHAR"},
)
PROFILED_INPUTS = Table(
    "meta.profiled_inputs",
    {
        "input": "VARCHAR",
        "source": "VARCHAR",
        "file": "VARCHAR",
        "source_record_id": "VARCHAR",
        "rows": "BIGINT",
        "loaded_at": "TIMESTAMP",
    },
)
STATE_TABLES = (PROFILE_RUNS, PROFILE_CHANGES, PROFILED_IDENTITY, PROFILED_INPUTS)

# The cleaned tables a profile reads, by input name; consent statements carry no load time.
INPUTS = {
    "person": ("clean.person_records", "loaded_at"),
    "consent": ("clean.consent_statements", "null::timestamp"),
    **{f"{role}_consent": (table.name, "null::timestamp") for role, table in ACTIVITY_CONSENT.items()},
    "events": ("clean.events", "loaded_at"),
    "transactions": ("clean.transactions", "loaded_at"),
}


@dataclass(frozen=True)
class Plan:
    """What a run recomputes: everyone (`scope` None) or the customers of table `scope`, and why."""

    mode: str
    reason: str
    scope: str | None
    as_of: datetime
    previous_as_of: datetime | None
    # The files whose rows changed (step's table `(input, source, file)`) and the records whose customer
    # changed (`(source, source_record_id, role, customer_id, old_id)`), to bring the copies the next run
    # compares with up to date; None: copy everything.
    changed_files: str | None = None
    changed_identity: str | None = None

    @property
    def incremental(self) -> bool:
        return self.scope is not None


def create_state_tables(sql: Sql) -> None:
    """The tables of this module, created when missing (a warehouse made before incremental profiles)."""
    sql.execute("".join(table.create_sql() for table in STATE_TABLES))


def profile_settings(sql: Sql, config: CDPConfig, code_version: str) -> str:
    """A fingerprint of everything but the rows that decides profiles: the code's version, the profile
    configuration, consent purposes, the calendar's time zone and the cleaning settings of the rows read.
    The full-recompute share is left out: it decides what a run costs, not what it gives, so changing it
    must not force a full run."""
    cleaning = sql.rows(f"select distinct role, settings from {CLEANED_FILES.name} order by all")
    text = "\x00".join(
        [
            code_version,
            config.profiles.model_dump_json(exclude={"full_recompute_share"}),
            ",".join(config.consent_purposes),
            ",".join(config.person_attributes),
            config.refresh.timezone,
            repr(cleaning),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def last_run(sql: Sql) -> tuple | None:
    """(run_seq, settings, as_of) of the latest profiles run, or None before the first."""
    return sql.row(f"select run_seq, settings, as_of from {PROFILE_RUNS.name} order by run_seq desc limit 1")


def not_before_last_run(sql: Sql, as_of: datetime) -> datetime:
    """`as_of` (measured from now), or the last run's as-of time when that is later. A time-windows tick
    that runs late, or a tick's run executed again, carries its tick's time: measured from it, profiles
    would go back to an earlier day after a run of a file had measured from a later moment, and members
    would leave segments and join again, the destinations hearing both. Time measured from now only moves on."""
    create_state_tables(sql)
    last = last_run(sql)
    return max(as_of, last[2]) if last is not None and last[2] is not None else as_of


def _files_sql() -> str:
    """Per cleaned table a profile reads, each file's row count and latest load time."""
    return " union all ".join(
        f"select '{name}' as input, source, file, count(*) as rows, max({loaded}) as loaded_at "
        f"from {table} group by source, file"
        for name, (table, loaded) in INPUTS.items()
    )


def _records_sql(files: str | None) -> str:
    """Each record's row count and latest load time per file of the cleaned tables (only `files`' when given)."""
    return " union all ".join(
        f"select '{name}' as input, source, file, source_record_id, count(*) as rows, max({loaded}) as loaded_at "
        f"from {table} t"
        + (f" semi join {files} f on f.input = '{name}' and f.source = t.source and f.file = t.file" if files else "")
        + " group by source, file, source_record_id"
        for name, (table, loaded) in INPUTS.items()
    )


def plan_run(
    sql: Sql, config: CDPConfig, tables: Scratch, settings: str, as_of: datetime, incremental: bool
) -> tuple[Plan, dict[str, int]]:
    """Decide what this run recomputes; fills the step's table `affected(customer_id)` when incremental.
    Returns the plan and how many customers each cause affected (for the asset's metadata)."""
    create_state_tables(sql)
    last = last_run(sql)
    previous_as_of = last[2] if last else None

    def full(reason: str) -> tuple[Plan, dict[str, int]]:
        return Plan("full", reason, None, as_of, previous_as_of), {}

    if not incremental:
        return full("full recompute asked for")
    if last is None:
        return full("first run")
    if last[1] != settings:
        return full("profile configuration, cleaning settings or code version changed")
    if previous_as_of is not None and as_of < previous_as_of:
        return full("the as-of time moved back")
    # A trait condition reading the clock (`now()`) reads the as-of time: any of its activity may count
    # differently once that moves, not only what a declared window passes over.
    clocked = [t.name for t in config.profiles.traits if t.where and reads_clock(t.where)]
    if clocked and previous_as_of is not None and as_of != previous_as_of:
        return full(f"the as-of time moved and the condition of {', '.join(clocked)} reads the clock")

    changed_files = tables("changed_files")
    sql.create_table_as(
        changed_files,
        f"""select input, source, file from (
                select input, source, file, sum(rows) as rows, max(loaded_at) as loaded_at
                from {PROFILED_INPUTS.name} group by all) o
            full join ({_files_sql()}) n using (input, source, file)
            where o.rows is distinct from n.rows or o.loaded_at is distinct from n.loaded_at""",
        temporary=True,
    )
    records = tables("changed_records")
    sql.create_table_as(
        records,
        f"""select distinct source, source_record_id from (
                select * from {PROFILED_INPUTS.name} t
                semi join {changed_files} f using (input, source, file)) o
            full join ({_records_sql(changed_files)}) n using (input, source, file, source_record_id)
            where o.rows is distinct from n.rows or o.loaded_at is distinct from n.loaded_at""",
        temporary=True,
    )
    changed_identity = tables("changed_identity")
    sql.create_table_as(
        changed_identity,
        f"""select source, source_record_id, role, n.customer_id, o.customer_id as old_id
            from cdp.identity_map n full join {PROFILED_IDENTITY.name} o using (source, source_record_id, role)
            where n.customer_id is distinct from o.customer_id""",
        temporary=True,
    )
    # Every customer of the map once: the unmatched cause and the share below both read it.
    customers_now = tables("customers_now")
    sql.create_table_as(customers_now, "select distinct customer_id from cdp.identity_map", temporary=True)
    causes = {
        # A record that changed customer, joined or left: both its customers.
        "identity": f"select unnest([customer_id, old_id]) as customer_id from {changed_identity}",
        # A record whose cleaned rows changed: its customer now and last time.
        "cleaned_rows": f"""select m.customer_id from cdp.identity_map m semi join {records} r
                using (source, source_record_id)
            union all select m.customer_id from {PROFILED_IDENTITY.name} m semi join {records} r
                using (source, source_record_id)""",
        # A customer without a profile or a profile without a customer (never left by a run; cheap to repair).
        "unmatched": f"""select customer_id from {customers_now} m anti join cdp.golden_profiles p using (customer_id)
            union all select customer_id from cdp.golden_profiles p anti join {customers_now} m using (customer_id)""",
    }
    if previous_as_of is not None and as_of > previous_as_of:
        causes["time"] = _moved_time(config, previous_as_of, as_of)
    affected = tables("affected")
    counted = " union all ".join(f"select '{cause}' as cause, customer_id from ({q})" for cause, q in causes.items())
    sql.create_table_as(
        affected,
        f"select distinct cause, customer_id from ({counted}) where customer_id is not null",
        temporary=True,
    )
    by_cause = dict(sql.rows(f"select cause, count(*) from {affected} group by 1"))
    sql.create_table_as(affected, f"select distinct customer_id from {affected}", temporary=True)
    share_of = {cause: int(by_cause.get(cause, 0)) for cause in causes}
    count = int(sql.value(f"select count(*) from {affected}"))
    customers = int(sql.value(f"select count(*) from {customers_now}"))
    share = config.profiles.full_recompute_share
    if count > share * max(customers, 1):
        plan, _ = full(f"{count} of {customers} customers affected, over {share * 100:g}%")
        return plan, share_of
    reason = ", ".join(f"{cause}: {n}" for cause, n in share_of.items() if n) or "nothing changed"
    return Plan("incremental", reason, affected, as_of, previous_as_of, changed_files, changed_identity), share_of


def _moved_time(config: CDPConfig, old: datetime, new: datetime) -> str:
    """SQL of the customers whose activity counts differently at as-of `new` than at `old` (< `new`)."""
    since, until = timestamp_literal(old), timestamp_literal(new)
    spans = {(table, f"{since}", f"{until}") for table in ("events", "transactions")}
    for trait in config.profiles.traits:
        if interval := trait.window_interval():
            spans.add((trait.source, f"{since} - {interval}", f"{until} - {interval}"))
    return " union all ".join(
        f"select m.customer_id from clean.{table} t join cdp.identity_map m using (source, source_record_id) "
        f"where t.occurred_at > {start} and t.occurred_at <= {end}"
        for table, start, end in sorted(spans)
    )


def record_run(
    sql: Sql, plan: Plan, settings: str, run_id: str | None, at: datetime, changed: str | None, every_profile: list[str]
) -> int:
    """Remember the run: its row of `meta.profile_runs`, the customers whose rows it changed (table `changed`,
    incremental runs), and the identity and cleaned rows it used. Returns the run's sequence number."""
    last = last_run(sql)
    run_seq = 1 if last is None else int(last[0]) + 1
    customers = int(sql.value("select count(*) from cdp.golden_profiles"))
    recomputed = customers if changed is None else int(sql.value(f"select count(*) from {plan.scope}"))
    sql.execute(
        f"insert into {PROFILE_RUNS.name} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_seq,
            run_id,
            at,
            plan.mode,
            plan.reason,
            settings,
            plan.as_of,
            customers,
            recomputed,
            ",".join(every_profile),
        ],
    )
    if changed is not None:
        sql.execute(f"insert into {PROFILE_CHANGES.name} select ?, customer_id from {changed}", [run_seq])
    if plan.changed_identity is None:
        PROFILED_IDENTITY.replace(sql, "select source, source_record_id, role, customer_id from cdp.identity_map")
    else:
        sql.execute(
            f"delete from {PROFILED_IDENTITY.name} t using {plan.changed_identity} c where t.source = c.source "
            "and t.source_record_id = c.source_record_id and t.role = c.role"
        )
        PROFILED_IDENTITY.insert(
            sql,
            f"select source, source_record_id, role, customer_id from {plan.changed_identity} "
            "where customer_id is not null",
        )
    if plan.changed_files is None:
        PROFILED_INPUTS.replace(sql, _records_sql(None))
    else:
        sql.execute(
            f"delete from {PROFILED_INPUTS.name} t using {plan.changed_files} f "
            "where t.input = f.input and t.source = f.source and t.file = f.file"
        )
        PROFILED_INPUTS.insert(sql, _records_sql(plan.changed_files))
    return run_seq


def changed_since(sql: Sql, run_seq: int | None, columns: set[str], target: str) -> tuple[int | None, str | None]:
    """For a reader of the profiles that last read them after run `run_seq` and reads `columns`: the latest
    run, and None with temp table `target(customer_id)` holding the customers whose profile rows changed
    since, or a reason to read every profile (no run recorded, a full run since, a column changed on
    every profile since)."""
    create_state_tables(sql)
    last = last_run(sql)
    if last is None:
        return None, "no profiles run recorded"
    latest = int(last[0])
    if run_seq is None:
        return latest, "first evaluation"
    if run_seq > latest:
        return latest, "the profiles were rebuilt from scratch"
    runs = sql.rows(
        f"select mode, every_profile from {PROFILE_RUNS.name} where run_seq > ? order by run_seq", [run_seq]
    )
    if any(mode != "incremental" for mode, _ in runs):
        return latest, "a full profiles run since"
    touched = {c for _, listed in runs for c in (listed or "").split(",") if c} & {c.lower() for c in columns}
    if touched:
        return latest, f"{', '.join(sorted(touched))} changed on every profile"
    sql.create_table_as(
        target,
        f"select distinct customer_id from {PROFILE_CHANGES.name} where run_seq > ?",
        [run_seq],
        temporary=True,
    )
    return latest, None


def forget_changes(sql: Sql, read_up_to: int | None) -> None:
    """Drop the changes every reader has read (runs up to `read_up_to`)."""
    if read_up_to is not None:
        sql.execute(f"delete from {PROFILE_CHANGES.name} where run_seq <= ?", [read_up_to])
