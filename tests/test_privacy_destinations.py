"""Erasure at the destinations: each row destination removes the person in its own form (REST delete, webhook
`erased` event, PostgreSQL delete), against the real demo destination server and a real PostgreSQL; a
destination that is down keeps only its own part pending, and its next sync delivers it."""

import csv
import io
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer, Faults
from resources.config import CDPConfig, load_config
from tests.fixtures import CRM_PEOPLE_HEADER, FAST_RETRY, crm_platform_config

PEOPLE = (
    "c1,Ann,Lee,ann.lee@example.org,+14155550101\n"
    "c2,Bob,Stone,bob.stone@example.org,+14155550102\n"
    "c3,Cy,Diaz,cy.diaz@example.org,+14155550103\n"
)


def _refreshed(tmp_path: Path, url: str, instance: dg.DagsterInstance) -> tuple[CDPConfig, dg.Definitions, Path]:
    """The CRM platform with PEOPLE landed and refreshed: its configuration, definitions and landing file."""
    config = crm_platform_config(tmp_path, url)
    landing = tmp_path / "landing" / "crm" / "people.csv"
    landing.parent.mkdir(parents=True)
    landing.write_text(CRM_PEOPLE_HEADER + PEOPLE)
    defs = build_definitions(config)
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    return config, defs, landing


def _requests_file(config: CDPConfig, line: str) -> dict:
    """The privacy run configuration of a requests file `r.csv` holding one request line."""
    config.privacy_requests_path.mkdir(parents=True)
    (config.privacy_requests_path / "r.csv").write_text(f"type,id_type,value,reference\n{line}\n")
    return {"ops": {"privacy__requests": {"config": {"requests_file": "r.csv"}}}}


@pytest.mark.e2e
def test_each_destination_erases_in_its_own_form_and_a_failing_one_stays_pending(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    monkeypatch.setenv("CDP_TEST_PRIVACY_DSN", dsn)
    table = f"people_{tmp_path.name[-8:].replace('-', '_')}".lower()
    with (
        DestinationServer(host="127.0.0.1", port=0) as server,
        DestinationServer(host="127.0.0.1", port=0) as hooks,
        dg.instance_for_test() as instance,
    ):
        crm_platform_config(tmp_path, server.url, webhook=True)
        raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
        raw["destinations"][1]["url"] = f"{hooks.url}/webhook/hook"
        raw["destinations"].append(
            {
                "name": "app_db",
                "type": "postgres",
                "segment": "everyone",
                "mode": "mirror",
                "dsn_env": "CDP_TEST_PRIVACY_DSN",
                "table": table,
                "fields": {"email": "email", "first_name": "first_name"},
                "retry": FAST_RETRY,
            }
        )
        raw["privacy"] = {"requests_path": "requests"}
        (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(tmp_path / "cdp.yaml")
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(CRM_PEOPLE_HEADER + PEOPLE)
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success

        def postgres_ids() -> set[str]:
            with psycopg.connect(dsn) as conn:
                return {r[0] for r in conn.execute(f'select id from "{table}"').fetchall()}

        bob = next(
            k for k, v in server.state("rest", "crm")["records"].items() if v.get("email") == "bob.stone@example.org"
        )
        assert bob in postgres_ids() and bob in hooks.state("webhook", "hook")["audiences"]["everyone"]

        hooks.faults = Faults(fail_rate=1.0)  # the webhook's tool is down
        (tmp_path / "requests").mkdir()
        (tmp_path / "requests" / "r.csv").write_text("type,id_type,value,reference\nerase,phone,(415) 555-0102,T-9\n")
        run = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests_file": "r.csv"}}}}
        )
        assert run.success
        status, destinations = _receipt(config)
        assert status == "pending"
        assert destinations["crm_mirror"].startswith("confirmed") and destinations["app_db"].startswith("confirmed")
        assert destinations["hook"] == "pending"
        assert bob not in server.state("rest", "crm")["records"] and bob not in postgres_ids()
        assert len(server.state("rest", "crm")["records"]) == 2 and len(postgres_ids()) == 2
        assert bob in hooks.state("webhook", "hook")["audiences"]["everyone"]

        hooks.faults = Faults()  # back up: the webhook's next sync delivers the erasure first
        synced = defs.resolve_job_def(FULL_REFRESH).execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["syncs", "hook"])]
        )
        assert synced.success
        assert bob not in hooks.state("webhook", "hook")["audiences"]["everyone"]
        erased_events = [e for r in hooks.requests_log() for e in r.get("events", []) if e.get("type") == "erased"]
        assert [e["key"] for e in erased_events] == [bob]
        status, destinations = _receipt(config)
        assert status == "completed" and all(v.startswith("confirmed") for v in destinations.values())


