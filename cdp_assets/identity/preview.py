"""What changed identity settings or overrides would do, before they are applied: the change preview job.

Merging or splitting customers renames ids, moves segment members and sends adds and removes to every
destination, and none of that can be taken back once sent. So a candidate configuration file and/or a
candidate overrides file can be tried first: the job `identity_change_preview` copies the warehouse into
a scratch file, runs the real stage code on the copy with the candidate settings (resolve, profiles,
segment membership, each row-level destination's sync plan, never its delivery), compares the copy with
the warehouse and deletes it. Running the very functions a refresh runs, on the very state it would start
from, is what makes the preview say exactly what the next run would do with the same cleaned records.

Nothing public is touched: the warehouse is only read (it is copied, then attached read-only to compare),
the id registry and every history change in the copy only, and no destination is called. The run holds
the warehouse's run lock like any run, so no refresh changes the state under it. What it reports goes to
the run's metadata (counts and first rows, customer values masked as in every preview) and, in full, to
`previews/<run_id>.md` beside the warehouse.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from cdp_assets.identity.assets import resolve, settings_fingerprint
from cdp_assets.identity.registry import IdChanges
from cdp_assets.metadata import markdown_table, mask, redact_errors
from cdp_assets.profiles.assets import build_profiles
from cdp_assets.segments.assets import build_membership
from cdp_assets.syncs.state import Plan, ensure_tables, plan_sync
from resources.config import CDPConfig, ConfigError, RowDestinationConfig, load_config
from resources.config.destinations import MERGED_FROM
from resources.sql import Sql
from resources.tables import ID_HISTORY, ID_RUNS, SEGMENT_HISTORY, SEGMENT_MEMBERSHIP
from resources.warehouse import Warehouse, utc_now

PREVIEW_JOB = "identity_change_preview"
PREVIEW_OP = "preview_identity_changes"
# Rows of each list shown in the run's metadata; the report file has them all.
FIRST_ROWS = 10
# The copy's catalog while it is compared with the warehouse.
COPY = "preview_copy"
# Columns whose values are the platform's own (ids it makes, names from the configuration, counts): shown
# as they are in the metadata. Record ids and destination keys other than customer ids are masked there
# (a source may use an e-mail as its record id); field values are masked everywhere.
_SHOWN = frozenset(
    {
        "customer_id",
        "customer_now",
        "customer_after",
        "customers_now",
        "customers_after",
        "related_id",
        "source",
        "role",
        "segment",
        "destination",
        "event",
        "change",
        "operation",
        "records",
        "reason",
        "exit_reason",
        "fields",
    }
)


class IdentityPreviewConfig(dg.Config):
    """Which candidate settings to preview; a path left out means the current one."""

    candidate_config: str | None = Field(
        None,
        description=(
            "A candidate configuration file (cdp.yaml form), relative to the current configuration's folder "
            "unless absolute. Its identity, profile, segment and destination settings are previewed against "
            "the current warehouse."
        ),
    )
    candidate_overrides: str | None = Field(
        None,
        description=(
            "A candidate identity overrides file (CSV, as identity.overrides), relative to the current "
            "configuration's folder unless absolute; it replaces the configuration's own overrides file."
        ),
    )


def candidate_configuration(
    current: CDPConfig, candidate_config: str | None, candidate_overrides: str | None
) -> tuple[CDPConfig, str]:
    """The configuration to preview: the candidate file (checked as `load_config` checks any) or the current
    one, with the candidate overrides file in place of its own; and the identity settings fingerprint a
    real run would record once the candidate is applied. Raises ConfigError naming the file that does not
    load, so a typo fails the preview rather than previewing something else.

    The fingerprint decides whether id changes are put down to a configuration change. A candidate
    overrides file is applied by putting its content in the configured file, so where one is configured
    the fingerprint is the one with that file's name, not the candidate's: the preview then records the
    same reasons the real run will."""
    base = load_config(current.resolve(candidate_config)) if candidate_config else current
    candidate = base
    if candidate_overrides:
        path = current.resolve(candidate_overrides)
        identity = base.identity.model_copy(update={"overrides": str(path)})
        candidate = base.model_copy(update={"identity": identity})
        candidate.identity_overrides()  # read and checked now: a bad file fails naming itself and its lines
    settings = settings_fingerprint(base if base.identity.overrides else candidate)
    return candidate, settings


@dataclass
class Preview:
    """What the candidate settings would change: counts, and every changed row by list."""

    counts: dict[str, int] = field(default_factory=dict)
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# The lists of a preview, in report order, with their titles.
SECTIONS = {
    "merges": "Customers that would merge (one customer after, several now)",
    "splits": "Customers that would split (one customer now, several after)",
    "moved_records": "Records that would move to another customer",
    "id_changes": "Customer id changes, as the id registry would record them",
    "segments": "Segments: size now and after, entries and exits",
    "segment_changes": "Segment entries and exits",
    "destinations": "Row-level destinations: rows each would receive",
    "destination_rows": "Destination rows (field values masked)",
}


def preview_changes(
    warehouse: Warehouse, sql: Sql, candidate: CDPConfig, settings: str, run_id: str, copy_path: Path
) -> Preview:
    """Run the stages from identity to the sync plans on a copy of the warehouse at `copy_path` with the
    `candidate` settings (`settings`: the fingerprint to record, see `candidate_configuration`), and compare
    the copy with the warehouse (`sql` is the run's runner on it). The copy is deleted afterwards, on error
    too."""
    with warehouse.scratch_copy(sql, copy_path, COPY) as copy:
        with copy.open() as scratch:
            summary = resolve(scratch, candidate, run_id=run_id, settings=settings)
            build_profiles(scratch, candidate)
            build_membership(scratch, candidate)
            ensure_tables(scratch)
            destinations, rows = [], []
            for destination in candidate.destinations:
                if destination.type != "file":
                    with plan_sync(scratch, candidate, destination) as plan:
                        planned = _planned_rows(destination, plan)
                    destinations.append(
                        {
                            "destination": destination.name,
                            **{f"{op}s": sum(1 for r in planned if r["operation"] == op) for op in OPERATIONS},
                            "skipped_for_consent": plan.skipped_for_consent,
                            "missing_required": plan.missing_required,
                            "rejected": plan.rejected,
                            "dry_run": destination.dry_run,
                        }
                    )
                    rows += planned
        with copy.attached() as beside:
            preview = _compare(beside)
    changes: IdChanges = summary["id_changes"]  # type: ignore[assignment]
    preview.counts.update(
        {
            "ids_kept": changes.kept,
            "ids_issued": changes.issued - changes.split,
            "ids_split_off": changes.split,
            "ids_merged": changes.merged,
            "ids_retired": changes.retired,
        }
    )
    preview.lists["destinations"] = destinations
    preview.lists["destination_rows"] = rows
    for op in OPERATIONS:  # every destination's counts summed
        preview.counts[f"destination_{op}s"] = sum(int(d[f"{op}s"]) for d in destinations)
    return preview


OPERATIONS = ("add", "update", "remove")


def _planned_rows(destination: RowDestinationConfig, plan: Plan) -> list[dict[str, object]]:
    """The rows a destination's sync would send, their fields masked."""
    return [
        {
            "destination": destination.name,
            "operation": c.operation,
            "key": c.key,
            "key_is_customer_id": destination.primary_key == "customer_id",
            "fields": _masked_fields(c.payload),
        }
        for c in plan.changes()
    ]


def _masked_fields(payload: str | None) -> str:
    """A row's fields with every value masked (but MERGED_FROM, customer ids): enough to see which fields
    change, not whose they are."""
    if not payload:
        return ""
    parsed = json.loads(payload)
    return ", ".join(
        f"{k}: {v if k == MERGED_FROM else mask(v) if not isinstance(v, (dict, list)) else '{…}'}"
        for k, v in parsed.items()
    )


def _compare(sql: Sql) -> Preview:
    """Everything that differs between the warehouse and the attached copy."""
    now, after = "cdp.identity_map", f"{COPY}.cdp.identity_map"
    keys = "source, source_record_id, role"
    preview = Preview()

    def listed(name: str, query: str) -> None:
        frame = sql.rows(query)
        columns = sql.columns(query)
        preview.lists[name] = [dict(zip(columns, row, strict=True)) for row in frame]

    listed(
        "moved_records",
        f"""select {keys}, o.customer_id as customer_now, p.customer_id as customer_after
            from {now} o full join {after} p using ({keys})
            where o.customer_id is distinct from p.customer_id order by {keys}""",
    )
    listed(
        "merges",
        f"""select p.customer_id as customer_after,
                   array_to_string(list(distinct o.customer_id order by o.customer_id), ', ') as customers_now,
                   count(*) as records
            from {after} p join {now} o using ({keys})
            group by 1 having count(distinct o.customer_id) > 1 order by 1""",
    )
    listed(
        "splits",
        f"""select o.customer_id as customer_now,
                   array_to_string(list(distinct p.customer_id order by p.customer_id), ', ') as customers_after,
                   count(*) as records
            from {now} o join {after} p using ({keys})
            group by 1 having count(distinct p.customer_id) > 1 order by 1""",
    )
    listed(
        "id_changes",
        f"""select event, customer_id, related_id, records, reason from {COPY}.{ID_HISTORY.name}
            where run_seq = (select max(run_seq) from {COPY}.{ID_RUNS.name})
            order by event, customer_id""",
    )
    membership, history = SEGMENT_MEMBERSHIP.name, SEGMENT_HISTORY.name
    listed(
        "segment_changes",
        f"""select segment, customer_id, 'entered' as change, null as exit_reason
            from (select segment, customer_id from {COPY}.{membership}
                  except select segment, customer_id from {membership})
            union all
            select o.segment, o.customer_id, 'exited', h.exit_reason
            from {membership} o
            left join {COPY}.{history} h on h.segment = o.segment and h.customer_id = o.customer_id
                 and h.entered_at = o.entered_at and h.exited_at is not null
            where not exists (select 1 from {COPY}.{membership} p
                              where p.segment = o.segment and p.customer_id = o.customer_id)
            order by segment, change, customer_id""",
    )
    listed(
        "segments",
        f"""with sizes as (
                select segment, count(*) filter (where side = 'now') as size_now,
                       count(*) filter (where side = 'after') as size_after
                from (select segment, 'now' as side from {membership}
                      union all select segment, 'after' from {COPY}.{membership})
                group by 1
            )
            select segment, size_now, size_after,
                   (select count(*) from (select customer_id from {COPY}.{membership} p where p.segment = s.segment
                                          except select customer_id from {membership} o
                                          where o.segment = s.segment)) as entered,
                   (select count(*) from (select customer_id from {membership} o where o.segment = s.segment
                                          except select customer_id from {COPY}.{membership} p
                                          where p.segment = s.segment)) as exited
            from sizes s order by segment""",
    )
    customers_now, customers_after = sql.row(
        f"select (select count(distinct customer_id) from {now}), (select count(distinct customer_id) from {after})"
    )
    preview.counts.update(
        {
            "customers_now": int(customers_now),
            "customers_after": int(customers_after),
            "customers_merging": len(preview.lists["merges"]),
            "customers_splitting": len(preview.lists["splits"]),
            "records_moving": len(preview.lists["moved_records"]),
            "segment_entries": sum(1 for r in preview.lists["segment_changes"] if r["change"] == "entered"),
            "segment_exits": sum(1 for r in preview.lists["segment_changes"] if r["change"] == "exited"),
        }
    )
    return preview


def _shown(row: dict[str, Any], masked: bool) -> dict[str, Any]:
    """A row as a table shows it: internal columns dropped; with `masked`, every value not the platform's
    own masked (a destination key that is a customer id is shown)."""
    shown = {}
    for column, value in row.items():
        if column == "key_is_customer_id":
            continue
        if column == "key":
            value = value if not masked or row.get("key_is_customer_id") else mask(value)
        elif masked and column not in _SHOWN and not isinstance(value, (int, bool)):
            value = mask(value)
        shown[column] = "" if value is None else value
    return shown


def report_markdown(preview: Preview, masked: bool, limit: int | None = None) -> dict[str, str]:
    """Each list of the preview as a markdown table (the first `limit` rows, or all), keyed by list name,
    plus `summary`: the counts."""
    tables = {"summary": markdown_table([{"measure": k, "count": v} for k, v in preview.counts.items()])}
    for name in SECTIONS:
        rows = preview.lists.get(name, [])
        shown = [_shown(r, masked) for r in (rows if limit is None else rows[:limit])]
        more = f"\n\n_first {limit} of {len(rows)} rows; all in the report file_" if limit and len(rows) > limit else ""
        tables[name] = markdown_table(shown) + more
    return tables


def write_report(preview: Preview, path: Path, header: list[str]) -> None:
    """The full preview as a markdown file: every changed row, ids in clear, field values masked. It sits
    beside the warehouse, which holds the same ids, never in Dagster's storage."""
    tables = report_markdown(preview, masked=False)
    parts = [
        "# Identity change preview\n\n" + "\n".join(f"- {line}" for line in header),
        "## Summary",
        tables["summary"],
    ]
    for name, title in SECTIONS.items():
        parts += [f"## {title}", tables[name]]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    partial.replace(path)


def build_preview_job(current: CDPConfig) -> dg.JobDefinition:
    """The `identity_change_preview` job: launch it from the Launchpad with the candidate file(s)."""

    @dg.op(
        name=PREVIEW_OP,
        out=dg.Out(dg.Nothing),
        description=(
            "Resolves identity with candidate settings on a copy of the warehouse and reports the merges, splits, "
            "id changes, segment entries and exits and destination rows they would cause; changes nothing."
        ),
    )
    @redact_errors
    def preview_identity_changes(
        context: dg.OpExecutionContext, config: IdentityPreviewConfig, warehouse: Warehouse
    ) -> dg.Output[None]:
        try:
            candidate, settings = candidate_configuration(current, config.candidate_config, config.candidate_overrides)
        except ConfigError as exc:
            raise dg.Failure(
                description=f"The candidate settings do not load, so nothing was previewed: {exc}"
            ) from None
        folder = current.warehouse_path.parent / "previews"
        run_id = context.run_id
        with warehouse.sql() as sql:
            preview = preview_changes(warehouse, sql, candidate, settings, run_id, folder / f".{run_id}.duckdb")
        candidate_file = str(current.resolve(config.candidate_config)) if config.candidate_config else "current"
        header = [
            f"run: {run_id} at {utc_now().isoformat(sep=' ', timespec='seconds')} UTC",
            f"candidate configuration: {candidate_file}",
            f"candidate overrides: {candidate.overrides_path or 'none'}",
            f"warehouse: {current.warehouse_path} (only read; nothing was written or sent)",
        ]
        report = folder / f"{run_id}.md"
        write_report(preview, report, header)
        tables = report_markdown(preview, masked=True, limit=FIRST_ROWS)
        context.log.info(f"identity change preview: {preview.counts}; report {report}")
        metadata: dict[str, Any] = {
            "report_file": dg.MetadataValue.path(str(report)),
            "candidate_config": candidate_file,
            "candidate_overrides": str(candidate.overrides_path) if candidate.overrides_path else "none",
            **{k: dg.MetadataValue.int(v) for k, v in preview.counts.items()},
        }
        metadata.update({name: dg.MetadataValue.md(table) for name, table in tables.items()})
        return dg.Output(None, metadata=metadata)

    @dg.job(
        name=PREVIEW_JOB,
        description=(
            "Previews what a candidate configuration and/or identity overrides file would change (merges, splits, "
            "id changes, segment entries and exits, destination rows) without writing or sending anything."
        ),
        tags={"cdp/kind": "preview"},
    )
    def identity_change_preview() -> None:
        preview_identity_changes()

    return identity_change_preview
