"""Great Expectations suite on the cleaned person records, blocking identity resolution when it fails.

The cleaning rules should make these expectations hold by construction; the suite is the independent
guard that catches a rule regression or an unexpected source before bad values reach profiles and
destinations.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg

from cdp_assets.clean.assets import EXPECTATIONS_SUITE, PERSON_RECORDS
from cdp_assets.metadata import markdown_table, mask, redact_errors
from resources.quality import import_great_expectations, validate_frame, validation_frame
from resources.warehouse import Warehouse

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


@dg.asset_check(
    asset=PERSON_RECORDS,
    name=EXPECTATIONS_SUITE.name,
    blocking=True,
    description="Great Expectations: ids present and unique per row, e-mails, E.164 phones, countries, birth years.",
)
@redact_errors
def person_records_expectations(warehouse: Warehouse) -> dg.AssetCheckResult:
    # Great Expectations' import (seconds of Python) runs while DuckDB reads the rows, which it does
    # without holding the GIL; in a run that cleaned the records first, it began then (`suite_follows`).
    with ThreadPoolExecutor(max_workers=1) as pool:
        imported = pool.submit(import_great_expectations)
        with warehouse.sql() as sql:
            # Numbers as int64 and float64 (a birth year may be missing): the types Great Expectations
            # compares vectorised (validation_frame).
            frame = validation_frame(
                sql.arrow(
                    """select source, source_record_id, file, row_number, email, email_match_key, phone, country,
                              year(date_of_birth)::double as birth_year, trust::bigint as trust
                       from clean.person_records"""
                )
            )
        imported.result()
    outcomes = validate_frame("cleaned_person_records", frame, _expectations())
    failed = [o for o in outcomes if not o.success]
    evaluated = len(outcomes)
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={
            "rows_validated": len(frame),
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
