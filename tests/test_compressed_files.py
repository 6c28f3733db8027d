"""Landing files compressed with gzip (`.gz`) or bzip2 (`.bz2`) load what the same file uncompressed loads:
the same raw rows on the same line numbers, the same rejects and the same verdict on the file. A damaged
compressed file loads no row and is quarantined naming the damage; a name ending in a compression the
platform does not read is refused by name; an erasure rewrites a compressed landing file compressed as it
was."""

import bz2
import gzip
import json
import random
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

import cdp_assets.extract.assets as extract
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.privacy.assets import PRIVACY_JOB
from demo.destination_server import DestinationServer
from resources.config import load_config
from resources.sql import Sql
from resources.warehouse import create_shared
from tests.fixtures import CRM_PEOPLE_HEADER, crm_platform_config, nasty_csv

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress}

HEADER = "id,first,last,n"
CSV_CASES = {
    "plain": ("\ufeff" + HEADER + "\n" + "\n".join(f"r{n},Ann,Lee,{n}" for n in range(500)) + "\n").encode(),
    "broken_everywhere": nasty_csv(random.Random(23), 800).encode(),
    "bad_byte": (HEADER + "\nr1,Ann,Lee,1\n").encode() + b"x1,Jos\xe9,Lee,1\n",
    "latin1": (HEADER + "\nr1,Zoë,Lee,1\nr2,René,Ørsted,2").encode("latin-1"),
    "empty": b"",
}
JSONL_CASES = {
    "mixed": b'{"id": "a"}\n\n{"id": "b", "name": "open\n[1, 2]\n{"id": "bad", "n": "\xff"}\n{"id": "c"}',
    "not_json_lines": json.dumps([{"id": "a"}, {"id": "b"}], indent=1).encode(),
}


def _config(folder: Path, fmt: str, **settings: str):  # noqa: ANN202 - a CDPConfig
    source = {"name": fmt, "format": fmt, "glob": f"*.{fmt}*", "role": "person", "record_id": "id"}
    if settings:
        source["csv"] = settings
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump({"sources": [source]}))
    return load_config(path)


@pytest.fixture
def sql():  # noqa: ANN201
    conn = duckdb.connect()
    runner = Sql(conn)
    create_shared(runner.execute)
    yield runner
    conn.close()


def _loaded(sql: Sql, source, path: Path) -> tuple[dict, list, list]:  # noqa: ANN001
    """What loading the file gives, its name taken out of the reasons so that files can be compared."""
    extract.ensure_raw_table(sql, source)
    outcome = extract.load_file(sql, source, path, path.name, "sha-" + path.name)
    raw = sql.rows(
        f"select _row_number, record::varchar from {extract.raw_table(source)} where _file = ? order by 1", [path.name]
    )
    rejects = sql.rows(
        "select row_number, field, value, reason, scope from meta.extract_quarantine "
        "where source = ? and file = ? order by row_number nulls first, reason",
        [source.name, path.name],
    )
    outcome = {k: v for k, v in outcome.items() if k != "file"}
    return outcome, raw, [(n, f, v, r.replace(path.name, "FILE"), s) for n, f, v, r, s in rejects]


@pytest.mark.stage
@pytest.mark.parametrize("suffix", sorted(COMPRESS))
@pytest.mark.parametrize(
    ("fmt", "case"), [("csv", c) for c in sorted(CSV_CASES)] + [("jsonl", c) for c in sorted(JSONL_CASES)]
)
def test_a_compressed_file_loads_what_the_file_uncompressed_loads(
    fmt: str, case: str, suffix: str, sql: Sql, tmp_path: Path
) -> None:
    content = (CSV_CASES if fmt == "csv" else JSONL_CASES)[case]
    settings = {"encoding": "latin-1"} if case == "latin1" else {}
    source = _config(tmp_path, fmt, **settings).sources[0]
    plain = tmp_path / f"{case}.{fmt}"
    plain.write_bytes(content)
    packed = tmp_path / f"{case}.{fmt}{suffix.upper() if case == 'plain' else suffix}"  # the ending in any case
    packed.write_bytes(COMPRESS[suffix](content))
    expected = _loaded(sql, source, plain)
    assert _loaded(sql, source, packed) == expected
    outcome, raw, rejects = expected
    if case in ("plain", "mixed", "broken_everywhere"):
        assert raw
    if case in ("mixed", "broken_everywhere", "bad_byte"):
        assert rejects and outcome["status"] == "loaded"
    if case in ("empty", "not_json_lines"):
        assert outcome["status"] in ("empty", "failed") and not raw