@pytest.mark.dagster
def test_a_destination_taken_out_of_the_configuration_keeps_no_row_of_an_erased_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The tool still holds what it was sent, so the erasure is held, not dropped, and the warehouse keeps
    nothing of the person under that destination; put back in cdp.yaml, its next sync sends it first."""
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(CRM_PEOPLE_HEADER + PEOPLE)
        assert build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        records = server.state("rest", "crm")["records"]
        bob = next(k for k, v in records.items() if v.get("email") == "bob.stone@example.org")

        with_destination = (tmp_path / "cdp.yaml").read_text()
        raw = yaml.safe_load(with_destination)
        raw["destinations"] = []
        (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw))
        without = load_config(tmp_path / "cdp.yaml")
        spec = {"type": "erase", "id_type": "customer_id", "value": bob, "reference": "T-1"}
        ran = (
            build_definitions(without)
            .resolve_job_def(PRIVACY_JOB)
            .execute_in_process(
                instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests": [spec]}}}}
            )
        )
        assert ran.success
        status, destinations = _receipt(without)
        assert status == "completed"
        assert destinations == {"crm_mirror": "not configured: nothing sent; held until it is configured again"}
        with duckdb.connect(str(without.warehouse_path), read_only=True) as conn:
            for table in ("syncs.destination_state", "syncs.pending", "syncs.hashed_rows"):
                assert conn.execute(f"select count(*) from {table} where key = ?", [bob]).fetchone() == (0,), table
            assert conn.execute("select count(*) from syncs.changelog where key = ?", [bob]).fetchone() == (0,)
            assert conn.execute("select status from privacy.destination_erasures").fetchall() == [("held",)]
        assert bob in server.state("rest", "crm")["records"]  # nobody could tell the tool

        (tmp_path / "cdp.yaml").write_text(with_destination)
        again = load_config(tmp_path / "cdp.yaml")
        synced = (
            build_definitions(again)
            .resolve_job_def(FULL_REFRESH)
            .execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["syncs", "crm_mirror"])])
        )
        assert synced.success
        assert bob not in server.state("rest", "crm")["records"]
        status, destinations = _receipt(again)
        assert status == "completed" and destinations["crm_mirror"].startswith("confirmed")


@pytest.mark.dagster
def test_an_erasure_after_a_sync_killed_before_folding_still_reaches_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A sync killed after its batches were accepted leaves them in `syncs.acknowledged`, not yet folded into
    `syncs.destination_state`; an erasure then must still know the destination holds the person."""
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(CRM_PEOPLE_HEADER + PEOPLE)
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        bob = next(
            k for k, v in server.state("rest", "crm")["records"].items() if v.get("email") == "bob.stone@example.org"
        )
        with duckdb.connect(str(config.warehouse_path)) as conn:  # the state as such a kill leaves it
            conn.execute(
                "insert into syncs.acknowledged select destination, key, row_hash, row_json, present, "
                "acknowledged_at, 1, row_number() over () from syncs.destination_state"
            )
            conn.execute("delete from syncs.destination_state")
        spec = {"type": "erase", "id_type": "customer_id", "value": bob, "reference": "T-2"}
        ran = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests": [spec]}}}}
        )
        assert ran.success
        status, destinations = _receipt(config)
        assert status == "completed" and destinations["crm_mirror"].startswith("confirmed")
        assert bob not in server.state("rest", "crm")["records"]
        assert len(server.state("rest", "crm")["records"]) == 2
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select count(*) from syncs.acknowledged").fetchone() == (0,)
            held = [k for (k,) in conn.execute("select key from syncs.destination_state where present").fetchall()]
            assert len(held) == 2 and bob not in held


def _receipt(config) -> tuple[str, dict[str, str]]:
    import duckdb

    with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
        return conn.execute("select status, destinations from privacy.requests").fetchone()


