"""Read landing files row by row, turning every row into a JSON object or a reject with a reason.

Source systems produce broken exports: an unterminated quote, a row with extra fields, one byte in the
wrong encoding, a truncated JSON line. A production loader must keep the good rows of such a file, put
each bad row aside with its line number, and never let one bad quote swallow the rest of the file. The
standard readers either stop at the first error or resynchronise silently, so the CSV reader here feeds
`csv` one physical line at a time and re-parses after a record that ran past its line.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resources.sql import Sql, SqlError

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
    rejects: list[Reject] = field(default_factory=list)
    empty: bool = False
    # Set once the rows have been read when the file turned out unusable as a whole (written in another
    # encoding, JSON lines of which none is an object): its rows are not loaded and the file is quarantined.
    file_error: str | None = None


class FileFormatError(Exception):
    """The file as a whole cannot be read (e.g. not a Parquet file); the message says why."""


def _wrong_encoding(bad_lines: list[int], text_lines: int, encoding: str, hint: str) -> str | None:
    """Why a file is not in `encoding` at all, or None when its undecodable lines are damaged records.

    One undecodable line among readable text is a damaged record and is rejected on its own. Several, in a
    file where no line holds valid non-ASCII text in that encoding, mean the whole file was written in
    another encoding (a latin-1 export in a UTF-8 source): loading only its ASCII rows would keep a
    biased subset, so the file is refused whole.
    """
    if len(bad_lines) < 2 or text_lines:
        return None
    shown = ", ".join(str(n) for n in bad_lines[:5]) + (f" and {len(bad_lines) - 5} more" if len(bad_lines) > 5 else "")
    return (
        f"is not {encoding}: lines {shown} hold bytes that are not {encoding} and no line holds {encoding} "
        f"text beyond ASCII, so the file was written in another encoding ({hint})"
    )


def _excerpt(text: str, limit: int = 200) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= limit else text[:limit] + "…"


class _LineFeed:
    """An iterator of decoded lines that remembers what it handed out and accepts lines back."""

    def __init__(self, path: Path, encoding: str) -> None:
        self._handle = path.open("rb")
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


def _bad_bytes(value: str) -> str | None:
    """The first undecodable byte in a value, as hex, or None if the value decoded cleanly."""
    for char in value:
        if 0xDC80 <= ord(char) <= 0xDCFF:
            return f"0x{ord(char) - 0xDC00:02X}"
    return None


def read_csv(
    path: Path, *, delimiter: str = ",", quote: str = '"', encoding: str = "utf-8"
) -> tuple[ReadResult, Iterator[tuple[int, str]]]:
    """Parse a CSV file; yields (line number, JSON object text) for good rows and collects rejects.

    The row number is the line the record starts on, counting the header as line 1, so a user can open
    the file at that line.
    """
    result = ReadResult()
    feed = _LineFeed(path, encoding)
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
                first, rest = feed.taken[0], feed.taken[1:]
                result.rejects.append(Reject(first[0], f"unreadable CSV: {exc}", _excerpt(first[1])))
                feed.push_back(rest)

    header = next_record()
    while header is not None and not any(h.strip() for h in header):
        header = next_record()
    if header is None:
        feed.close()
        result.empty = True
        return result, iter(())
    columns = [h.strip().lstrip("\ufeff") for h in header]
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

    def rows() -> Iterator[tuple[int, str]]:
        try:
            while True:
                record = next_record()
                if record is None:
                    break
                taken = feed.taken
                line_number, first_line = taken[0]
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                quotes = sum(text.count(quote) for _, text in taken)
                if len(record) != width or quotes % 2:
                    if len(taken) > 1 or quotes % 2:
                        # The record ran past its line: almost always an unterminated quote. Reject the
                        # line it started on and read the following lines again on their own.
                        result.rejects.append(
                            Reject(
                                line_number,
                                "unterminated quote: the quoted value never closes on this line",
                                _excerpt(first_line),
                            )
                        )
                        feed.push_back(taken[1:])
                    else:
                        result.rejects.append(
                            Reject(
                                line_number,
                                f"expected {width} fields, found {len(record)}",
                                _excerpt(first_line),
                            )
                        )
                    continue
                if len(taken) > _MAX_LINES_PER_RECORD:
                    result.rejects.append(
                        Reject(line_number, f"a quoted value spans {len(taken)} lines", _excerpt(first_line))
                    )
                    feed.push_back(taken[1:])
                    continue
                bad_field = next(((c, v) for c, v in zip(columns, record, strict=True) if _bad_bytes(v)), None)
                if bad_field:
                    column, value = bad_field
                    result.rejects.append(
                        Reject(
                            line_number,
                            f"not valid {encoding}: byte {_bad_bytes(value)} in column '{column}'",
                            value.encode(encoding, errors="surrogateescape").decode(encoding, errors="replace"),
                            column,
                        )
                    )
                    continue
                yield line_number, json.dumps(dict(zip(columns, record, strict=True)), ensure_ascii=False)
            result.file_error = _wrong_encoding(
                feed.bad_lines, feed.text_lines, encoding, "export it as that or set csv.encoding for this source"
            )
        finally:
            feed.close()

    return result, rows()


def read_jsonl(path: Path) -> tuple[ReadResult, Iterator[tuple[int, str]]]:
    """Parse a JSON-lines file; each non-blank line must be one JSON object.

    A file in which no line is a JSON object (a JSON array document, a CSV file under a .jsonl name) is
    not JSON lines at all and is refused whole, as is one written in another encoding than UTF-8.
    """
    result = ReadResult()
    if path.stat().st_size == 0:
        result.empty = True
        return result, iter(())

    def rows() -> Iterator[tuple[int, str]]:
        bad_lines: list[int] = []
        text_lines = objects = 0
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                    text_lines += not raw.isascii()
                except UnicodeDecodeError as exc:
                    bad_lines.append(line_number)
                    bad = raw[exc.start : exc.start + 1].hex().upper()
                    result.rejects.append(
                        Reject(
                            line_number,
                            f"not valid utf-8: byte 0x{bad} at position {exc.start}",
                            _excerpt(raw.decode("utf-8", errors="replace")),
                        )
                    )
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    result.rejects.append(Reject(line_number, f"invalid JSON: {exc}", _excerpt(text)))
                    continue
                if not isinstance(value, dict):
                    result.rejects.append(
                        Reject(
                            line_number,
                            f"expected a JSON object, found {type(value).__name__}",
                            _excerpt(text),
                        )
                    )
                    continue
                objects += 1
                yield line_number, text.strip()
        result.file_error = _wrong_encoding(bad_lines, text_lines, "utf-8", "JSON lines must be UTF-8")
        if result.file_error is None and not objects and result.rejects:
            first = result.rejects[0]
            result.file_error = f"is not JSON lines: no line is a JSON object (line {first.row_number}: {first.reason})"

    return result, rows()


def read_parquet(path: Path) -> tuple[ReadResult, Iterator[tuple[int, str]]]:
    """Read a Parquet file through an in-memory database of its own, so reading a landing file never
    touches the warehouse; a corrupt file is a FileFormatError for the whole file."""
    result = ReadResult()
    if path.stat().st_size == 0:
        result.empty = True
        return result, iter(())
    sql = Sql.in_memory()
    try:
        described = sql.rows("describe select * from read_parquet(?)", [str(path)])
    except SqlError as exc:
        sql.close()
        raise FileFormatError(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    result.columns = [row[0] for row in described]
    packed = ", ".join(
        f"'{c.replace(chr(39), chr(39) * 2)}': t.\"{c.replace(chr(34), chr(34) * 2)}\"" for c in result.columns
    )

    def rows() -> Iterator[tuple[int, str]]:
        try:
            yield from sql.stream(
                f"select t.file_row_number + 1, to_json({{{packed}}})::varchar "
                "from read_parquet(?, file_row_number = true) t order by 1",
                [str(path)],
                batch_rows=50_000,
            )
        finally:
            sql.close()

    return result, rows()


def read_file(
    path: Path, fmt: str, *, delimiter: str = ",", quote: str = '"', encoding: str = "utf-8"
) -> tuple[ReadResult, Iterator[tuple[int, str]]]:
    """Dispatch on the source's declared format; an http source's polls land JSON lines."""
    if fmt == "csv":
        return read_csv(path, delimiter=delimiter, quote=quote, encoding=encoding)
    # The collector writes Segment events as JSON lines, and API polls land their pages as JSON lines.
    if fmt in ("jsonl", "http", "segment"):
        return read_jsonl(path)
    if fmt == "parquet":
        return read_parquet(path)
    raise ValueError(f"unknown format {fmt!r}")
