"""The identity change preview: it reports what candidate overrides would do without touching the warehouse's
public tables, its id registry or any destination, and applying the same overrides does exactly that."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.identity.preview import PREVIEW_JOB, PREVIEW_OP
from cdp_assets.identity.registry import new_id
from demo.destination_server import DestinationServer
from resources.config import CDPConfig
from tests.fixtures import CRM_PEOPLE_HEADER, OVERRIDES_HEADER, crm_platform_config

pytestmark = pytest.mark.dagster

SEGMENTS = {"everyone": "record_count >= 1", "several": "record_count >= 2"}
# Z1 leaves Ann (a split) and Bo joins her (a merge).
CANDIDATE = "unmerge,crm/Z1,,ana@example.org,Different person\nmust_link,crm/B1,crm/A1,ana@example.org,Same person\n"
# What the preview must leave as it was.
UNCHANGED = [
    "select * from cdp.identity_map order by all",
    "select * from cdp.customer_id_history order by all",
    "select * from identity.id_registry order by all",
    "select * from identity.id_runs order by all",
    "select * from identity.record_ids order by all",
    "select * from cdp.golden_profiles order by customer_id",
    "select * from cdp.segment_membership order by all",
    "select * from cdp.segment_membership_history order by all",
    "select * from syncs.destination_state order by all",
    "select * from syncs.changelog order by all",
]


def write_config(folder: Path, server: DestinationServer, overrides: str | None = None) -> CDPConfig:
    return crm_platform_config(
        folder, server.url, overrides, segments={"everyone": "record_count >= 1", "several": "record_count >= 2"}
    )


def query(config: CDPConfig, sql: str) -> list[tuple]:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def state(config: CDPConfig) -> list[list[tuple]]:
    return [query(config, sql) for sql in UNCHANGED]


def refresh(config: CDPConfig, instance: dg.DagsterInstance) -> str:
    result = build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
    assert result.success
    return result.run_id


def preview(config: CDPConfig, instance: dg.DagsterInstance, **candidate: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(config).resolve_job_def(PREVIEW_JOB)
    return job.execute_in_process(
        run_config={"ops": {PREVIEW_OP: {"config": candidate}}}, instance=instance, raise_on_error=False
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def rows(markdown: str) -> list[dict[str, str]]:
    """The rows of a markdown table of `markdown_table`."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    if not lines:
        return []
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing" / "crm"
    folder.mkdir(parents=True)
    # A1, A2 and Z1 are Ann (through her e-mail and phone); Bo is someone else.
    (folder / "a.csv").write_text(
        CRM_PEOPLE_HEADER
        + "A1,Ann,Lee,ann@example.org,\nA2,Ann,Lee,ann@example.org,+1 212 736 5000\n"
        + "Z1,Ann,Lee,,+1 212 736 5000\nB1,Bo,Chan,bo@example.org,\n"
    )
    return tmp_path