@pytest.mark.dagster
def test_a_suppressed_customer_leaves_every_sync_until_unsuppressed(tmp_path: Path):
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url, webhook=True)
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(CRM_PEOPLE_HEADER + PEOPLE)
        defs = build_definitions(config)
        refresh = defs.resolve_job_def(FULL_REFRESH)
        assert refresh.execute_in_process(instance=instance).success
        records = server.state("rest", "crm")["records"]
        bob = next(k for k, v in records.items() if v.get("email") == "bob.stone@example.org")

        def request(kind: str) -> None:
            # A customer id may be typed in the Launchpad: it is the platform's own id, not a personal value.
            spec = {"type": kind, "id_type": "customer_id", "value": bob, "reference": f"S-{kind}"}
            run_config = {"ops": {"privacy__requests": {"config": {"requests": [spec]}}}}
            ran = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config)
            assert ran.success
            assert refresh.execute_in_process(instance=instance).success

        request("suppress")
        assert bob not in server.state("rest", "crm")["records"] and len(server.state("rest", "crm")["records"]) == 2
        assert bob not in server.state("webhook", "hook")["audiences"]["everyone"]
        request("unsuppress")
        assert bob in server.state("rest", "crm")["records"]
        assert bob in server.state("webhook", "hook")["audiences"]["everyone"]


@pytest.mark.dagster
def test_the_launchpad_refuses_an_email_and_says_where_it_goes(tmp_path: Path):
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        spec = {"type": "erase", "id_type": "email", "value": "bob.stone@example.org", "reference": "E-1"}
        ran = (
            build_definitions(config)
            .resolve_job_def(PRIVACY_JOB)
            .execute_in_process(
                instance=instance,
                run_config={"ops": {"privacy__requests": {"config": {"requests": [spec]}}}},
                raise_on_error=False,
            )
        )
        # The person who typed it is told in the run itself, not by a green run that did nothing.
        assert not ran.success
        [failure] = ran.get_step_failure_events()
        message = failure.step_failure_data.error.message
        assert "1 request(s) of the run configuration rejected" in message
        assert "put the request in a CSV file in the requests folder" in message
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            receipt = conn.execute("select type, id_type, reference, status, note from privacy.requests").fetchall()
        assert receipt == [("erase", "email", "E-1", "rejected", receipt[0][4])]
        assert receipt[0][4].startswith("id_type: email values are not taken from run configuration")
        stored = [
            str(event.dagster_event) for event in instance.all_logs(ran.run_id) if event.dagster_event is not None
        ]
        assert not any("bob.stone@example.org" in text for text in stored)  # only the run config holds it


@pytest.mark.dagster
def test_a_shared_email_erases_nobody_and_lists_the_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(
            CRM_PEOPLE_HEADER
            + "f1,Ann,Lee,family@example.org,+14155550111\n"
            + "f2,Zed,Quinn,family@example.org,+14155550122\n"
        )
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        requests = config.privacy_requests_path
        requests.mkdir(parents=True)
        (requests / "r.csv").write_text("type,id_type,value,reference\nerase,email,family@example.org,T-1\n")
        run = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests_file": "r.csv"}}}}
        )
        assert run.success
        import duckdb

        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            customers = sorted(c for (c,) in conn.execute("select customer_id from cdp.golden_profiles").fetchall())
            status, candidates, removed = conn.execute(
                "select status, candidates, rows_removed from privacy.requests"
            ).fetchone()
            tombstones = conn.execute("select count(*) from privacy.tombstones").fetchone()[0]
        assert len(customers) == 2
        assert status == "needs_review" and sorted(candidates) == customers and removed == {}
        assert tombstones == 0


@pytest.mark.dagster
def test_the_requests_sensor_names_the_file_never_its_values(tmp_path: Path):
    from sensors.privacy import build_privacy_requests_sensor

    config = crm_platform_config(tmp_path, "http://127.0.0.1:9")
    folder = config.privacy_requests_path
    folder.mkdir(parents=True)
    (folder / "dsr.csv").write_text("type,id_type,value,reference\nerase,email,secret.person@example.org,T-1\n")
    (folder / ".partial.csv").write_text("being copied")
    with dg.instance_for_test() as instance:
        result = build_privacy_requests_sensor(config)(dg.build_sensor_context(instance=instance))
        [request] = result.run_requests
        assert request.run_config == {"ops": {"privacy__requests": {"config": {"requests_file": "dsr.csv"}}}}
        assert "secret" not in repr(request)
        again = build_privacy_requests_sensor(config)(dg.build_sensor_context(instance=instance))
        assert again.run_requests[0].run_key == request.run_key  # the same file is one run


