"""Source extracts: one asset per configured source, loading new or changed landing files into DuckDB.

Each raw row keeps its file, line number and load time, so every later table can point back to the
exact record it came from (and erasure can find every copy). A file is identified by its content hash:
re-running loads nothing twice, a changed file replaces its earlier rows, and a file that cannot be
read or mapped as a whole is quarantined as a file and recorded as failed without stopping the
source's other files; the asset's warning check lists such files.
"""

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import dagster as dg
import pyarrow as pa

from cdp_assets.extract.readers import (
    FileFormatError,
    ReadResult,
    Reject,
    Rows,
    compression,
    kept_lines,
    open_landing,
    read_csv_on_executors,
    read_file,
    read_jsonl_on_executors,
    read_parquet_on_executors,
    readable_on_executors,
    refuse_wide_unicode,
    write_landing,
)
from cdp_assets.extract.tombstones import (
    LedgerError,
    erased_rows,
    ledger_path,
    reconcile_ledger,
    tombstone_hashes,
)
from cdp_assets.metadata import markdown_table, masked_records, redact_errors, table_metadata
from resources.config import CDPConfig, SourceConfig
from resources.durable import replace_atomically
from resources.landing import (
    FILE_SIGNATURES,
    FILES_READABLE_CHECK,
    LAST_FILE_LOADED_AT,
    MAX_RECORDED_SIGNATURES,
    ExtractConfig,
    file_signature,
    matching_files,
    outside_landing,
    poll_key,
)
from resources.privacy import PrivacyKeyMissing, privacy_key
from resources.sql import Scratch, Sql, SqlError
from resources.warehouse import Warehouse, utc_now

GROUP = "source_extracts"


def raw_table(source: SourceConfig) -> str:
    """The source's raw table: one row per landing-file row, its record kept as JSON."""
    return f"raw.{source.name}"


def ensure_raw_table(sql: Sql, source: SourceConfig) -> str:
    """The source's raw table, created empty if the source has never been extracted, so a stage reading
    it sees no rows rather than a missing table."""
    table = raw_table(source)
    sql.execute(
        f"create table if not exists {table} (_file varchar, _row_number bigint, _loaded_at timestamp, record json)"
    )
    return table


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_columns(source: SourceConfig, columns: list[str], schema: pa.Schema | None = None) -> list[str]:
    """Mapped paths absent from a tabular file: their top-level column, or for a Parquet file (`schema`)
    a field of a struct column (`address.town` where the struct has no `town`); a path into a column that
    is not a struct (JSON text, a map) is only known row by row, and not checked here."""
    present = set(columns)
    missing = []
    for path in source.read_paths():
        top = path if source.format == "csv" else path.split(".")[0]
        if top not in present:
            absent = top
        elif schema is not None and top in schema.names:
            absent = _missing_nested(schema.field(top).type, path.split("."))
        else:
            absent = None
        if absent is not None and absent not in missing:
            missing.append(absent)
    return missing


def _missing_nested(kind: pa.DataType, keys: list[str]) -> str | None:
    """The first prefix of the dotted path `keys` that a struct of type `kind` (the first key's) lacks."""
    for depth in range(1, len(keys)):
        if not pa.types.is_struct(kind):
            return None
        index = kind.get_field_index(keys[depth])
        if index < 0:
            return ".".join(keys[: depth + 1])
        kind = kind.field(index).type
    return None


def missing_columns_reason(source: SourceConfig, columns: list[str], missing: list[str]) -> str:
    """Why a tabular file cannot be mapped, with a hint when the header was split on the wrong delimiter."""
    # The header itself is the quarantine row's value, not part of the reason: the reason reaches the check's
    # metadata, and a file without a header row would show its first record there.
    has = "its first line has" if source.format == "csv" else "it has"
    reason = f"has no column(s) {missing} that the configuration maps; {has} {len(columns)} column(s)"
    # A column named as mapped but for case or spaces is named: being the mapped name itself, it tells no
    # more than the configuration does, whatever the file's first line holds.
    for name in missing:
        same = [c for c in columns if c.casefold().strip() == name.casefold().strip()]
        if same:
            reason += f"; it has '{same[0]}' where the mapping says '{name}' (column names match exactly, case too)"
    if source.format == "csv" and len(columns) == 1:
        for other in (";", "\t", "|", ","):
            if other != source.csv.delimiter and other in columns[0]:
                shown = "\\t" if other == "\t" else other
                reason += (
                    f"; the header looks '{shown}'-separated but the source's csv.delimiter is '{source.csv.delimiter}'"
                )
                break
    return reason


