"""The privacy requests asset and the `privacy_request` job: one run takes a batch of requests and carries each
erasure to every copy the platform holds.

Order of one erasure batch: the person is resolved and removed from every warehouse table in one
transaction (cdp_assets/privacy/erasure.py), leaving tombstones; the landing files and file exports holding
their rows are rewritten (files.py); each row destination gets its removal (cdp_assets/syncs/erasures.py);
the read snapshot is published again; and the warehouse file is rewritten so no deleted row survives in
its free blocks or WAL. The receipt of every request is `privacy.requests`.

Nothing personal reaches Dagster's storage from here: logs and metadata hold request ids, statuses and
counts; the run configuration names a requests file, not the people in it (see requests.py).
"""

import csv
import io
import time
from pathlib import Path

import dagster as dg

from cdp_assets.extract.tombstones import reconcile_ledger
from cdp_assets.metadata import markdown_table, redact_errors, table_metadata
from cdp_assets.privacy.access import access_document, remove_access_documents, write_access_document
from cdp_assets.privacy.erasure import Request, erase, resolve_all
from cdp_assets.privacy.files import rewrite_exports, rewrite_landing_files
from cdp_assets.privacy.requests import (
    PrivacyRequestConfig,
    RejectedLine,
    from_file,
    from_run_config,
    request_id,
)
from cdp_assets.privacy.retention import expire
from cdp_assets.profiles.assets import build_profiles
from cdp_assets.segments.assets import build_membership
from cdp_assets.syncs.assets import make_client
from cdp_assets.syncs.erasures import deliver_erasures, pending_erasures, settle_receipts
from resources.config import CDPConfig, RowDestinationConfig
from resources.durable import replace_atomically
from resources.privacy import PrivacyKeyMissing, privacy_key
from resources.sql import Sql
from resources.tables import EXTRACT_QUARANTINE, FILE_REWRITES, ID_REGISTRY, PRIVACY_REQUESTS, SUPPRESSIONS
from resources.warehouse import Warehouse, utc_now

GROUP = "privacy"
PRIVACY_REQUESTS_KEY = dg.AssetKey(["privacy", "requests"])
PRIVACY_JOB = "privacy_request"
REQUESTS_SOURCE = "privacy_requests"
# Bump when what a request does changes.
CODE_VERSION = "1"


def _quarantine(sql: Sql, file: str, rejected: list[RejectedLine]) -> None:
    """Rejected request lines into cdp.quarantine, line by line; the value is never kept."""
    sql.execute(f"delete from {EXTRACT_QUARANTINE.name} where source = ? and file = ?", [REQUESTS_SOURCE, file])
    now = utc_now()
    for line in rejected:
        sql.execute(
            f"insert into {EXTRACT_QUARANTINE.name} values ('privacy', ?, ?, ?, ?, null, ?, ?, ?)",
            [
                REQUESTS_SOURCE,
                file,
                line.row_number,
                line.field,
                line.reason,
                "row" if line.row_number else "file",
                now,
            ],
        )


def _receipt(sql: Sql, request: Request, status: str, run_id: str, **values: object) -> None:
    now = utc_now()
    final = status not in ("pending",)
    removed: dict[str, int] = values.get("rows_removed") or {}  # type: ignore[assignment]
    # The maps as their keys and values: a map is no parameter Spark takes.
    sql.execute(
        f"""insert or replace into {PRIVACY_REQUESTS.name}
            select ?, ?, ?, ?, ?, ?, ?, ?, ?,
                   map_from_entries(list_zip(cast(? as varchar[]), cast(? as bigint[]))),
                   map_from_entries(list_zip(cast(? as varchar[]), cast(? as varchar[]))), ?, ?""",
        [
            request.request_id,
            request.type,
            request.id_type,
            request.reference,
            now,
            now if final else None,
            status,
            values.get("customers") or [],
            values.get("candidates") or [],
            list(removed),
            list(removed.values()),
            [],
            [],
            values.get("note"),
            run_id,
        ],
    )


