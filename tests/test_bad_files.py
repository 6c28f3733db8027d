"""A file that cannot be mapped is quarantined whole while the rest of its source loads and the run succeeds."""

import json
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from resources.config import CDPConfig, load_config
from tests.fixtures import Platform, check_evaluation, materialize_stages

pytestmark = pytest.mark.dagster

HEADER = "id,first,last,email\n"
GOOD_A = HEADER + "A1,Ann,Lee,ann@example.org\nA2,Bo,Chan,bo@example.org\n"
GOOD_C = HEADER + "C1,Cy,Diaz,cy@example.org\n"
# The same people as the fixed file below, each broken in one of the ways real exports are.
BAD_FILES = {
    "semicolon": ("id;first;last;email\nB1;Dee;Eng;dee@example.org\n", "looks ';'-separated"),
    "missing_column": ("id,first,email\nB1,Dee,dee@example.org\n", "has no column(s) ['last']"),
    "column_case": (
        "id,first, Last,email\nB1,Dee,Eng,dee@example.org\n",
        "has no column(s) ['last'] that the configuration maps; its first line has 4 column(s); it has 'Last' "
        "where the mapping says 'last' (column names match exactly, case too)",
    ),
    "latin1": (
        (HEADER + "B1,Désirée,Eng,dee@example.org\nB2,Zoë,Éluard,zoe@example.org\n").encode("latin-1"),
        "is not utf-8: lines 2, 3",
    ),
    # Excel's "CSV (Macintosh)": read as one line, it was taken for an empty file, withdrawing the rows.
    "mac_line_ends": (
        (HEADER + "B1,Dee,Eng,dee@example.org\n").replace("\n", "\r"),
        "has lines ended by a carriage return alone (classic Mac OS line endings)",
    ),
}
FIXED = HEADER + "B1,Dee,Eng,dee@example.org\nB2,Zoe,Eluard,zoe@example.org\n"


def _config(folder: Path, encoding: str = "utf-8", glob: str = "*.csv") -> CDPConfig:
    path = folder / "cdp.yaml"
    path.write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        f"  - {{name: crm, format: csv, glob: '{glob}', role: person, record_id: id,\n"
        f"     csv: {{encoding: {encoding}}},\n"
        "     fields: {first_name: first, last_name: last, email: email},\n"
        "     identifiers: [{path: email, type: email}]}\n"
    )
    return load_config(path)


def _run(config: CDPConfig, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return build_definitions(config).resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)


def _files_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == "files_readable"
    ]
    return evaluation