def read_settings(source: SourceConfig) -> str:
    """A fingerprint of what decides whether a file can be read and mapped.

    A file refused whole is read again when its content or this fingerprint changes, so fixing the
    configuration (the delimiter, the encoding, a mapped column) retries it without touching the file.
    """
    settings = {"format": source.format, "csv": source.csv.model_dump(), "paths": sorted(set(source.read_paths()))}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _batches(rows: Rows, file: str, loaded_at: datetime) -> Iterator[pa.Table]:
    """The rows as raw-table rows of `file`, a batch at a time."""
    for batch in rows.batches():
        count = batch.num_rows
        yield pa.table(
            {
                "_file": pa.array([file] * count, pa.string()),
                "_row_number": batch.column("row_number"),
                "_loaded_at": pa.array([loaded_at] * count, pa.timestamp("us")),
                "record": batch.column("record"),
            }
        )


def _quarantine_rows(source: str, file: str, rejects: list[Reject], now: datetime) -> pa.Table:
    return pa.table(
        {
            "stage": ["extract"] * len(rejects),
            "source": [source] * len(rejects),
            "file": [file] * len(rejects),
            "row_number": pa.array([r.row_number for r in rejects], pa.int64()),
            "field": pa.array([r.field for r in rejects], pa.string()),
            "value": pa.array([r.value for r in rejects], pa.string()),
            "reason": [r.reason for r in rejects],
            "scope": ["row" if r.row_number is not None else "file" for r in rejects],
            "quarantined_at": pa.array([now] * len(rejects), pa.timestamp("us")),
        }
    )


def _read_on_executors(sql: Sql, source: SourceConfig, path: Path, tables: Scratch) -> ReadResult | None:
    """The file read by Spark's executors into the step's tables (`ReadResult.judged`), or None when it must
    be read in this process (a CSV file with a byte not in its encoding, or a record running past the lines
    the executors look ahead, or a compressed file Hadoop's codec could not read to its end: this process
    then says where and why it breaks)."""
    if source.format != "parquet":
        refuse_wide_unicode(path)
    try:
        if source.format == "csv":
            settings = source.csv
            return read_csv_on_executors(
                sql,  # type: ignore[arg-type]
                path,
                tables,
                delimiter=settings.delimiter,
                quote=settings.quote,
                encoding=settings.encoding,
            )
        if source.format == "parquet":
            return read_parquet_on_executors(sql, path, tables)  # type: ignore[arg-type]
        return read_jsonl_on_executors(sql, path, tables)  # type: ignore[arg-type]
    except SqlError:
        if compression(path) is None:
            raise
        return None


# Formats whose landing files the platform writes itself (the collector's events, an API's polled pages).
PLATFORM_WRITTEN = ("segment", "http")


def _blank_erased_lines(path: Path, lines: list[int]) -> tuple[str, os.stat_result]:
    """Empty the lines of an erased person in a landing file the platform wrote (one record per line), keeping
    every other line on its number; returns the file's new hash and stat, recorded with the load. No source
    sends such a file again without the person: what the collector acknowledged before an erasure, and
    published after it, would otherwise keep them in clear in the landing folder for good."""
    with open_landing(path) as handle:
        content = handle.read().splitlines(keepends=True)
    kept = b"".join(kept_lines(content, lines, range(1, len(content) + 1)))
    replace_atomically(path, lambda staging: write_landing(staging, kept, like=path))
    return file_sha256(path), path.stat()