def _damaged(suffix: str, content: bytes) -> bytes:
    packed = COMPRESS[suffix](content)
    if suffix == ".gz":
        return packed[: len(packed) // 2]  # cut short, as by a copy that did not finish
    return packed[:40] + bytes(b ^ 0xFF for b in packed[40:60]) + packed[60:]  # corrupt in the middle


@pytest.mark.stage
@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_a_damaged_compressed_file_loads_no_row_and_says_why(suffix: str, sql: Sql, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"id": f"r{n}", "pad": random.Random(n).random()}) + "\n" for n in range(20_000))
    path = tmp_path / f"events.jsonl{suffix}"
    path.write_bytes(_damaged(suffix, lines.encode()))
    source = _config(tmp_path, "jsonl").sources[0]
    outcome, raw, rejects = _loaded(sql, source, path)
    assert outcome["status"] == "failed" and raw == []
    [(row, _, _, reason, scope)] = rejects
    kind = "gzip" if suffix == ".gz" else "bzip2"
    assert row is None and scope == "file" and f"is not a readable {kind} file" in reason, reason


@pytest.mark.stage
@pytest.mark.parametrize(
    ("name", "fmt", "says"),
    [
        ("people.csv.zst", "csv", "compressed with zstd"),
        ("events.jsonl.zip", "jsonl", "compressed with zip"),
        ("orders.parquet.gz", "parquet", "Parquet compresses its own pages"),
    ],
)
def test_a_compression_the_platform_does_not_read_is_refused_by_name(
    name: str, fmt: str, says: str, sql: Sql, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"id\nr1\n"))
    source = _config(tmp_path, fmt).sources[0]
    outcome, raw, rejects = _loaded(sql, source, path)
    assert outcome["status"] == "failed" and raw == []
    assert says in rejects[0][3] and rejects[0][4] == "file"


PEOPLE = (
    "c1,Ann,Lee,ann.lee@example.org,+14155550101\n"
    "c2,Bob,Stone,bob.stone@example.org,+14155550102\n"
    'c3,Cy,"Diaz\nJr.",cy.diaz@example.org,+14155550103\n'
)
MORE = 'c4,Dee,"Moss\nSr.",dee.moss@example.org,+14155550104\nc5,Eve,Park,eve.park@example.org,+14155550105\n'


@pytest.mark.dagster
def test_an_erasure_rewrites_a_compressed_landing_file_compressed_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDP_PRIVACY_KEY", "k" * 32)
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        crm_platform_config(tmp_path, server.url)
        raw = yaml.safe_load((tmp_path / "cdp.yaml").read_text())
        raw["sources"][0]["glob"] = "crm/*.csv.*"
        (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(tmp_path / "cdp.yaml")
        folder = tmp_path / "landing" / "crm"
        folder.mkdir(parents=True)
        files = {
            folder / "people.csv.gz": CRM_PEOPLE_HEADER + PEOPLE,
            folder / "more.csv.bz2": CRM_PEOPLE_HEADER + MORE,
        }
        for path, text in files.items():
            path.write_bytes(COMPRESS[path.suffix](text.encode()))
        defs = build_definitions(config)
        assert defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance).success
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select count(*) from raw.crm").fetchone() == (5,)
            loaded = conn.execute("select file, rows_loaded, status from meta.loaded_files order by 1").fetchall()
            assert loaded == [("crm/more.csv.bz2", 2, "loaded"), ("crm/people.csv.gz", 3, "loaded")]
            erased = conn.execute(
                "select customer_id from cdp.identity_map where source_record_id in ('c3', 'c4') order by 1"
            ).fetchall()
        specs = [
            {"type": "erase", "id_type": "customer_id", "value": customer, "reference": f"T-{n}"}
            for n, (customer,) in enumerate(erased)
        ]
        ran = defs.resolve_job_def(PRIVACY_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"privacy__requests": {"config": {"requests": specs}}}}
        )
        assert ran.success
        texts = {p.name: (gzip if p.suffix == ".gz" else bz2).decompress(p.read_bytes()).decode() for p in files}
        # Each erased record (two lines) left empty, every other row on its line.
        assert texts["people.csv.gz"].split("\n") == [*(CRM_PEOPLE_HEADER + PEOPLE).split("\n")[:3], "", "", ""]
        assert texts["more.csv.bz2"].split("\n") == [CRM_PEOPLE_HEADER.strip(), "", "", MORE.split("\n")[2], ""]
        assert not any(name in text for text in texts.values() for name in ("Diaz", "cy.diaz", "Moss", "dee.moss"))
        # The rewritten files are recorded as loaded: the next refresh neither reads nor reloads them.
        again = defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=instance)
        assert again.success
        with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
            assert conn.execute("select count(*) from raw.crm").fetchone() == (3,)
            assert conn.execute("select count(*) from meta.extract_quarantine").fetchone() == (0,)
