"""API source polls: one asset per http source, landing the API's new and changed records as files.

The poll writes only to the landing folder (never the warehouse), so it runs on its own schedule beside
the pipeline's runs; the landing sensor then starts the source's extract like for any dropped file.
"""

import dagster as dg

from cdp_assets.metadata import markdown_table
from resources.api_source import CURSOR_FILE, PollError, poll_source, source_folder
from resources.config import CDPConfig, SourceConfig
from resources.config.base import MissingSecretError, shown_url
from resources.landing import poll_key

GROUP = "api_polls"


def build_poll_asset(cdp_config: CDPConfig, source: SourceConfig) -> dg.AssetsDefinition:
    """The poll asset of one http source."""
    http = source.http
    assert http is not None
    folder = source_folder(cdp_config.landing_path, source)

    @dg.asset(
        key=poll_key(source),
        group_name=GROUP,
        description=(
            f"Pages of API source '{source.name}' ({shown_url(http.url)}) landed as JSON lines in {folder}, "
            f"{'only what changed since the last poll' if http.incremental else 'everything on every poll'}."
        ),
        kinds={"api"},
        tags={"cdp/role": source.role},
        metadata={
            "url": dg.MetadataValue.url(shown_url(http.url)),
            "pagination": http.pagination.style,
            "incremental_field": http.incremental.field if http.incremental else "none",
            "schedule": http.schedule or "none",
            "landing_folder": dg.MetadataValue.path(str(folder)),
            "cursor_file": dg.MetadataValue.path(str(folder / CURSOR_FILE)),
        },
    )
    def poll(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # The messages name the source, the URL and the HTTP status, never a response body: nothing of a
        # customer's reaches Dagster's storage, so they are passed on as they are.
        try:
            report = poll_source(source, cdp_config.landing_path, log=context.log.info)
        except (PollError, MissingSecretError) as exc:
            raise dg.Failure(description=str(exc)) from None
        context.log.info(
            f"{source.name}: {report.records} records in {report.pages} pages, {len(report.files)} file(s) landed; "
            f"cursor {report.cursor_before} -> {report.cursor_after}"
        )
        if http.incremental is not None and report.records and report.without_cursor_value == report.records:
            # Most likely a misspelt path: every poll would land the whole listing again, events twice over.
            context.log.warning(
                f"{source.name}: none of the {report.records} records landed has a usable value at "
                f"incremental.field '{http.incremental.field}' (an ISO time or a number), so the cursor did not "
                "move and the next poll fetches them all again; check the field's path"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(report.records),
                "pages": report.pages,
                "requests": report.requests,
                "retries": report.retries,
                "seconds_waited": dg.MetadataValue.float(round(report.waited_seconds, 3)),
                "records_already_landed": report.skipped_unchanged,
                "records_repeated_in_poll": report.skipped_repeated,
                "records_without_cursor_value": report.without_cursor_value,
                "cursor_before": str(report.cursor_before),
                "cursor_after": str(report.cursor_after),
                "files": dg.MetadataValue.md(
                    markdown_table([{"file": f} for f in report.files]) if report.files else "_nothing new_"
                ),
            }
        )

    return poll