@pytest.mark.dagster
def test_a_run_that_dies_after_the_warehouse_erasure_leaves_the_files_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import duckdb

    import cdp_assets.privacy.assets as privacy_assets

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config, defs, landing = _refreshed(tmp_path, server.url, instance)
        run_config = _requests_file(config, "erase,email,bob.stone@example.org,T-1")

        def dies(*args: object) -> int:
            raise RuntimeError("the machine went down")

        with monkeypatch.context() as patched:
            patched.setattr(privacy_assets, "rewrite_landing_files", dies)
            failed = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
                instance=instance, run_config=run_config, raise_on_error=False
            )
        assert not failed.success
        assert "bob.stone" in landing.read_text()
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select status from privacy.requests").fetchone()[0] == "pending"
            assert not conn.execute("select 1 from clean.person_records where first_name = 'Bob'").fetchall()

        again = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config)
        assert again.success
        assert "bob.stone" not in landing.read_text() and "ann.lee" in landing.read_text()
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select status from privacy.requests").fetchone()[0] == "completed"
            assert conn.execute("select count(*) from privacy.file_rewrites").fetchone()[0] == 0
        assert not (config.privacy_requests_path / "r.csv").exists()


@pytest.mark.dagster
def test_a_run_that_dies_while_telling_the_destinations_leaves_the_snapshot_and_compaction_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import cdp_assets.privacy.assets as privacy_assets

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config, defs, landing = _refreshed(tmp_path, server.url, instance)
        assert b"bob.stone" in config.read_snapshot_path.read_bytes()
        run_config = _requests_file(config, "erase,email,bob.stone@example.org,T-1")

        def dies(*args: object) -> dict[str, dict[str, int]]:
            raise RuntimeError("the machine went down")

        with monkeypatch.context() as patched:
            patched.setattr(privacy_assets, "deliver_all", dies)
            failed = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
                instance=instance, run_config=run_config, raise_on_error=False
            )
        assert not failed.success
        assert "bob.stone" not in landing.read_text()  # the files were done before it died

        # Run again as the operator would: its requests are known, but what the dead run owed is not done.
        again = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config)
        assert again.success
        assert b"bob.stone" not in config.read_snapshot_path.read_bytes()
        assert b"bob.stone" not in config.warehouse_path.read_bytes()
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select status from privacy.requests").fetchone()[0] == "completed"
            assert conn.execute("select count(*) from privacy.file_rewrites").fetchone()[0] == 0
        assert "bob.stone" not in str(server.state("rest", "crm")["records"])


@pytest.mark.dagster
def test_receipts_tell_a_repeated_request_and_an_earlier_erasure_from_a_stranger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config, defs, landing = _refreshed(tmp_path, server.url, instance)
        folder = config.privacy_requests_path
        folder.mkdir(parents=True)

        def run(name: str, lines: str) -> dict[str, tuple[str, dict[str, int], str | None]]:
            (folder / name).write_text("type,id_type,value,reference,source\n" + lines)
            run_config = {"ops": {"privacy__requests": {"config": {"requests_file": name}}}}
            assert (
                defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success
            )
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                rows = conn.execute("select reference, request_id, status, rows_removed, note from privacy.requests")
                return {r[0]: r[1:] for r in rows.fetchall()}

        # Bob named twice in one batch (e-mail and phone), and someone never held.
        first = run(
            "a.csv",
            "erase,email,bob.stone@example.org,T-1,\n"
            "erase,phone,(415) 555-0102,T-2,\n"
            "erase,email,nobody@example.org,T-3,\n",
        )
        (t1_id, t1_status, t1_rows, t1_note), (_, t2_status, t2_rows, t2_note) = first["T-1"], first["T-2"]
        assert t1_status == t2_status == "completed"
        assert t1_rows["cdp.golden_profiles"] == 1 and t1_note is None
        assert t2_rows == {} and t2_note == f"the same person as request {t1_id}"
        assert first["T-3"][1:] == ("not_found", {}, None)

        # Filed again later: the receipt and the processed file say he was erased, not that he was never held.
        later = run(
            "b.csv",
            "erase,email,BOB.STONE@example.org,T-4,\n"
            "erase,source_record,c2,T-5,crm\n"
            "erase,email,nobody@example.org,T-6,\n",
        )
        # (either of the two requests that erased him)
        erased_before = tuple(f"erased before, by request {first[t][0]} on " for t in ("T-1", "T-2"))
        assert later["T-4"][1] == "not_found" and later["T-4"][3].startswith(erased_before)
        assert later["T-5"][1] == "not_found" and later["T-5"][3].startswith(erased_before)
        assert later["T-6"][1:] == ("not_found", {}, None)
        processed = list(csv.reader(io.StringIO((folder / "processed" / "b.csv").read_text())))
        assert processed[1][1:] == ["T-4", f"not_found: {later['T-4'][3]}"]
        assert processed[3][1:] == ["T-6", "not_found"]
        assert "bob" not in (folder / "processed" / "b.csv").read_text().lower()


