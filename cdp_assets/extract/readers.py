"""Read landing files row by row, turning every row into a JSON object or a reject with a reason.

Source systems produce broken exports: an unterminated quote, a row with extra fields, one byte in the
wrong encoding, a truncated JSON line. A production loader must keep the good rows of such a file, put
each bad row aside with its line number, and never let one bad quote swallow the rest of the file. The
standard readers either stop at the first error or resynchronise silently, so the CSV reader here feeds
`csv` one physical line at a time and re-parses after a record that ran past its line.
"""

from __future__ import annotations

import base64
import bisect
import bz2
import codecs
import csv
import functools
import gzip
import json
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from resources.config.sources import MAX_JSON_NESTING, UNPAIRED_SURROGATE, json_nesting_exceeds
from resources.sql import Scratch, Sql, SqlError, sql_literal

if TYPE_CHECKING:
    from resources.spark.runner import SparkSql

csv.field_size_limit(1 << 24)

# A quoted value may legitimately span lines; a record spanning more than this is a runaway quote.
_MAX_LINES_PER_RECORD = 200


@dataclass(frozen=True)
class Reject:
    """A row that could not be read: where it is and why."""

    row_number: int | None
    reason: str
    value: str | None = None
    field: str | None = None


@dataclass
class ReadResult:
    """What a reader found in one file: its columns (for tabular formats) and its bad rows."""

    columns: list[str] | None = None
    # A Parquet file's schema, nested fields included: a mapped path into a struct is checked to exist.
    schema: pa.Schema | None = None
    rejects: list[Reject] = field(default_factory=list)
    empty: bool = False
    # Set once the rows have been read when the file turned out unusable as a whole (written in another
    # encoding, JSON lines of which none is an object): its rows are not loaded and the file is quarantined.
    file_error: str | None = None
    # A file read where the warehouse's rows are (`read_jsonl_on_executors`): its lines are the engine's
    # table of this name, (line_number, record, reason, value) as text, a row to load with a record and a
    # reject with a reason, rather than `Rows` and `rejects`; `rows` and `rejected` count each kind.
    judged: str | None = None
    rows: int = 0
    rejected: int = 0


_BATCH_ROWS = 50_000
ROW_SCHEMA = pa.schema([("row_number", pa.int64()), ("record", pa.string())])


class Rows:
    """A file's good rows, (line number, JSON object text): in Arrow batches of `ROW_SCHEMA` for loading,
    or one by one. The reader's `ReadResult` is complete once they have all been read."""

    def __init__(self, batches: Iterator[pa.Table]) -> None:
        self._batches = batches

    @classmethod
    def of(cls, rows: Iterable[tuple[int, str]]) -> Rows:
        """Rows read one by one, loaded in batches."""

        def batches() -> Iterator[pa.Table]:
            numbers: list[int] = []
            records: list[str] = []
            for number, record in rows:
                numbers.append(number)
                records.append(record)
                if len(numbers) >= _BATCH_ROWS:
                    yield pa.table([numbers, records], schema=ROW_SCHEMA)
                    numbers, records = [], []
            if numbers:
                yield pa.table([numbers, records], schema=ROW_SCHEMA)

        return cls(batches())

    def batches(self) -> Iterator[pa.Table]:
        return self._batches

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for batch in self._batches:
            yield from zip(batch.column("row_number").to_pylist(), batch.column("record").to_pylist(), strict=True)


class FileFormatError(Exception):
    """The file as a whole cannot be read (e.g. not a Parquet file); the message says why."""


# Landing files compressed so that both engines read the same bytes from them: Python's codecs here, Hadoop's
# on Spark's executors, both chosen by the name's ending. A name ending in another compression's (which
# Hadoop might decompress and this process would not, or neither would) is refused by name, on both.
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2"}
_UNSUPPORTED_COMPRESSIONS = {
    ".zst": "zstd",
    ".lz4": "LZ4",
    ".snappy": "Snappy",
    ".deflate": "deflate",
    ".xz": "xz",
    ".zip": "zip",
    ".br": "Brotli",
    ".7z": "7-Zip",
}


def compression(path: Path) -> str | None:
    """The compression a landing file's name says it has (`gzip`, `bzip2`), or None for a plain file. A
    name ending in a compression the platform does not read raises `FileFormatError` saying so."""
    suffix = path.suffix.lower()
    if suffix in _UNSUPPORTED_COMPRESSIONS:
        raise FileFormatError(
            f"is compressed with {_UNSUPPORTED_COMPRESSIONS[suffix]} (its name ends in {path.suffix}), which the "
            "platform does not read: land it uncompressed, or compressed with gzip (.gz) or bzip2 (.bz2)"
        )
    return _COMPRESSIONS.get(suffix)


class _Decompressed(IO[bytes]):
    """A compressed landing file's decompressed bytes, whose damage (a truncated or corrupt stream) is raised
    as `FileFormatError` naming it, wherever in the file it is met."""

    def __init__(self, path: Path, kind: str) -> None:
        self._kind = kind
        self._stream = gzip.open(path, "rb") if kind == "gzip" else bz2.open(path, "rb")

    def _guarded(self, read):  # noqa: ANN001, ANN202 - one of the stream's reading methods
        try:
            return read()
        except (OSError, EOFError, zlib.error) as exc:
            raise FileFormatError(f"is not a readable {self._kind} file ({exc})") from exc

    def read(self, size: int = -1) -> bytes:
        return self._guarded(lambda: self._stream.read(size))

    def readline(self, size: int = -1) -> bytes:
        return self._guarded(lambda: self._stream.readline(size))

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._guarded(lambda: self._stream.seek(offset, whence))

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _Decompressed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_landing(path: Path) -> IO[bytes]:
    """A landing file's bytes as its source wrote them: decompressed when its name ends in `.gz` or `.bz2`
    (in any case), so a compressed export loads the rows, rejects and verdicts of the same file uncompressed.
    Its line numbers are those of the decompressed text."""
    kind = compression(path)
    return _Decompressed(path, kind) if kind else path.open("rb")


def write_landing(path: Path, content: bytes, like: Path) -> None:
    """Write a landing file's bytes at `path`, compressed as `like`'s name says it is (an erasure rewrites a
    landing file as its source wrote it: a `.gz` file stays one)."""
    kind = compression(like)
    path.write_bytes(gzip.compress(content) if kind == "gzip" else bz2.compress(content) if kind else content)


def removed_lines(erased: Sequence[int], known: Sequence[int], total: int) -> list[int]:
    """The lines of an erased record in a text file of `total` lines: from its first line (its row number, the
    header being line 1) up to the line before the next record the warehouse knows of, so a quoted value
    spanning lines goes with its record; the file's last record runs to its end."""
    starts = sorted(set(known) | set(erased))
    doomed: list[int] = []
    for start in sorted(set(erased)):
        following = bisect.bisect_right(starts, start)
        doomed.extend(range(start, starts[following] if following < len(starts) else total + 1))
    return doomed


def kept_lines(lines: Sequence[bytes], erased: Sequence[int], known: Sequence[int]) -> list[bytes]:
    """The file's lines with each line of an erased record (see `removed_lines`) left empty, its line break
    kept: every other row stays on the line the warehouse names, and the readers skip empty lines."""
    doomed = set(removed_lines(erased, known, len(lines)))
    return [
        line[len(line.rstrip(b"\r\n")) :] if number in doomed else line for number, line in enumerate(lines, start=1)
    ]


def landing_empty(path: Path) -> bool:
    """Whether a landing file holds no byte once decompressed."""
    if compression(path) is None:
        return path.stat().st_size == 0
    with open_landing(path) as handle:
        return not handle.read(1)


def last_byte(path: str) -> bytes:
    """The last byte of a landing file as its source wrote it (decompressed), or none for an empty file; a
    compressed file is read to its end, so on Spark this runs on an executor (`SparkSql.on_executor`)."""
    with open_landing(Path(path)) as handle:
        if compression(Path(path)) is None:
            if not handle.seek(0, 2):
                return b""
            handle.seek(-1, 2)
            return handle.read(1)
        last = b""
        while chunk := handle.read(1 << 20):
            last = chunk[-1:]
        return last


