"""Landing-file readers keep the good rows of a broken file and say exactly which rows are bad and why."""

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdp_assets.extract.readers import FileFormatError, read_csv, read_file, read_jsonl, read_parquet
from resources.sql import Sql
from tests.fixtures import nasty_csv

pytestmark = pytest.mark.unit


def _csv(tmp_path: Path, content: bytes) -> tuple[list[tuple[int, dict]], list]:
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    result, rows = read_csv(path)
    return [(n, json.loads(r)) for n, r in rows], result.rejects


def test_csv_rows_carry_their_line_numbers(tmp_path):
    rows, rejects = _csv(tmp_path, b'id,name\n1,Ann\n2,"Multi\nline"\n3,Cy\n')
    assert rows == [
        (2, {"id": "1", "name": "Ann"}),
        (3, {"id": "2", "name": "Multi\nline"}),
        (5, {"id": "3", "name": "Cy"}),
    ]
    assert rejects == []


def test_unterminated_quote_rejects_one_line_and_keeps_the_rest(tmp_path):
    rows, rejects = _csv(tmp_path, b'id,name\n1,"Ann\n2,Bob\n3,Cy\n')
    assert [n for n, _ in rows] == [3, 4]
    assert [(r.row_number, r.reason.split(":")[0]) for r in rejects] == [(2, "unterminated quote")]


def test_unterminated_quote_spanning_into_a_later_quote(tmp_path):
    rows, rejects = _csv(tmp_path, b'id,name,city\n1,"Ann,Oslo\n2,Bob,Rome\n3,"Cy",Nice\n')
    assert [r["id"] for _, r in rows] == ["2", "3"]
    assert [r.row_number for r in rejects] == [2]


def test_wrong_field_count_and_wrong_encoding_are_rejected_with_field(tmp_path):
    rows, rejects = _csv(tmp_path, b"id,name\n1,Ann,extra\n2,D\xe9b\n3,Cy\n")
    assert [r["id"] for _, r in rows] == ["3"]
    assert rejects[0].row_number == 2 and rejects[0].reason == "expected 2 fields, found 3"
    assert rejects[1].row_number == 3 and rejects[1].field == "name" and "0xE9" in rejects[1].reason


def test_a_broken_row_holding_a_byte_not_in_the_encoding_is_rejected_with_the_byte_shown_replaced(tmp_path):
    rows, rejects = _csv(tmp_path, b'id,name\n1,D\xe9b,extra\n2,"D\xe9b\n3,Cy\n')
    assert [r["id"] for _, r in rows] == ["3"]
    assert [(r.row_number, r.reason.split(":")[0], r.value) for r in rejects] == [
        (2, "expected 2 fields, found 3", "1,D\ufffdb,extra"),
        (3, "unterminated quote", '2,"D\ufffdb'),
    ]
    pa.array([r.value for r in rejects], pa.string())  # what the quarantine writes: it once raised here


def test_blank_lines_are_not_rows(tmp_path):
    rows, rejects = _csv(tmp_path, b"id\n\n1\n\n")
    assert rows == [(3, {"id": "1"})] and rejects == []


def test_empty_csv_is_reported_empty(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"")
    result, rows = read_csv(path)
    assert result.empty and list(rows) == []


def test_duplicate_header_is_a_file_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"id,id\n1,2\n")
    with pytest.raises(FileFormatError, match="repeats"):
        read_csv(path)


def test_jsonl_written_with_a_byte_order_mark_keeps_its_first_record(tmp_path):
    """Windows tools write UTF-8 with a BOM (and CRLF line ends): the mark is no part of the first line."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": "Zo\xc3\xab"}\r\n{"a": 2}\r\n')
    result, rows = read_jsonl(path)
    assert [(n, json.loads(text)) for n, text in rows] == [(1, {"a": "Zoë"}), (2, {"a": 2})]
    assert result.rejects == [] and result.file_error is None


def test_jsonl_bad_lines_are_rejected(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2\n[1, 2]\n{"a": "\xff"}\n{"a": 3}\n{"a" 4}\n')
    result, rows = read_jsonl(path)
    assert [n for n, _ in rows] == [1, 6]
    assert [r.reason for r in result.rejects if r.row_number in (3, 7)] == [
        "invalid JSON: Expecting ',' delimiter at the end of the line",
        "invalid JSON: Expecting ':' delimiter at character 6 of the line",
    ]
    assert [(r.row_number, r.reason.split(":")[0]) for r in result.rejects] == [
        (3, "invalid JSON"),
        (4, "expected a JSON object, found list"),
        (5, "not valid utf-8"),
        (7, "invalid JSON"),
    ]


def test_a_json_line_cut_inside_a_string_is_rejected_saying_where(tmp_path):
    """A line cut short in transfer ends inside a string: before its line feed, or at the file's end."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"id": "c2", "name": "Ann\n{"id": "c3", "name": "Bo')
    result, rows = read_jsonl(path)
    assert [n for n, _ in rows] == [1]
    assert [(r.row_number, r.reason) for r in result.rejects] == [
        (2, "invalid JSON: Invalid control character at the end of the line"),
        (3, "invalid JSON: Unterminated string starting at character 22 of the line"),
    ]