def _record_rejected(sql: Sql, config: PrivacyRequestConfig, rejected: list[RejectedLine], run_id: str) -> None:
    """A receipt with status `rejected` and the reason for each refused request of the run configuration
    (its type, identifier type and reference; never its value), so the refusal is on record beside every
    other request's outcome."""
    specs = {request_id(run_id, index): spec for index, spec in enumerate(config.requests)}
    for line in rejected:
        spec = specs[line.request_id]
        request = Request(line.request_id, spec.type, spec.id_type, "", spec.reference, spec.source)
        _receipt(sql, request, "rejected", run_id, note=f"{line.field}: {line.reason}")


def suppress(sql: Sql, request: Request, customers: list[str]) -> None:
    """Add the customers to the suppression list (`suppress`) or take them off it (`unsuppress`, any id that
    names them today)."""
    if request.type == "suppress":
        sql.execute(
            f"insert or replace into {SUPPRESSIONS.name} select unnest(cast(? as varchar[])), ?, ?",
            [customers, request.request_id, utc_now()],
        )
    else:
        sql.execute(
            f"""delete from {SUPPRESSIONS.name} s where list_contains(?, s.customer_id)
                or s.customer_id in (select customer_id from {ID_REGISTRY.name} where list_contains(?, current_id))""",
            [customers, customers],
        )


def process_requests(
    sql: Sql, config: CDPConfig, requests: list[Request], run_id: str, log: dg.DagsterLogManager | None = None
) -> dict[str, object]:
    """Resolve and carry out the requests not done before; returns what the run did (no personal values)."""
    done = {r for (r,) in sql.rows(f"select request_id from {PRIVACY_REQUESTS.name}")}
    new = [r for r in requests if r.request_id not in done]
    erasures = [r for r in new if r.type == "erase"]
    key = privacy_key(config) if erasures else b""
    statuses: dict[str, str] = {}
    found: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        seconds[step] = round(seconds.get(step, 0.0) + now - mark, 2)
        mark = now

    try:  # an access request needs no key, but with one it can tell an erased person from a stranger
        lookup = key or privacy_key(config)
    except PrivacyKeyMissing:
        lookup = b""
    resolutions = resolve_all(sql, config, new, lookup)
    lap("resolve")
    for request in new:
        resolution = resolutions[request.request_id]
        if resolution.status == "found" and request.type == "access":
            document = access_document(sql, config, request.request_id, resolution.customers)
            path = write_access_document(config, request.request_id, document, utc_now())
            note = f"written to {path.relative_to(config.privacy_requests_path)}"
            _receipt(sql, request, "completed", run_id, customers=resolution.customers, note=note)
            statuses[request.request_id] = "completed"
        elif resolution.status == "found" and request.type != "erase":
            suppress(sql, request, resolution.customers)
            _receipt(sql, request, "completed", run_id, customers=resolution.customers)
            statuses[request.request_id] = "completed"
        elif resolution.status == "found":
            found[request.request_id] = resolution.customers
        else:
            _receipt(sql, request, resolution.status, run_id, candidates=resolution.candidates, note=resolution.note)
            statuses[request.request_id] = resolution.status
    lap("access and suppression")
    report: dict[str, object] = {
        "erased_customers": 0,
        "access_documents_removed": 0,
        "landing_files_rewritten": 0,
        "exports_rewritten": 0,
    }
    if found:
        at = utc_now()
        batch = erase(sql, config, found, key, run_id=run_id, at=at)
        # The tombstones outlive the warehouse in the ledger (an extract completes it if this run dies here).
        reconcile_ledger(sql, config)
        # A person named twice in one batch (by two of their e-mails, or a request filed twice) is erased once:
        # the rows are counted on the first request, the others say whose they are, so receipts add up.
        first_for: dict[tuple[str, ...], str] = {}
        for request in erasures:
            if request.request_id in found:
                customers = tuple(found[request.request_id])
                first = first_for.setdefault(customers, request.request_id)
                _receipt(
                    sql,
                    request,
                    "pending",
                    run_id,
                    customers=list(customers),
                    rows_removed=batch.rows_removed.get(request.request_id, {}) if first == request.request_id else {},
                    note=None if first == request.request_id else f"the same person as request {first}",
                )
                statuses[request.request_id] = "pending"
        report["erased_customers"] = len(batch.customer_ids)
        lap("erase in the warehouse")
        report["access_documents_removed"] = remove_access_documents(sql, config, batch.customer_ids)
    # The files this batch's erasure left to rewrite, and any an earlier run died before rewriting.
    report["landing_files_rewritten"] = rewrite_landing_files(sql, config)
    lap("landing files")
    if sql.value(f"select count(*) from {FILE_REWRITES.name} where target = 'exports'"):
        report["exports_rewritten"] = rewrite_exports(sql, config, key or privacy_key(config))
        lap("exports")
    # Completed only once the files are rewritten too (a request no destination held has nothing left).
    settle_receipts(sql, utc_now())
    if found:
        report["destination_erasures_queued"] = batch.destination_erasures
        if log:
            log.info(f"privacy: erased {len(batch.customer_ids)} customer id(s) for {len(found)} request(s)")
    report["statuses"] = statuses
    report["seconds"] = seconds
    return report


