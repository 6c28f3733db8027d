"""JSON-lines files read by Spark's executors load what the reader in this process loads: the same raw rows
with the same line numbers, the same rejects with the same reasons, and the same verdict on a file that
is not JSON lines or not UTF-8, across files Spark splits into many parts."""

import bz2
import gzip
import json
import random
from pathlib import Path

import duckdb
import pytest
import yaml

import cdp_assets.extract.assets as extract
import cdp_assets.extract.readers as readers
from cdp_assets.extract.readers import readable_on_executors
from resources.config import load_config
from resources.spark.runner import SparkSql
from resources.sql import Sql
from resources.warehouse import create_shared
from tests.fixtures import nasty_csv

pytestmark = pytest.mark.spark


def _mixed_lines(seed: int) -> bytes:
    """Seeded JSON lines with every kind of line the reader tells apart, the odd ones at random places."""
    rng = random.Random(seed)
    odd = [
        b"",
        b"   ",
        b'{"id": "crlf", "n": 1}\r',
        b'{"id": "bad-utf8", "name": "\xff\xfe"}',
        b'{"id": "unterminated", "n": 1',
        # A string left open: the line feed ends up inside it on one reading, the line on another.
        b'{"id": "open-string", "name": "Ann',
        b'{"id": "extra"} trailing',
        b"[1, 2, 3]",
        b'"just a string"',
        b"not json at all",
        '{"id": "accent", "name": "Zoë Ørsted"}'.encode(),
        b'{"id": "nested", "address": {"city": "Lyon", "lines": ["a", "b"]}}',
        b"\t",
    ]
    lines = [b'\xef\xbb\xbf{"id": "bom-first", "n": 0}']
    for n in range(1, 3000):
        if rng.random() < 0.05:
            lines.append(rng.choice(odd))
        else:
            pad = "x" * rng.randrange(0, 120)
            lines.append(json.dumps({"id": f"r{n}", "n": n, "pad": pad}).encode())
    lines.append(b'{"id": "last", "name": "open')
    return b"\n".join(lines)  # no line feed after the last line


CASES = {
    "mixed": _mixed_lines(7),
    "final_line_feed": b'{"id": "a"}\n{"id": "b", "name": "open\n',
    "blank_last_lines": b'{"id": "a"}\n\n\n',
    # Several lines not UTF-8 and none UTF-8 beyond ASCII: an export in another encoding, refused whole.
    "latin1": "\n".join(json.dumps({"id": f"l{n}", "name": "x"}) for n in range(40)).encode()
    + b'\n{"id": "l40", "name": "Jos\xe9"}\n{"id": "l41", "name": "Ren\xe9e"}\n',
    # One damaged line among UTF-8 text: that line alone is rejected.
    "one_bad_byte": '{"id": "u1", "name": "Zoë"}\n{"id": "u2", "name": "Ren\xe9e"}\n'.encode()
    + b'{"id": "u3", "name": "Jos\xe9"}\n',
    "array_document": json.dumps([{"id": "a"}, {"id": "b"}], indent=1).encode() + b"\n",
    "array_one_element_a_line": b'[\n{"id": "a"},\n{"id": "b"}\n]\n',
    "list_after_an_object": b'{"id": "a"}\n[{"id": "b"}]\n',
    "empty": b"",
}