def test_parquet_rows_and_corrupt_file(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": [1, 2], "name": ["a", None]}), path)
    result, rows = read_parquet(path)
    assert result.columns == ["id", "name"]
    assert [(n, json.loads(r)) for n, r in rows] == [
        (1, {"id": 1, "name": "a"}),
        (2, {"id": 2, "name": None}),
    ]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(FileFormatError, match="Parquet"):
        read_parquet(broken)


def test_a_file_in_another_encoding_is_refused_whole_but_one_bad_line_is_not(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("id,name\n1,Ann\n2,Désirée\n3,Zoë\n".encode("latin-1"))
    result, rows = read_csv(path)
    list(rows)
    assert result.file_error and "lines 3, 4" in result.file_error and "csv.encoding" in result.file_error
    # One stray byte in a file that is otherwise UTF-8 (or plain ASCII) is a damaged record.
    path.write_bytes("id,name\n1,Ann\n2,Débora\n".encode("latin-1") + "3,Zoë\n4,Désirée\n".encode())
    result, rows = read_csv(path)
    assert [n for n, _ in rows] == [2, 4, 5] and result.file_error is None
    path.write_bytes("id,name\n1,Ann\n2,Débora\n".encode("latin-1"))
    result, rows = read_csv(path)
    assert [n for n, _ in rows] == [2] and result.file_error is None and [r.row_number for r in result.rejects] == [3]


def test_jsonl_without_any_object_is_not_json_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'"a"\n{"a": 2]\n')
    result, rows = read_jsonl(path)
    assert list(rows) == []
    assert result.file_error.startswith("is not JSON lines: no line is a JSON object (line 1: expected a JSON object")
    path.write_bytes(b"[1, 2]\n[3]\n")
    result, rows = read_jsonl(path)
    assert list(rows) == [] and "found list" in result.file_error
    path.write_bytes('{"n": "Zoë"}\n'.encode("latin-1") * 2)
    result, rows = read_jsonl(path)
    assert list(rows) == [] and result.file_error.startswith("is not utf-8: lines 1, 2")


def test_a_json_array_document_is_refused_whole_even_where_some_of_its_lines_read_as_objects(tmp_path):
    """An array written one element a line: its last element has no comma after it and reads as an object,
    and line by line the file would load that record and quarantine the others."""
    path = tmp_path / "a.jsonl"
    why = (
        "is a JSON array, not JSON lines (line {} opens a list): format jsonl reads one JSON object per line; "
        "write the records so, e.g. with jq -c '.[]'"
    )
    for content, line in (
        (b'[\n  {"id": "c1"},\n  {"id": "c2"},\n  {"id": "c3"}\n]\n', 1),
        (b'\xef\xbb\xbf\n\n  [{"id": "c1"},\n{"id": "c2"}]\n', 3),
        (b'[{"id": "c1"}, {"id": "c2"}]', 1),
    ):
        path.write_bytes(content)
        result, rows = read_jsonl(path)
        list(rows)
        assert result.file_error == why.format(line)
    # A list on a line after an object is that line's mistake, not the file's.
    path.write_bytes(b'{"id": "c1"}\n[{"id": "c2"}]\n{"id": "c3"}\n')
    result, rows = read_jsonl(path)
    assert [n for n, _ in rows] == [1, 3] and result.file_error is None
    assert [r.reason for r in result.rejects] == ["expected a JSON object, found list"]


def test_a_text_file_in_utf16_or_utf32_is_refused_whole_whatever_the_declared_encoding(tmp_path):
    text = "id\tname\n1\tZoë\n2\tAnn\n"
    for encoding, named in (
        ("utf-16", "UTF-16"),
        ("utf-16-le", "UTF-16"),
        ("utf-16-be", "UTF-16"),
        ("utf-32", "UTF-32"),
    ):
        for name, content in (("a.csv", text.encode(encoding)), ("a.csv.gz", gzip.compress(text.encode(encoding)))):
            path = tmp_path / name
            path.write_bytes(content)
            for declared in ("utf-8", "latin-1", "cp1252"):
                with pytest.raises(FileFormatError, match=f"the file is {named} text"):
                    read_file(path, "csv", delimiter="\t", encoding=declared)
            with pytest.raises(FileFormatError, match=f"iconv -f {named} -t UTF-8"):
                read_file(path, "jsonl")
    # A zero byte in a UTF-8 file is a damaged value (cleaning refuses the control character), not another
    # encoding.
    path = tmp_path / "b.csv"
    path.write_bytes(b"id,name\n1,Ann\x00\n2,Bob\n")
    result, rows = read_file(path, "csv")
    assert [n for n, _ in rows] == [2, 3] and result.file_error is None


def test_csv_plain_lines_read_by_duckdb_give_what_reading_line_by_line_gives(tmp_path, monkeypatch):
    """Seeded nasty files (quoted values, stray quotes, line breaks in values, control characters, wrong
    field counts, other delimiters and encodings, undecodable bytes): reading the plain lines in bulk gives
    the rows, line numbers, rejects and verdicts that reading every line through `csv` gives."""
    import random

    from cdp_assets.extract import readers

    def read(path: Path, whole: bool, **options):
        if not whole:
            monkeypatch.setattr(readers, "_decoded_lines", lambda *_: None)
        try:
            result, rows = read_csv(path, **options)
            return list(rows), result.rejects, result.file_error, result.empty, result.columns
        except FileFormatError as exc:
            return str(exc)
        finally:
            monkeypatch.undo()

    pieces = ["a", "Zoë", " ", ",", '"', '""', "\r", "\n", "\r\n", "\t", "\x00", "\x0b", "\u00a0", "é", "\\", "x,y"]
    rng = random.Random(5)
    plain_rows = 0
    path = tmp_path / "f.csv"
    for _ in range(150):
        width = rng.choice([1, 2, 3])
        lines = [",".join(f"c{i}" for i in range(width))]
        for _ in range(rng.randrange(1, 12)):
            if rng.random() < 0.6:
                fields = ["a", "Zoë", "", " x ", "\\z", "1", '"x,y"', '"a""b"', '""', '"q"r', ' "s"']
                lines.append(",".join(rng.choice(fields) for _ in range(width)))
            else:
                lines.append("".join(rng.choice(pieces) for _ in range(rng.randrange(0, 8))))
        encoding, delimiter = rng.choice(["utf-8", "latin-1", "cp1252"]), rng.choice([",", ";", "\t"])
        text = ("\n".join(lines) + rng.choice(["", "\n", "\r\n"])).replace(",", delimiter)
        data = text.encode(encoding, errors="replace") + (b"\xff,\xfe\n" if rng.random() < 0.1 else b"")
        path.write_bytes(data)
        whole = read(path, True, delimiter=delimiter, encoding=encoding)
        assert whole == read(path, False, delimiter=delimiter, encoding=encoding), data
        plain_rows += len(whole[0]) if isinstance(whole, tuple) else 0
    assert plain_rows > 200


class _LinesSql(Sql):
    """The in-process runner with the one method Spark's runner adds for reading a file where it lies: the
    file's lines, numbered, as Spark's text reader splits them (at line feeds only)."""

    def numbered_lines(self, name: str, path: str) -> int:
        parts = Path(path).read_bytes().split(b"\n")
        if parts[-1] == b"":
            parts.pop()
        table = pa.table({"line_number": pa.array(range(1, len(parts) + 1), pa.int64()), "line": parts})
        with self.registered("numbered", table) as numbered:
            self.create_table_as(name, f"select * from {numbered}", temporary=True)
        return len(parts)


def test_csv_lines_read_where_they_lie_give_what_reading_in_order_gives(tmp_path, monkeypatch):
    """The executors' reading of a CSV file whose lines are not each a record (a value across lines, a
    broken row), run here in chunks of 250 lines with a window of 210: for seeded nasty files in several
    encodings and delimiters, the same rows with the same line numbers and the same rejects as the reader
    that reads every line in order; a record running past the window leaves the file to that reader."""
    import random

    from cdp_assets.extract import readers

    monkeypatch.setattr(readers, "_CSV_CHUNK", 250)
    monkeypatch.setattr(readers, "_CSV_WINDOW", 210)
    rng = random.Random(11)
    path = tmp_path / "f.csv"
    compared = multi_line_rows = 0
    for attempt in range(24):
        encoding, delimiter = rng.choice([("utf-8", ","), ("latin-1", ";"), ("cp1252", "\t"), ("utf-8", "|")])
        text = nasty_csv(rng, rng.randrange(300, 1400)).replace(",", delimiter)
        if attempt % 4 == 1:
            text = text.replace("\n", "\r\n")
        path.write_bytes(text.encode(encoding))
        result, rows = read_csv(path, delimiter=delimiter, encoding=encoding)
        expected = (sorted(rows), sorted((r.row_number, r.reason, r.value) for r in result.rejects))
        sql = _LinesSql(duckdb.connect())
        with sql.scratch("read") as tables:
            read = readers.read_csv_on_executors(sql, path, tables, delimiter=delimiter, quote='"', encoding=encoding)
            assert read is not None, attempt
            got = (
                sorted(
                    (int(n), r)
                    for n, r in sql.rows(f"select line_number, record from {read.judged} where record is not null")
                ),
                sorted(
                    (int(n), r, v)
                    for n, r, v in sql.rows(
                        f"select line_number, reason, value from {read.judged} where reason is not null"
                    )
                ),
            )
        assert got == expected, attempt
        assert (read.rows, read.rejected) == (len(expected[0]), len(expected[1]))
        compared += 1
        multi_line_rows += sum("\n" in json.loads(r)["note"] for _, r in expected[0])
    assert compared == 24 and multi_line_rows > 100

    # A quoted value running 300 lines, past the window: the file is left to the reader in this process.
    lines = ["id,first,last,note"] + [f"r{n},a,b,{n}" for n in range(1000)]
    lines[400], lines[700] = 'x,"open,b,c', 'y,b,c,"'
    path.write_text("\n".join(lines) + "\n")
    with _LinesSql(duckdb.connect()).scratch("read") as tables:
        assert (
            readers.read_csv_on_executors(tables.sql, path, tables, delimiter=",", quote='"', encoding="utf-8") is None
        )


def test_chunks_are_chained_through_the_runs_of_lines_each_names():
    """Each chunk names, for the first line of each run of its top lines whose records lead to the same
    line after it, that line: the chain from the header looks a line up in the run it falls in."""
    from cdp_assets.extract.readers import CsvLayout, _chunk_entries

    layout = CsvLayout(["a", "b"], 1, ",", '"', "utf-8", 35, True)
    runs = {1: {11: 21, 12: 24, 14: 22}, 2: {21: 31, 23: -1}}
    assert _chunk_entries({0: {2: 11}, **runs}, layout, 10) == {0: 2, 1: 11, 2: 21}
    # 13 falls in the run from 12, whose records lead to 24, in the run from 23, which cannot say.
    assert _chunk_entries({0: {2: 13}, **runs}, layout, 10) is None
    assert _chunk_entries({0: {2: 15}, 1: runs[1], 2: {21: 31, 22: 32}}, layout, 10) == {0: 2, 1: 15, 2: 22}
    assert _chunk_entries({0: {2: 11}, 1: {11: 21}, 2: {22: 31}}, layout, 10) is None  # 21: in no run


def test_parquet_columns_named_with_dots_nest_unless_a_column_holds_their_first_part(tmp_path):
    import pandas as pd

    nested = tmp_path / "nested.parquet"
    pd.DataFrame({"id": [1], "customer.email": ["a@x.org"], "customer.name.first": ["Ann"]}).to_parquet(nested)
    result, rows = read_parquet(nested)
    assert result.columns == ["id", "customer"]
    assert [json.loads(r) for _, r in rows] == [{"id": 1, "customer": {"email": "a@x.org", "name": {"first": "Ann"}}}]
    # A column named "customer" beside "customer.email": neither can hold the other, both keep their names.
    clash = tmp_path / "clash.parquet"
    pd.DataFrame({"customer": ["x"], "customer.email": ["a@x.org"]}).to_parquet(clash)
    result, rows = read_parquet(clash)
    assert result.columns == ["customer", "customer.email"]
    assert [json.loads(r) for _, r in rows] == [{"customer": "x", "customer.email": "a@x.org"}]


def test_a_glob_matches_either_case_of_its_letters_but_keeps_its_classes():
    from resources.landing import caseless_glob

    assert caseless_glob("pos/*.csv") == "[pP][oO][sS]/*.[cC][sS][vV]"
    assert caseless_glob("web/**/[0-9]*.jsonl.gz") == "[wW][eE][bB]/**/[0-9]*.[jJ][sS][oO][nN][lL].[gG][zZ]"
    assert caseless_glob("straße_[ab].csv") == "[sS][tT][rR][aA]ß[eE]_[ab].[cC][sS][vV]"