def _write(landing: Path, name: str, content: str | bytes) -> None:
    path = landing / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    _write(folder, "a_good.csv", GOOD_A)
    _write(folder, "c_good.csv", GOOD_C)
    return folder


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unmappable_file_is_quarantined_whole_and_the_other_files_load(kind, tmp_path, landing, instance):
    content, expected_reason = BAD_FILES[kind]
    _write(landing, "b_bad.csv", content)
    config = _config(tmp_path)
    result = _run(config, instance)
    assert result.success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    # The files sorting before and after the bad one are loaded and cleaned.
    assert platform.sql("select source_record_id from clean.person_records order by 1") == [("A1",), ("A2",), ("C1",)]
    assert platform.scalar("select count(*) from raw.crm where _file = 'b_bad.csv'") == 0
    rows = platform.sql("select row_number, reason, scope, stage from cdp.quarantine where file = 'b_bad.csv'")
    [(row_number, reason, scope, stage)] = rows
    assert (row_number, scope, stage) == (None, "file", "extract")
    assert reason.startswith("file b_bad.csv ") and expected_reason in reason
    check = _files_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "b_bad.csv" in check.metadata["files"].value and check.metadata["files_quarantined"].value == 1
    # The blocking checks downstream still pass: accounting holds for the files that loaded.
    failed = [
        e.event_specific_data.asset_check_key.name
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    assert failed == ["files_readable"]


def test_a_fixed_file_replaces_its_file_quarantine_row(tmp_path, landing, instance):
    _write(landing, "b_bad.csv", BAD_FILES["semicolon"][0])
    config = _config(tmp_path)
    assert _run(config, instance).success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    # Re-running with the same broken file neither retries nor duplicates it.
    again = _run(config, instance)
    assert again.success and not _files_check(again).passed
    assert platform.scalar("select count(*) from cdp.quarantine where file = 'b_bad.csv'") == 1

    _write(landing, "b_bad.csv", FIXED)
    fixed = _run(config, instance)
    assert fixed.success and _files_check(fixed).passed
    assert platform.scalar("select count(*) from cdp.quarantine where file = 'b_bad.csv'") == 0
    assert platform.sql("select source_record_id from clean.person_records order by 1") == [
        ("A1",),
        ("A2",),
        ("B1",),
        ("B2",),
        ("C1",),
    ]


@pytest.mark.parametrize("kind", ["missing_column", "latin1", "mac_line_ends", "parquet_cut_short"])
def test_a_loaded_file_replaced_by_a_version_that_cannot_be_read_keeps_its_rows(kind, tmp_path, landing, instance):
    """A re-delivery cut short in transfer, or laid out otherwise, is quarantined as a file and warned about;
    the rows of the version loaded before stay, with the records and customers they give, until a readable
    version replaces them."""
    if kind == "parquet_cut_short":
        (tmp_path / "cdp.yaml").write_text(
            "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
            "  - {name: crm, format: parquet, glob: '*.parquet', role: person, record_id: id,\n"
            "     fields: {first_name: first, last_name: last, email: email},\n"
            "     identifiers: [{path: email, type: email}]}\n"
        )
        config = load_config(tmp_path / "cdp.yaml")
        people = {"id": ["B1", "B2"], "first": ["Dee", "Zoe"], "last": ["Eng", "Eluard"]}
        people["email"] = ["dee@example.org", "zoe@example.org"]
        pq.write_table(pa.table(people), landing / "b.parquet")
        whole = (landing / "b.parquet").read_bytes()
        broken: str | bytes = whole[: len(whole) // 2]
        name = "b.parquet"
    else:
        config = _config(tmp_path)
        _write(landing, "b.csv", FIXED)
        broken, name = BAD_FILES[kind][0], "b.csv"
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert _run(config, instance).success
    if kind == "parquet_cut_short":
        assert platform.scalar("select count(*) from clean.person_records") == 2
    before = platform.sql("select source_record_id, email from clean.person_records order by 1")
    customers = platform.sql("select source_record_id, customer_id from cdp.identity_map order by 1")

    _write(landing, name, broken)
    result = _run(config, instance)
    assert result.success and not _files_check(result).passed
    assert "the 2 rows of the version loaded before are kept" in _files_check(result).metadata["files"].value
    assert platform.sql("select source_record_id, email from clean.person_records order by 1") == before
    assert platform.sql("select source_record_id, customer_id from cdp.identity_map order by 1") == customers
    # Another version that cannot be read keeps them still.
    _write(landing, name, broken + (b"\0" if isinstance(broken, bytes) else "\n"))
    assert not _files_check(_run(config, instance)).passed
    assert platform.sql("select source_record_id, email from clean.person_records order by 1") == before

    # A readable version replaces them, and the warning clears.
    if kind == "parquet_cut_short":
        pq.write_table(pa.table({**people, "email": ["dee@example.org", "zoe.new@example.org"]}), landing / name)
    else:
        _write(landing, name, FIXED.replace("zoe@", "zoe.new@"))
    fixed = _run(config, instance)
    assert fixed.success and _files_check(fixed).passed
    assert ("B2", "zoe.new@example.org") in platform.sql("select source_record_id, email from clean.person_records")
    assert platform.scalar("select count(*) from cdp.quarantine where file = ?", [name]) == 0


def test_a_failed_file_is_read_again_when_the_configuration_is_fixed(tmp_path, landing, instance):
    _write(landing, "b_bad.csv", BAD_FILES["latin1"][0])
    assert _run(_config(tmp_path), instance).success
    config = _config(tmp_path, encoding="latin-1")
    result = _run(config, instance)
    assert result.success and _files_check(result).passed
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select first_name from clean.person_records where file = 'b_bad.csv' order by 1") == [
        ("Désirée",),
        ("Zoë",),
    ]
    assert platform.scalar("select count(*) from cdp.quarantine") == 0


def test_json_lines_without_objects_and_broken_parquet_files_are_quarantined_whole(tmp_path, instance):
    landing = tmp_path / "landing"
    (landing / "shop").mkdir(parents=True)
    (landing / "pos").mkdir()
    (landing / "shop" / "a.jsonl").write_text(json.dumps({"cid": "S1", "mail": "s1@example.org"}) + "\n")
    (landing / "shop" / "b.jsonl").write_text(json.dumps([{"cid": "S2"}, {"cid": "S3"}], indent=1) + "\n")
    # UTF-16, as Windows tools write it, with and without a byte order mark.
    (landing / "shop" / "c.jsonl").write_text(json.dumps({"cid": "S4"}) + "\n", encoding="utf-16")
    (landing / "shop" / "d.jsonl").write_text(json.dumps({"cid": "S5"}) + "\n", encoding="utf-16-be")
    pq.write_table(
        pa.table({"card": ["C1"], "name": ["Ann Lee"], "address": [{"city": "Boston"}]}), landing / "pos" / "a.parquet"
    )
    pq.write_table(pa.table({"card": ["C2"]}), landing / "pos" / "b.parquet")
    (landing / "pos" / "c.parquet").write_bytes(b"PAR1 truncated")
    # A struct without the mapped field: the file is refused, as a missing column is, not read as NULLs.
    pq.write_table(
        pa.table({"card": ["C4"], "name": ["Bo Chan"], "address": [{"town": "Salem"}]}), landing / "pos" / "d.parquet"
    )
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: shop, format: jsonl, glob: 'shop/*.jsonl', role: person, record_id: cid,\n"
        "     fields: {email: mail}}\n"
        "  - {name: pos, format: parquet, glob: 'pos/*.parquet', role: person, record_id: card,\n"
        "     fields: {full_name: name, city: address.city}}\n"
    )
    config = load_config(tmp_path / "cdp.yaml")
    defs = build_definitions(config)
    raw = [a for a in defs.assets if a.key.path[0] == "raw"]
    result = dg.materialize(raw, instance=instance, resources=defs.resources)
    assert result.success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select _file from raw.shop union all select _file from raw.pos order by 1") == [
        ("pos/a.parquet",),
        ("shop/a.jsonl",),
    ]
    reasons = dict(platform.sql("select file, reason from cdp.quarantine where scope = 'file'"))
    assert reasons["shop/b.jsonl"].startswith("file shop/b.jsonl is a JSON array, not JSON lines (line 1 opens a list)")
    assert reasons["shop/c.jsonl"] == (
        "file shop/c.jsonl cannot be read: the file is UTF-16 text, and sources read UTF-8, latin-1 or cp1252 "
        "(csv.encoding), one byte a character: save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"
    )
    assert reasons["shop/d.jsonl"] == reasons["shop/c.jsonl"].replace("c.jsonl", "d.jsonl")
    assert reasons["pos/b.parquet"].startswith("file pos/b.parquet has no column(s) ['name', 'address']")
    assert reasons["pos/d.parquet"].startswith("file pos/d.parquet has no column(s) ['address.city']")
    assert reasons["pos/c.parquet"].startswith("file pos/c.parquet cannot be read: not a readable Parquet file")
    checks = {
        e.event_specific_data.asset_key.path[1]: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert not checks["shop"].passed and not checks["pos"].passed
    assert "pos/b.parquet" in checks["pos"].metadata["files"].value
    assert "pos/c.parquet" in checks["pos"].metadata["files"].value


def test_a_mapping_that_gives_no_value_warns_naming_the_source_the_field_and_what_was_quarantined(tmp_path, instance):
    """Every birth date in a format the mapping does not declare, every event without the mapped time: the
    run succeeds (rows are quarantined, as designed) and the warning check says which mapping gave nothing."""
    landing = tmp_path / "landing"
    (landing / "web").mkdir(parents=True)
    (landing / "crm.csv").write_text("id,first,born\nA1,Ann,31/12/1980\nA2,Bo,25/02/1975\n")
    (landing / "web" / "e.jsonl").write_text(
        "".join(json.dumps({"id": f"m{i}", "user": "A1", "ts": "2025-01-01T00:00:00Z"}) + "\n" for i in range(3))
    )
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: crm, format: csv, glob: 'crm.csv', role: person, record_id: id,\n"
        "     fields: {first_name: first, date_of_birth: {path: born, formats: ['%m/%d/%Y']}}}\n"
        "  - {name: web, format: jsonl, glob: 'web/*.jsonl', role: events, record_id: user, event_id: id,\n"
        "     fields: {occurred_at: time}}\n"
    )
    config = load_config(tmp_path / "cdp.yaml")
    defs = build_definitions(config)
    chosen = [a for a in defs.assets if a.key.path[0] in ("raw", "clean")]
    result = dg.materialize(chosen, instance=instance, resources=defs.resources, selection=dg.AssetSelection.all())
    assert result.success
    checks = {
        (e.event_specific_data.asset_key.path[1], e.event_specific_data.check_name): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    people = checks[("person_records", "mapped_fields_have_values")]
    assert not people.passed and people.severity == dg.AssetCheckSeverity.WARN
    assert (
        "| crm | date_of_birth (born) | no value in any of 2 cleaned rows "
        "| not a valid date in the format(s) %m/%d/%Y (2 rows) |" in people.metadata["details"].value
    )
    events = checks[("events", "mapped_fields_have_values")]
    assert not events.passed
    assert (
        "| web | (every row) | all 3 rows quarantined | missing timestamp (3 rows) |"
        in events.metadata["details"].value
    )


def test_a_glob_matching_no_file_warns_naming_where_it_looked(tmp_path, instance):
    """A misspelt landing folder or glob loads nothing: the run stays green (the source may simply have no
    files yet) but the warning check says where no file was found."""
    config = _config(tmp_path)  # its landing folder does not even exist
    result = _run(config, instance)
    assert result.success
    check = _files_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["files_matching"].value == 0
    assert (
        check.description
        == f"no file matches {tmp_path / 'landing' / '*.csv'}: check the source's glob and landing.path"
    )
    (tmp_path / "landing").mkdir()
    _write(tmp_path / "landing", "a.csv", GOOD_A)
    assert _files_check(_run(config, instance)).passed


def test_files_whose_names_begin_with_a_dot_are_not_read_and_are_named(tmp_path, instance):
    """A name beginning with a dot is an upload under way or a system file, so it is not read; but a user who
    exported `.customers.csv` hears why nothing loaded, and which files were passed over beside loaded ones."""
    config = _config(tmp_path)
    (tmp_path / "landing").mkdir()
    _write(tmp_path / "landing", ".customers.csv", GOOD_A)
    result = _run(config, instance)
    check = _files_check(result)
    assert not check.passed
    assert check.description == (
        f"no file matches {tmp_path / 'landing' / '*.csv'}: check the source's glob and landing.path; 1 matching "
        "file(s) not read because the name begins with a dot (.customers.csv): such names are taken for uploads "
        "under way and system files; rename a file without the dot to load it"
    )
    _write(tmp_path / "landing", "c.csv", GOOD_C)
    check = _files_check(_run(config, instance))
    assert check.passed
    assert check.metadata["hidden_files_not_read"].value == ".customers.csv"
    assert Platform(tmp_path, config, None, instance, tmp_path).sql("select distinct _file from raw.crm") == [
        ("c.csv",)
    ]


def test_a_mapped_email_or_phone_links_records_without_being_listed_as_an_identifier(tmp_path, instance):
    """A new user maps `email` and `phone` and lists no identifiers: the same address in two systems is still
    one person, however differently the systems spell the name; a path listed under a type of its own keeps
    that type."""
    for name, rows in {
        "crm": "C1,Robert,Smith,bob.smith@example.org,\nC2,Maria,Garcia,,+49 30 1234567\n",
        "shop": "S1,Bob,Smyth,bob.smith@example.org,\nS2,M.,Garcia-Lopez,,030 1234567\n",
    }.items():
        (tmp_path / "landing" / name).mkdir(parents=True)
        _write(tmp_path / "landing" / name, "people.csv", "id,first,last,email,phone\n" + rows)
    path = tmp_path / "cdp.yaml"
    path.write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        + "".join(
            f"  - {{name: {name}, format: csv, glob: '{name}/*.csv', role: person, record_id: id, "
            "default_country: DE,\n     fields: {first_name: first, last_name: last, email: email, phone: phone}}\n"
            for name in ("crm", "shop")
        )
        + "  - {name: pos, format: csv, glob: 'pos/*.csv', role: person, record_id: id, fields: {email: mail},\n"
        "     identifiers: [{path: mail, type: work_email}]}\n"
        "identity: {identifier_types: {work_email: {normalize: email}}}\n"
    )
    config = load_config(path)
    assert [(i.path, i.type) for i in config.sources[0].identifiers] == [("email", "email"), ("phone", "phone")]
    assert [(i.path, i.type) for i in config.sources[2].identifiers] == [("mail", "work_email")]
    assert _run(config, instance).success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql(
        "select list(source || ':' || source_record_id order by source, source_record_id) as records "
        "from cdp.identity_map group by customer_id order by records"
    ) == [(["crm:C1", "shop:S1"],), (["crm:C2", "shop:S2"],)]


