"""Great Expectations, run inside Dagster asset checks on an ephemeral context.

Great Expectations is imported lazily (the import costs seconds), with its analytics and progress bars
off: a data-quality check must not phone home or fill the run log with progress bars. A step whose
check follows it in the same run process may start the import in the background
(`start_importing_great_expectations`), so it overlaps the step's own work instead of adding to the check.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    unexpected_examples: list[Any]


@contextmanager
def _spark_hidden() -> Iterator[None]:
    """Great Expectations' import loads pyspark whenever it is installed (the Spark engine's extra), a
    third of the import's time, for Spark data sources; a pandas frame never needs them. While it imports,
    pyspark reads as not installed, unless something already loaded it (then it costs nothing)."""
    if "pyspark" in sys.modules:
        yield
        return
    sys.modules["pyspark"] = None  # type: ignore[assignment] # import pyspark raises ImportError meanwhile
    try:
        yield
    finally:
        if sys.modules.get("pyspark", ...) is None:
            del sys.modules["pyspark"]


# One import at a time: `_spark_hidden` swaps a module entry that two concurrent imports would restore wrongly.
_IMPORT_LOCK = threading.Lock()


def import_great_expectations() -> Any:
    """The `great_expectations` package, imported on first use (see `_spark_hidden`); when a background
    import is under way, its result once it is done."""
    with _IMPORT_LOCK:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        with _spark_hidden():
            import great_expectations

    return great_expectations


def _import_quietly() -> None:
    # A failed import is left for the check to raise: it imports again and reports the error.
    with suppress(Exception):
        import_great_expectations()


def start_importing_great_expectations() -> None:
    """Import Great Expectations in a background thread of this process, for a check that will run later in
    it: the import is seconds of Python, and a step that spends those seconds in DuckDB (which releases the
    GIL) hides them. Does nothing once the package is loaded. While it imports, pyspark reads as not
    installed to the whole process (`_spark_hidden`): a step working with Spark must not start it."""
    if "great_expectations" not in sys.modules:
        threading.Thread(target=_import_quietly, name="import-great-expectations", daemon=True).start()


def _columns_read(expectation: Any) -> tuple[str, ...]:
    """The columns an expectation reads: its `column`, `column_list` or `column_A`/`column_B`; none for a
    table-level one."""
    if getattr(expectation, "column_list", None):
        return tuple(expectation.column_list)
    pair = tuple(getattr(expectation, a) for a in ("column_A", "column_B") if getattr(expectation, a, None))
    if pair:
        return pair
    column = getattr(expectation, "column", None)
    return (column,) if column else ()


def validate_frame(name: str, frame: pd.DataFrame, expectations: list[Any]) -> list[ExpectationOutcome]:
    """Validate a DataFrame against a list of Great Expectations expectation objects, every row.

    Each expectation is validated on the columns it reads alone: Great Expectations' pandas engine copies
    the rows of the whole batch for every metric it computes, so on a million rows a ten-column batch
    costs several times what ten one-column batches do. The batch fingerprint (an md5 over every value,
    computed twice per batch, a third of the time at a million rows) is turned off: nothing here reads it.
    Text is validated as pandas' Arrow-backed `str` (`future.infer_string`), so a regex expectation runs
    in RE2 over the whole column instead of Python's `re` value by value; its pattern must mean the same
    to both (see cdp_assets/clean/checks.py).
    """
    gx = import_great_expectations()
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
    from great_expectations.data_context.types.base import ProgressBarsConfig

    pandas_engine.HASH_THRESHOLD = 0  # frames at least this large in memory are not fingerprinted
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # One whole-dataframe batch definition serves every part (the frame is a batch parameter): each asset,
    # batch definition or suite added to the context writes its configuration out again.
    batch_definition = (
        context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    )
    groups: dict[tuple[str, ...], list[Any]] = {}
    for expectation in expectations:
        groups.setdefault(_columns_read(expectation), []).append(expectation)
    outcomes: list[tuple[int, ExpectationOutcome]] = []
    position = {id(e): i for i, e in enumerate(expectations)}
    for index, (columns, members) in enumerate(groups.items()):
        suite = gx.ExpectationSuite(name=f"{name}_{index}", expectations=members)
        data = frame[list(columns)] if columns else frame
        with pd.option_context("future.infer_string", True):
            # BASIC: the unexpected count and examples, without the unexpected rows' index list and counts
            # by value (SUMMARY's), which cost a pass over the rows each.
            result = batch_definition.get_batch(batch_parameters={"dataframe": data}).validate(
                suite, result_format="BASIC"
            )
        # Results come in the suite's order, which is the order the members were added in.
        for expectation, item in zip(members, result.results, strict=True):
            config = item.expectation_config
            details = item.result or {}
            outcomes.append(
                (
                    position[id(expectation)],
                    ExpectationOutcome(
                        expectation=config.type,
                        column=config.kwargs.get("column"),
                        success=bool(item.success),
                        unexpected_count=int(details.get("unexpected_count") or 0),
                        unexpected_examples=[str(v) for v in (details.get("partial_unexpected_list") or [])[:5]],
                    ),
                )
            )
    return [outcome for _, outcome in sorted(outcomes, key=lambda pair: pair[0])]


def validation_frame(table: pa.Table) -> pd.DataFrame:
    """A frame for validate_frame: text as Arrow strings (pandas tests them for nulls and patterns without
    a Python object per value), numbers as NumPy (Great Expectations compares only NumPy int64 and float64
    columns vectorised, any other type one value at a time in Python).

    The text is pandas' own `str` type (Arrow-backed), not an `ArrowDtype`: the regex expectation casts
    its column to `str` first, which for an `ArrowDtype` column goes through a Python object per value."""

    def strings(arrow_type: pa.DataType) -> pd.StringDtype | None:
        text = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        return pd.StringDtype("pyarrow", na_value=np.nan) if text else None

    return table.to_pandas(types_mapper=strings)
