"""The platform's Dagster definitions, built from the configuration file.

`defs` is what `dagster dev -w workspace.yaml` and `dagster job execute -m cdp_assets.definitions` load.
The configuration is validated here, so an invalid file fails at load time with the key named.

Each stage module says what its assets compute (keys, dependencies, checks, its own `code_version`, the
tables it writes); the platform's policy for every asset (who owns it, what starts it, the warehouse
kind, links to its code) is applied here, once, by `apply_platform_policy`.
"""

import sys
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import cast

import dagster as dg

from cdp_assets.clean.assets import build_clean_assets
from cdp_assets.clean.checks import build_expectations_check
from cdp_assets.consistency.checks import build_rebuild_check
from cdp_assets.extract.api import GROUP as POLL_GROUP
from cdp_assets.extract.api import build_poll_asset
from cdp_assets.extract.assets import GROUP as EXTRACT_GROUP
from cdp_assets.extract.assets import build_extract_asset
from cdp_assets.identity.assets import IDENTITY_CLUSTERS, build_identity_asset
from cdp_assets.identity.preview import build_preview_job
from cdp_assets.privacy.assets import GROUP as PRIVACY_GROUP
from cdp_assets.privacy.assets import (
    PRIVACY_REQUESTS_KEY,
    build_privacy_asset,
    build_privacy_job,
    build_retention_schedule,
)
from cdp_assets.profiles.assets import build_profiles_asset
from cdp_assets.segments.assets import GROUP as SEGMENTS_GROUP
from cdp_assets.segments.assets import build_segment_assets
from cdp_assets.snapshot.assets import build_read_snapshot_asset
from cdp_assets.syncs.assets import GROUP as SYNCS_GROUP
from cdp_assets.syncs.assets import build_row_sync_asset, build_sync_asset
from resources.config import CDPConfig, ConfigError, load_config
from resources.config.refresh import RETRAIN_TAG
from resources.landing import api_sources
from resources.spark.warehouse import spark_warehouse_resource
from resources.warehouse import warehouse_resource
from sensors.alerts import build_alert_sensor
from sensors.automation import build_automation_sensor
from sensors.deliveries import build_destination_retry_sensor
from sensors.freshness import build_freshness_checks, build_freshness_sensor
from sensors.landing import build_landing_sensor
from sensors.overrides import build_overrides_sensor
from sensors.privacy import build_privacy_requests_sensor
from sensors.schedules import (
    REBUILD_CHECK_JOB,
    RETRAIN_JOB,
    build_model_retraining_schedule,
    build_poll_jobs_and_schedules,
    build_rebuild_check_schedule,
    build_time_windows_schedule,
)

FULL_REFRESH = "full_refresh"

# Who answers for an asset, by stage: marketing operations for the audiences and what is sent where,
# data engineering for everything that makes the profiles and for the read snapshot.
DEFAULT_OWNERS = ["team:data-engineering"]
OWNERS: dict[str, list[str]] = {SEGMENTS_GROUP: ["team:marketing-ops"], SYNCS_GROUP: ["team:marketing-ops"]}
# Stages nothing upstream starts: the landing sensor starts an extract when its files change, the privacy
# requests sensor (or a user, from the Launchpad) the privacy requests. Every other stage follows its inputs
# (eager), so a new file flows through to the syncs.
STARTED_BY_SENSOR = frozenset({EXTRACT_GROUP, PRIVACY_GROUP})
# API source polls run on their own schedules and write only to the landing folder, never the warehouse.
STARTED_BY_SCHEDULE = frozenset({POLL_GROUP})
# Every other asset reads or writes the DuckDB warehouse; a stage adds its own kinds (file format, scipy, api).
WAREHOUSE_KIND = "duckdb"