def _wrong_encoding(first_bad: list[int], bad_count: int, text_lines: int, encoding: str, hint: str) -> str | None:
    """Why a file is not in `encoding` at all, or None when its undecodable lines are damaged records;
    `first_bad` are the first of its `bad_count` undecodable lines.

    One undecodable line among readable text is a damaged record and is rejected on its own. Several, in a
    file where no line holds valid non-ASCII text in that encoding, mean the whole file was written in
    another encoding (a latin-1 export in a UTF-8 source): loading only its ASCII rows would keep a
    biased subset, so the file is refused whole.
    """
    if bad_count < 2 or text_lines:
        return None
    shown = ", ".join(str(n) for n in first_bad[:5]) + (f" and {bad_count - 5} more" if bad_count > 5 else "")
    return (
        f"is not {encoding}: lines {shown} hold bytes that are not {encoding} and no line holds {encoding} "
        f"text beyond ASCII, so the file was written in another encoding ({hint})"
    )


def _excerpt(text: str, limit: int = 200) -> str:
    """A rejected line as the quarantine shows it: without its line break, cut at `limit` characters, and
    each byte that did not decode (kept as a surrogate by `_LineFeed`, which no table can hold) shown as
    the replacement character."""
    text = text.rstrip("\r\n")
    text = text if len(text) <= limit else text[:limit] + "…"
    if text.isascii():
        return text
    return "".join("\ufffd" if 0xDC80 <= ord(char) <= 0xDCFF else char for char in text)


class _LineFeed:
    """An iterator of decoded lines that remembers what it handed out and accepts lines back."""

    undecodable = True  # whether a line may hold bytes that did not decode

    def __init__(self, path: Path, encoding: str) -> None:
        self._handle = open_landing(path)
        self._encoding = encoding
        self._pending: deque[tuple[int, str]] = deque()
        self._next_number = 1
        self.taken: list[tuple[int, str]] = []
        # Lines that do not decode, and lines with non-ASCII text that does: the file's encoding verdict.
        self.bad_lines: list[int] = []
        self.text_lines = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self._pending:
            item = self._pending.popleft()
        else:
            raw = self._handle.readline()
            if not raw:
                raise StopIteration
            if not raw.isascii():
                try:
                    raw.decode(self._encoding)
                    self.text_lines += 1
                except UnicodeDecodeError:
                    self.bad_lines.append(self._next_number)
            # surrogateescape keeps undecodable bytes so the record can be rejected naming its field.
            item = (self._next_number, raw.decode(self._encoding, errors="surrogateescape"))
            self._next_number += 1
        self.taken.append(item)
        return item[1]

    def push_back(self, items: list[tuple[int, str]]) -> None:
        self._pending.extendleft(reversed(items))

    def close(self) -> None:
        self._handle.close()


class _TextFeed(_LineFeed):
    """A `_LineFeed` over a file already decoded whole (so no line is undecodable), which can skip lines."""

    undecodable = False

    def __init__(self, lines: list[str], last_line_ends: bool) -> None:
        self._lines = lines
        self._last_line_ends = last_line_ends
        self._pending = deque()
        self._next_number = 1
        self.taken = []
        self.bad_lines = []
        self.text_lines = 0

    def __next__(self) -> str:
        if self._pending:
            item = self._pending.popleft()
        else:
            index = self._next_number - 1
            if index >= len(self._lines):
                raise StopIteration
            line = self._lines[index]
            item = (self._next_number, line + "\n" if index + 1 < len(self._lines) or self._last_line_ends else line)
            self._next_number += 1
        self.taken.append(item)
        return item[1]

    @property
    def next_index(self) -> int | None:
        """The index of the line a record read now starts on, or None while lines given back are pending."""
        return None if self._pending else self._next_number - 1

    def skip_to(self, index: int) -> None:
        self._next_number = index + 1

    def close(self) -> None:
        pass


# Encodings in which a line feed byte is always a line feed character: the file can be decoded whole and
# split into the lines `_LineFeed` reads one by one.
_WHOLE_FILE_ENCODINGS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})
# A file is held in memory whole (its text, its lines and their Arrow copy) only up to this size; a larger
# one is read line by line.
_WHOLE_FILE_BYTES = 1 << 30


def _decoded_lines(path: Path, encoding: str) -> tuple[list[str], bool] | None:
    """The file's lines without their line feeds, and whether the last one had one; None when the file
    does not decode as a whole (it is then read line by line, each bad line found on its own) or is too
    large to hold."""
    if codecs.lookup(encoding).name not in _WHOLE_FILE_ENCODINGS or path.stat().st_size > _WHOLE_FILE_BYTES:
        return None
    with open_landing(path) as handle:
        content = handle.read(_WHOLE_FILE_BYTES + 1)  # a compressed file's size is known once read
    if len(content) > _WHOLE_FILE_BYTES:
        return None
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    last_line_ends = lines[-1] == ""
    if last_line_ends:
        lines.pop()
    return lines, last_line_ends


_BODY = "(case when suffix(line, chr(13)) then left(line, length(line) - 1) else line end)"
PLAIN, BLANK, QUOTED = 1, 2, 3


def _plain_lines(sql: Sql, lines: pa.Array, delimiter: str, quote: str, width: int) -> np.ndarray:
    """Per line, what it is when a record starts on it: PLAIN, a record of `width` fields without a quote
    character; QUOTED, a record of `width` fields each either without a quote character or quoted whole
    (`"a, b"`, doubled quotes inside), closed on the line; BLANK, spaces only (not a row); 0, any other
    line, which `csv` must read. A plain or quoted line has no control character but the delimiter, no
    carriage return but a last one, and is shorter than the field size limit."""
    q, d = (f"\\x{{{ord(c):x}}}" for c in (quote, delimiter))
    field = f"(?:{q}(?:[^{q}]|{q}{q})*{q}|[^{q}{d}]*)"
    # The line without its carriage return is computed once, in a projection of its own: an expression
    # repeated in a CASE is evaluated again at each use. A delimiter that is no control character need not
    # be removed before looking for one.
    visible = "body" if ord(delimiter) >= 0x20 else f"replace(body, {sql_literal(delimiter)}, '')"
    common = f"""strpos(line, chr(13)) in (0, length(line)) and length(line) < {csv.field_size_limit()}
        and not regexp_matches({visible}, '[\\x00-\\x1f]')"""
    plain = f"""not contains(body, {sql_literal(quote)})
        and length(body) - length(replace(body, {sql_literal(delimiter)}, '')) = {width - 1}"""
    quoted = f"regexp_full_match(body, {sql_literal(f'{field}(?:{d}{field}){{{width - 1}}}')})"
    blank = "strpos(line, chr(13)) in (0, length(line)) and ltrim(body, ' ') = ''"
    with sql.registered("csv_lines", pa.table({"line": lines})) as table:
        kinds = sql.arrays(
            f"""select (case when {blank} then {BLANK} when not ({common}) then 0 when {plain} then {PLAIN}
                             when {quoted} then {QUOTED} else 0 end)::tinyint k
                from (select line, {_BODY} as body from {table})"""
        )
    return kinds["k"]


def _quoted_fields(lines: list[str], kinds: np.ndarray, delimiter: str, quote: str, width: int) -> pa.Array:
    """The fields `csv` reads from each QUOTED line, each line alone (so it is one record); a line `csv`
    does not read as `width` fields is made a line `csv` reads in turn (kind 0)."""
    indexes = np.flatnonzero(kinds == QUOTED)
    records = list(csv.reader((lines[i] for i in indexes), delimiter=delimiter, quotechar=quote, strict=False))
    if len(records) != len(indexes):  # not one record per line: read them all in turn
        kinds[indexes] = 0
        return pa.array([], pa.list_(pa.string()))
    for i, record in zip(indexes, records, strict=True):
        if len(record) != width:
            kinds[i] = 0
    return pa.array([r for r in records if len(r) == width], pa.list_(pa.string()))