def test_a_misspelt_identifier_or_event_id_path_warns_though_every_row_cleans(tmp_path, instance):
    """`traits.emial` and `messageID` read nothing and fail nothing: the e-mails never link and every event is
    keyed by its file and line, so one sent twice loads twice. The mapped-fields check names both; spelt
    right, it passes."""
    landing = tmp_path / "landing"
    landing.mkdir()
    events = [
        {"messageId": f"m{i}", "userId": "A1", "traits": {"email": "ann@example.org"}, "ts": "2025-01-01T00:00:00Z"}
        for i in range(3)
    ]
    (landing / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [*events, events[0]]))
    (landing / "crm.csv").write_text("id,first\nA1,Ann\n")

    def run(email_path: str, event_id: str) -> dg.AssetCheckEvaluation:
        (tmp_path / "cdp.yaml").write_text(
            "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
            "  - {name: crm, format: csv, glob: 'crm.csv', role: person, record_id: id, fields: {first_name: first}}\n"
            f"  - {{name: web, format: jsonl, glob: '*.jsonl', role: events, record_id: userId, event_id: {event_id},\n"
            "     fields: {occurred_at: ts},\n"
            f"     identifiers: [{{path: userId, type: user_id}}, {{path: {email_path}, type: email}}]}}\n"
        )
        result, _ = materialize_stages(tmp_path / "cdp.yaml", instance, ("raw", "clean"))
        return check_evaluation(result, "mapped_fields_have_values", "events")

    check = run("traits.emial", "messageID")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    details = check.metadata["details"].value
    assert "| web | identifier email (traits.emial) | no email identifier in any of 4 cleaned rows |" in details
    assert "| web | event_id (messageID) | no value in any of 4 cleaned rows: every row is keyed by its file" in details
    assert "user_id" not in details
    (tmp_path / "wh.duckdb").unlink()
    assert run("traits.email", "messageId").passed


