"""Erasure on disk outside the warehouse: landing files and file exports rewritten without the person's rows.

Every rewrite goes to a hidden temporary file in the same folder (the landing sensor and the extract skip
names starting with a dot), is flushed, and is renamed over the original: a reader sees the old file or
the new one, never half of one. A rewritten landing file's hash is recorded as loaded, so the extract does
not load it again; its remaining rows keep the line numbers they were loaded with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cdp_assets.extract.assets import file_sha256
from cdp_assets.privacy.erasure import ErasureBatch
from resources.config import CDPConfig, FileDestinationConfig
from resources.sql import Sql
from resources.tables import LOADED_FILES
from resources.warehouse import sql_literal


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary_path)`, flush it, keep the original's permissions and rename it over `path`."""
    staging = path.with_name(f".{path.name}.rewrite")
    staging.unlink(missing_ok=True)
    try:
        write(staging)
        fd = os.open(staging, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(staging, path.stat().st_mode & 0o777)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def kept_lines(lines: Sequence[bytes], erased: Sequence[int], known: Sequence[int]) -> list[bytes]:
    """The file's lines without the erased records: a record runs from its first line (its row number, the
    header being line 1) up to the line before the next record the warehouse knows of, so a quoted value
    spanning lines goes with its record."""
    starts = sorted(set(known) | set(erased))
    doomed: set[int] = set()
    for start in erased:
        following = [n for n in starts if n > start]
        end = following[0] if following else len(lines) + 1
        doomed.update(range(start, end))
    return [line for number, line in enumerate(lines, start=1) if number not in doomed]


def rewrite_landing_files(sql: Sql, config: CDPConfig, batch: ErasureBatch) -> int:
    """Rewrite each landing file that held an erased row; returns how many files were rewritten."""
    sources = {s.name: s for s in config.sources}
    rewritten = 0
    for (source_name, file), erased in sorted(batch.erased_lines.items()):
        source = sources.get(source_name)
        path = config.landing_path / file
        if source is None or not path.is_file():
            continue
        known = batch.known_lines.get((source_name, file), [])
        if source.format == "parquet":
            numbers = ", ".join(str(n) for n in erased)
            replace_atomically(
                path,
                lambda staging, path=path, numbers=numbers: sql.execute(
                    f"copy (select * exclude (file_row_number) from read_parquet({sql_literal(str(path))}, "
                    f"file_row_number = true) where file_row_number + 1 not in ({numbers})) "
                    f"to {sql_literal(str(staging))} (format parquet)"
                ),
            )
        else:
            lines = path.read_bytes().splitlines(keepends=True)
            kept = b"".join(kept_lines(lines, erased, known))
            replace_atomically(path, lambda staging, kept=kept: staging.write_bytes(kept))
        sql.execute(
            f"update {LOADED_FILES.name} set sha256 = ?, size_bytes = ? where source = ? and file = ?",
            [file_sha256(path), path.stat().st_size, source_name, file],
        )
        rewritten += 1
    return rewritten


def export_files(config: CDPConfig, destination: FileDestinationConfig) -> list[Path]:
    """Every file the destination has written (the current one and all earlier ones)."""
    folder = config.resolve(destination.path) / destination.name
    return sorted(p for p in folder.glob(f"*.{destination.format}") if not p.name.startswith("."))


def rewrite_exports(sql: Sql, config: CDPConfig, batch: ErasureBatch) -> int:
    """Rewrite each export file holding an erased customer (by customer_id, else by e-mail or phone)."""
    rewritten = 0
    for destination in config.destinations:
        if not isinstance(destination, FileDestinationConfig):
            continue
        matches = []
        if "customer_id" in destination.fields and batch.customer_ids:
            matches.append(f"customer_id::varchar in (select unnest({_list(batch.customer_ids)}))")
        for kind in ("email", "phone"):
            if kind in destination.fields and batch.contact_values.get(kind):
                matches.append(f"{kind}::varchar in (select unnest({_list(batch.contact_values[kind])}))")
        if not matches:
            continue
        erased = f"coalesce({' or '.join(matches)}, false)"
        for path in export_files(config, destination):
            if destination.format == "csv":
                reader = f"read_csv({sql_literal(str(path))}, header = true, all_varchar = true)"
                options = "format csv, header true"
            else:
                reader = f"read_parquet({sql_literal(str(path))})"
                options = "format parquet"
            if not sql.value(f"select count(*) from {reader} where {erased}"):
                continue
            replace_atomically(
                path,
                lambda staging, reader=reader, options=options, erased=erased: sql.execute(
                    f"copy (select * from {reader} where not ({erased})) to {sql_literal(str(staging))} ({options})"
                ),
            )
            rewritten += 1
    return rewritten


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_literal(v) for v in values) + "]::varchar[]"