def _plain_records(
    sql: Sql,
    lines: pa.Array,
    kinds: np.ndarray,
    keep: np.ndarray,
    quoted: pa.Array,
    delimiter: str,
    columns: list[str],
    read: pa.Table,
    numbers: pa.Array | None = None,
) -> pa.Table:
    """The PLAIN and QUOTED lines (see _plain_lines) marked in `keep` as rows, each written as the JSON
    `json.dumps` writes for its fields (DuckDB's `to_json` escapes every character `json.dumps` with
    `ensure_ascii=False` does, and the same way), with the rows `read` by `csv`, in line order. A PLAIN
    line is split at its delimiters; `quoted` holds the fields of each QUOTED line, in line order. The
    lines are the file's from its first unless `numbers` gives each one's number in the file."""
    parts = [
        f"{sql_literal(('{' if i == 0 else ', ') + json.dumps(c, ensure_ascii=False) + ': ')} || to_json(f[{i + 1}])"
        for i, c in enumerate(columns)
    ]
    if numbers is None:
        numbers = pa.array(np.arange(1, len(lines) + 1, dtype=np.int64))
    frame = pa.table({"number": numbers, "line": lines, "keep": keep & (kinds == PLAIN)})
    quoted_numbers = numbers.take(pa.array(np.flatnonzero(kinds == QUOTED)))
    quoted_frame = pa.table({"number": quoted_numbers, "f": quoted, "keep": pa.array(keep[kinds == QUOTED])})
    with (
        sql.registered("csv_plain_lines", frame) as table,
        sql.registered("csv_quoted_lines", quoted_frame) as quoted_table,
        sql.registered("csv_read_rows", read) as others,
    ):
        return sql.arrow(
            f"""select number as row_number, ({" || ".join(parts)} || '}}')::varchar as record
                from (select number, string_split({_BODY}, {sql_literal(delimiter)}) as f from {table} where keep
                      union all select number, f from {quoted_table} where keep)
                union all select row_number, record from {others}
                order by row_number"""
        ).cast(ROW_SCHEMA)


def _bad_bytes(value: str) -> str | None:
    """The first undecodable byte in a value, as hex, or None if the value decoded cleanly."""
    for char in value:
        if 0xDC80 <= ord(char) <= 0xDCFF:
            return f"0x{ord(char) - 0xDC00:02X}"
    return None


def _utf8_under_another_name(path: Path, encoding: str) -> str | None:
    """Why a file declared in a single-byte encoding (latin-1, cp1252) is UTF-8, or None.

    Every byte decodes in those encodings, so a UTF-8 file read in one loads without an error as
    "JosÃ© MÃ¼ller". Non-ASCII text in cp1252 or latin-1 almost never forms valid UTF-8 sequences (an
    accented letter would have to follow one of Ã, Â, Ä... each time), so a file whose bytes beyond ASCII
    all decode as UTF-8, or that starts with UTF-8's byte order mark, is UTF-8."""
    if codecs.lookup(encoding).name not in ("iso8859-1", "cp1252"):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    first: int | None = None
    with open_landing(path) as handle:
        head = handle.read(3)
        if head == codecs.BOM_UTF8:
            return f"starts with UTF-8's byte order mark but the source declares csv.encoding: {encoding}"
        handle.seek(0)
        line_number = 0
        for raw in handle:
            line_number += 1
            if raw.isascii():
                continue
            try:
                decoder.decode(raw)
            except UnicodeDecodeError:
                return None
            first = first or line_number
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return None
    if first is None:
        return None
    # The line, not its text: the reason reaches logs, which hold no customer values.
    return (
        f"is UTF-8 (line {first} is the first of its lines with text beyond ASCII, all of it valid UTF-8) but "
        f"the source declares csv.encoding: {encoding}, which would load every accented letter as two wrong ones"
    )


def _header_columns(header: list[str]) -> list[str]:
    """A CSV header record's column names as sources map them: trimmed, without a UTF-8 byte order mark;
    the one rule for both engines' readers."""
    return [h.strip().lstrip("\ufeff") for h in header]


def _unreadable(first: tuple[int, str], exc: csv.Error) -> Reject:
    """The reject of a record `csv` could not read (a value past the field size limit, a carriage return in
    an unquoted value), at its first line."""
    return Reject(first[0], f"unreadable CSV: {exc}", _excerpt(first[1]))


def _judged_record(
    record: list[str], taken: list[tuple[int, str]], columns: list[str], quote: str, encoding: str, undecodable: bool
) -> tuple[str | None, Reject | None, bool]:
    """What a CSV file's record becomes, read by `csv` from the lines `taken` ((number, text) pairs): its
    row's JSON or its reject (neither for a blank record), and whether the lines after its first are to be
    read again, as records of their own. A record that ran past its line with a wrong number of fields or
    an odd number of quotes is almost always an unterminated quote: its first line is rejected and the
    others are read again, so one bad quote never swallows the rows after it. The one rule for every line,
    whichever engine reads the file (`read_csv`, `csv_chunk_records`)."""
    line_number, first_line = taken[0]
    if not record or (len(record) == 1 and not record[0].strip()):
        return None, None, False
    width = len(columns)
    quotes = sum(text.count(quote) for _, text in taken)
    if len(record) != width or quotes % 2:
        if len(taken) > 1 or quotes % 2:
            reason = "unterminated quote: the quoted value never closes on this line"
            return None, Reject(line_number, reason, _excerpt(first_line)), True
        return None, Reject(line_number, f"expected {width} fields, found {len(record)}", _excerpt(first_line)), False
    if len(taken) > _MAX_LINES_PER_RECORD:
        return None, Reject(line_number, f"a quoted value spans {len(taken)} lines", _excerpt(first_line)), True
    bad_field = undecodable and next(((c, v) for c, v in zip(columns, record, strict=True) if _bad_bytes(v)), None)
    if bad_field:
        column, value = bad_field
        return (
            None,
            Reject(
                line_number,
                f"not valid {encoding}: byte {_bad_bytes(value)} in column '{column}'",
                value.encode(encoding, errors="surrogateescape").decode(encoding, errors="replace"),
                column,
            ),
            False,
        )
    return json.dumps(dict(zip(columns, record, strict=True)), ensure_ascii=False), None, False


def _no_header_reason(path: Path, first: Reject) -> str:
    """Why a CSV file with lines has no header: lines ended by a carriage return alone (Excel's "CSV
    (Macintosh)", classic Mac OS), which read as one line, or the first line's own problem."""
    with open_landing(path) as handle:
        start = handle.read(1 << 16)
    if b"\r" in start and b"\n" not in start:
        return (
            "has lines ended by a carriage return alone (classic Mac OS line endings), which the platform does "
            "not read: save it with LF or CRLF line endings"
        )
    return f"has no readable header: line {first.row_number}: {first.reason}"


