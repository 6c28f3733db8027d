"""Persistent customer ids through the whole platform: merges, splits and manual overrides reach the
segment history and real local destinations without duplicates, and a rebuild keeps every id."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.identity.registry import new_id
from demo.destination_server import DestinationServer
from resources.config import CDPConfig, ConfigError
from tests.fixtures import CRM_PEOPLE_HEADER, crm_platform_config

# A record carrying Ann's e-mail and her phone.
ANN_JOINED = CRM_PEOPLE_HEADER + "A2,Ann,Lee,ann@example.org,+1 212 736 5000\n"

pytestmark = pytest.mark.dagster


def write_config(folder: Path, server: DestinationServer, overrides: str | None = None) -> CDPConfig:
    return crm_platform_config(folder, server.url, overrides, webhook=True)


def refresh(config: CDPConfig, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """A full refresh; the identity asset's check evaluations by name."""
    result = build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[0] == "identity"}


def query(config: CDPConfig, sql: str) -> list[tuple]:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def ids(config: CDPConfig) -> dict[str, str]:
    return dict(query(config, "select source_record_id, customer_id from cdp.identity_map"))


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing" / "crm"
    folder.mkdir(parents=True)
    # Ann's two records share nothing yet; Bo is someone else.
    (folder / "a.csv").write_text(
        CRM_PEOPLE_HEADER + "A1,Ann,Lee,ann@example.org,\nB1,Bo,Chan,bo@example.org,\nZ1,Ann,Lee,,+1 212 736 5000\n"
    )
    return tmp_path


