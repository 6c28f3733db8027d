"""Great Expectations suite on the cleaned person records, blocking identity resolution when it fails.

The cleaning rules should make these expectations hold by construction; the suite is the independent
guard that catches a rule regression or an unexpected source before bad values reach profiles and
destinations.

Every row is validated, but on DuckDB a row only once while it stays as it was: each expectation reads one
row, or (the unique key) the rows of one file, since the key holds the file. So a file whose rows passed
passes again until they change, and the suite keeps, per file that passed, its rows and a digest of the
columns it reads (`meta.expectations_validated_files`, under a fingerprint of the suite). A run validates
the files that are new, changed or failed last time: a delta's new file, not the million rows before it.
A file that failed is never kept, so its failure and its examples show again on every run until it is
mended.
"""

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg
import pyarrow as pa

from cdp_assets.clean.assets import EXPECTATIONS_SUITE, PERSON_RECORDS
from cdp_assets.metadata import markdown_table, mask, redact_errors
from resources.config import CDPConfig
from resources.quality import ExpectationOutcome, import_great_expectations, validate_frame, validation_frame
from resources.sql import Sql, portable_hash
from resources.tables import VALIDATED_FILES
from resources.warehouse import Warehouse, sql_literal

# The patterns mean the same to Python's `re` and to RE2, which runs them (resources/quality.py): Python's
# `\s` (every character `str.isspace` calls whitespace) spelled out, and `\n?$` for the final line break
# Python's `$` lets through.
WHITESPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
E164 = r"^\+[1-9][0-9]{6,14}\n?$"
EMAIL = rf"^[^@{WHITESPACE}]+@[^@{WHITESPACE}]+\.[a-z]{{2,63}}\n?$"
COUNTRY = r"^[A-Z]{2}\n?$"


def _expectations() -> list[object]:
    x = import_great_expectations().expectations
    return [
        x.ExpectColumnValuesToNotBeNull(column="source"),
        x.ExpectColumnValuesToNotBeNull(column="source_record_id"),
        x.ExpectCompoundColumnsToBeUnique(column_list=["source", "file", "row_number"]),
        x.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL),
        x.ExpectColumnValuesToMatchRegex(column="email_match_key", regex=EMAIL),
        x.ExpectColumnValuesToMatchRegex(column="phone", regex=E164),
        x.ExpectColumnValuesToMatchRegex(column="country", regex=COUNTRY),
        x.ExpectColumnValuesToBeBetween(column="birth_year", min_value=1900, max_value=date.today().year),
        x.ExpectColumnValuesToBeBetween(column="trust", min_value=0, max_value=100),
    ]


# The rows the suite validates, with numbers as int64 and float64 (a birth year may be missing): the types
# Great Expectations compares vectorised (validation_frame).
_VALIDATED = """select source, source_record_id, file, row_number, email, email_match_key, phone, country,
                       year(date_of_birth)::double as birth_year, trust::bigint as trust
                from clean.person_records"""
_VALIDATED_COLUMNS = (
    *("source", "source_record_id", "file", "row_number", "email", "email_match_key", "phone", "country"),
    *("birth_year", "trust"),
)
_TYPES = {"row_number": pa.int64(), "birth_year": pa.float64(), "trust": pa.int64()}
# On Spark, the rows each executor task validates at once: a bucket of them by a hash of the key the
# uniqueness expectation reads, so that every repeat of a key is in one bucket.
_BUCKET_ROWS = 1_000_000
_OUTCOME_COLUMNS = ("position", "expectation", "column_name", "success", "unexpected_count", "examples")