def apply_platform_policy(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every asset with the platform's owners, automation condition, warehouse kind and code references.

    Applied here rather than in each stage module so a change of policy (another team, a freshness rule, a
    cron for syncs) is one edit, and a new stage cannot forget it.
    """

    def policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        scheduled = spec.group_name in STARTED_BY_SCHEDULE
        started_elsewhere = scheduled or spec.group_name in STARTED_BY_SENSOR
        with_policy = spec.replace_attributes(
            owners=OWNERS.get(spec.group_name or "", DEFAULT_OWNERS),
            automation_condition=None if started_elsewhere else dg.AutomationCondition.eager(),
        )
        return with_policy if scheduled else with_policy.merge_attributes(kinds={WAREHOUSE_KIND})

    # Both return what they were given, asset definitions in, asset definitions out.
    with_policy = cast(list[dg.AssetsDefinition], dg.map_asset_specs(policy, assets))
    with warnings.catch_warnings():
        # Code references are marked beta; one warning per asset at every load says nothing actionable.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return cast(list[dg.AssetsDefinition], dg.with_source_code_references(with_policy))


def build_definitions(config: CDPConfig) -> dg.Definitions:
    """Every stage as assets, the read snapshot, privacy requests, the full-refresh, identity change preview,
    retraining, rebuild-check and privacy jobs, the sensors (landing, overrides, privacy requests, automation,
    run-failure alerts, source freshness, destination retries), the time-windows, retraining, rebuild-check and
    retention schedules, the API sources' polls with their schedules, and the warehouse."""
    assets: list[dg.AssetsDefinition] = [build_extract_asset(config, s) for s in config.sources]
    assets += build_clean_assets(config)
    assets += [build_identity_asset(config), build_profiles_asset(config), *build_segment_assets(config)]
    # Every stage so far writes a public table (extracts and cleaning feed cdp.quarantine); syncs do not.
    assets.append(build_read_snapshot_asset(config, [key for a in assets for key in a.keys]))
    assets += [build_poll_asset(config, s) for s in api_sources(config)]
    assets += [
        build_sync_asset(config, d) if d.type == "file" else build_row_sync_asset(config, d)
        for d in config.destinations
    ]
    assets.append(build_privacy_asset(config))
    privacy_job = build_privacy_job()
    # Polling an API is collection, on each source's schedule, and the refresh loads what has landed; privacy
    # requests run in their own job. The rebuild check costs a refresh of its own: it runs in its job, on its
    # schedule or by hand. A source's freshness is judged by its sensor against the clock, not by a run.
    freshness = build_freshness_checks(config)
    rebuild_check = build_rebuild_check(config)
    full_refresh = dg.define_asset_job(
        FULL_REFRESH,
        selection=dg.AssetSelection.all()
        - dg.AssetSelection.groups(POLL_GROUP)
        - dg.AssetSelection.assets(PRIVACY_REQUESTS_KEY)
        - dg.AssetSelection.checks(rebuild_check, *freshness),
        description="Loads new landing files and rebuilds every stage, from extracts to destination syncs.",
    )
    rebuild = dg.define_asset_job(
        REBUILD_CHECK_JOB,
        selection=dg.AssetSelection.checks(rebuild_check),
        description="Checks that a rebuild from the raw rows gives the customers, ids, profiles and members there are.",
    )
    # Identity re-resolved with its matching model trained afresh on all the data, and the stages downstream
    # in the same run: run headless (no daemon, so no automation), it would otherwise leave profiles naming
    # ids the identity map no longer has. Launched by the model retraining schedule, or by hand.
    retrain = dg.define_asset_job(
        RETRAIN_JOB,
        selection=dg.AssetSelection.assets(IDENTITY_CLUSTERS).downstream()
        - dg.AssetSelection.checks(rebuild_check, *freshness),
        tags={RETRAIN_TAG: "true"},
        description="Trains the matching model afresh, re-resolves identity and refreshes the stages downstream.",
    )
    sensors = [
        build_landing_sensor(config),
        build_overrides_sensor(config),
        build_privacy_requests_sensor(config),
        build_automation_sensor(config),
    ]
    sensors.append(build_alert_sensor(config))
    sensors += [s for s in (build_freshness_sensor(config), build_destination_retry_sensor(config)) if s]
    poll_jobs, poll_schedules = build_poll_jobs_and_schedules(config)
    schedules = [
        s
        for s in (
            build_time_windows_schedule(config, without=[rebuild_check]),
            build_model_retraining_schedule(config),
            build_rebuild_check_schedule(config),
            build_retention_schedule(config, privacy_job),
        )
        if s
    ]
    return dg.Definitions(
        assets=apply_platform_policy(assets),
        asset_checks=[build_expectations_check(config), *freshness, rebuild_check],
        jobs=[full_refresh, build_preview_job(config), retrain, rebuild, privacy_job, *poll_jobs],
        schedules=schedules + poll_schedules,
        sensors=sensors,
        resources={
            "warehouse": spark_warehouse_resource(config)
            if config.warehouse.engine == "spark"
            else warehouse_resource(config)
        },
        # DuckDB takes one writer per file, and a Spark session costs seconds to start: steps run one after
        # another inside the run's process, on its one connection or session.
        executor=dg.in_process_executor,
    )


def _report_config_errors_plainly() -> None:
    """Make an invalid configuration end a `dagster job execute` or `dagster asset materialize` with its
    message alone. The CLI lets the error escape to Python, which would print fifty lines of Dagster's own
    frames first and leave the line that names the file and key at the bottom. `dagster dev` catches the
    error itself and shows the message first, so only the uncaught case is changed; any other exception
    is printed as before."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if isinstance(error, ConfigError):
            print(f"ConfigError: {error}", file=sys.stderr)
        else:
            previous(kind, error, trace)

    sys.excepthook = hook


try:
    _config = load_config()
except ConfigError:
    _report_config_errors_plainly()
    raise
defs = build_definitions(_config)