def test_a_merge_keeps_the_oldest_id_and_every_destination_ends_with_one_row(landing: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with DestinationServer(port=0) as server:
        config = write_config(landing, server)
        refresh(config, instance)
        before = ids(config)
        ann, ann_phone = before["A1"], before["Z1"]
        assert ann == new_id("crm/A1") and ann_phone == new_id("crm/Z1") and ann != ann_phone
        assert set(server.state("rest", "crm")["records"]) == {ann, ann_phone, before["B1"]}

        # A new record carries Ann's e-mail and her phone: her two customers are one person.
        (landing / "landing" / "crm" / "b.csv").write_text(ANN_JOINED)
        refresh(config, instance)
        after = ids(config)
        # Z1's id was issued in the same run as A1's; A1's sorts first, so it is the older one and survives.
        assert after["A1"] == after["Z1"] == after["A2"] == ann
        assert after["B1"] == before["B1"]
        assert query(
            config, "select event, customer_id, related_id from cdp.customer_id_history where run_seq = 2"
        ) == [("merged", ann_phone, ann)]
        assert query(
            config, f"select customer_id, status from cdp.customer_aliases where alias_id = '{ann_phone}'"
        ) == [(ann, "merged")]
        assert query(
            config,
            f"select exit_reason from cdp.segment_membership_history where customer_id = '{ann_phone}'",
        ) == [(f"merged into {ann}",)]
        # The mirror holds one row for Ann, under the surviving id; the old id was deleted.
        assert set(server.state("rest", "crm")["records"]) == {ann, before["B1"]}
        # The webhook heard an update of the survivor naming the old id, not an exit.
        hook = server.state("webhook", "hook")["audiences"]["everyone"]
        assert set(hook) == {ann, before["B1"]}
        events = [e for r in server.requests_log() if r["path"] == "/webhook/hook" for e in r.get("events", [])]
        assert any(e.get("previous_key") == ann_phone and e["key"] == ann for e in events)
        assert not any(e["type"] == "audience_exited" and e["key"] == ann_phone for e in events)

        # A re-run over the same files moves nothing and records nothing.
        refresh(config, instance)
        assert ids(config) == after
        assert query(config, "select count(*) from cdp.customer_id_history where run_seq = 3") == [(0,)]


def test_a_merge_reaches_a_webhook_as_one_update_of_the_surviving_key(landing: Path) -> None:
    """The survivor's own fields change in the merge (it gains the phone) and its merged id leaves: the
    webhook hears both as one update of the surviving key, naming the merged id, in one sync."""
    instance = dg.DagsterInstance.ephemeral()
    with DestinationServer(port=0) as server:
        config = crm_platform_config(
            landing, server.url, webhook=True, webhook_fields={"email": "email", "phone": "phone"}
        )
        refresh(config, instance)
        before = ids(config)
        ann, ann_phone, bo = before["A1"], before["Z1"], before["B1"]
        heard = len(server.requests_log())

        (landing / "landing" / "crm" / "b.csv").write_text(ANN_JOINED)
        refresh(config, instance)
        assert ids(config)["Z1"] == ann
        requests = [r for r in server.requests_log()[heard:] if r["path"] == "/webhook/hook"]
        events = [e for r in requests for e in r.get("events", [])]
        assert [e for e in events if ann in (e["key"], e.get("previous_key"))] == [
            {"type": "audience_updated", "key": ann, "previous_key": ann_phone, "previous_keys": [ann_phone]}
        ]
        assert not any(e["key"] == ann_phone for e in events)
        hook = server.state("webhook", "hook")["audiences"]["everyone"]
        assert hook == {
            ann: {"email": "ann@example.org", "phone": "+12127365000"},
            bo: {"email": "bo@example.org", "phone": None},
        }
        assert query(
            config, "select key, present from syncs.destination_state where destination = 'hook' order by key"
        ) == sorted([(ann, True), (ann_phone, False), (bo, True)])
        assert query(
            config,
            "select key, operation, status from syncs.changelog where destination = 'hook' and run_id = "
            "(select run_id from syncs.changelog where destination = 'hook' order by logged_at desc limit 1) "
            "order by key",
        ) == sorted([(ann, "update", "sent"), (ann_phone, "remove", "sent")])

        # Settled: the next sync sends nothing.
        heard = len(server.requests_log())
        refresh(config, instance)
        assert not [r for r in server.requests_log()[heard:] if r["path"] == "/webhook/hook"]


def test_an_override_splits_a_customer_the_id_stays_with_the_larger_part_and_the_split_reaches_destinations(
    landing: Path,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    (landing / "landing" / "crm" / "b.csv").write_text(ANN_JOINED)
    with DestinationServer(port=0) as server:
        config = write_config(landing, server)
        refresh(config, instance)
        ann = ids(config)["A1"]
        assert ids(config)["Z1"] == ann

        config = write_config(landing, server, overrides="unmerge,crm/Z1,,ana@example.org,Different person\n")
        checks = refresh(config, instance)
        assert checks["overrides_name_records"].passed
        after = ids(config)
        assert after["A1"] == after["A2"] == ann  # two of the three records: the id stays with them
        split_off = after["Z1"]
        assert split_off == new_id("crm/Z1")  # never issued before, so the part is named after its record
        history = query(
            config, "select event, customer_id, related_id, reason from cdp.customer_id_history where run_seq = 2"
        )
        assert history == [("split", split_off, ann, "override")]
        assert set(server.state("rest", "crm")["records"]) == {ann, split_off, after["B1"]}
        evidence = query(config, "select rule, decision from identity.evidence where rule like 'override%'")
        assert evidence == [("override line 2", "override: unmerge by ana@example.org: Different person")]
        # The override survives a rebuild, and an override naming no record only warns.
        config = write_config(
            landing,
            server,
            overrides="unmerge,crm/Z1,,ana@example.org,Different person\nmust_link,crm/B1,crm/NOPE,li,typo\n"
            "cannot_link,email:Pat@Example.com,crm/B1,li,twins\n",
        )
        checks = refresh(config, instance)
        assert ids(config) == after
        assert not checks["overrides_name_records"].passed
        # Listed with their record id or value masked, as Dagster's storage shows no customer value.
        not_applied = checks["overrides_name_records"].metadata["not_applied"].value
        assert "'crm/N***' names no record" in not_applied
        assert "'email:P***@E***.com' names no record" in not_applied
        assert "NOPE" not in not_applied and "Pat@" not in not_applied
        # Headless, the log shows the description beside "did not pass": it names the lines, masked alike.
        assert checks["overrides_name_records"].description == (
            "overrides line 3: 'crm/N***' names no record; overrides line 4: 'email:P***@E***.com' names no record"
        )
        # The unmerge taken out of the file: Ann's records are one customer again, by the override's removal.
        config = write_config(
            landing,
            server,
            overrides="must_link,crm/B1,crm/NOPE,li,typo\ncannot_link,email:Pat@Example.com,crm/B1,li,twins\n",
        )
        refresh(config, instance)
        assert ids(config)["Z1"] == ann
        history = query(
            config,
            """select event, customer_id, related_id, reason from cdp.customer_id_history
               where run_seq = (select max(run_seq) from cdp.customer_id_history)""",
        )
        assert history == [("merged", split_off, ann, "override")]


def test_contradictory_overrides_fail_at_load_naming_the_lines(landing: Path) -> None:
    contradiction = "line 3 says its record and other are never one customer"
    with DestinationServer(port=0) as server, pytest.raises(ConfigError, match=contradiction):
        write_config(
            landing,
            server,
            overrides="must_link,crm/A1,crm/B1,ana,same\ncannot_link,crm/A1,crm/B1,li,twins\n",
        )