def _config(folder: Path, fmt: str = "jsonl", **settings: str):  # noqa: ANN202 - a CDPConfig
    source = {"name": fmt, "format": fmt, "glob": f"*.{fmt}", "role": "person", "record_id": "id"}
    if settings:
        source["csv"] = settings
    raw = {"sources": [source]}
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture(scope="module")
def runners(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    """A DuckDB runner and a Spark runner over the platform's schemas; Spark splits files every 16 kB, so
    the mixed JSON-lines file is read in 17 parts and the CSV files in 8 by two executor threads."""
    conn = duckdb.connect()
    duck = Sql(conn)
    create_shared(duck.execute)
    runner = SparkSql(spark, staged_transactions=True)
    create_shared(runner.execute)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16384")
    try:
        yield duck, runner
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
        conn.close()


def _loaded(sql, source, path: Path, engine: str) -> tuple[dict, list, list, list]:  # noqa: ANN001
    rel = f"{engine}/{path.name}"
    extract.ensure_raw_table(sql, source)
    outcome = extract.load_file(sql, source, path, rel, "sha-" + path.name, engine=engine)
    raw = sql.rows(
        f"select _row_number, record::varchar from {extract.raw_table(source)} where _file = ? order by 1", [rel]
    )
    rejects = sql.rows(
        "select row_number, field, value, reason, scope from meta.extract_quarantine "
        "where source = ? and file = ? order by row_number nulls first, reason",
        [source.name, rel],
    )
    files = sql.rows(
        "select rows_loaded, rows_rejected, status from meta.loaded_files where source = ? and file = ?",
        [source.name, rel],
    )
    outcome = {k: v for k, v in outcome.items() if k != "file"}
    # A file's verdict names the file: the engines load it under different names here.
    rejects = [(n, f, v, r.replace(rel, "FILE"), s) for n, f, v, r, s in rejects]
    return outcome, raw, rejects, files


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_lines_read_on_the_executors_load_what_this_process_loads(
    case: str, runners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    duck, spark_sql = runners
    path = tmp_path / "landing folder" / f"{case}.jsonl"  # a space Hadoop must take as written
    path.parent.mkdir()
    path.write_bytes(CASES[case])
    source = _config(tmp_path).sources[0]
    expected = _loaded(duck, source, path, "duckdb")
    # The Spark run must not fall back on the reader in this process.
    monkeypatch.setattr(extract, "read_file", lambda *a, **k: pytest.fail("read in the driver"))
    got = _loaded(spark_sql, source, path, "spark")
    assert got == expected
    outcome, raw, rejects, _ = got
    if case == "mixed":
        assert outcome["status"] == "loaded" and len(raw) > 2500 and len(rejects) > 50
        assert raw[0] == (1, '{"id": "bom-first", "n": 0}')
        reasons = [r[3] for r in rejects]
        assert any(r.startswith("invalid JSON: Invalid control character") for r in reasons)
        assert reasons[-1].startswith("invalid JSON: Unterminated string")  # the last line, with no line feed
    if case == "latin1":
        assert outcome["status"] == "failed" and "is not utf-8" in rejects[0][3]
    if case == "one_bad_byte":
        assert outcome["status"] == "loaded" and [r[0] for r in rejects] == [3]


@pytest.fixture
def small_csv_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 250 lines, each looking 210 lines ahead: the chunking of CSV files shows in a few thousand lines."""
    monkeypatch.setattr(readers, "_CSV_CHUNK", 250)
    monkeypatch.setattr(readers, "_CSV_WINDOW", 210)


def test_which_files_the_executors_read() -> None:
    assert readable_on_executors(Path("/landing/web/2024-01-01.jsonl"), "jsonl")
    assert readable_on_executors(Path("/landing/collector/batch 7.jsonl"), "segment")
    assert readable_on_executors(Path("/landing/crm/contacts.csv"), "csv")
    assert readable_on_executors(Path("/landing/shop/orders.parquet"), "parquet")
    assert readable_on_executors(Path("/landing/web/events.jsonl.gz"), "jsonl")
    assert readable_on_executors(Path("/landing/crm/contacts.csv.bz2"), "csv")
    assert not readable_on_executors(Path("/landing/web/events.jsonl.GZ"), "jsonl")  # not as Hadoop matches it
    assert not readable_on_executors(Path("/landing/web/events.jsonl.zst"), "jsonl")  # refused, as here
    assert not readable_on_executors(Path("/landing/shop/orders.parquet.gz"), "parquet")
    assert not readable_on_executors(Path("/landing/web/events[1].jsonl"), "jsonl")
    assert not readable_on_executors(Path("/landing/web/10:00.jsonl"), "jsonl")


def _csv_rows(seed: int) -> str:
    """Seeded CSV rows, each one whole line: plain, quoted with delimiters and doubled quotes inside,
    accented, empty fields, and blank lines between them."""
    rng = random.Random(seed)
    out = []
    for n in range(3000):
        kind = rng.random()
        if kind < 0.03:
            out.append("")
        elif kind < 0.2:
            out.append(f'r{n},"Smith, Jr.","says ""hi""",{n}')
        elif kind < 0.3:
            out.append(f"r{n},Zoë,Ørsted,{n}")
        elif kind < 0.33:
            out.append(f"r{n},,,")
        else:
            out.append(f"r{n},Ann{'x' * rng.randrange(0, 60)},Lee,{n}")
    return "\r\n".join(out) if seed % 2 else "\n".join(out) + "\n"


HEADER = "id,first,last,n"
# A quoted value running past the window of lines a record may span on the executors.
_RUNAWAY = [HEADER] + [f"r{n},a,b,{n}" for n in range(3000)]
_RUNAWAY[1500], _RUNAWAY[2500] = 'x,"open,b,c', 'y,b,c,"'
# (content, csv settings, whether the executors read it): a file with a byte not in its encoding, or a
# record running past the window (here 210 lines, in chunks of 250), is read by the reader in this
# process, giving the same rows and rejects.
CSV_CASES = {
    "plain": (("\ufeff" + HEADER + "\n" + _csv_rows(3)).encode(), {}, True),
    "crlf_blank_header_lines": (("\n\n" + HEADER + "\n" + _csv_rows(4)).encode(), {}, True),
    "latin1": ((HEADER + "\n" + _csv_rows(5)).encode("latin-1"), {"encoding": "latin-1"}, True),
    "semicolons": ((HEADER + "\n" + _csv_rows(7)).replace(",", ";").encode(), {"delimiter": ";"}, True),
    "value_across_lines": ((HEADER + "\n" + _csv_rows(9) + 'q1,"Ann\nMarie",Lee,1\nq2,Bo,Li,2\n').encode(), {}, True),
    "broken_rows": ((HEADER + "\n" + _csv_rows(11) + 'b1,too,many,fields,here\nb2,"open,Lee,3\n').encode(), {}, True),
    "broken_everywhere": (nasty_csv(random.Random(17), 3000).encode(), {}, True),
    "broken_everywhere_crlf": (
        nasty_csv(random.Random(19), 3000).replace("\n", "\r\n").encode("cp1252"),
        {"encoding": "cp1252"},
        True,
    ),
    "runaway_quote": ("\n".join(_RUNAWAY).encode(), {}, False),
    "bad_byte": ((HEADER + "\n" + _csv_rows(13)).encode() + b"x1,Jos\xe9,Lee,1\n", {}, False),
    "utf8_declared_latin1": ((HEADER + "\n" + _csv_rows(15)).encode(), {"encoding": "latin-1"}, False),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
@pytest.mark.usefixtures("small_csv_chunks")
def test_csv_files_read_on_the_executors_load_what_this_process_loads(
    case: str, runners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    duck, spark_sql = runners
    content, settings, on_executors = CSV_CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    source = _config(tmp_path, "csv", **settings).sources[0]
    expected = _loaded(duck, source, path, "duckdb")
    in_driver = []
    read_file = extract.read_file
    monkeypatch.setattr(extract, "read_file", lambda *a, **k: in_driver.append(a) or read_file(*a, **k))
    # The driver, when it reads a file after all, reads it line by line: it never holds one whole.
    monkeypatch.setattr(readers, "_decoded_lines", lambda *a: pytest.fail("a file held whole in the driver"))
    got = _loaded(spark_sql, source, path, "spark")
    assert got == expected
    assert (not in_driver) == on_executors
    outcome, raw, rejects, _ = got
    if case in ("plain", "crlf_blank_header_lines", "latin1", "semicolons"):
        assert outcome["status"] == "loaded" and len(raw) > 2800 and not rejects
        assert json.loads(raw[0][1])["id"] == "r0"
    elif case != "utf8_declared_latin1":
        assert rejects and len(raw) > 2400


def _parquet(path: Path, rows: int) -> None:
    """A Parquet file of `rows` rows in row groups of 100, with every kind of column a source may send."""
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute(
        f"""copy (
            select 'p' || i as id, i::integer as n, i * 1.5 as ratio, (i / 7)::decimal(12, 2) as amount,
                   case when i % 5 = 0 then null else 'Zoë "Ø" ' || i end as name, i % 2 = 0 as flag,
                   date '2024-01-01' + i::integer as day, timestamp '2024-01-01 10:00:00' + to_seconds(i) as at,
                   timestamptz '2024-01-01 10:00:00+00' + to_seconds(i) as at_utc,
                   [i, i + 1] as pair, {{'city': 'Lyon', 'zip': i::varchar}} as address
            from range({rows}) t(i)
        ) to '{path}' (format parquet, row_group_size 100)"""
    )
    conn.close()


@pytest.mark.parametrize("case", ["row_groups", "no_rows", "not_parquet"])
def test_parquet_files_read_on_the_executors_load_what_this_process_loads(
    case: str, runners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    duck, spark_sql = runners
    path = tmp_path / f"{case}.parquet"
    if case == "not_parquet":
        path.write_bytes(b"id,name\n1,Ann\n")
    else:
        _parquet(path, 2_050 if case == "row_groups" else 0)
    source = _config(tmp_path, "parquet").sources[0]
    expected = _loaded(duck, source, path, "duckdb")
    # Three row groups a task: seven tasks for the 21 groups, the last one short.
    monkeypatch.setattr(readers, "_PARQUET_TASK_ROWS", 300)
    monkeypatch.setattr(extract, "read_file", lambda *a, **k: pytest.fail("read in the driver"))
    got = _loaded(spark_sql, source, path, "spark")
    assert got == expected
    outcome, raw, rejects, _ = got
    if case == "row_groups":
        assert outcome["rows_loaded"] == 2_050 and [n for n, _ in raw] == list(range(1, 2_051))
        assert json.loads(raw[7][1])["address"] == {"city": "Lyon", "zip": "7"}
    if case == "not_parquet":
        assert outcome["status"] == "failed" and "not a readable Parquet file" in rejects[0][3]


def _bz2_blocks(content: bytes) -> bytes:
    """bzip2 at its smallest block (100 kB of text): a larger file is several blocks, which Hadoop splits at."""
    return bz2.compress(content, compresslevel=1)


# (content, format, csv settings): files compressed as sources send them; each large enough that a bzip2
# file is many blocks and Spark splits it (every 16 kB here), a gzip file being one split whatever its size.
_LONG_JSONL = b"\n".join(
    json.dumps({"id": f"r{n}", "pad": "x" * random.Random(n).randrange(0, 200)}).encode() for n in range(6000)
)
COMPRESSED_CASES = {
    "csv_broken_everywhere": (nasty_csv(random.Random(31), 6000).encode(), "csv", {}),
    # Mixed lines, ending with a line feed after a string left open: that line's reject says so only when
    # the file's last byte is known.
    "jsonl_final_line_feed": (_mixed_lines(29) + b"\n" + _LONG_JSONL + b'\n{"id": "b", "name": "open\n', "jsonl", {}),
}


@pytest.mark.parametrize("suffix", [".gz", ".bz2"])
@pytest.mark.parametrize("case", sorted(COMPRESSED_CASES))
@pytest.mark.usefixtures("small_csv_chunks")
def test_compressed_files_are_read_on_the_executors_as_this_process_reads_them(
    case: str, suffix: str, runners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    duck, spark_sql = runners
    content, fmt, settings = COMPRESSED_CASES[case]
    plain = tmp_path / f"{case}.{fmt}"
    plain.write_bytes(content)
    path = tmp_path / f"{case}.{fmt}{suffix}"
    path.write_bytes(gzip.compress(content) if suffix == ".gz" else _bz2_blocks(content))
    source = _config(tmp_path, fmt, **settings).sources[0]
    expected = _loaded(duck, source, plain, "duckdb")
    assert _loaded(duck, source, path, "duckdb") == expected  # here as uncompressed
    monkeypatch.setattr(extract, "read_file", lambda *a, **k: pytest.fail("read in the driver"))
    got = _loaded(spark_sql, source, path, "spark")
    assert got == expected
    outcome, raw, rejects, _ = got
    assert outcome["status"] == "loaded" and len(raw) > 2000 and rejects


def test_a_damaged_compressed_file_is_refused_as_this_process_refuses_it(
    runners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    duck, spark_sql = runners
    packed = gzip.compress(_LONG_JSONL)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    source = _config(tmp_path).sources[0]
    expected = _loaded(duck, source, path, "duckdb")
    in_driver = []
    read_file = extract.read_file
    monkeypatch.setattr(extract, "read_file", lambda *a, **k: in_driver.append(a) or read_file(*a, **k))
    got = _loaded(spark_sql, source, path, "spark")
    assert got == expected and in_driver  # Hadoop's codec failed; this process says where and why
    outcome, raw, rejects, _ = got
    assert outcome["status"] == "failed" and raw == [] and "is not a readable gzip file" in rejects[0][3]
