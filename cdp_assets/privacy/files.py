"""Erasure on disk outside the warehouse: landing files and file exports rewritten without the person's rows.

Every rewrite goes to a hidden temporary file in the same folder (the landing sensor and the extract skip
names starting with a dot), is flushed, and is renamed over the original: a reader sees the old file or
the new one, never half of one. A rewritten landing file's hash is recorded as loaded, so the extract does
not load it again. Lineage keeps pointing at the right lines: in a CSV or JSON-lines file the erased
lines are left empty (line breaks kept, and the readers skip empty lines), so every other row stays on
its line; a Parquet file loses the rows, and the rows after them are renumbered in every table that names
a row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from cdp_assets.extract.assets import file_sha256, raw_table
from cdp_assets.extract.readers import kept_lines, open_landing, write_landing
from cdp_assets.extract.tombstones import tombstone_hashes
from cdp_assets.syncs.assets import export_files, write_export
from resources.config import CDPConfig, FileDestinationConfig, SourceConfig
from resources.durable import replace_atomically
from resources.identifiers import NORMALISERS
from resources.landing import source_files
from resources.privacy import keyed_hash
from resources.sql import Sql
from resources.tables import FILE_REWRITES, ID_REGISTRY, LOADED_FILES
from resources.warehouse import sql_literal


def lineage_tables(sql: Sql) -> list[tuple[str, str, str, str]]:
    """Every table naming a landing file's line: (table, file column, line column, SQL of the row's source: its
    column, or the source's name for its raw table). Found from the warehouse's own catalogue, so a table added
    later is renumbered too."""
    found = []
    for schema, table in sql.table_names():
        name = f'{schema}."{table}"'
        columns = sql.columns(f"select * from {name}")
        if schema == "raw" and {"_file", "_row_number"} <= set(columns):
            found.append((name, "_file", "_row_number", sql_literal(table)))
        elif {"source", "file", "row_number"} <= set(columns):
            found.append((name, "file", "row_number", "t.source"))
    return found


def renumber_lines(sql: Sql, removed: Mapping[tuple[str, str], Sequence[int]]) -> None:
    """Move every row of each (source, file) below its removed lines up by as many lines, in every lineage table,
    so that a row's line number names its line in the rewritten file (relative order is kept, so no tie-break
    moves). One statement per table for all the files."""
    shifts = pd.DataFrame(
        [(source, file, line) for (source, file), lines in removed.items() for line in sorted(set(lines))],
        columns=["source", "file", "line"],
    )
    if shifts.empty:
        return
    with sql.registered("removed_lines_frame", shifts):
        for table, file_column, line_column, source in lineage_tables(sql):
            # Up by as many lines as were removed above it in its file.
            above = (
                f"(select count(*) from removed_lines_frame s where s.source = {source} "
                f"and s.file = t.{file_column} and s.line < t.{line_column})"
            )
            sql.execute(
                f"update {table} t set {line_column} = t.{line_column} - {above} "
                f"where t.{file_column} in (select file from removed_lines_frame)"
            )


def rewrite_landing_files(sql: Sql, config: CDPConfig) -> int:
    """Rewrite each landing file an erasure or retention left lines to drop in; returns how many were rewritten.

    Works from `privacy.file_rewrites`, so a run that died after deleting the rows finishes here. A file whose
    hash is no longer the one queued has been rewritten already (or replaced by its source) and is skipped.
    The rows are renumbered in the transaction that records the files' new hashes, so a run that died after a
    rename renumbers here too."""
    sources = {s.name: s for s in config.sources}
    pending = sql.rows(
        f"""select source, file, any_value(sha256), flatten(list(lines)), flatten(list(known_lines))
            from {FILE_REWRITES.name} where target = 'landing' group by 1, 2 order by 1, 2"""
    )
    rewritten = 0
    # Text files keep their line numbering (erased lines are left empty); a Parquet file loses its rows.
    removed: dict[tuple[str, str], list[int]] = {}
    loaded: dict[str, set[str]] = {}
    for loaded_source, loaded_file in sql.rows(f"select source, file from {LOADED_FILES.name}"):
        loaded.setdefault(loaded_source, set()).add(loaded_file)
    for source_name, file, sha, erased, known in pending:
        source = sources.get(source_name)
        path = config.landing_path / file
        erased, known = sorted(set(erased)), sorted(set(known))
        if source is not None and path.is_file() and file_sha256(path) == sha:
            # Copies of the file the extract skipped (a re-sent export under another name) hold the same
            # lines and lose them too; otherwise the copy would keep the person in clear, and load once the
            # original's content changed.
            for copy in _unloaded_copies(config, source, path, sha, loaded.get(source_name, set())):
                _rewrite(source.format, copy, erased, known)
                rewritten += 1
            _rewrite(source.format, path, erased, known)
            rewritten += 1
        if source is not None and source.format == "parquet":
            removed[(source_name, file)] = erased
    with sql.transaction():
        renumber_lines(sql, removed)
        for source_name, file, sha, _, _ in pending:
            path = config.landing_path / file
            if path.is_file():
                # The file as it now is, so the next extract neither hashes nor reloads it, and as many rows
                # loaded from it as the raw table still holds (kept as recorded if its source is gone).
                stat = path.stat()
                source = sources.get(source_name)
                rows = (
                    sql.value(f"select count(*) from {raw_table(source)} where _file = ?", [file]) if source else None
                )
                sql.execute(
                    f"update {LOADED_FILES.name} set sha256 = ?, size_bytes = ?, mtime_ns = ?, "
                    "rows_loaded = coalesce(?, rows_loaded) where source = ? and file = ? and sha256 = ?",
                    [file_sha256(path), stat.st_size, stat.st_mtime_ns, rows, source_name, file, sha],
                )
        sql.execute(f"delete from {FILE_REWRITES.name} where target = 'landing'")
    return rewritten


def _unloaded_copies(config: CDPConfig, source: SourceConfig, path: Path, sha: str, loaded: set[str]) -> list[Path]:
    """The source's landing files no load recorded whose content is exactly `path`'s (hash `sha`): the copies
    the extract skipped. Only files of the same size are read."""
    size = path.stat().st_size
    copies = []
    for other in source_files(config, source):
        relative = other.relative_to(config.landing_path).as_posix()
        if other == path or relative in loaded or other.stat().st_size != size:
            continue
        if file_sha256(other) == sha:
            copies.append(other)
    return copies


@contextmanager
def file_sql() -> Iterator[Sql]:
    """An in-memory DuckDB that reads and writes landing and export files, whatever the warehouse's engine:
    the files are local, and DuckDB reads them as the platform wrote them (Spark's exports are DuckDB's
    files too)."""
    files = Sql.in_memory()
    try:
        yield files
    finally:
        files.close()


def _rewrite(file_format: str, path: Path, erased: list[int], known: list[int]) -> None:
    if file_format == "parquet":
        numbers = ", ".join(str(n) for n in erased)
        with file_sql() as files:
            replace_atomically(
                path,
                lambda staging: files.execute(
                    f"copy (select * exclude (file_row_number) from read_parquet({sql_literal(str(path))}, "
                    f"file_row_number = true) where file_row_number + 1 not in ({numbers})) "
                    f"to {sql_literal(str(staging))} (format parquet)"
                ),
            )
        return
    with open_landing(path) as handle:
        content = handle.read()
    kept = b"".join(kept_lines(content.splitlines(keepends=True), erased, known))
    replace_atomically(path, lambda staging: write_landing(staging, kept, like=path))


def export_reader(destination: FileDestinationConfig, path: Path) -> str:
    """SQL reading one export file of the destination as written (a CSV's cells as text)."""
    if destination.format == "csv":
        delimiter = sql_literal(destination.delimiter)
        return f"read_csv({sql_literal(str(path))}, header = true, all_varchar = true, delim = {delimiter})"
    return f"read_parquet({sql_literal(str(path))})"


def rewrite_exports(sql: Sql, config: CDPConfig, key: bytes) -> int:
    """Rewrite each export file holding an erased customer, when an erasure left the exports to do.

    A row goes when its customer_id is erased in the registry, or, for an export without customer_id, when its
    e-mail or phone hashes (with the tombstone key) to a tombstone: both are known from the warehouse alone, so
    this can be finished by a later run."""
    if not sql.value(f"select count(*) from {FILE_REWRITES.name} where target = 'exports'"):
        return 0
    erased_ids = [c for (c,) in sql.rows(f"select customer_id from {ID_REGISTRY.name} where status = 'erased'")]
    hashes = tombstone_hashes(sql)
    with file_sql() as files:
        rewritten = _rewrite_exports(files, config, key, erased_ids, hashes)
    sql.execute(f"delete from {FILE_REWRITES.name} where target = 'exports'")
    return rewritten


def _rewrite_exports(files: Sql, config: CDPConfig, key: bytes, erased_ids: list[str], hashes: set[str]) -> int:
    """Rewrite, through `files` (file_sql), each export file with a row of an erased customer id or of an
    e-mail or phone whose keyed hash is among the tombstones' `hashes`; returns how many were rewritten."""
    rewritten = 0
    for destination in config.destinations:
        if not isinstance(destination, FileDestinationConfig):
            continue
        for path in export_files(config, destination):
            reader = export_reader(destination, path)
            matches = []
            if "customer_id" in destination.fields:
                matches.append(f"customer_id::varchar in (select unnest({literal_list(erased_ids)}))")
            else:
                for kind in ("email", "phone"):
                    if kind in destination.fields:
                        values = [v for (v,) in files.rows(f"select distinct {kind}::varchar from {reader}") if v]
                        normaliser = NORMALISERS[kind]
                        hit = [
                            v for v in values if (m := normaliser.match_key(v)) and keyed_hash(key, kind, m) in hashes
                        ]
                        matches.append(f"{kind}::varchar in (select unnest({literal_list(hit)}))")
            if not matches:
                continue
            erased = f"coalesce({' or '.join(matches)}, false)"
            if not files.value(f"select count(*) from {reader} where {erased}"):
                continue
            replace_atomically(
                path,
                lambda staging, reader=reader, erased=erased, destination=destination: write_export(
                    files, f"select * from {reader} where not ({erased})", staging, destination
                ),
            )
            rewritten += 1
    return rewritten


def literal_list(values: Sequence[str]) -> str:
    """A SQL list literal of text values (names and ids, quoted by sql_literal)."""
    return "[" + ", ".join(sql_literal(v) for v in values) + "]::varchar[]"