def read_csv(
    path: Path, *, delimiter: str = ",", quote: str = '"', encoding: str = "utf-8", whole: bool = True
) -> tuple[ReadResult, Rows]:
    """Parse a CSV file; its rows are (line number, JSON object text) for good rows, and rejects are collected.

    The row number is the line the record starts on, counting the header as line 1, so a user can open
    the file at that line. A UTF-8 file declared latin-1 or cp1252 is refused whole (see
    _utf8_under_another_name). A file up to 1 GB is held in memory whole, its plain lines split by DuckDB,
    unless `whole` is false: then it is read line by line, which gives the same rows in bounded memory (a
    Spark driver reading a file its executors could not).
    """
    result = ReadResult()
    utf8 = _utf8_under_another_name(path, encoding)
    if utf8:
        raise FileFormatError(f"{utf8}; set csv.encoding: utf-8 for this source")
    decoded = _decoded_lines(path, encoding) if whole else None
    feed = _LineFeed(path, encoding) if decoded is None else _TextFeed(*decoded)
    reader = csv.reader(feed, delimiter=delimiter, quotechar=quote, strict=False)

    def next_record() -> list[str] | None:
        while True:
            feed.taken = []
            try:
                return next(reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                if not feed.taken:
                    return None
                # A runaway quote hit the end of the file or the field limit: give back all but the first line.
                result.rejects.append(_unreadable(feed.taken[0], exc))
                feed.push_back(feed.taken[1:])

    header = next_record()
    while header is not None and not any(h.strip() for h in header):
        header = next_record()
    if header is None:
        feed.close()
        if result.rejects:
            # Lines there were, none readable as a header: not an empty file, which would withdraw the rows
            # of the version loaded before (a re-delivery saved with other line endings would take every
            # customer of the file, and their opt-outs, out of the warehouse).
            raise FileFormatError(_no_header_reason(path, result.rejects[0]))
        result.empty = True
        return result, Rows(iter(()))
    columns = _header_columns(header)
    bad = _bad_bytes("".join(columns))
    if bad:
        feed.close()
        raise FileFormatError(f"the header is not valid {encoding} (byte {bad}); set csv.encoding for this source")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        feed.close()
        raise FileFormatError(f"the header repeats the column(s) {duplicates}")
    result.columns = columns
    width = len(columns)

    plain = (
        isinstance(feed, _TextFeed)
        and 1 < width <= 1000
        and delimiter not in "\r\n"
        and delimiter != quote
        and quote not in "\r\n"
    )
    plain_kinds = np.zeros(0, dtype=np.int8)
    lines: pa.Array | None = None
    sql = Sql.in_memory() if plain else None
    quoted = pa.array([], pa.list_(pa.string()))
    if sql is not None and isinstance(feed, _TextFeed):
        lines = pa.array(feed._lines, pa.string())
        plain_kinds = _plain_lines(sql, lines, delimiter, quote, width)
        quoted = _quoted_fields(feed._lines, plain_kinds, delimiter, quote, width)
    # Lines `csv` must read; a run of plain lines between two of them is taken whole.
    hard = np.flatnonzero(plain_kinds == 0)
    taken_plain = np.zeros(len(plain_kinds), dtype=bool)

    def skip_plain_lines() -> None:
        start = feed.next_index if isinstance(feed, _TextFeed) else None
        if start is None or start >= len(plain_kinds):
            return
        following = int(np.searchsorted(hard, start))
        stop = int(hard[following]) if following < len(hard) else len(plain_kinds)
        if stop > start:
            taken_plain[start:stop] = True
            feed.skip_to(int(stop))

    def slow_rows() -> Iterator[tuple[int, str]]:
        try:
            while True:
                if sql is not None:
                    skip_plain_lines()
                record = next_record()
                if record is None:
                    break
                taken = feed.taken
                row, reject, again = _judged_record(record, taken, columns, quote, encoding, feed.undecodable)
                if again:
                    feed.push_back(taken[1:])
                if reject is not None:
                    result.rejects.append(reject)
                elif row is not None:
                    yield taken[0][0], row
            result.file_error = _wrong_encoding(
                feed.bad_lines[:5],
                len(feed.bad_lines),
                feed.text_lines,
                encoding,
                "export it as that or set csv.encoding for this source",
            )
        finally:
            feed.close()

    def batches() -> Iterator[pa.Table]:
        try:
            if sql is None or lines is None:
                yield from Rows.of(slow_rows()).batches()
                return
            read = pa.concat_tables([ROW_SCHEMA.empty_table(), *Rows.of(slow_rows()).batches()])
            records = _plain_records(sql, lines, plain_kinds, taken_plain, quoted, delimiter, columns, read)
            for start in range(0, records.num_rows, 200_000):
                yield records.slice(start, 200_000)
        finally:
            if sql is not None:
                sql.close()

    return result, Rows(batches())


# What the executors make of each line of a CSV file (`csv_batch`): a row, a blank line, the header's, one
# that does not decode, or one that only the reader in this process can read (a value across lines, a
# broken row).
CSV_OUTPUTS = ("line_number", "record", "reason", "value", "kind")
_ROW, _SKIPPED, _UNDECODABLE, _SEQUENTIAL = "row", "skipped", "undecodable", "sequential"


def _one_line_csv(delimiter: str, quote: str, encoding: str, width: int) -> bool:
    """Whether a CSV file of these settings can be read line by line where its lines are: the settings under
    which this process's reader takes a run of one-line records whole (`read_csv`), in an encoding where a
    line feed byte is always a line feed."""
    return (
        codecs.lookup(encoding).name in _WHOLE_FILE_ENCODINGS
        and 1 < width <= 1000
        and delimiter not in "\r\n"
        and delimiter != quote
        and quote not in "\r\n"
    )


def _csv_header(path: Path, delimiter: str, quote: str, encoding: str) -> tuple[list[str], int] | None:
    """The file's columns and the number of the header's line, read as `read_csv` reads them; None when the
    header is anything but one readable line after blank ones (`read_csv` then says why, or reads it)."""
    feed = _LineFeed(path, encoding)
    reader = csv.reader(feed, delimiter=delimiter, quotechar=quote, strict=False)
    try:
        while True:
            feed.taken = []
            header = next(reader)
            if len(feed.taken) != 1:
                return None
            if any(h.strip() for h in header):
                break
    except (StopIteration, csv.Error):
        return None
    finally:
        feed.close()
    columns = _header_columns(header)
    if feed.bad_lines or _bad_bytes("".join(columns)) or len(set(columns)) != len(columns):
        return None
    return columns, feed.taken[0][0]


def csv_batch(
    lines: pa.Table, *, columns: list[str], header_line: int, delimiter: str, quote: str, encoding: str
) -> pa.Table:
    """A batch of a CSV file's (line_number, line) rows as `CSV_OUTPUTS` text columns: each line after the
    header that is one whole record written as the JSON `read_csv` writes for it (by the same statements,
    `_plain_lines`, `_quoted_fields` and `_plain_records`, in an in-memory database of the batch's own),
    and each other line's kind: the rule where Spark's executors hold the lines."""
    numbers = lines.column("line_number").to_numpy()
    texts: list[str] = []
    undecodable = np.zeros(len(numbers), dtype=bool)
    for i, raw in enumerate(lines.column("line").to_pylist()):
        try:
            texts.append(raw.decode(encoding))
        except UnicodeDecodeError:
            texts.append("")
            undecodable[i] = True
    width = len(columns)
    sql = Sql.in_memory()
    try:
        text = pa.array(texts, pa.string())
        kinds = _plain_lines(sql, text, delimiter, quote, width)
        quoted = _quoted_fields(texts, kinds, delimiter, quote, width)
        data = numbers > header_line
        rows = _plain_records(
            sql, text, kinds, data, quoted, delimiter, columns, ROW_SCHEMA.empty_table(), pa.array(numbers)
        )
    finally:
        sql.close()
    kind = np.where((kinds == PLAIN) | (kinds == QUOTED), _ROW, np.where(kinds == 0, _SEQUENTIAL, _SKIPPED))
    kind = np.where(data, kind, _SKIPPED)
    kind = np.where(undecodable, _UNDECODABLE, kind).astype(object)
    records = dict(zip(rows.column("row_number").to_pylist(), rows.column("record").to_pylist(), strict=True))
    return pa.table(
        {
            "line_number": pa.array([str(n) for n in numbers.tolist()], pa.string()),
            "record": pa.array([records.get(n) for n in numbers.tolist()], pa.string()),
            "reason": pa.nulls(len(numbers), pa.string()),
            "value": pa.nulls(len(numbers), pa.string()),
            "kind": pa.array(kind.tolist(), pa.string()),
        }
    )


def read_csv_on_executors(
    sql: SparkSql, path: Path, tables: Scratch, *, delimiter: str, quote: str, encoding: str
) -> ReadResult | None:
    """`read_csv` where Spark's executors read the file: its lines numbered by Spark's text reader, each
    whole-record line written as a row by `csv_batch`, and the others (a value across lines, a broken row)
    read in order within chunks of lines (`judge_csv_lines`). None, with nothing kept, for a file the
    reader in this process must read: a byte not in the encoding, an unusual header, other settings, or a
    record running past `_CSV_WINDOW` lines."""
    if landing_empty(path) or _utf8_under_another_name(path, encoding):
        return None
    header = _csv_header(path, delimiter, quote, encoding)
    if header is None or not _one_line_csv(delimiter, quote, encoding, len(header[0])):
        return None
    columns, header_line = header
    lines = tables("lines")
    total = sql.numbered_lines(lines, str(path.resolve()))
    last_line_ends = _last_byte_on_executor(sql, path) == b"\n"
    layout = CsvLayout(columns, header_line, delimiter, quote, encoding, total, last_line_ends)
    try:
        return judge_csv_lines(sql, tables, lines, layout)
    finally:
        tables.drop("lines")


@dataclass(frozen=True)
class CsvLayout:
    """What reading a CSV file's lines where they are needs to know of the file: its columns and header's
    line, its settings, its number of lines and whether a line feed ends the last."""

    columns: list[str]
    header_line: int
    delimiter: str
    quote: str
    encoding: str
    total_lines: int
    last_line_ends: bool


# A CSV file with lines `csv` must read in turn is read in chunks of this many lines, each chunk's group
# of lines holding the `_CSV_WINDOW` lines after it too: a record read on the executors may run that far
# past its first line. A record running further (a runaway quote before a thousand lines without one)
# sends the file to the reader in this process, which reads it in order.
_CSV_CHUNK = 100_000
_CSV_WINDOW = 1_000
# Where the record after a line's starts is known from this many lines: a record running past
# `_MAX_LINES_PER_RECORD` lines is rejected and the lines after its first read again, unless it is blank.
_NEXT_WITHIN = _MAX_LINES_PER_RECORD + 1
# A line inside a record that starts on an earlier line, and a line's reject, as `csv_chunk_records` says.
_INSIDE, _REJECTED = "inside", "rejected"
_EXIT_UNKNOWN = -1


def judge_csv_lines(sql: Sql, tables: Scratch, lines: str, layout: CsvLayout) -> ReadResult | None:
    """What `read_csv` reads from a file whose lines are table `lines` (line_number, line as bytes), read
    where the lines are (Spark's executors): the same rows and rejects, as a table of the step's
    (`ReadResult.judged`); None, with nothing kept, when a line does not decode or a record runs past
    `_CSV_WINDOW` lines.

    Every line is first judged alone (`csv_batch`). A line that is a whole record is a row, unless it lies
    inside another record; only the reader's order can say which records the other lines begin. That order
    is followed in chunks of `_CSV_CHUNK` lines without passing lines through the driver: the record
    starting on a line ends within `_NEXT_WITHIN` lines, so the line each chunk's first record starts on
    is one of its first few; each chunk with such lines says, for each of those, where the record after
    its last begins (`csv_chunk_exits`); the driver chains the chunks from the header with those few
    numbers; and each chunk then reads its records from its own first (`csv_chunk_records`)."""
    chunk_lines, window = _CSV_CHUNK, _CSV_WINDOW
    if not chunk_lines >= window >= _NEXT_WITHIN:
        raise ValueError(f"chunks of {chunk_lines} lines cannot hold a window of {window}")
    judged = tables("judged")
    rule = functools.partial(
        csv_batch,
        columns=layout.columns,
        header_line=layout.header_line,
        delimiter=layout.delimiter,
        quote=layout.quote,
        encoding=layout.encoding,
    )
    sql.map_arrow(judged, f"select line_number, line from {lines}", rule, CSV_OUTPUTS)
    # What a file of whole-record lines loads is counted with what says whether it is one: one pass.
    undecodable, sequential, rows, rejected = sql.row(
        f"""select count(*) filter (where kind = '{_UNDECODABLE}'), count(*) filter (where kind = '{_SEQUENTIAL}'),
                   count(record), count(reason)
            from {judged}"""
    ) or (0, 0, 0, 0)
    if int(undecodable):
        tables.drop("judged")
        return None
    if int(sequential):
        read = _records_across_lines(sql, tables, lines, judged, layout, chunk_lines, window)
        if read is None:
            tables.drop("judged")
            return None
        alone, judged = judged, tables("judged_records")
        sql.create_table_as(
            judged,
            f"""select line_number, record, reason, value, kind from {alone} anti join {read} using (line_number)
                union all select line_number, record, reason, value, kind from {read} where kind <> '{_INSIDE}'""",
            temporary=True,
        )
        tables.drop("read_across")
        tables.drop("judged")
        rows, rejected = sql.row(f"select count(record), count(reason) from {judged}") or (0, 0)
    return ReadResult(columns=layout.columns, judged=judged, rows=int(rows), rejected=int(rejected))


def _records_across_lines(
    sql: Sql, tables: Scratch, lines: str, judged: str, layout: CsvLayout, chunk_lines: int, window: int
) -> str | None:
    """The step's table `read_across`: for each chunk holding a line `csv` must read, what its records are
    from the line its first starts on (`csv_chunk_records`), `judged` holding each line's judgement alone;
    None when a record runs past the window."""
    hard = [
        int(r[0])
        for r in sql.rows(
            f"""select distinct (cast(line_number as bigint) - 1) // {chunk_lines} from {judged}
                where kind = '{_SEQUENTIAL}' order by 1"""
        )
    ]
    listed = ", ".join(str(c) for c in hard)
    grouped = f"""
        select l.chunk, l.line_number, base64(l.line) as line, j.kind
        from (select (line_number - 1) // {chunk_lines} as chunk, line_number, line from {lines}
              union all
              select (line_number - 1) // {chunk_lines} - 1, line_number, line from {lines}
              where line_number > {chunk_lines} and (line_number - 1) % {chunk_lines} < {window}) l
        join (select cast(line_number as bigint) as line_number, kind from {judged}) j on j.line_number = l.line_number
        where l.chunk in ({listed})"""
    exits = tables("chunk_exits")
    sql.map_groups(
        exits,
        grouped,
        ["chunk"],
        functools.partial(csv_chunk_exits, layout=layout, chunk_lines=chunk_lines),
        ("chunk", "entry", "exit"),
    )
    known: dict[int, dict[int, int]] = {}
    for chunk, entry, exit_ in sql.rows(f"select chunk, entry, exit from {exits}"):
        known.setdefault(int(chunk), {})[int(entry)] = int(exit_)
    tables.drop("chunk_exits")
    entries = _chunk_entries(known, layout, chunk_lines)
    if entries is None:
        return None
    read = tables("read_across")
    sql.map_groups(
        read,
        grouped,
        ["chunk"],
        functools.partial(csv_chunk_records, layout=layout, chunk_lines=chunk_lines, window=window, entries=entries),
        CSV_OUTPUTS,
    )
    overflow = sql.value(f"select count(*) from {read} where kind = '{_SEQUENTIAL}'")
    return None if int(overflow) else read


def _chunk_entries(exits: dict[int, dict[int, int]], layout: CsvLayout, chunk_lines: int) -> dict[int, int] | None:
    """The line each chunk's first record starts on, for the chunks in `exits` (where, for the lines a
    record may start on near its top, the record after its last starts, given for the first line of each
    run of lines with the same answer): chained from the line after the header, a chunk without lines
    `csv` must read being one record per line. None when a chunk cannot say (a blank record running past
    `_NEXT_WITHIN` lines)."""
    entries: dict[int, int] = {}
    runs = {chunk: sorted(listed) for chunk, listed in exits.items()}
    at = layout.header_line + 1
    while at <= layout.total_lines:
        chunk = (at - 1) // chunk_lines
        if chunk not in exits:
            at = (chunk + 1) * chunk_lines + 1
            continue
        entries[chunk] = at
        run = bisect.bisect_right(runs[chunk], at) - 1
        following = exits[chunk][runs[chunk][run]] if run >= 0 else None
        if following is None or following == _EXIT_UNKNOWN:
            return None
        at = following
    return entries


@dataclass
class _CsvChunk:
    """One chunk's lines as its group holds them: `texts[i]` is line `first + i`, and those from `stop` on
    are the window after the chunk; `kinds` are the lines' judgements alone (`csv_batch`)."""

    chunk: int
    first: int
    stop: int
    texts: list[str]
    kinds: list[str]
    file_ends: bool


def _csv_chunk(rows: list[tuple], layout: CsvLayout, chunk_lines: int) -> _CsvChunk:
    """A chunk from its group's rows, (chunk, line_number, line in base64, kind) as text."""
    ordered = sorted(rows, key=lambda row: int(row[1]))
    chunk = int(ordered[0][0])
    first = chunk * chunk_lines + 1
    if [int(r[1]) for r in ordered] != list(range(first, first + len(ordered))):
        raise ValueError(f"chunk {chunk} of the file's lines is not whole")
    texts = [base64.b64decode(r[2]).decode(layout.encoding) for r in ordered]
    return _CsvChunk(
        chunk=chunk,
        first=first,
        stop=min(first + chunk_lines, layout.total_lines + 1),
        texts=texts,
        kinds=[r[3] for r in ordered],
        file_ends=first + len(ordered) - 1 == layout.total_lines,
    )


def _record_at(
    chunk: _CsvChunk, at: int, limit: int, layout: CsvLayout
) -> tuple[int | None, str, str | None, Reject | None]:
    """The record `read_csv` reads when one starts on line `at`, read from at most `limit` lines: the line
    the next starts on (None if these lines cannot tell), its kind (a row, rejected, skipped blank, or
    `_SEQUENTIAL` when it runs past them), its row's JSON and its reject."""
    index = at - chunk.first
    end = min(len(chunk.texts), index + limit)
    taken: list[tuple[int, str]] = []
    beyond = False

    def feed() -> Iterator[str]:
        nonlocal beyond
        for j in range(index, end):
            text = chunk.texts[j]
            final = chunk.file_ends and j == len(chunk.texts) - 1
            taken.append((chunk.first + j, text if final and not layout.last_line_ends else text + "\n"))
            yield taken[-1][1]
        # `csv` asks for a line after these: the record goes on where this chunk cannot see.
        beyond = not (chunk.file_ends and end == len(chunk.texts))

    reader = csv.reader(feed(), delimiter=layout.delimiter, quotechar=layout.quote, strict=False)
    try:
        record = next(reader)
    except csv.Error as exc:
        return at + 1, _REJECTED, None, _unreadable(taken[0], exc)
    if beyond:
        # `csv` took every line it was given, at least `_NEXT_WITHIN` (a chunk's group holds the window after
        # it): the record is rejected and its lines after the first read again, unless it is blank so far,
        # when it is skipped whole, wherever it ends.
        blank = not record or (len(record) == 1 and not record[0].strip())
        return (None if blank else at + 1), _SEQUENTIAL, None, None
    row, reject, again = _judged_record(record, taken, layout.columns, layout.quote, layout.encoding, False)
    kind = _REJECTED if reject is not None else _ROW if row is not None else _SKIPPED
    return at + (1 if again else len(taken)), kind, row, reject


def csv_chunk_exits(rows: list[tuple], *, layout: CsvLayout, chunk_lines: int) -> list[tuple]:
    """For a chunk of a CSV file's lines (`map_groups` rows of `_records_across_lines`): for each line near
    its top that a record from the chunk before may end just above (and the line after the header), the
    line where the record after the chunk's last starts, read in order from there; `_EXIT_UNKNOWN` where
    its lines cannot tell. Each line's following record is found once, from the chunk's end up."""
    chunk = _csv_chunk(rows, layout, chunk_lines)
    exits: dict[int, int] = {}
    for at in range(chunk.stop - 1, chunk.first - 1, -1):
        if chunk.kinds[at - chunk.first] in (_ROW, _SKIPPED):
            following: int | None = at + 1
        else:
            following = _record_at(chunk, at, _NEXT_WITHIN, layout)[0]
        if following is None:
            exits[at] = _EXIT_UNKNOWN
        else:
            exits[at] = following if following >= chunk.stop else exits[following]
    # The lines near the top as runs of one exit (records from most of them soon start on the same lines),
    # each run by its first line: a few rows per chunk for the driver, not one per line.
    listed, previous = [], None
    for at in range(chunk.first, min(chunk.stop, chunk.first + _NEXT_WITHIN)):
        if exits[at] != previous:
            listed.append(at)
            previous = exits[at]
    if chunk.first <= layout.header_line + 1 < chunk.stop:
        listed.append(layout.header_line + 1)
    return [(str(chunk.chunk), str(at), str(exits[at])) for at in sorted(set(listed))]


def csv_chunk_records(
    rows: list[tuple], *, layout: CsvLayout, chunk_lines: int, window: int, entries: dict[int, int]
) -> list[tuple]:
    """For a chunk of a CSV file's lines, the records `read_csv` reads from the line `entries` says the
    chunk's first starts on, as `CSV_OUTPUTS` rows: each record starting on a line `csv` must read (a row,
    a reject, or a blank record skipped), and each line inside a record as `_INSIDE`, so that the line's
    judgement alone gives way. A record on a line that is a whole record alone is the row `csv_batch`
    wrote for it, so nothing is said of it. A record running past the window ends the chunk with
    `_SEQUENTIAL`: the file is then read in this process."""
    chunk = _csv_chunk(rows, layout, chunk_lines)
    out: list[tuple] = []
    at = entries[chunk.chunk]
    while at < chunk.stop:
        if chunk.kinds[at - chunk.first] in (_ROW, _SKIPPED):
            at += 1
            continue
        following, kind, row, reject = _record_at(chunk, at, window, layout)
        if following is None or kind == _SEQUENTIAL:
            out.append((str(at), None, None, None, _SEQUENTIAL))
            break
        out.append((str(at), row, reject and reject.reason, reject and reject.value, kind))
        out += [(str(inside), None, None, None, _INSIDE) for inside in range(at + 1, following)]
        at = following
    return out


_JSONL_HINT = "JSON lines must be UTF-8"
# How an undecodable line's reject reason begins: a file whose lines are read elsewhere (Spark's executors)
# is judged from its rejects' reasons.
_NOT_UTF8 = "not valid utf-8: "
_SURROGATE = re.compile(UNPAIRED_SURROGATE)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def jsonl_line(line_number: int, raw: bytes) -> tuple[str | None, Reject | None, bool]:
    """One JSON-lines line as (the record to load, or the line's reject, and whether it held UTF-8 text
    beyond ASCII); neither for a blank line. The rule for every line, whichever engine reads the file.

    A UTF-8 byte order mark before the first line is skipped: Windows tools start UTF-8 files with one; it
    marks the encoding and is no part of the first record (CSV files drop it the same way).
    """
    if line_number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex().upper()
        reason = f"{_NOT_UTF8}byte 0x{bad} at position {exc.start}"
        return None, Reject(line_number, reason, _excerpt(raw.decode("utf-8", errors="replace"))), False
    if not text.strip():
        return None, None, not raw.isascii()
    if json_nesting_exceeds(text):
        reason = f"invalid JSON: arrays and objects nested more than {MAX_JSON_NESTING} levels deep"
        return None, Reject(line_number, reason, _excerpt(text)), not raw.isascii()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # Where in the line, not json's "line 2 column 1", which counts the line's own line break and reads
        # like a line of the file. Some of json's messages end in "at" ("Unterminated string starting at"),
        # which the place given here says again.
        where = (
            "at the end of the line"
            if exc.pos >= len(text.rstrip("\r\n"))
            else f"at character {exc.pos + 1} of the line"
        )
        reason = f"invalid JSON: {exc.msg.removesuffix(' at')} {where}"
        return None, Reject(line_number, reason, _excerpt(text)), not raw.isascii()
    if not isinstance(value, dict):
        reason = f"expected a JSON object, found {type(value).__name__}"
        return None, Reject(line_number, reason, _excerpt(text)), not raw.isascii()
    half = _unpaired_surrogate(text, value)
    if half is not None:
        reason = f"invalid JSON: \\u{ord(half):04x} is half of a UTF-16 surrogate pair without its other half"
        return None, Reject(line_number, reason, _excerpt(text)), not raw.isascii()
    return _whole_numbers_as_integers(text.strip()), None, not raw.isascii()


# A JSON line's strings and numbers, in order: strings are matched whole, so a number is never read inside one.
_JSON_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_WHOLE_WITH_ZERO_FRACTION = re.compile(r"(-?\d+)\.0+")
# What a number with a zero fraction ends in: a JSON number is followed by a separator, a closing bracket or
# space, where the milliseconds of a timestamp string (".000Z") are followed by a letter or a quote.
_ZERO_FRACTION_END = re.compile(r"\d\.0+[,}\]\s]")


def _whole_numbers_as_integers(record: str) -> str:
    """A valid JSON object's text with each number written with a zero fraction (`1001.0`) written as the
    integer it is (`1001`), as a Parquet file's floating-point column is read (`_parquet_value`): pandas writes
    an integer column with a missing value as float64, so its JSON lines give an id as `1001.0`, which would
    otherwise be read as that text and match nobody's `1001`. JSON does not tell 1001.0 from 1001, and the
    digits are kept as written, so no number changes; other numbers and every string are left alone."""
    if not _ZERO_FRACTION_END.search(record):  # most lines: the substitution below runs in Python per match
        return record

    def whole(match: re.Match[str]) -> str:
        token = match.group()
        integer = None if token.startswith('"') else _WHOLE_WITH_ZERO_FRACTION.fullmatch(token)
        return integer.group(1) if integer else token

    return _JSON_STRING_OR_NUMBER.sub(whole, record)


def _unpaired_surrogate(text: str, value: dict) -> str | None:
    """The first unpaired surrogate `json` read from a line's escapes (UNPAIRED_SURROGATE), or None. The
    warehouse's JSON reader refuses such a line, failing the whole file's load, so the line is rejected
    alone. A line is searched only when its text escapes a surrogate at all."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    found = _SURROGATE.search(json.dumps(value, ensure_ascii=False))
    return found.group() if found else None


def jsonl_file_error(
    first_bad: list[int],
    bad_count: int,
    text_lines: int,
    objects: int,
    first_reject: Reject | None,
    first_object: int | None = None,
) -> str | None:
    """Why a JSON-lines file is refused whole, from what its lines gave: written in another encoding than
    UTF-8, no line a JSON object (a CSV file under a .jsonl name), or a JSON array document: its first line
    with text, before any object (`first_object`, its line number), opens a list of objects. An array written one
    element a line has lines that read as objects (the last element, with no comma after it), so judged
    line by line it would load a few of its records and quarantine the others."""
    wrong = _wrong_encoding(first_bad, bad_count, text_lines, "utf-8", _JSONL_HINT)
    if wrong is not None or first_reject is None:
        return wrong
    # A line holding a whole list of objects, or the start of a list its line does not close.
    line = (first_reject.value or "").lstrip()
    opens_a_list = line.startswith("[") and (
        line[1:].lstrip().startswith("{") or first_reject.reason.startswith("invalid JSON")
    )
    if opens_a_list and (first_object is None or first_reject.row_number < first_object):
        return (
            f"is a JSON array, not JSON lines (line {first_reject.row_number} opens a list): format jsonl reads "
            "one JSON object per line; write the records so, e.g. with jq -c '.[]'"
        )
    if not objects:
        return f"is not JSON lines: no line is a JSON object (line {first_reject.row_number}: {first_reject.reason})"
    return None


def read_jsonl(path: Path) -> tuple[ReadResult, Rows]:
    """Parse a JSON-lines file; each non-blank line must be one JSON object (`jsonl_line`), and a file that
    is not JSON lines at all is refused whole (`jsonl_file_error`)."""
    result = ReadResult()
    if landing_empty(path):
        result.empty = True
        return result, Rows(iter(()))

    def rows() -> Iterator[tuple[int, str]]:
        bad_lines: list[int] = []
        text_lines = objects = 0
        first_object = None
        with open_landing(path) as handle:
            for line_number, raw in enumerate(handle, start=1):
                record, reject, text = jsonl_line(line_number, raw)
                text_lines += text
                if reject is not None:
                    result.rejects.append(reject)
                    if reject.reason.startswith(_NOT_UTF8):
                        bad_lines.append(line_number)
                elif record is not None:
                    objects += 1
                    first_object = first_object or line_number
                    yield line_number, record
        first = result.rejects[0] if result.rejects else None
        result.file_error = jsonl_file_error(bad_lines[:5], len(bad_lines), text_lines, objects, first, first_object)

    return result, Rows.of(rows())


JSONL_OUTPUTS = ("line_number", "record", "reason", "value", "text")


def jsonl_batch(lines: pa.Table, last_without_line_feed: int | None = None) -> pa.Table:
    """`jsonl_line` over a batch of (line_number, line) rows, as text columns `JSONL_OUTPUTS` (`text` '1' for
    a line of UTF-8 text beyond ASCII): the reader's rule where Spark's executors hold the lines. Spark's
    lines come without their line feed, which `jsonl_line` sees as this process reads them (JSON's verdict
    on a string left open depends on it): it is put back on each but the file's last line when that one
    has none (`last_without_line_feed`, its number)."""
    out: dict[str, list[str | None]] = {name: [] for name in JSONL_OUTPUTS}
    numbers = lines.column("line_number").to_pylist()
    for number, raw in zip(numbers, lines.column("line").to_pylist(), strict=True):
        record, reject, text = jsonl_line(number, raw if number == last_without_line_feed else raw + b"\n")
        out["line_number"].append(str(number))
        out["record"].append(record)
        out["reason"].append(reject.reason if reject else None)
        out["value"].append(reject.value if reject else None)
        out["text"].append("1" if text else None)
    return pa.table({name: pa.array(values, pa.string()) for name, values in out.items()})


# Names Spark's file reader would not take as written: it takes glob and URI characters in a path as
# patterns or a scheme. Such files are read in this process. So is a compressed file whose ending is not
# written as Hadoop's codecs match it (`.GZ`), and a compressed Parquet file (its pages are compressed
# already; this process refuses it).
_HADOOP_PATTERN = set("*?[]{}\\:%")
_HADOOP_ENDINGS = (".gz", ".bz2")


def readable_on_executors(path: Path, fmt: str) -> bool:
    """Whether Spark's executors may read `path`: a JSON-lines file (also the collector's and an API's landed
    pages, `read_jsonl_on_executors`), a Parquet file (`read_parquet_on_executors`) or a CSV file
    (`read_csv_on_executors`, which may still decline it), whose name Spark's reader takes as written."""
    if fmt not in ("csv", "jsonl", "parquet", "http", "segment"):
        return False
    try:
        compressed = compression(path) is not None
    except FileFormatError:
        return False  # refused by name, as this process refuses it
    if compressed and (fmt == "parquet" or not path.name.endswith(_HADOOP_ENDINGS)):
        return False
    name = str(path.resolve())
    return not _HADOOP_PATTERN & set(name)