def load_file(
    sql: Sql,
    source: SourceConfig,
    path: Path,
    rel: str,
    sha: str,
    erased: Callable[[str], list[Reject]] | None = None,
    stat: os.stat_result | None = None,
    engine: str = "duckdb",
    landing: Path | None = None,
) -> dict[str, object]:
    """Replace one file's rows in the raw table and record it; all or nothing, in one transaction.

    On Spark (`engine`), a JSON-lines, Parquet or CSV file is read by the executors (`readable_on_executors`
    says which may be; `_read_on_executors` which CSV files are left to this process), with the same rows,
    rejects and verdict on the file as the reader in this process gives.

    `stat` is the file's size and modification time when `sha` was taken (now, by default): recorded
    with the hash, so a file that changes while it is read is hashed and loaded again by the next run.

    `erased(file)`, when people have been erased, removes the file's rows that carry an erased identifier and
    returns their rejects (see cdp_assets/extract/tombstones.py), before anything commits.

    A file that cannot be read or mapped as a whole (unreadable, mapped columns missing, another
    delimiter or encoding, JSON lines that are not objects) loads no rows: it is quarantined as a file
    with the reason and recorded as failed, and the source's other files load as usual. So does a file that
    is a link to one outside the `landing` folder (when given): it is not read at all.
    """
    now = utc_now()
    table = raw_table(source)
    status = "loaded"
    rows_loaded = 0
    on_executors = engine == "spark" and readable_on_executors(path, source.format)
    # The file's rows are told apart by their load time: this version's are stamped `now`. A version that
    # cannot be read whole (cut short in transfer, another layout) does not withdraw the rows of the
    # version loaded before: those are deleted only once this one has loaded, and its own rows if it fails.
    stamped = "_file = ? and _loaded_at {} cast(? as timestamp)"
    with sql.scratch("load_file") as tables, sql.transaction():
        # The same content read again (a failed file retried after a configuration change) keeps the first
        # stamp of each reject it repeats; a changed file's rejects are new.
        previous_rejects = tables("previous_rejects")
        sql.create_table_as(
            previous_rejects,
            """select q.* from meta.extract_quarantine q
               join meta.loaded_files f on f.source = q.source and f.file = q.file and f.sha256 = ?
               where q.source = ? and q.file = ?""",
            [sha, source.name, rel],
            temporary=True,
        )
        problem: Reject | None = None
        rejects: list[Reject] = []
        kept_rejects = 0  # the row rejects of the version before, when this one fails
        judged_rejects = 0
        # A link outside is refused by policy, not a transfer cut short: what the file held before goes too (it
        # may itself have been read through the link, by a version that did not check).
        linked_outside = landing is not None and outside_landing(landing, path)
        try:
            if linked_outside:
                raise FileFormatError(
                    "it is a link to a file outside the landing folder, which the platform does not read: "
                    "put the file itself in the folder"
                )
            result, rows = _read_on_executors(sql, source, path, tables) if on_executors else None, Rows(iter(()))
            if result is None:
                result, rows = read_file(
                    path,
                    source.format,
                    delimiter=source.csv.delimiter,
                    quote=source.csv.quote,
                    encoding=source.csv.encoding,
                    whole=engine != "spark",  # Spark's driver reads line by line: no file held whole
                )
        except FileFormatError as exc:
            result, rows = None, Rows(iter(()))
            problem = Reject(None, f"file {rel} cannot be read: {exc}")
        if result is not None and result.columns is not None:
            missing = missing_columns(source, result.columns, result.schema)
            if missing:
                problem = Reject(
                    None,
                    f"file {rel} {missing_columns_reason(source, result.columns, missing)}",
                    source.csv.delimiter.join(result.columns) if source.format == "csv" else ", ".join(result.columns),
                    ", ".join(missing),
                )
                rows = Rows(iter(()))
        if result is not None and problem is None:
            if result.judged is not None:
                sql.execute(
                    f"""insert into {table} by name
                        select cast(? as varchar) as _file, line_number::bigint as _row_number,
                               cast(? as timestamp) as _loaded_at, record::json as record
                        from {result.judged} where record is not null""",
                    [rel, now],
                )
                rows_loaded = result.rows
            try:
                for batch in _batches(rows, rel, now):
                    with sql.registered("incoming_batch", batch) as incoming:
                        sql.execute(f"insert into {table} by name select * from {incoming}")
                    rows_loaded += batch.num_rows
            except FileFormatError as exc:  # met part way (a compressed file's damage): no row of it loads
                problem = Reject(None, f"file {rel} cannot be read: {exc}")
            rejects = list(result.rejects)
            judged_rejects = result.rejected
            if result.file_error:
                problem = Reject(None, f"file {rel} {result.file_error}")
            elif result.empty:
                status = "empty"
                rejects.append(Reject(None, "empty file: no header and no rows"))
        if problem is None:
            sql.execute(f"delete from {table} where {stamped.format('<>')}", [rel, now])
            sql.execute("delete from meta.extract_quarantine where source = ? and file = ?", [source.name, rel])
            if erased is not None and rows_loaded:
                set_aside = erased(rel)
                rows_loaded -= len(set_aside)
                rejects += set_aside
                if set_aside and source.format in PLATFORM_WRITTEN:
                    sha, stat = _blank_erased_lines(path, [r.row_number for r in set_aside if r.row_number])
        else:
            status, rejects, judged_rejects = "failed", [problem], 0
            sql.execute(f"delete from {table} where {stamped.format('=')}", [rel, now])
            if linked_outside:
                sql.execute(f"delete from {table} where _file = ?", [rel])
                sql.execute("delete from meta.extract_quarantine where source = ? and file = ?", [source.name, rel])
            # The rows of the version before stay, and so do the rows it quarantined, so the file's rows stay
            # accounted for as they were; an earlier failure's reason gives way to this one's.
            rows_loaded = int(sql.value(f"select count(*) from {table} where _file = ?", [rel]))
            sql.execute(
                "delete from meta.extract_quarantine where source = ? and file = ? and scope = 'file'",
                [source.name, rel],
            )
            kept_rejects = int(
                sql.value(
                    "select count(*) from meta.extract_quarantine "
                    "where source = ? and file = ? and row_number is not null",
                    [source.name, rel],
                )
            )
            if rows_loaded:
                problem = Reject(
                    None,
                    f"{problem.reason}; the {rows_loaded:,} rows of the version loaded before are kept",
                    problem.value,
                    problem.field,
                )
                rejects = [problem]
        if rejects or judged_rejects:
            found = _quarantine_rows(source.name, rel, rejects, now)
            with sql.registered("incoming_rejects", found) as listed:
                incoming = listed
                if judged_rejects and result is not None and result.judged is not None:
                    # The rejects of lines read on the executors, as `_quarantine_rows` lays them out.
                    more = tables("judged_rejects")
                    sql.create_table_as(
                        more,
                        f"""select 'extract' as stage, cast(? as varchar) as source, cast(? as varchar) as file,
                                   line_number::bigint as row_number, null::varchar as field, value, reason,
                                   'row' as scope, cast(? as timestamp) as quarantined_at
                            from {result.judged} where reason is not null""",
                        [source.name, rel, now],
                        temporary=True,
                    )
                    incoming = f"(select * from {listed} union all by name select * from {more})"
                sql.execute(
                    f"""insert into meta.extract_quarantine by name
                       select n.* replace (coalesce(p.quarantined_at, n.quarantined_at) as quarantined_at)
                       from {incoming} n left join (
                           select row_number, field, value, reason, scope, min(quarantined_at) as quarantined_at
                           from {previous_rejects} group by all) p
                         on p.row_number is not distinct from n.row_number and p.field is not distinct from n.field
                        and p.value is not distinct from n.value and p.reason = n.reason and p.scope = n.scope"""
                )
        rows_rejected = sum(1 for r in rejects if r.row_number is not None) + judged_rejects + kept_rejects
        stat = stat or path.stat()
        sql.execute(
            "insert or replace into meta.loaded_files (source, file, sha256, size_bytes, rows_loaded, rows_rejected, "
            "status, loaded_at, read_settings, mtime_ns) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [source.name, rel, sha, stat.st_size, rows_loaded, rows_rejected, status, now]
            + [read_settings(source), stat.st_mtime_ns],
        )
    # A failed file loaded nothing this run, whatever rows of an earlier version it keeps.
    loaded_now = 0 if status == "failed" else rows_loaded
    return {"file": rel, "status": status, "rows_loaded": loaded_now, "rows_rejected": rows_rejected}