def build_expectations_check(config: CDPConfig) -> dg.AssetChecksDefinition:
    """The suite's check on `clean.person_records`, validating every row where the engine holds them."""

    @dg.asset_check(
        asset=PERSON_RECORDS,
        name=EXPECTATIONS_SUITE.name,
        blocking=True,
        description=(
            "Great Expectations: ids present and unique per row, e-mails, E.164 phones, countries, birth years."
        ),
    )
    @redact_errors
    def person_records_expectations(warehouse: Warehouse) -> dg.AssetCheckResult:
        if config.warehouse.engine == "spark":
            # Every row of every file, every run: the metadata says so in the keys DuckDB's run fills, so
            # the check's plots read the same on both engines.
            with warehouse.sql() as sql:
                rows, files = sql.row(
                    "select count(*), count(distinct coalesce(source, '') || '/' || coalesce(file, '')) "
                    "from clean.person_records"
                ) or (0, 0)
                outcomes = _validated_on_executors(sql, int(rows))
            return _result(int(rows), outcomes, {"rows": int(rows), "files": int(files), "files_unchanged": 0})
        rows, outcomes, this_run = _validated_here(warehouse)
        return _result(rows, outcomes, this_run)

    return person_records_expectations


# The digest of a row as the suite reads it (the columns of `_VALIDATED`, before their casts).
_DIGEST_COLUMNS = "source_record_id, row_number, email, email_match_key, phone, country, date_of_birth, trust"
# A file of person records named with its source, either of which may be missing from a bad row.
_SAME_FILE = "{a}.source is not distinct from {b}.source and {a}.file is not distinct from {b}.file"


