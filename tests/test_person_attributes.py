"""Attributes of a source's own (a CRM's lifecycle stage, a shop's loyalty tier) mapped with `attributes`,
through the real extract, cleaning, identity, profile and segment stages: each becomes a column of the
golden profile that segments filter on and destinations send."""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from resources.config import load_config
from tests.fixtures import check_evaluation, materialize_stages

pytestmark = pytest.mark.stage


def _write(tmp_path: Path, crm_rows: list[str], shop: list[dict], **extra: object) -> Path:
    (tmp_path / "landing" / "crm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "landing" / "shop").mkdir(parents=True, exist_ok=True)
    header = "id,first,last,email,updated,Lifecycle Stage"
    (tmp_path / "landing" / "crm" / "contacts.csv").write_text("\n".join([header, *crm_rows, ""]))
    (tmp_path / "landing" / "shop" / "customers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shop))
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
                "fields": {"first_name": "first", "last_name": "last", "email": "email", "updated_at": "updated"},
                "attributes": {"lifecycle_stage": "Lifecycle Stage"},
            },
            {
                "name": "shop",
                "format": "jsonl",
                "glob": "shop/*.jsonl",
                "role": "person",
                "record_id": "id",
                "fields": {"email": "email", "updated_at": "updated_at"},
                "attributes": {"lifecycle_stage": "stage", "loyalty_tier": "loyalty.tier"},
            },
        ],
        "segments": [{"name": "gold_customers", "where": "lifecycle_stage = 'customer' and loyalty_tier = 'Gold'"}],
        **extra,
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_sources_own_attributes_become_profile_columns_that_segments_read(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    config = _write(
        tmp_path,
        [
            "c1,Ann,Lee,ann@example.org,2025-01-01T00:00:00,lead",
            "c2,Bo,Chan,bo@example.org,2025-03-01T00:00:00,  Marketing   Qualified ",
            "c3,Cy,Dee,cy@example.org,2025-03-01T00:00:00,n/a",
        ],
        [
            # Ann's shop record is newer: with most_recent, its stage wins over the CRM's.
            {
                "id": "s1",
                "email": "ann@example.org",
                "updated_at": "2025-06-01T00:00:00",
                "stage": "customer",
                "loyalty": {"tier": "Gold"},
            },
            {
                "id": "s2",
                "email": "bo@example.org",
                "updated_at": "2025-01-01T00:00:00",
                "stage": "customer",
                "loyalty": {"tier": "Silver"},
            },
            {"id": "s3", "email": "di@example.org", "updated_at": "2025-01-01T00:00:00", "loyalty": {"tier": ["Gold"]}},
        ],
        profiles={"survivorship": {"attributes": {"lifecycle_stage": "most_recent"}}},
    )
    materialize_stages(config, instance, ("raw", "clean", "identity", "profiles", "segments"))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        profiles = conn.execute(
            "select email, lifecycle_stage, loyalty_tier from cdp.golden_profiles order by email"
        ).fetchall()
        provenance = conn.execute(
            "select p.email, v.source, v.source_record_id, v.rule from cdp.profile_provenance v "
            "join cdp.golden_profiles p using (customer_id) where v.attribute = 'lifecycle_stage' order by 1"
        ).fetchall()
        members = conn.execute(
            "select p.email from cdp.segment_membership m join cdp.golden_profiles p using (customer_id) "
            "where m.segment = 'gold_customers'"
        ).fetchall()
        rejects = conn.execute("select source, row_number, field, reason from cdp.quarantine").fetchall()
    assert profiles == [
        ("ann@example.org", "customer", "Gold"),
        # The CRM's newer stage, as written but for its spaces; the shop's older one loses.
        ("bo@example.org", "Marketing Qualified", "Silver"),
        ("cy@example.org", None, None),  # n/a is no value
        ("di@example.org", None, None),  # a list is refused, not read as its JSON text
    ]
    assert provenance == [
        ("ann@example.org", "shop", "s1", "most_recent"),
        ("bo@example.org", "crm", "c2", "most_recent"),
    ]
    assert members == [("ann@example.org",)]
    assert rejects == [("shop", 3, "loyalty.tier", "loyalty.tier is a list where a single value is expected")]

    # A later export changes Bo's stage in the CRM: the next refresh, cleaning that file alone and profiling
    # the customers it touched, takes it.
    (tmp_path / "landing" / "crm" / "contacts_2.csv").write_text(
        "id,first,last,email,updated,Lifecycle Stage\nc2,Bo,Chan,bo@example.org,2025-07-01T00:00:00,customer\n"
    )
    result, _ = materialize_stages(config, instance, ("raw", "clean", "identity", "profiles", "segments"))
    [profiles_run] = result.asset_materializations_for_node("profiles__golden_profiles")
    assert profiles_run.metadata["mode"].value == "incremental"
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute(
            "select email, lifecycle_stage from cdp.golden_profiles where email = 'bo@example.org'"
        ).fetchall() == [("bo@example.org", "customer")]


def test_an_attribute_that_names_a_profile_column_or_is_unmapped_in_survivorship_is_refused(tmp_path: Path) -> None:
    config = _write(tmp_path, [], [])
    raw = yaml.safe_load(config.read_text())
    raw["sources"][0]["attributes"] = {"email": "Lifecycle Stage"}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"attributes.email: 'email' is already a golden-profile column"):
        load_config(config)
    raw["sources"][0]["attributes"] = {"Lifecycle Stage": "Lifecycle Stage"}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="attribute 'Lifecycle Stage' must be lower_snake_case"):
        load_config(config)
    raw["sources"][0]["attributes"] = {"lifecycle_stage": "Lifecycle Stage"}
    raw["profiles"] = {"survivorship": {"attributes": {"lifecycle": "most_recent"}}}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ValueError, match=r"unknown attribute\(s\) \['lifecycle'\]; choose from name, .*lifecycle_stage"
    ):
        load_config(config)


