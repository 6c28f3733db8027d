"""The platform's Dagster definitions, built from the configuration file.

`defs` is what `dagster dev -w workspace.yaml` and `dagster job execute -m cdp_assets.definitions` load.
The configuration is validated here, so an invalid file fails at load time with the key named.
"""

import dagster as dg

from cdp_assets.clean.assets import build_clean_assets
from cdp_assets.clean.checks import person_records_expectations
from cdp_assets.extract.assets import build_extract_asset
from cdp_assets.identity.assets import build_identity_asset
from cdp_assets.profiles.assets import build_profiles_asset
from cdp_assets.segments.assets import build_segments_asset
from cdp_assets.snapshot.assets import build_read_snapshot_asset
from cdp_assets.syncs.assets import build_row_sync_asset, build_sync_asset
from resources.config import CDPConfig, load_config
from resources.warehouse import warehouse_resource
from sensors.automation import automation_sensor
from sensors.landing import build_landing_sensor

FULL_REFRESH = "full_refresh"


def build_definitions(config: CDPConfig) -> dg.Definitions:
    """Every stage as assets, the read snapshot, the full-refresh job, the sensors and the warehouse."""
    assets: list[dg.AssetsDefinition] = [build_extract_asset(config, s) for s in config.sources]
    assets += build_clean_assets(config)
    assets += [build_identity_asset(config), build_profiles_asset(config), build_segments_asset(config)]
    # Every stage so far writes a public table (extracts and cleaning feed cdp.quarantine); syncs do not.
    assets.append(build_read_snapshot_asset(config, [key for a in assets for key in a.keys]))
    assets += [
        build_sync_asset(config, d) if d.type == "file" else build_row_sync_asset(config, d)
        for d in config.destinations
    ]
    full_refresh = dg.define_asset_job(
        FULL_REFRESH,
        selection=dg.AssetSelection.all(),
        description="Loads new landing files and rebuilds every stage, from extracts to destination syncs.",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=[person_records_expectations],
        jobs=[full_refresh],
        sensors=[build_landing_sensor(config), automation_sensor],
        resources={"warehouse": warehouse_resource(config)},
        # DuckDB takes one writer per file: steps run one after another inside the run's process.
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_config())
