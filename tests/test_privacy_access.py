"""Access requests against a real warehouse: the document holds everything the platform keeps about the
person, including what it refused of their rows."""

import json
from pathlib import Path

import dagster as dg
import pytest

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer
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
