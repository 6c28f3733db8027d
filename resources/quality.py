"""Great Expectations, run inside Dagster asset checks on an ephemeral context.

Great Expectations is imported lazily (the import costs seconds), with its analytics and progress bars
off: a data-quality check must not phone home or fill the run log with progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    unexpected_examples: list[Any]


def validate_frame(name: str, frame: pd.DataFrame, expectations: list[Any]) -> list[ExpectationOutcome]:
    """Validate a DataFrame against a list of Great Expectations expectation objects."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        details = item.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=config.kwargs.get("column"),
                success=bool(item.success),
                unexpected_count=int(details.get("unexpected_count") or 0),
                unexpected_examples=[str(v) for v in (details.get("partial_unexpected_list") or [])[:5]],
            )
        )
    return outcomes