def _last_byte_on_executor(sql: SparkSql, path: Path) -> bytes:
    """The file's last byte: read here from the end of a plain file, and for a compressed one, which must be
    read to its end to know it, by one Spark task."""
    if compression(path) is None:
        return last_byte(str(path))
    return sql.on_executor(functools.partial(last_byte, str(path.resolve())))


def read_jsonl_on_executors(sql: SparkSql, path: Path, tables: Scratch) -> ReadResult:
    """`read_jsonl` where Spark's executors read the file: its lines numbered by Spark's text reader
    (`numbered_lines`), each judged by `jsonl_line` in batches (`map_arrow`), and the file judged whole
    by `jsonl_file_error` from counts, so that only those counts and the first few bad line numbers
    reach the driver. The judged lines stay in the step's table `result.judged`."""
    result = ReadResult()
    if landing_empty(path):
        result.empty = True
        return result
    lines, judged = tables("lines"), tables("judged")
    count = sql.numbered_lines(lines, str(path.resolve()))
    last = None if _last_byte_on_executor(sql, path) == b"\n" else count
    rule = functools.partial(jsonl_batch, last_without_line_feed=last)
    sql.map_arrow(judged, f"select line_number, line from {lines}", rule, JSONL_OUTPUTS)
    tables.drop("lines")
    undecodable = f"reason like '{_NOT_UTF8}%'"
    bad, text_lines, objects, rejected = sql.row(
        f"""select count(*) filter (where {undecodable}), count(*) filter (where text = '1'),
                   count(record), count(reason) from {judged}"""
    ) or (0, 0, 0, 0)
    first_bad = [
        int(n)
        for (n,) in sql.rows(f"select line_number::bigint as n from {judged} where {undecodable} order by n limit 5")
    ]
    first = sql.row(
        f"""select line_number::bigint as n, reason, value,
                   (select min(line_number::bigint) from {judged} where record is not null)
            from {judged} where reason is not null order by n limit 1"""
    )
    first_reject = Reject(int(first[0]), str(first[1]), first[2]) if first else None
    first_object = int(first[3]) if first and first[3] is not None else None
    result.file_error = jsonl_file_error(first_bad, int(bad), int(text_lines), int(objects), first_reject, first_object)
    result.judged = judged
    result.rows, result.rejected = int(objects), int(rejected)
    return result