# Sources whose files the platform writes itself (the collector's events, an API's polled pages): until
# data comes there are none, and the freshness check (`expected_every`) is what says it is late.
_WRITTEN_BY_THE_PLATFORM = ("segment", "http")


def _files_check(
    sql: Sql, source: SourceConfig, present: list[str], searched: Path, hidden: list[str]
) -> dg.AssetCheckResult:
    """Warn about the source's files that are quarantined whole, naming each file and why, and about a
    source of landed files whose glob matches none (`searched`): a misspelt glob or landing folder would
    otherwise give a green run with nothing loaded. Matching files not read for their leading dot (`hidden`)
    are listed, and named when they are all the glob found."""
    hidden_entry = {"hidden_files_not_read": dg.MetadataValue.md(", ".join(hidden) or "none")}
    if not present and source.format not in _WRITTEN_BY_THE_PLATFORM:
        return dg.AssetCheckResult(
            asset_key=dg.AssetKey(["raw", source.name]),
            check_name=FILES_READABLE_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"files_quarantined": 0, "files_matching": 0, "searched": str(searched), **hidden_entry},
            description=f"no file matches {searched}: check the source's glob and landing.path"
            + (f"; {_hidden_message(hidden)}" if hidden else ""),
        )
    failed = sql.rows(
        """select q.file, q.reason from meta.extract_quarantine q
           join meta.loaded_files f on f.source = q.source and f.file = q.file and f.status = 'failed'
           where q.source = ? and q.scope = 'file' and list_contains(?, q.file) order by q.file""",
        [source.name, present],
    )
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey(["raw", source.name]),
        check_name=FILES_READABLE_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "files_quarantined": len(failed),
            "files_matching": len(present),
            **hidden_entry,
            "files": dg.MetadataValue.md(
                markdown_table([{"file": f, "reason": r} for f, r in failed]) if failed else "_none_"
            ),
        },
        description="; ".join(f for f, _ in failed) or None,
    )