def _suite_fingerprint() -> str:
    """What the suite is: its expectations as configured (patterns, bounds, this year's included), what it
    reads and Great Expectations' version. Any change validates every file again."""
    gx = import_great_expectations()
    text = "\n".join([_VALIDATED, gx.__version__, *(repr(e) for e in _expectations())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _validated_here(warehouse: Warehouse) -> tuple[int, list[ExpectationOutcome], dict[str, int]]:
    """The rows of the files not validated as they are now (see the module's docstring) read into this
    process as one frame and validated at once. Returns the rows of the table, the outcomes and what this
    run validated (`files`, `rows`) and found as validated before (`files_unchanged`)."""
    # Great Expectations' import (seconds of Python) runs while DuckDB digests the files, which it does
    # without holding the GIL; in a run that cleaned the records first, it began then (`suite_follows`).
    # The frame is validated and let go inside the connection's block: its closing hands the frame's
    # memory back (`release_freed_memory`), where a frame still held would keep it under the next step.
    with ThreadPoolExecutor(max_workers=1) as pool:
        imported = pool.submit(import_great_expectations)
        with warehouse.sql() as sql, sql.scratch("expectations") as tables:
            sql.execute(VALIDATED_FILES.create_sql())
            files, unchecked = tables("files"), tables("unchecked")
            sql.create_table_as(
                files,
                f"""select source, file, count(*) as rows, sum(hash({_DIGEST_COLUMNS})) as digest
                    from clean.person_records group by all""",
                temporary=True,
            )
            imported.result()
            suite = _suite_fingerprint()
            sql.create_table_as(
                unchecked,
                f"""select n.source, n.file from {files} n where not exists (
                        select 1 from {VALIDATED_FILES.name} k
                        where {_SAME_FILE.format(a="k", b="n")} and k.rows = n.rows and k.digest = n.digest
                          and k.suite = ?)""",
                [suite],
                temporary=True,
            )
            frame = validation_frame(
                sql.arrow(
                    f"select * from ({_VALIDATED}) v semi join {unchecked} u on {_SAME_FILE.format(a='u', b='v')}"
                )
            )
            outcomes = validate_frame("cleaned_person_records", frame, _expectations())
            this_run = {"rows": len(frame), "files": int(sql.value(f"select count(*) from {unchecked}"))}
            del frame
            # The files that passed, as they are now: all of them when this run's passed, else those it
            # found validated before.
            passed = f"select * from {files}" + (
                ""
                if all(o.success for o in outcomes)
                else f" n where not exists (select 1 from {unchecked} u where {_SAME_FILE.format(a='u', b='n')})"
            )
            VALIDATED_FILES.replace(
                sql, f"select source, file, rows, digest, {sql_literal(suite)} as suite from ({passed})"
            )
            rows, total_files = sql.row(f"select coalesce(sum(rows), 0), count(*) from {files}") or (0, 0)
    this_run["files_unchanged"] = int(total_files) - this_run["files"]
    return int(rows), outcomes, this_run


def _validated_on_executors(sql: Sql, rows: int) -> list[ExpectationOutcome]:
    """Every row validated on Spark's executors, bucket by bucket (`validate_bucket`), no row reaching the
    driver: an expectation holds if it holds in every bucket, its unexpected values are counted over all
    of them, and its examples are the first in bucket order."""
    buckets = max(1, -(-rows // _BUCKET_ROWS))
    keyed = f"select {portable_hash('source', 'file', 'row_number')} % {buckets} as bucket, * from ({_VALIDATED})"
    with sql.scratch("expectations") as tables:
        per_bucket = tables("per_bucket")
        sql.map_groups(per_bucket, keyed, ["bucket"], validate_bucket, ("bucket", *_OUTCOME_COLUMNS))
        found = sql.rows(f"select {', '.join(_OUTCOME_COLUMNS)}, bucket from {per_bucket}")
    if not found:  # no rows at all: the suite on an empty frame, as on DuckDB
        return validate_frame("cleaned_person_records", validation_frame(_typed([])), _expectations())
    combined: dict[int, ExpectationOutcome] = {}
    for position, expectation, column, success, count, examples, _ in sorted(
        found, key=lambda row: (int(row[0]), int(row[6]))
    ):
        before = combined.get(int(position))
        combined[int(position)] = ExpectationOutcome(
            expectation=expectation,
            column=column,
            success=success == "true" and (before is None or before.success),
            unexpected_count=int(count) + (before.unexpected_count if before else 0),
            unexpected_examples=((before.unexpected_examples if before else []) + json.loads(examples))[:5],
        )
    return [combined[position] for position in sorted(combined)]


def _typed(rows: list[tuple]) -> pa.Table:
    """Rows of `_VALIDATED`'s columns as text (what `map_groups` hands over) in the types DuckDB reads them."""
    arrays = {}
    for index, name in enumerate(_VALIDATED_COLUMNS):
        values = [row[index] for row in rows]
        kind = _TYPES.get(name, pa.string())
        if kind == pa.float64():
            values = [None if v is None else float(v) for v in values]
        elif kind == pa.int64():
            values = [None if v is None else int(v) for v in values]
        arrays[name] = pa.array(values, kind)
    return pa.table(arrays)


def validate_bucket(rows: list[tuple]) -> list[tuple]:
    """The suite's outcomes on one bucket of the person records (`map_groups` rows: the bucket, then
    `_VALIDATED`'s columns as text), one row per expectation: run on Spark's executors."""
    bucket = rows[0][0]
    frame = validation_frame(_typed([row[1:] for row in rows]))
    outcomes = validate_frame("cleaned_person_records", frame, _expectations())
    return [
        (
            bucket,
            str(position),
            o.expectation,
            o.column,
            "true" if o.success else "false",
            str(o.unexpected_count),
            json.dumps(o.unexpected_examples),
        )
        for position, o in enumerate(outcomes)
    ]


def _result(
    rows: int, outcomes: list[ExpectationOutcome], this_run: dict[str, int] | None = None
) -> dg.AssetCheckResult:
    failed = [o for o in outcomes if not o.success]
    evaluated = len(outcomes)
    # Where files validated before were not read again: how many, and what this run read.
    kept = (
        {
            "rows_validated_this_run": this_run["rows"],
            "files_validated_this_run": this_run["files"],
            "files_unchanged_since_validated": this_run["files_unchanged"],
        }
        if this_run is not None
        else {}
    )
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={
            "rows_validated": rows,
            **kept,
            "expectations": evaluated,
            "expectations_failed": len(failed),
            "success_percent": dg.MetadataValue.float(
                100.0 * (evaluated - len(failed)) / evaluated if evaluated else 100.0
            ),
            "results": dg.MetadataValue.md(
                markdown_table(
                    [
                        {
                            "expectation": o.expectation,
                            "column": o.column or "",
                            "success": o.success,
                            "unexpected": o.unexpected_count,
                            "examples": ", ".join(mask(v) for v in o.unexpected_examples),
                        }
                        for o in outcomes
                    ]
                )
            ),
        },
    )