def _parquet_columns(sql: Sql, path: Path) -> tuple[list[str], pa.Schema, str]:
    """A Parquet file's columns, its schema (nested fields included) and the expression of a row as the
    JSON object the raw table keeps; a corrupt file is a FileFormatError for the whole file."""
    try:
        described = sql.rows("describe select * from read_parquet(?)", [str(path)])
    except SqlError as exc:
        raise FileFormatError(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    kinds = {row[0]: row[1] for row in described}
    tree = _nested_columns(list(kinds))
    return list(tree), pq.read_schema(path), f"to_json({_record_sql(tree, kinds)})::varchar"


def _nested_columns(columns: list[str]) -> dict[str, object]:
    """The keys of a Parquet row's JSON record, each holding its column's name or the keys nested under it.

    A column whose name holds dots is nested under its parts (`customer.email` as `customer` → `email`), as
    the nested JSON it was flattened from (pandas' `json_normalize`, Spark's flattened exports) held it, so
    the dotted path `customer.email` maps it as it would the struct or the JSON. Where the parts meet a
    column of their own (a column `customer` beside `customer.email`) or each other (`a.b` beside `a.b.c`),
    no name can be nested and every column stays under its own name."""
    present = set(columns)
    tree: dict[str, object] = {}
    for column in columns:
        keys = column.split(".")
        if len(keys) == 1 or keys[0] in present or not all(keys):
            if column in tree:
                return {c: c for c in columns}
            tree[column] = column
            continue
        node = tree
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                return {c: c for c in columns}
            node = child
        if keys[-1] in node:
            return {c: c for c in columns}
        node[keys[-1]] = column
    return tree


def _record_sql(tree: dict[str, object], kinds: dict[str, str]) -> str:
    """The struct (DuckDB's `{'key': value}`) a Parquet row's JSON record is written from (`_nested_columns`)."""
    parts = [
        f"'{key.replace(chr(39), chr(39) * 2)}': "
        + (_record_sql(node, kinds) if isinstance(node, dict) else _parquet_value(str(node), kinds[str(node)]))
        for key, node in tree.items()
    ]
    return "{" + ", ".join(parts) + "}"


# Whole numbers a double holds exactly (2**53): beyond them its digits are not the ones written.
_EXACT_DOUBLE = 2**53


def _parquet_value(name: str, kind: str) -> str:
    """A top-level column's value as the row's JSON keeps it. A whole number in a floating-point column is
    written as an integer (1001, not 1001.0): pandas stores an integer column with a missing value as
    float64, so an id or an identifier would otherwise read as `1001.0` and match nobody's `1001`. JSON
    does not tell 1001.0 from 1001, so no number changes; a fraction is written as before."""
    column = f't."{name.replace(chr(34), chr(34) * 2)}"'
    if kind not in ("DOUBLE", "FLOAT"):
        return column
    return (
        f"case when isfinite({column}) and {column} = trunc({column}) and abs({column}) < {_EXACT_DOUBLE} "
        f"then to_json({column}::bigint) else to_json({column}) end"
    )


def read_parquet(path: Path) -> tuple[ReadResult, Rows]:
    """Read a Parquet file through an in-memory database of its own, so reading a landing file never
    touches the warehouse; a corrupt file is a FileFormatError for the whole file."""
    result = ReadResult()
    if path.stat().st_size == 0:
        result.empty = True
        return result, Rows(iter(()))
    sql = Sql.in_memory()
    try:
        result.columns, result.schema, record = _parquet_columns(sql, path)
    except FileFormatError:
        sql.close()
        raise

    def rows() -> Iterator[tuple[int, str]]:
        try:
            yield from sql.stream(
                f"select t.file_row_number + 1, {record} from read_parquet(?, file_row_number = true) t order by 1",
                [str(path)],
                batch_rows=50_000,
            )
        finally:
            sql.close()

    return result, Rows.of(rows())


PARQUET_OUTPUTS = ("line_number", "record", "reason", "value")
# Rows of a Parquet file read by one executor task: whole row groups up to about this many rows.
_PARQUET_TASK_ROWS = 500_000


def parquet_rows(bounds: pa.Table, *, path: str, record: str) -> pa.Table:
    """The rows of a Parquet file from row `lo` to before row `hi` (`bounds`' one row) as `PARQUET_OUTPUTS`,
    each written by the statement `read_parquet` runs, in an in-memory DuckDB of its own: where Spark's
    executors read the file. DuckDB reads only the row groups the range covers."""
    lo, hi = bounds.column("lo")[0].as_py(), bounds.column("hi")[0].as_py()
    sql = Sql.in_memory()
    try:
        return sql.arrow(
            f"""select (t.file_row_number + 1)::varchar as line_number, {record} as record,
                       null::varchar as reason, null::varchar as value
                from read_parquet(?, file_row_number = true) t
                where t.file_row_number >= ? and t.file_row_number < ?""",
            [path, lo, hi],
        )
    finally:
        sql.close()


def read_parquet_on_executors(sql: SparkSql, path: Path, tables: Scratch) -> ReadResult:
    """`read_parquet` where Spark's executors read the file: its footer read here for the columns and row
    groups, and each run of whole row groups (about `_PARQUET_TASK_ROWS` rows) read by one task
    (`parquet_rows`, `map_ranges`), so no row reaches the driver. The rows stay in the step's table
    `result.judged`."""
    result = ReadResult()
    if path.stat().st_size == 0:
        result.empty = True
        return result
    local = Sql.in_memory()
    try:
        result.columns, result.schema, record = _parquet_columns(local, path)
    finally:
        local.close()
    ranges: list[tuple[int, int]] = []
    metadata = pq.ParquetFile(path).metadata
    start = end = 0
    for group in range(metadata.num_row_groups):
        end += metadata.row_group(group).num_rows
        if end - start >= _PARQUET_TASK_ROWS:
            ranges.append((start, end))
            start = end
    if end > start:
        ranges.append((start, end))
    judged = tables("judged")
    rule = functools.partial(parquet_rows, path=str(path.resolve()), record=record)
    result.rows = sql.map_ranges(judged, ranges, rule, PARQUET_OUTPUTS) if ranges else 0
    result.judged = judged if ranges else None
    return result


# Byte order marks of the Unicode encodings with more than one byte a character, longest first (UTF-32's
# little-endian mark begins with UTF-16's).
_WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def refuse_wide_unicode(path: Path) -> None:
    """Raise FileFormatError for a text file in UTF-16 or UTF-32, by its byte order mark or, without one,
    by a zero byte at every other place of its start, as UTF-16 writes ASCII: Excel's "Unicode text" and
    some Windows exports are so. Every encoding a source may declare reads one byte a character, so
    such a file would be refused as undecodable line by line, or read as text with a NUL between letters."""
    with open_landing(path) as handle:
        start = handle.read(4096)
    named = next((name for mark, name in _WIDE_MARKS if start.startswith(mark)), None)
    pairs = len(start) // 2
    if named is None and pairs >= 2:
        zeros = max(start[0::2].count(0), start[1::2].count(0))
        named = "UTF-16" if zeros > 0.9 * pairs else None
    if named is not None:
        raise FileFormatError(
            f"the file is {named} text, and sources read UTF-8, latin-1 or cp1252 (csv.encoding), one byte a "
            f"character: save it as UTF-8 (e.g. iconv -f {named} -t UTF-8)"
        )


def read_file(
    path: Path, fmt: str, *, delimiter: str = ",", quote: str = '"', encoding: str = "utf-8", whole: bool = True
) -> tuple[ReadResult, Rows]:
    """Dispatch on the source's declared format; an http source's polls land JSON lines. A name ending in a
    compression the platform does not read is refused here (`compression`). `whole`: see `read_csv`."""
    kind = compression(path)
    if fmt == "parquet" and kind is not None:
        raise FileFormatError(
            f"is a Parquet file compressed whole with {kind}: Parquet compresses its own pages, so land the "
            ".parquet file itself"
        )
    if fmt != "parquet":
        refuse_wide_unicode(path)
    if fmt == "csv":
        return read_csv(path, delimiter=delimiter, quote=quote, encoding=encoding, whole=whole)
    # The collector writes Segment events as JSON lines, and API polls land their pages as JSON lines.
    if fmt in ("jsonl", "http", "segment"):
        return read_jsonl(path)
    if fmt == "parquet":
        return read_parquet(path)
    raise ValueError(f"unknown format {fmt!r}")