def test_a_record_id_reused_for_another_person_warns_naming_both_lines_and_a_change_log_does_not(tmp_path, instance):
    """A change log gives a record new e-mails, surnames and phones over time; a reused id gives it another
    person's every value. Only the second warns, naming the lines, as identity will join the two people."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "crm_1.csv").write_text(
        "id,first,last,email,phone,born,changed\n"
        "A1,Ann,Lee,ann@example.org,+14155550101,1980-01-02,2024-01-01\n"
        "B1,Bo,Chan,bo@example.org,+14155550102,1975-03-04,2024-01-01\n"
        "C1,,,cy@example.org,,,2024-01-01\n"
    )
    (landing / "crm_2.csv").write_text(
        "id,first,last,email,phone,born,changed\n"
        # Ann married and changed e-mail and phone: one person, her first name and birth date unchanged.
        "A1,ann,Marsh,ann.marsh@example.org,+14155550199,1980-01-02,2024-06-01\n"
        # The id B1 given to someone else entirely.
        "B1,Dee,Eng,dee@example.org,+14155550103,1990-05-06,2024-06-01\n"
        # Only an e-mail to compare: a new address alone is a change, not a new person.
        "C1,,,cy.new@example.org,,,2024-06-01\n"
    )
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: crm, format: csv, glob: '*.csv', role: person, record_id: id,\n"
        "     fields: {first_name: first, last_name: last, email: email, phone: phone,\n"
        "              date_of_birth: born, updated_at: changed},\n"
        "     identifiers: [{path: email, type: email}]}\n"
    )
    result, _ = materialize_stages(tmp_path / "cdp.yaml", instance, ("raw", "clean"))
    check = check_evaluation(result, "record_ids_name_one_person")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["versions_unlike_their_latest"].value == 1
    assert "| crm | crm_2.csv line 3 | crm_1.csv line 3 | 5 |" in check.metadata["details"].value
    # Headless, the log shows the description beside "did not pass", not the metadata: it names the lines too.
    assert check.description == "crm: crm_1.csv line 3 is unlike its record's latest version, crm_2.csv line 3"


def test_a_json_line_python_reads_but_the_warehouse_refuses_is_quarantined_alone(tmp_path, instance):
    """JSON may escape half of a surrogate pair (a string cut inside an emoji) and nest deeper than Python's
    reader follows; the warehouse's JSON reader refuses the first and Python's the second, and either failed
    the source's whole load. Each such line is quarantined with its reason and the file's other lines load."""
    landing = tmp_path / "landing" / "web"
    landing.mkdir(parents=True)
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    (landing / "a.jsonl").write_text(
        '{"id": "w1", "t": "2025-06-01T10:00:00Z", "p": {"name": "\\ud83c\\udfa9 hat"}}\n'
        '{"id": "w2", "t": "2025-06-01T10:00:00Z", "p": {"name": "cut \\ud83c"}}\n'
        '{"id": "w3", "t": "2025-06-01T10:00:00Z", "p": {"\\udfa9": 1}}\n'
        f'{{"id": "w4", "t": "2025-06-01T10:00:00Z", "p": {deep}}}\n'
        '{"id": "w5", "t": "2025-06-01T10:00:00Z", "p": {"name": "a backslash, \\\\ud83c, is text"}}\n'
    )
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: crm, format: csv, glob: 'crm/*.csv', role: person, record_id: id, fields: {email: email}}\n"
        "  - {name: web, format: jsonl, glob: 'web/*.jsonl', role: events, record_id: id, event_id: id,\n"
        "     fields: {occurred_at: t, event: {value: View}, properties: p}}\n"
    )
    config = load_config(tmp_path / "cdp.yaml")
    defs = build_definitions(config)
    raw = [a for a in defs.assets if a.key.path[-1] == "web"]
    result = dg.materialize(raw, instance=instance, resources=defs.resources)
    assert result.success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select _row_number, record ->> '$.p.name' from raw.web order by 1") == [
        (1, "\U0001f3a9 hat"),
        (5, "a backslash, \\ud83c, is text"),
    ]
    assert platform.sql("select row_number, reason from cdp.quarantine where source = 'web' order by 1") == [
        (2, "invalid JSON: \\ud83c is half of a UTF-16 surrogate pair without its other half"),
        (3, "invalid JSON: \\udfa9 is half of a UTF-16 surrogate pair without its other half"),
        (4, "invalid JSON: arrays and objects nested more than 100 levels deep"),
    ]


def test_a_link_to_a_file_outside_the_landing_folder_is_quarantined_unread(tmp_path, landing, instance):
    # Whoever may drop files may drop links: one to a system file, one to a well-formed export kept elsewhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.csv").write_text(HEADER + "S1,Sam,Out,sam@example.org\n", encoding="utf-8")
    (elsewhere / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    (landing / "b_link.csv").symlink_to(elsewhere / "secret.csv")
    (landing / "d_passwd.csv").symlink_to(elsewhere / "passwd")
    # A link to a file inside the folder is the folder's own file, and loads.
    (landing / "sub").mkdir()
    (landing / "sub" / "e.txt").write_text(HEADER + "E1,Eve,In,eve@example.org\n", encoding="utf-8")
    (landing / "e_inside.csv").symlink_to(landing / "sub" / "e.txt")
    config = _config(tmp_path)
    result = _run(config, instance)
    assert result.success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select source_record_id from clean.person_records order by 1") == [
        ("A1",),
        ("A2",),
        ("C1",),
        ("E1",),
    ]
    rows = platform.sql("select file, value, reason, scope from cdp.quarantine order by file")
    assert [(file, value, scope) for file, value, _, scope in rows] == [
        ("b_link.csv", None, "file"),
        ("d_passwd.csv", None, "file"),
    ]
    assert all("is a link to a file outside the landing folder" in reason for _, _, reason, _ in rows)
    assert not platform.sql("select * from cdp.quarantine where value like '%root%' or reason like '%root%'")
    check = _files_check(result)
    assert not check.passed and check.metadata["files_quarantined"].value == 2


def test_a_json_line_nested_thousands_deep_is_quarantined_and_its_file_loads(tmp_path, instance):
    landing = tmp_path / "landing"
    landing.mkdir()
    deep = '{"cid": "S2", "mail": "s2@example.org", "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
    # At the limit, and brackets inside a string, which nest nothing, load.
    limit = '{"cid": "S3", "mail": "s3@example.org", "x": ' + "[" * 99 + "]" * 99 + "}"
    quoted = json.dumps({"cid": "S4", "mail": "s4@example.org", "note": "[" * 5000})
    lines = [json.dumps({"cid": "S1", "mail": "s1@example.org"}), deep, limit, quoted]
    (landing / "a.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\nsources:\n"
        "  - {name: shop, format: jsonl, glob: '*.jsonl', role: person, record_id: cid,\n"
        "     fields: {email: mail}, identifiers: [{path: mail, type: email}]}\n"
    )
    config = load_config(tmp_path / "cdp.yaml")
    result = _run(config, instance)
    assert result.success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select source_record_id from clean.person_records order by 1") == [("S1",), ("S3",), ("S4",)]
    assert platform.sql("select row_number, reason, scope from cdp.quarantine") == [
        (2, "invalid JSON: arrays and objects nested more than 100 levels deep", "row")
    ]


def test_a_source_folder_linked_to_a_mount_elsewhere_loads_as_the_folder_own(tmp_path, instance):
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "f.csv").write_text(HEADER + "F1,Fay,Mount,fay@example.org\n", encoding="utf-8")
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "crm").symlink_to(mount, target_is_directory=True)
    config = _config(tmp_path, glob="crm/*.csv")
    assert _run(config, instance).success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.sql("select source_record_id from clean.person_records") == [("F1",)]
    assert platform.sql("select * from cdp.quarantine") == []


def test_a_loaded_file_that_turns_out_a_link_outside_loses_its_rows(tmp_path, landing, instance):
    """A file loaded before the extract refused links (the link read as the file), or a loaded file replaced
    by a link outside: its rows are withdrawn, as an empty file's would be, not kept as a cut-short
    transfer's are."""
    _write(landing, "b.csv", FIXED)
    config = _config(tmp_path)
    assert _run(config, instance).success
    platform = Platform(tmp_path, config, None, instance, tmp_path)
    assert platform.scalar("select count(*) from clean.person_records where source_record_id like 'B%'") == 2
    # The same bytes, size and modification time, now outside behind a link: nothing says it changed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.replace(landing / "b.csv", elsewhere / "b.csv")
    (landing / "b.csv").symlink_to(elsewhere / "b.csv")
    result = _run(config, instance)
    assert result.success and not _files_check(result).passed
    assert platform.sql("select source_record_id from clean.person_records order by 1") == [("A1",), ("A2",), ("C1",)]
    [(reason, scope)] = platform.sql("select reason, scope from cdp.quarantine where file = 'b.csv'")
    assert "is a link to a file outside the landing folder" in reason and scope == "file"
    assert "kept" not in reason
    # Refused once, it is not read again while it stays as it is.
    again = _run(config, instance)
    assert again.success and platform.scalar("select count(*) from cdp.quarantine where file = 'b.csv'") == 1
    loads = [
        e
        for e in again.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key.path == ["raw", "crm"]
    ]
    assert loads[0].event_specific_data.materialization.metadata["files_quarantined_this_run"].value == 0


def test_a_damaged_tombstone_ledger_stops_the_load_naming_its_line(tmp_path, landing, instance, monkeypatch):
    """The ledger keeps erased people out of a rebuilt warehouse: a line of it that cannot be read stops the
    load rather than being skipped, which would let the person it keeps out load again."""
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    config = _config(tmp_path)
    ledger = config.privacy_requests_path / "tombstones.jsonl"
    ledger.parent.mkdir(parents=True)
    good = json.dumps({"hash": "ab" * 32, "kind": "email", "request_id": "r1", "erased_at": "2026-01-02T03:04:05"})
    ledger.write_text(good + "\n" + good[:40] + "\n")
    result = (
        build_definitions(config)
        .resolve_job_def(FULL_REFRESH)
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{ledger} line 2 is not a tombstone" in failure.event_specific_data.error.message
    ledger.write_text(good + "\n")
    assert _run(config, instance).success
    assert Platform(tmp_path, config, None, instance, tmp_path).sql("select hash, kind from privacy.tombstones") == [
        ("ab" * 32, "email")
    ]