def retain(sql: Sql, config: CDPConfig, run_id: str) -> dict[str, int]:
    """Delete the rows past their source's retention and rewrite their landing files; rows removed per table."""
    batch = expire(sql, config, utc_now(), run_id)
    if batch is None:
        return {}
    removed = batch.rows_removed.get("retention", {})
    rewrite_landing_files(sql, config)
    request = Request(f"retention_{run_id[:8]}", "retention", "", "")
    _receipt(sql, request, "completed", run_id, rows_removed=removed)
    return removed


def _owed(sql: Sql) -> set[str]:
    """The steps after a deletion still to do (`profiles`, `warehouse`; see `queue_file_rewrites`)."""
    return {
        target
        for (target,) in sql.rows(
            f"select distinct target from {FILE_REWRITES.name} where target in ('profiles', 'warehouse')"
        )
    }


def refresh_after_erasure(sql: Sql, config: CDPConfig, run_id: str) -> None:
    """Bring the profiles and segments up to the warehouse an erasure left. The erased customers' rows
    went with them, but the RFM scores rank every buyer against the others, so theirs leaving moves other
    customers' scores and the segments reading them: what the next refresh would do, done now, so no
    profile keeps a rank a rebuild would not give (the profiles' incremental run recomputes only the
    customers affected, and ranks everyone again). The destinations hear of the segment changes on their
    next sync. (Retention leaves this to the next refresh, which re-resolves identity first.)"""
    build_profiles(sql, config, incremental=True, run_id=run_id)
    build_membership(sql, config)


def deliver_all(sql: Sql, config: CDPConfig, log: dg.DagsterLogManager | None = None) -> dict[str, dict[str, int]]:
    """Every row destination's pending erasures; a destination that fails keeps only its own pending."""
    outcomes: dict[str, dict[str, int]] = {}
    for destination in config.destinations:
        if not isinstance(destination, RowDestinationConfig) or not pending_erasures(sql, destination.name):
            continue
        client = make_client(destination)
        try:
            outcomes[destination.name] = deliver_erasures(sql, destination, lambda client=client: client)
        finally:
            client.close()
        if log and outcomes[destination.name]["erase_pending"]:
            log.warning(
                f"privacy: destination {destination.name} did not confirm "
                f"{outcomes[destination.name]['erase_pending']} erasure(s); they are retried by its next sync"
            )
    return outcomes


