"""A refresh killed with SIGKILL at any stage of the incremental path leaves nothing the next refresh does not
complete: after it, the warehouse is what an uninterrupted refresh of the same inputs gives, a refresh with
nothing new recomputes nobody, and a rebuild from the raw rows agrees.

One platform is refreshed in full, then a delta lands (new records, later versions of known CRM contacts,
new events and orders). From the warehouse as it was before the delta, a reference refresh runs to the end;
for each kill point, the refresh runs in another process, held by the gate of tests/gated_job.py just
before a known statement, and is killed there.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from benchmarks.id_stability import _crm_updates, _hold_back, _release
from cdp_assets.consistency.checks import CHECK_NAME
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.profiles.assets import GOLDEN_PROFILES
from cdp_assets.segments.assets import segment_key
from resources.config import CDPConfig, load_config
from sensors.schedules import REBUILD_CHECK_JOB
from tests.fixtures import REPO, make_platform, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Where the refresh is killed: just before the given occurrence of a statement matching the pattern, and
# the profiles' full-recompute share of the killed run (the next one has the default).
KILL_POINTS = {
    # Cleaning wrote the new person rows, but not yet which files it cleaned.
    "clean": (r"^delete from meta\.cleaned_files", 1, 0.3),
    # Identity recorded the new customer ids in the registry and their history, but not yet the records'
    # ids and the identity map (written in the same transaction: whole, or only the changed records).
    "identity": (r"^(create table|delete from) identity\.record_ids", 1, 0.3),
    # An incremental profiles run replaced the affected profiles but did not record itself.
    "profiles": (r"^insert into meta\.profile_runs", 1, 0.3),
    # A full profiles run (the killed run's share is tiny) rebuilt the profiles but did not record itself;
    # the next run, under the default share, is incremental.
    "profiles_full": (r"^insert into meta\.profile_runs", 1, 0.001),
    # Profiles done and recorded, no segment evaluated yet.
    "after_profiles": (r"meta\.segment_evaluations", 1, 0.3),
    # The first segment done; the second advanced its members but did not record its evaluation.
    "segments": (r"^delete from meta\.segment_evaluations", 2, 0.3),
    # A destination answered a batch the sync has not yet acknowledged.
    "syncs": (r"^insert into syncs\.changelog", 1, 0.3),
}

# Each table as compared, in a fixed order, less the stamps of when a row was written or loaded.
TABLES = {
    "cdp.identity_map": "*",
    "cdp.golden_profiles": "* exclude (profile_built_at)",
    "cdp.profile_provenance": "*",
    "cdp.segment_membership": "* exclude (computed_at)",
    "cdp.segment_membership_history": "*",
    "meta.profiled_identity": "*",
    "meta.profiled_inputs": "* exclude (loaded_at)",
    "meta.profile_changes": "customer_id",
}


def _tables(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = {t: conn.execute(f"select {c} from {t} order by all").fetchall() for t, c in TABLES.items()}
        # Every segment evaluated after the latest profiles run, with the condition it has now.
        tables["segments behind the profiles"] = conn.execute(
            """select segment from meta.segment_evaluations
               where profile_run is distinct from (select max(run_seq) from meta.profile_runs) order by 1"""
        ).fetchall()
    return tables


def _config_at(folder: Path, platform_config: Path, landing: Path) -> CDPConfig:
    """The platform's configuration with its warehouse and exports under `folder`, reading `landing`."""
    folder.mkdir()
    raw = yaml.safe_load(platform_config.read_text())
    raw["landing"]["path"] = str(landing)
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def delta(tmp_path_factory, instance, destination_server) -> tuple[Path, Path, Path, dict[str, list[tuple]]]:
    """(the platform's configuration, its landing folder with the delta, its warehouse before the delta,
    the tables an uninterrupted refresh over the delta leaves)."""
    folder = tmp_path_factory.mktemp("killed_refresh")
    platform = make_platform(folder / "platform", instance, destination_server.url, people=150)
    landing = platform.folder / "landing"
    held = _hold_back(landing, share=0.05)
    assert platform.refresh().success
    before = folder / "before.duckdb"
    shutil.copy(platform.config.warehouse_path, before)
    _release(held, 1, 1)
    _crm_updates(landing, 1, 0.02, random.Random(5))

    config = _config_at(folder / "reference", platform.folder / "cdp.yaml", landing)
    shutil.copy(before, config.warehouse_path)
    refresh = build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert refresh.success
    profiles = _metadata(refresh, GOLDEN_PROFILES)
    assert profiles["mode"] == "incremental" and profiles["customers_recomputed"] > 0, profiles
    return platform.folder / "cdp.yaml", landing, before, _tables(config.warehouse_path)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_refresh_killed_at_any_stage_is_completed_by_the_next(point, delta, tmp_path, instance):
    platform_config, landing, before, reference = delta
    config = _config_at(tmp_path / "platform", platform_config, landing)
    shutil.copy(before, config.warehouse_path)

    gate = tmp_path / "gate"
    gate.mkdir()
    statement, occurrence, share = KILL_POINTS[point]
    killed = yaml.safe_load((config.base_dir / "cdp.yaml").read_text())
    killed["profiles"]["full_recompute_share"] = share
    killed_config = config.base_dir / "killed.yaml"
    killed_config.write_text(yaml.safe_dump(killed, sort_keys=False))
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    log = tmp_path / "killed_refresh.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.gated_job", str(killed_config), str(gate), statement, str(occurrence)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": path},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: list(gate.glob("started_*")) or process.poll() is not None, "the refresh reaching the gate")
        assert (gate / f"started_{process.pid}").exists(), log.read_text(errors="replace")[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    defs = build_definitions(config)
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    after = _tables(config.warehouse_path)
    for table in reference:
        assert after[table] == reference[table], table

    # Nothing new: nobody recomputed, no profile evaluated again.
    idle = defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert idle.success
    profiles = _metadata(idle, GOLDEN_PROFILES)
    assert (profiles["mode"], profiles["customers_recomputed"]) == ("incremental", 0), profiles
    for segment in config.segments:
        figures = _metadata(idle, segment_key(segment.name))
        assert (figures["mode"], figures["profiles_evaluated"]) == ("incremental", 0), (segment.name, figures)

    check = defs.resolve_job_def(REBUILD_CHECK_JOB).execute_in_process(instance=instance)
    [evaluation] = [e for e in check.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert evaluation.passed, evaluation.metadata