@pytest.mark.dagster
def test_a_request_line_with_its_columns_shifted_is_rejected_without_keeping_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config, defs, landing = _refreshed(tmp_path, server.url, instance)
        run_config = _requests_file(config, "erase,bob.stone@example.org,email,T-1")
        assert defs.resolve_job_def(PRIVACY_JOB).execute_in_process(instance=instance, run_config=run_config).success
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            [(field, reason)] = conn.execute(
                "select field, reason from cdp.quarantine where source = 'privacy_requests'"
            ).fetchall()
            receipts = conn.execute("select * from privacy.requests").fetchall()
        assert field == "id_type" and reason.startswith("unknown identifier type")
        processed = (config.privacy_requests_path / "processed" / "r.csv").read_text()
        assert "rejected: line 2, id_type: unknown identifier type" in processed
        for text in (reason, str(receipts), processed):
            assert "bob.stone" not in text
        with duckdb.connect(str(config.read_snapshot_path), read_only=True) as conn:
            assert "bob.stone" not in str(conn.execute("select * from cdp.quarantine").fetchall())


@pytest.mark.dagster
def test_the_requests_sensor_runs_a_file_again_after_its_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import cdp_assets.privacy.assets as privacy_assets
    from resources.run_retries import RETRY_FIRST_AFTER_SECONDS
    from sensors.privacy import build_privacy_requests_sensor

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config, defs, landing = _refreshed(tmp_path, server.url, instance)
        folder = config.privacy_requests_path
        folder.mkdir(parents=True)
        (folder / "r.csv").write_text("type,id_type,value,reference\nerase,email,bob.stone@example.org,T-1\n")
        (folder / "processed").mkdir()

        def tick(now: float) -> list[dg.RunRequest]:
            sensor = build_privacy_requests_sensor(config, clock=lambda: now)
            return list(sensor(dg.build_sensor_context(instance=instance)).run_requests)

        def launch(request: dg.RunRequest, **kwargs: object) -> dg.ExecuteInProcessResult:
            tags = {**request.tags, "dagster/run_key": request.run_key}
            return defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
                instance=instance, run_config=request.run_config, tags=tags, **kwargs
            )

        [first] = tick(landing.stat().st_mtime + 3600)

        def dies(*args: object) -> dict[str, dict[str, int]]:
            raise RuntimeError("the machine went down")

        with monkeypatch.context() as patched:
            patched.setattr(privacy_assets, "deliver_all", dies)
            assert not launch(first, raise_on_error=False).success
        [failed] = instance.get_run_records(limit=1)
        assert (folder / "r.csv").exists()  # not processed: the run died
        soon = tick(failed.end_time + 1)
        assert [r.run_key for r in soon] == [first.run_key]  # the first run key, which launches no more
        [_, retry] = tick(failed.end_time + RETRY_FIRST_AFTER_SECONDS + 1)
        assert retry.run_key != first.run_key and "bob" not in repr(retry)
        assert launch(retry).success
        assert not (folder / "r.csv").exists() and "completed" in (folder / "processed" / "r.csv").read_text()
        assert b"bob.stone" not in config.read_snapshot_path.read_bytes()
        assert "bob.stone" not in str(server.state("rest", "crm")["records"])