def archive_requests_file(
    path: Path, statuses: dict[str, str], rejected: list[RejectedLine], references: dict[str, str | None]
) -> Path:
    """Replace the requests file by `processed/<name>`: each line's request id, the requester's reference
    (a ticket number, what the operator answers the requester under) and status, no value. `references`
    maps the file's accepted requests, in the file's order, to their references."""
    target = path.parent / "processed" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["request_id", "reference", "status"])
    for rid, reference in references.items():
        writer.writerow([rid, reference or "", statuses.get(rid, "done earlier")])
    for line in rejected:
        status = f"rejected: line {line.row_number}, {line.field}: {line.reason}"
        writer.writerow([line.request_id, line.reference or "", status])
    target.touch(exist_ok=True)
    replace_atomically(target, lambda staging: staging.write_text(out.getvalue()))
    path.unlink()
    return target


def build_privacy_asset(cdp_config: CDPConfig) -> dg.AssetsDefinition:
    """The receipts asset that the privacy_request job materializes."""

    @dg.asset(
        key=PRIVACY_REQUESTS_KEY,
        group_name=GROUP,
        description="Carries out privacy requests (erase, access, suppress, unsuppress) and retention everywhere "
        "the platform holds the data; receipts in privacy.requests.",
        code_version=CODE_VERSION,
        metadata=table_metadata(PRIVACY_REQUESTS.name, "privacy.tombstones", "privacy.destination_erasures"),
    )
    @redact_errors
    def privacy_requests(
        context: dg.AssetExecutionContext, warehouse: Warehouse, config: PrivacyRequestConfig
    ) -> dg.MaterializeResult:
        run_id = context.run.run_id
        requests, rejected = from_run_config(cdp_config, config.requests, run_id)
        requests_path: Path | None = None
        file_rejected: list[RejectedLine] = []
        file_references: dict[str, str | None] = {}
        if config.requests_file:
            requests_path = (cdp_config.privacy_requests_path / config.requests_file).resolve()
            if requests_path.parent != cdp_config.privacy_requests_path.resolve() or not requests_path.is_file():
                raise dg.Failure(
                    f"privacy_request: {config.requests_file} is not a file of the requests folder "
                    f"{cdp_config.privacy_requests_path}"
                )
            from_path, file_rejected = from_file(cdp_config, requests_path)
            requests += from_path
            file_references = {r.request_id: r.reference for r in from_path}
        try:
            with warehouse.sql() as sql:
                if requests_path is not None:
                    _quarantine(sql, requests_path.name, file_rejected)
                _record_rejected(sql, config, rejected, run_id)
                report = process_requests(sql, cdp_config, requests, run_id, context.log)
                seconds: dict[str, float] = report["seconds"]  # type: ignore[assignment]
                mark = time.perf_counter()
                expired = retain(sql, cdp_config, run_id) if config.retention else None
                seconds["retention"] = round(time.perf_counter() - mark, 2)
                mark = time.perf_counter()
                delivered = deliver_all(sql, cdp_config, context.log)
                seconds["destinations"] = round(time.perf_counter() - mark, 2)
                # What this run's deletions, or those of a run that died before finishing, still owe.
                owed = _owed(sql)
                erased = any(report[k] for k in ("erased_customers", "landing_files_rewritten", "exports_rewritten"))
                erased = erased or bool(expired) or "warehouse" in owed
                if "profiles" in owed:
                    mark = time.perf_counter()
                    if sql.table_exists("cdp.golden_profiles"):
                        refresh_after_erasure(sql, cdp_config, run_id)
                    sql.execute(f"delete from {FILE_REWRITES.name} where target = 'profiles'")
                    seconds["profiles and segments"] = round(time.perf_counter() - mark, 2)
                compact = erased and cdp_config.privacy.compact_after_erasure
                if erased:
                    mark = time.perf_counter()
                    warehouse.publish_read_snapshot(sql, run_id)
                    seconds["read snapshot"] = round(time.perf_counter() - mark, 2)
                    if not compact:
                        sql.execute(f"delete from {FILE_REWRITES.name} where target = 'warehouse'")
                counts = dict(sql.rows(f"select status, count(*) from {PRIVACY_REQUESTS.name} group by 1 order by 1"))
                # In the requests' order, on every engine.
                ids = [r.request_id for r in requests]
                this_run = sql.rows(
                    f"""select request_id, type, status, note from {PRIVACY_REQUESTS.name}
                        where list_contains(?, request_id) order by list_position(?, request_id)""",
                    [ids, ids],
                )
        except PrivacyKeyMissing as exc:
            raise dg.Failure(str(exc)) from None
        mark = time.perf_counter()
        sizes = warehouse.compact() if compact else {}
        if compact:
            # Only once the compacted file is in place: a run killed while copying leaves it owed.
            with warehouse.sql() as sql:
                sql.execute(f"delete from {FILE_REWRITES.name} where target = 'warehouse'")
        seconds["compaction"] = round(time.perf_counter() - mark, 2)
        # The processed file says why nobody was erased (never held, or erased before; several candidates).
        statuses = {
            request: f"{status}: {note}" if note and status in ("not_found", "needs_review") else status
            for request, _, status, note in this_run
        }
        if requests_path is not None:
            archive_requests_file(requests_path, statuses, file_rejected, file_references)
        rows = [{"request": r, "type": t, "status": s} for r, t, s, _ in this_run]
        rows += [{"request": line.request_id, "type": "", "status": "rejected"} for line in file_rejected]
        if rejected:
            # A request typed in the Launchpad that was refused must not end in a green run: the person who
            # typed it is waiting for it. Its receipt says why; the requests that were valid are done.
            reasons = "; ".join(f"{line.request_id}: {line.field}: {line.reason}" for line in rejected)
            raise dg.Failure(
                f"{len(rejected)} request(s) of the run configuration rejected (recorded in {PRIVACY_REQUESTS.name} "
                f"with status 'rejected'; the {len(requests)} other(s) were carried out): {reasons}",
                metadata={"this_run": dg.MetadataValue.md(markdown_table(rows) if rows else "_no requests_")},
            )
        return dg.MaterializeResult(
            metadata={
                "requests_this_run": len(requests) + len(rejected) + len(file_rejected),
                "requests_pending": int(counts.get("pending", 0)),
                "requests_completed": int(counts.get("completed", 0)),
                "requests_needing_review": int(counts.get("needs_review", 0)),
                "requests_not_found": int(counts.get("not_found", 0)),
                "erased_customers_this_run": int(report["erased_customers"]),  # type: ignore[arg-type]
                "landing_files_rewritten": int(report["landing_files_rewritten"]),  # type: ignore[arg-type]
                "exports_rewritten": int(report["exports_rewritten"]),  # type: ignore[arg-type]
                "access_documents_removed": int(report["access_documents_removed"]),  # type: ignore[arg-type]
                "rows_expired": sum(expired.values()) if expired else 0,
                "destinations": dg.MetadataValue.json(delivered),
                **{k: dg.MetadataValue.int(v) for k, v in sizes.items()},
                "seconds_per_step": dg.MetadataValue.json(seconds),
                "this_run": dg.MetadataValue.md(markdown_table(rows) if rows else "_no requests_"),
            }
        )

    return privacy_requests


def build_retention_schedule(config: CDPConfig, job: object) -> dg.ScheduleDefinition | None:
    """The daily retention run, when a source declares `retain`."""
    if not any(s.retain for s in config.sources):
        return None
    return dg.ScheduleDefinition(
        name="retention_schedule",
        cron_schedule=config.privacy.retention_cron,
        job=job,  # type: ignore[arg-type]
        run_config={"ops": {"privacy__requests": {"config": {"retention": True}}}},
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Deletes rows older than their source's `retain` period, everywhere erasure reaches.",
    )


def build_privacy_job():  # an unresolved asset job, a type dagster does not export
    return dg.define_asset_job(
        PRIVACY_JOB,
        selection=[PRIVACY_REQUESTS_KEY],
        description="Carries out a batch of privacy requests: from a requests file (the requests sensor launches "
        "it) or typed in the Launchpad (customer ids, source records, configured ids; e-mails and phones only by "
        "file).",
    )
