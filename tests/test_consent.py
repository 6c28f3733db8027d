"""Consent across sources, end to end: landing files, a full refresh, and a mirror destination that must stop
receiving whoever revoked, whatever the source that says so writes for a date."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from demo.destination_server import DestinationServer
from resources.config import load_config
from tests.fixtures import FAST_RETRY

pytestmark = pytest.mark.dagster


def _config(folder: Path, url: str):
    raw = {
        "warehouse": {"path": str(folder / "warehouse.duckdb")},
        "landing": {"path": str(folder / "landing"), "settle_seconds": 0},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "email": "email", "updated_at": "modified"},
                "consent": {"email_marketing": "opt_in"},
                "identifiers": [{"path": "email", "type": "email"}],
            },
            {
                # An e-mail service's unsubscribe list: no dates at all.
                "name": "esp",
                "format": "csv",
                "glob": "esp/*.csv",
                "role": "person",
                "record_id": "email",
                "fields": {"email": "email"},
                "consent": {"email_marketing": "status"},
                "identifiers": [{"path": "email", "type": "email"}],
            },
        ],
        "segments": [{"name": "everyone", "where": "record_count >= 1"}],
        "destinations": [
            {
                "name": "newsletter",
                "type": "webhook",
                "segment": "everyone",
                "url": f"{url}/webhook/newsletter",
                "mode": "mirror",
                "purpose": "email_marketing",
                "fields": {"email": "email"},
                "retry": FAST_RETRY,
            }
        ],
    }
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def test_an_undated_revocation_in_a_later_file_removes_the_person_from_the_destination(tmp_path: Path):
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = _config(tmp_path, server.url)
        crm = tmp_path / "landing" / "crm"
        crm.mkdir(parents=True)
        (crm / "contacts_2026-01.csv").write_text(
            "id,first,email,modified,opt_in\n"
            "c1,Ann,ann@example.org,2026-01-05T10:00:00Z,yes\n"
            "c2,Bob,bob@example.org,2026-01-05T10:00:00Z,Y\n"
            "c3,Cy,cy@example.org,2026-01-05T10:00:00Z,true\n"
        )
        defs = build_definitions(config)

        def refresh() -> dict[str, bool | None]:
            assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                return dict(conn.execute("select email, consent_email_marketing from cdp.golden_profiles").fetchall())

        def held() -> set[str]:
            audience = server.state("webhook", "newsletter")["audiences"].get("everyone", {})
            return {member["email"] for member in audience.values()}

        refresh()
        assert held() == {"ann@example.org", "bob@example.org", "cy@example.org"}
        # Ann unsubscribes at the e-mail service, whose list has no dates; Bob's CRM row comes again with the
        # opt-out and its modification time left blank.
        (tmp_path / "landing" / "esp").mkdir()
        (tmp_path / "landing" / "esp" / "unsubscribes.csv").write_text("email,status\nann@example.org,unsubscribed\n")
        (crm / "contacts_2026-02.csv").write_text("id,first,email,modified,opt_in\nc2,Bob,bob@example.org,,N\n")
        consent = refresh()
        assert consent == {"ann@example.org": False, "bob@example.org": False, "cy@example.org": True}
        assert held() == {"cy@example.org"}
        # A dated grant does not outvote an undated revocation; the provenance names the revocation.
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            provenance = conn.execute(
                "select source, value, value_at from cdp.profile_provenance p join cdp.golden_profiles g "
                "using (customer_id) where g.email = 'ann@example.org' and attribute = 'consent_email_marketing'"
            ).fetchall()
        assert provenance == [("esp", "false", None)]


def test_a_revocation_written_with_other_separators_is_one_and_outvotes_an_older_grant(tmp_path: Path):
    """Refused, a revocation would leave the other source's grant standing: the person would keep receiving."""
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = _config(tmp_path, server.url)
        for folder, text in {
            "crm": "id,first,email,modified,opt_in\n"
            + "".join(f"c{i},P{i},p{i}@example.org,2026-01-05T10:00:00Z,yes\n" for i in range(4)),
            "esp": "email,status\np0@example.org,Opted-Out\np1@example.org,opt out\np2@example.org,withdrawn\n",
        }.items():
            (tmp_path / "landing" / folder).mkdir(parents=True)
            (tmp_path / "landing" / folder / "people.csv").write_text(text)
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            consent = dict(conn.execute("select email, consent_email_marketing from cdp.golden_profiles").fetchall())
            refused = conn.execute("select value from cdp.quarantine where field = 'status'").fetchall()
        assert consent == {f"p{i}@example.org": i == 3 for i in range(4)} and refused == []
        audience = server.state("webhook", "newsletter")["audiences"]["everyone"]
        assert {member["email"] for member in audience.values()} == {"p3@example.org"}