def _refresh_then_erase_bob(config: CDPConfig, instance: dg.DagsterInstance, drop: tuple[str, ...] = ()) -> None:
    """A full refresh, then (the tables `drop` dropped) Bob Stone erased by e-mail through a requests file."""
    defs = build_definitions(config)
    assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
    if drop:
        import duckdb

        with duckdb.connect(str(config.warehouse_path)) as conn:
            for table in drop:
                conn.execute(f"drop table {table}")
    config.privacy_requests_path.mkdir(parents=True)
    (config.privacy_requests_path / "r.csv").write_text(
        "type,id_type,value,reference\nerase,email,bob.stone@example.org,T-1\n"
    )
    run = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests_file": "r.csv"}}}}
    )
    assert run.success


@pytest.mark.dagster
def test_rows_of_the_person_that_no_customer_holds_are_erased_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import duckdb

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        landing = tmp_path / "landing" / "crm" / "people.csv"
        landing.parent.mkdir(parents=True)
        landing.write_text(
            CRM_PEOPLE_HEADER
            + PEOPLE
            + ",Bob,Stone,bob.stone@example.org,+14155550102\n"  # no record id: cleaning refuses the row
            + 'c9,"Bob,Stone,bob.stone@example.org,+14155550102\n'  # an unterminated quote: unreadable
            + "c4,Di,Eng,di.eng@example.org,+14155550104\n"
        )
        _refresh_then_erase_bob(config, instance)
        text = landing.read_text()
        assert "bob" not in text.lower() and "di.eng@example.org" in text and "ann.lee@example.org" in text
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert not conn.execute("select * from raw.crm where contains(lower(record::varchar), 'bob')").fetchall()
            assert not conn.execute("select * from cdp.quarantine where contains(lower(value), 'bob')").fetchall()


@pytest.mark.dagster
def test_rows_after_an_erased_parquet_row_are_renumbered_to_their_rows_in_the_rewritten_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A Parquet file cannot keep an empty row, so the rows after an erased one move up, and every table that
    names a row (raw, cleaned, identifiers) follows them."""
    import duckdb

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        crm_platform_config(tmp_path, server.url)
        path = tmp_path / "cdp.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["sources"][0].update({"format": "parquet", "glob": "crm/*.parquet"})
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        people = tmp_path / "people.csv"
        people.write_text(CRM_PEOPLE_HEADER + PEOPLE + "c4,Di,Eng,di.eng@example.org,+14155550104\n")
        landing = tmp_path / "landing" / "crm" / "people.parquet"
        landing.parent.mkdir(parents=True)
        with duckdb.connect() as conn:
            conn.execute(f"copy (select * from read_csv('{people}', all_varchar = true)) to '{landing}'")
        _refresh_then_erase_bob(config, instance)
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            in_file = dict(
                conn.execute(
                    f"select id, file_row_number + 1 from read_parquet('{landing}', file_row_number = true)"
                ).fetchall()
            )
            assert set(in_file) == {"c1", "c3", "c4"}
            raw_rows = dict(conn.execute("select record ->> '$.id', _row_number from raw.crm").fetchall())
            cleaned = dict(conn.execute("select source_record_id, row_number from clean.person_records").fetchall())
            identifiers = set(
                conn.execute("select source_record_id, row_number from clean.person_identifiers").fetchall()
            )
        assert raw_rows == in_file == cleaned
        assert identifiers == {(record, row) for record, row in in_file.items()}


@pytest.mark.dagster
def test_a_warehouse_without_a_newer_stage_table_is_erased_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A warehouse made before a stage added a table (the profiles stage has not run since) erases the person
    from every table it has."""
    import duckdb

    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        config = crm_platform_config(tmp_path, server.url)
        (tmp_path / "landing" / "crm").mkdir(parents=True)
        (tmp_path / "landing" / "crm" / "people.csv").write_text(CRM_PEOPLE_HEADER + PEOPLE)
        _refresh_then_erase_bob(config, instance, drop=("meta.profiled_identity", "meta.profile_changes"))
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select status from privacy.requests").fetchall() == [("completed",)]
            assert not conn.execute("select * from cdp.golden_profiles where email like 'bob%'").fetchall()