def test_an_erasure_removes_the_persons_attributes_and_an_access_request_lists_them(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from cdp_assets.privacy.assets import PRIVACY_JOB

    config_path = _write(
        tmp_path,
        ["c1,Ann,Lee,ann@example.org,2025-01-01T00:00:00,lead", "c2,Bo,Chan,bo@example.org,2025-01-01T00:00:00,lead"],
        [{"id": "s1", "email": "ann@example.org", "updated_at": "2025-06-01T00:00:00", "loyalty": {"tier": "Gold"}}],
        privacy={"requests_path": "requests"},
    )
    defs = build_definitions(load_config(config_path))
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "a.csv").write_text("type,id_type,value,reference\naccess,email,ann@example.org,A-1\n")
    (tmp_path / "requests" / "e.csv").write_text("type,id_type,value,reference\nerase,email,ann@example.org,E-1\n")

    def request(name: str) -> None:
        run_config = {"ops": {"privacy__requests": {"config": {"requests_file": name}}}}
        assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success

    request("a.csv")
    [document] = (tmp_path / "requests" / "access").rglob("*.json")
    listed = json.loads(document.read_text())["attributes"]
    assert sorted((r["source"], r["attribute"], r["value"]) for r in listed) == [
        ("crm", "lifecycle_stage", "lead"),
        ("shop", "loyalty_tier", "Gold"),
    ]
    request("e.csv")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        left = conn.execute("select source_record_id, attribute, value from clean.person_attributes").fetchall()
        profiles = conn.execute("select email, lifecycle_stage from cdp.golden_profiles").fetchall()
    assert left == [("c2", "lifecycle_stage", "lead")]
    assert profiles == [("bo@example.org", "lead")]


def test_an_attribute_whose_path_reads_nothing_is_named_by_the_mapping_warning(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # A JSON path with a typo (loyalty.teir) finds nothing in any record and fails nothing: every profile
    # would simply have no tier. The mapped-fields warning names it.
    config_path = _write(
        tmp_path,
        ["c1,Ann,Lee,ann@example.org,2025-01-01T00:00:00,lead"],
        [
            {
                "id": "s1",
                "email": "bo@example.org",
                "updated_at": "2025-01-01",
                "stage": "lead",
                "loyalty": {"tier": "Gold"},
            }
        ],
    )
    raw = yaml.safe_load(config_path.read_text())
    raw["sources"][1]["attributes"]["loyalty_tier"] = "loyalty.teir"
    raw["segments"] = []
    config_path.write_text(yaml.safe_dump(raw))
    result, _ = materialize_stages(config_path, instance, ("raw", "clean"))
    evaluation = check_evaluation(result, "mapped_fields_have_values", "person_records")
    assert not evaluation.passed
    assert evaluation.description == (
        "shop attribute loyalty_tier (loyalty.teir): no value in any of 1 cleaned rows (quarantined most: none "
        "quarantined)"
    )
