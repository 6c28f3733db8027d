"""The repository's demo configuration moved to another folder and destination, for tests and benchmarks.

Both need the real cdp.yaml (its sources, traits, segments and destinations) but their own warehouse,
landing folder and demo destination server; copying the file by hand would let them drift apart.
"""

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_DESTINATION = "http://127.0.0.1:8765"


def relocated_config(folder: Path, destination_url: str = DEMO_DESTINATION, **overrides: Any) -> Path:
    """Write `folder/cdp.yaml`: the demo configuration with its warehouse, landing folder and exports under
    `folder`, its HTTP destinations pointed at `destination_url`, and top-level keys overridden."""
    raw = yaml.safe_load((REPO / "cdp.yaml").read_text())
    raw["warehouse"]["path"] = "warehouse.duckdb"
    raw["landing"]["path"] = "landing"
    for destination in raw.get("destinations", []):
        if destination["type"] == "file":
            destination["path"] = "exports"
        for key in ("url", "upsert_url", "delete_url"):
            if key in destination:
                destination[key] = destination[key].replace(DEMO_DESTINATION, destination_url)
    raw.update(overrides)
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
