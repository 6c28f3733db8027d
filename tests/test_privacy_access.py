"""Access requests against a real warehouse: the document holds everything the platform keeps about the
person, including what it refused of their rows."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer
from resources.config import load_config
from tests.fixtures import CRM_PEOPLE_HEADER, crm_platform_config

# Ann's second record has a phone cleaning refuses; the last line, holding her address, cannot be read at all
# (its quote never closes).
PEOPLE = (
    "c1,Ann,Lée,ann.lee@example.org,+14155550101\n"
    "c2,Bob,Stone,bob.stone@example.org,+14155550102\n"
    "c3,Ann,Lee,ann.lee@example.org,12345\n"
    'c4,"Ann,Lee,ann.lee@example.org,+14155550109\n'
)


@pytest.mark.dagster
def test_an_access_document_lists_the_values_and_lines_the_platform_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        landing = tmp_path / "landing" / "crm" / "people.csv"
        landing.parent.mkdir(parents=True)
        landing.write_text(CRM_PEOPLE_HEADER + PEOPLE)
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        folder = config.privacy_requests_path
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text("type,id_type,value,reference\naccess,email,ann.lee@example.org,T-1\n")
        run_config = {"ops": {"privacy__requests": {"config": {"requests_file": "a.csv"}}}}
        assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success

        [document_path] = (folder / "access").glob("*.json")
        document = json.loads(document_path.read_text())
        refused = {(q["row_number"], q["stage"], q["field"]): q for q in document["quarantined"]}
        assert refused[(4, "clean", "phone")]["value"] == "12345"
        [line] = [q for (row, stage, _), q in refused.items() if row == 5 and stage == "extract"]
        assert "ann.lee@example.org" in line["value"]
        assert not any("bob" in str(q).lower() for q in document["quarantined"])
        bundle = document_path.with_suffix("")
        assert "12345" in (bundle / "quarantined.csv").read_text(encoding="utf-8-sig")
        # Opened in a spreadsheet, the name reads as written: UTF-8 with its byte order mark.
        profile = (bundle / "profile.csv").read_bytes()
        assert profile.startswith(b"\xef\xbb\xbf") and "Lée" in profile.decode("utf-8-sig")


@pytest.mark.dagster
def test_an_access_document_gives_dates_as_dates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A person reading their own birth date sees 1990-04-12, not a timestamp at midnight."""
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    raw = {
        "warehouse": {"path": str(tmp_path / "warehouse.duckdb")},
        "landing": {"path": str(tmp_path / "landing"), "settle_seconds": 0},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "email": "email", "date_of_birth": "born"},
                "identifiers": [{"path": "email", "type": "email"}],
            }
        ],
    }
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(tmp_path / "cdp.yaml")
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    (tmp_path / "landing" / "crm" / "people.csv").write_text(
        "id,first,email,born\nc1,Ann,ann@example.org,1990-04-12\nc2,Bob,bob@example.org,\n"
    )
    with dg.instance_for_test() as instance:
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        config.privacy_requests_path.mkdir(parents=True)
        (config.privacy_requests_path / "a.csv").write_text(
            "type,id_type,value,reference\naccess,email,ann@example.org,T-1\naccess,email,bob@example.org,T-2\n"
        )
        run_config = {"ops": {"privacy__requests": {"config": {"requests_file": "a.csv"}}}}
        assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success
    documents = [json.loads(p.read_text()) for p in sorted((config.privacy_requests_path / "access").glob("*.json"))]
    births = sorted((d["profile"][0]["first_name"], d["profile"][0]["date_of_birth"]) for d in documents)
    assert births == [("Ann", "1990-04-12"), ("Bob", None)]
    assert [r["date_of_birth"] for d in documents for r in d["cleaned_records"]] in (
        ["1990-04-12", None],
        [None, "1990-04-12"],
    )