def test_a_preview_changes_nothing_and_reports_what_applying_the_overrides_then_does(landing: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with DestinationServer(port=0) as server:
        config = write_config(landing, server)
        refresh(config, instance)
        ann, bo = new_id("crm/A1"), new_id("crm/B1")
        assert dict(query(config, "select source_record_id, customer_id from cdp.identity_map")) == {
            "A1": ann,
            "A2": ann,
            "Z1": ann,
            "B1": bo,
        }
        before, server_before, log_before = state(config), server.state("rest", "crm"), len(server.requests_log())
        candidate = landing / "candidate_overrides.csv"
        candidate.write_text(OVERRIDES_HEADER + CANDIDATE)

        result = preview(config, instance, candidate_overrides=str(candidate))
        assert result.success
        # Nothing public changed, nothing was sent, and the scratch copy is gone.
        assert state(config) == before
        assert server.state("rest", "crm") == server_before
        assert len(server.requests_log()) == log_before
        report = Path(output_metadata(result)["report_file"])
        assert report.exists() and sorted(p.name for p in report.parent.iterdir()) == [report.name]
        metadata = output_metadata(result)
        assert metadata["candidate_overrides"] == str(candidate)
        split_off = new_id("crm/Z1")
        # Bo's id was issued in the same run as Ann's; Ann's smallest record sorts first, so hers is the
        # older and survives.
        survivor, absorbed = ann, bo
        assert rows(metadata["merges"]) == [
            {"customer_after": survivor, "customers_now": ", ".join(sorted([survivor, absorbed])), "records": "3"}
        ]
        assert rows(metadata["splits"]) == [
            {"customer_now": ann, "customers_after": ", ".join(sorted([split_off, survivor])), "records": "3"}
        ]
        moved = rows(metadata["moved_records"])
        now = {"A1": ann, "A2": ann, "Z1": ann, "B1": bo}
        after = {"A1": survivor, "A2": survivor, "Z1": split_off, "B1": survivor}
        expected = sorted((now[r], after[r]) for r in now if now[r] != after[r])
        assert sorted((r["customer_now"], r["customer_after"]) for r in moved) == expected
        assert metadata["records_moving"] == len(expected)
        # Record ids are masked in Dagster's storage; the report file names them.
        assert all(r["source_record_id"].endswith("***") for r in moved)
        text = report.read_text()
        assert all(f"| crm | {r} | person | {now[r]} | {after[r]} |" in text for r in now if now[r] != after[r])
        id_changes = rows(metadata["id_changes"])
        assert {(r["event"], r["customer_id"], r["related_id"], r["reason"]) for r in id_changes} == {
            ("merged", absorbed, survivor, "override"),
            ("split", split_off, ann, "override"),
        }
        assert (metadata["ids_merged"], metadata["ids_split_off"], metadata["ids_issued"]) == (1, 1, 0)
        segment_changes = rows(metadata["segment_changes"])
        destination_rows = rows(metadata["destination_rows"])
        assert {(r["destination"], r["operation"], r["key"]) for r in destination_rows} >= {
            ("crm_mirror", "add", split_off),
            ("crm_mirror", "remove", absorbed),
        }
        assert all("@example.org" not in r["fields"] for r in destination_rows)  # field values are masked
        assert ("everyone", split_off, "entered") in {
            (r["segment"], r["customer_id"], r["change"]) for r in segment_changes
        }
        assert ("everyone", absorbed, "exited", f"merged into {survivor}") in {
            (r["segment"], r["customer_id"], r["change"], r["exit_reason"]) for r in segment_changes
        }
        assert metadata["destination_adds"] >= 1 and metadata["destination_removes"] >= 1

        # Applying the same overrides for real does exactly what the preview said.
        membership_before = set(query(config, "select segment, customer_id from cdp.segment_membership"))
        config = write_config(landing, server, overrides=CANDIDATE)
        run_id = refresh(config, instance)
        real_ids = query(
            config,
            "select event, customer_id, coalesce(related_id, ''), records::varchar, reason "
            "from cdp.customer_id_history "
            "where run_seq = (select max(run_seq) from identity.id_runs) order by all",
        )
        assert real_ids == sorted(
            (r["event"], r["customer_id"], r["related_id"], r["records"], r["reason"]) for r in id_changes
        )
        membership_after = set(query(config, "select segment, customer_id from cdp.segment_membership"))
        exit_reasons = dict(
            query(
                config,
                "select segment || '/' || customer_id, exit_reason from cdp.segment_membership_history "
                "where exit_reason is not null",
            )
        )
        assert sorted(
            [(s, c, "entered", "") for s, c in membership_after - membership_before]
            + [(s, c, "exited", exit_reasons[f"{s}/{c}"]) for s, c in membership_before - membership_after]
        ) == sorted((r["segment"], r["customer_id"], r["change"], r["exit_reason"]) for r in segment_changes)
        sent = query(
            config,
            f"select destination, operation, key from syncs.changelog where run_id = '{run_id}' and status = 'sent' "
            "order by all",
        )
        assert sent == sorted((r["destination"], r["operation"], r["key"]) for r in destination_rows)
        assert set(server.state("rest", "crm")["records"]) == {survivor, split_off}


def test_a_candidate_file_that_does_not_load_fails_the_preview_naming_the_file(landing: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with DestinationServer(port=0) as server:
        config = write_config(landing, server)
        refresh(config, instance)
        before = state(config)
        bad = landing / "bad_overrides.csv"
        bad.write_text("who,what\nmust_link,crm/A1\n")
        result = preview(config, instance, candidate_overrides=str(bad))
        assert not result.success
        [failure] = result.get_step_failure_events()
        message = failure.step_failure_data.error.message
        assert str(bad) in message and "header" in message
        broken = landing / "broken.yaml"
        broken.write_text("sources: [unclosed\n")
        result = preview(config, instance, candidate_config="broken.yaml")
        assert not result.success
        [failure] = result.get_step_failure_events()
        assert str(broken) in failure.step_failure_data.error.message
        assert "not valid YAML" in failure.step_failure_data.error.message
        assert state(config) == before


def test_a_candidate_configuration_is_previewed_with_its_own_overrides_and_segments(landing: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with DestinationServer(port=0) as server:
        config = write_config(landing, server)
        refresh(config, instance)
        before = state(config)
        raw = yaml.safe_load((landing / "cdp.yaml").read_text())
        raw["identity"] = {"overrides": "candidate_overrides.csv"}
        raw["segments"].append({"name": "bo", "where": "first_name = 'Bo'"})
        (landing / "candidate_overrides.csv").write_text(OVERRIDES_HEADER + "unmerge,crm/Z1,,ana@example.org,Other\n")
        (landing / "candidate.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

        result = preview(config, instance, candidate_config="candidate.yaml")
        assert result.success
        assert state(config) == before
        metadata = output_metadata(result)
        assert metadata["candidate_config"] == str(landing / "candidate.yaml")
        assert rows(metadata["id_changes"]) == [
            {
                "event": "split",
                "customer_id": new_id("crm/Z1"),
                "related_id": new_id("crm/A1"),
                "records": "1",
                "reason": "override",
            }
        ]
        assert {"segment": "bo", "customer_id": new_id("crm/B1"), "change": "entered", "exit_reason": ""} in rows(
            metadata["segment_changes"]
        )
