"""What the Spark engine refuses rather than half-does: a privacy request, before anything is read or written."""

from pathlib import Path

import dagster as dg
import pytest

from cdp_assets.definitions import build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from resources.config import load_config
from resources.spark import engine
from tests.fixtures import write_config

pytestmark = pytest.mark.dagster


def test_a_privacy_request_on_spark_fails_saying_so_and_touches_nothing(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(engine, "missing_runtime", lambda: [])
    warehouse = {"engine": "spark", "spark": {"warehouse_dir": "spark-warehouse"}}
    config = load_config(write_config(tmp_path, warehouse=warehouse))
    result = (
        build_definitions(config)
        .resolve_job_def(PRIVACY_JOB)
        .execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            run_config={
                "ops": {
                    "privacy__requests": {
                        "config": {"requests": [{"type": "erase", "id_type": "customer_id", "value": "cus_1"}]}
                    }
                }
            },
            raise_on_error=False,
        )
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "privacy requests do not run on warehouse.engine: spark yet" in failure.event_specific_data.error.message
    # No Spark session was started: the warehouse folder holds the run lock and nothing else.
    assert sorted(p.name for p in (tmp_path / "spark-warehouse").iterdir()) == [".lock"]