def _hidden_message(hidden: list[str]) -> str:
    """Why the files named are not read, and what loads them."""
    shown = ", ".join(hidden[:5]) + (f" and {len(hidden) - 5} more" if len(hidden) > 5 else "")
    return (
        f"{len(hidden)} matching file(s) not read because the name begins with a dot ({shown}): such names are "
        "taken for uploads under way and system files; rename a file without the dot to load it"
    )


def build_extract_asset(cdp_config: CDPConfig, source: SourceConfig) -> dg.AssetsDefinition:
    """The raw-table asset of one source."""

    @dg.asset(
        key=["raw", source.name],
        group_name=GROUP,
        description=(
            f"Raw rows of source '{source.name}' ({source.format} files matching {source.glob})."
            if source.format != "http"
            else f"Raw rows of API source '{source.name}' (its polled pages, {source.glob} in the landing folder)."
        ),
        kinds={"json" if source.format == "http" else source.format},
        deps=[poll_key(source)] if source.format == "http" else None,
        output_required=False,
        tags={"cdp/role": source.role},
        metadata={
            "glob": source.glob,
            "role": source.role,
            "trust": source.trust,
            **table_metadata(raw_table(source), "meta.loaded_files", "meta.extract_quarantine"),
        },
        check_specs=[
            dg.AssetCheckSpec(
                FILES_READABLE_CHECK,
                asset=dg.AssetKey(["raw", source.name]),
                description=(
                    "Every file of the source could be read and mapped; a file that could not is quarantined "
                    "whole (scope 'file') and listed here while the source's other files load."
                ),
            )
        ],
    )
    @redact_errors
    def extract(context: dg.AssetExecutionContext, warehouse: Warehouse, config: ExtractConfig):
        files, dotted = matching_files(cdp_config, source)
        landing = cdp_config.landing_path
        hidden = (
            [p.relative_to(landing).as_posix() for p in dotted] if source.format not in _WRITTEN_BY_THE_PLATFORM else []
        )
        if hidden:
            context.log.warning(f"{source.name}: {_hidden_message(hidden)}")
        settings = read_settings(source)
        loaded: list[dict[str, object]] = []
        skipped = 0
        with warehouse.sql() as sql:
            table = ensure_raw_table(sql, source)
            erased: Callable[[str], list[Reject]] | None = None
            try:
                if restored := reconcile_ledger(sql, cdp_config):
                    context.log.warning(
                        f"{restored} erasure tombstone(s) the warehouse lacked were restored from "
                        f"{ledger_path(cdp_config)}: the erased people stay out of this and every later load"
                    )
            except LedgerError as exc:
                raise dg.Failure(str(exc)) from None
            if hashes := tombstone_hashes(sql):
                try:
                    key = privacy_key(cdp_config)
                except PrivacyKeyMissing as exc:
                    raise dg.Failure(str(exc)) from None
                erased = partial(erased_rows, sql, cdp_config, source, table, key=key, hashes=hashes)

            known = {
                file: (sha, status, file_settings, (size, mtime_ns))
                for file, sha, status, file_settings, size, mtime_ns in sql.rows(
                    "select file, sha256, status, read_settings, size_bytes, mtime_ns from meta.loaded_files "
                    "where source = ?",
                    [source.name],
                )
            }
            # Each file's content now: a file of the size and modification time it had when hashed is that
            # file, since reading every landing file again on each run to hash it would cost what the
            # landing folder holds.
            present: dict[str, tuple[Path, os.stat_result, str]] = {}
            for path in files:
                rel = path.relative_to(landing).as_posix()
                previous, stat = known.get(rel), path.stat()
                if previous is not None and previous[3] == (stat.st_size, stat.st_mtime_ns):
                    sha = previous[0]
                else:
                    sha = file_sha256(path)
                    if previous is not None and previous[0] == sha:  # touched, not changed: remember its time
                        sql.execute(
                            "update meta.loaded_files set mtime_ns = ? where source = ? and file = ?",
                            [stat.st_mtime_ns, source.name, rel],
                        )
                present[rel] = (path, stat, sha)
            # A renamed copy of loaded content is skipped: content whose rows stay loaded after this run, i.e.
            # of a file unchanged since it loaded or gone from the folder (its rows are kept), not the old
            # content of a file this run replaces (a re-sent copy beside an emptied original must load).
            # A copy of a failed file is tried (and refused) itself.
            loaded_content = {
                sha: file
                for file, (sha, status, _, _) in known.items()
                if status != "failed" and (file not in present or present[file][2] == sha)
            }
            copies: list[str] = []
            for rel, (path, stat, sha) in present.items():
                previous = known.get(rel)
                unchanged = previous is not None and previous[0] == sha
                # Read through a link to a file outside the folder (before the extract refused such links): read
                # again, to be refused with its rows withdrawn and what it quarantined (the target's first line,
                # kept as a refused header's value) gone; a refusal of the link itself keeps no value.
                loaded_through_link = (
                    unchanged
                    and outside_landing(landing, path)
                    and (
                        previous[1] != "failed"
                        or sql.value(
                            "select count(*) from meta.extract_quarantine "
                            "where source = ? and file = ? and value is not null",
                            [source.name, rel],
                        )
                        > 0
                    )
                )
                if unchanged and (previous[1] != "failed" or previous[2] == settings) and not loaded_through_link:
                    skipped += 1
                    continue
                if previous is None and sha in loaded_content:
                    context.log.info(f"{source.name}: {rel} holds what {loaded_content[sha]} loaded; skipped")
                    copies.append(f"{rel} (as {loaded_content[sha]})")
                    continue
                outcome = load_file(
                    sql, source, path, rel, sha, erased, stat, cdp_config.warehouse.engine, landing=landing
                )
                context.log.info(f"{source.name}: {outcome}")
                if outcome["status"] == "failed":
                    context.log.warning(f"{source.name}: file {rel} quarantined whole; see cdp.quarantine")
                loaded.append(outcome)
                if outcome["status"] != "failed":
                    loaded_content.setdefault(sha, rel)
            check = _files_check(
                sql, source, [p.relative_to(landing).as_posix() for p in files], landing / source.glob, hidden
            )
            if not loaded and config.skip_if_unchanged:
                context.log.info(f"{source.name}: no new or changed files; nothing to materialize")
                # The check is declared on the asset, so it reports even when nothing is materialized.
                yield check
                return
            total = sql.value(f"select count(*) from {raw_table(source)}")
            quarantined = sql.value("select count(*) from meta.extract_quarantine where source = ?", [source.name])
            # When a file of the source last loaded, whether or not this run loaded one: the freshness check
            # (sensors/freshness.py) reads it from this materialization rather than the run's own time.
            last_load = sql.value(
                "select max(loaded_at) from meta.loaded_files where source = ? and status <> 'failed'", [source.name]
            )
            sample = [
                r[0]
                for r in sql.rows(
                    f"select record::varchar from {raw_table(source)} order by _file, _row_number limit 3"
                )
            ]
        if not files:
            context.log.warning(f"{source.name}: no files match {landing / source.glob}")
        # Files as this run left them, whatever their outcome: the landing sensor's starting point.
        signatures = (
            {
                FILE_SIGNATURES: dg.MetadataValue.json(
                    {rel: file_signature(stat) for rel, (_, stat, _) in present.items()}
                )
            }
            if len(present) <= MAX_RECORDED_SIGNATURES
            else {}
        )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(total)),
                "files_seen": len(files),
                "files_loaded": sum(1 for x in loaded if x["status"] != "failed"),
                "files_quarantined_this_run": sum(1 for x in loaded if x["status"] == "failed"),
                "files_skipped_unchanged": skipped,
                "copies_skipped": dg.MetadataValue.md(", ".join(copies) or "none"),
                "rows_loaded_this_run": sum(int(x["rows_loaded"]) for x in loaded),
                "rows_rejected_this_run": sum(int(x["rows_rejected"]) for x in loaded),
                "quarantined_total": int(quarantined),
                LAST_FILE_LOADED_AT: dg.MetadataValue.timestamp(last_load.replace(tzinfo=UTC))
                if last_load
                else "never",
                "loaded_files": dg.MetadataValue.md(markdown_table(loaded) if loaded else "_no new files_"),
                **signatures,
                "preview": dg.MetadataValue.md(masked_records(sample)),
            },
            check_results=[check],
        )

    return extract
