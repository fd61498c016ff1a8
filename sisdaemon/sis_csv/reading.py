"""Reading SIS CSV files as streams: chunks, incremental UTF-8 (a BOM dropped; a character split across two chunks
is not an error), records with their line numbers, the header, and rows as Ruby's CSV::Row maps them.

Memory does not grow with file size: a file is read a chunk or a record at a time. A file-level failure is a
:class:`CsvFileError` carrying Canvas's message ("Invalid UTF-8", "Malformed CSV").
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

from sisdaemon.sis_csv.schema import MSG_INVALID_UTF8, MSG_MALFORMED


class CsvFileError(Exception):
    """A file-level failure: the message Canvas records with failure: true (the file is skipped)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def iter_chunks(stream: IO[bytes], chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Yield `stream`'s bytes in chunks of at most `chunk_size` bytes until EOF."""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        yield chunk


def iter_utf8_text(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode UTF-8 incrementally, dropping a leading BOM; raise CsvFileError("Invalid UTF-8") on bad bytes.

    A character split across two chunks is joined, never reported (Canvas spec "does not invalidly break up
    UTF-8 characters"; import_refactored.rb `valid_utf8?` retries a split chunk). A truncated character at
    the very end of the input is invalid.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    at_start = True
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            if at_start and text:
                at_start = False
                if text.startswith("\ufeff"):
                    text = text[1:]
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if at_start and tail.startswith("\ufeff"):
            tail = tail[1:]
        if tail:
            yield tail
    except UnicodeDecodeError as error:
        raise CsvFileError(MSG_INVALID_UTF8) from error


def check_utf8(stream: BinaryIO, chunk_size: int = 1 << 16) -> bool:
    """True if the whole stream is valid UTF-8 (a BOM allowed). Reads to EOF in `chunk_size` pieces."""
    try:
        for _ in iter_utf8_text(iter_chunks(stream, chunk_size)):
            pass
    except CsvFileError:
        return False
    return True


class _LineSource:
    """Turns decoded text chunks into lines that keep their endings, splitting only on \\n, \\r\\n and \\r.

    csv.reader wants lines; str.splitlines would also split on \\x0b, \\x1c, \\u2028 ..., which a CSV may
    hold inside a field.
    """

    _BREAK = re.compile(r"\r\n|\r|\n")

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = iter(texts)

    def __iter__(self) -> Iterator[str]:
        pending = ""
        for text in self._texts:
            pending += text
            start = 0
            for match in self._BREAK.finditer(pending):
                end = match.end()
                if match.group() == "\r" and end == len(pending):
                    break  # may be the first half of \r\n split across chunks
                yield pending[start:end]
                start = end
            pending = pending[start:]
        if pending:
            yield pending


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: `line` is the 1-based physical line where it ends (the header is line 1)."""

    line: int
    fields: list[str]


def iter_records(stream: BinaryIO, chunk_size: int = 1 << 16) -> Iterator[CsvRecord]:
    """Yield the CSV records of a UTF-8 byte stream one at a time, blank lines skipped (Ruby skip_blanks).

    Raises CsvFileError("Invalid UTF-8") for bad bytes and CsvFileError("Malformed CSV") for a quote left
    open at EOF or text after a closing quote (Ruby's CSV::MalformedCSVError; Python's csv in strict mode).
    Ruby also refuses a quote inside an unquoted field (`a"b`); Python's reader accepts it, so this does too.
    """
    reader = csv.reader(_LineSource(iter_utf8_text(iter_chunks(stream, chunk_size))), strict=True)
    try:
        for fields in reader:
            if not fields:
                continue
            yield CsvRecord(reader.line_num, fields)
    except csv.Error as error:
        raise CsvFileError(MSG_MALFORMED) from error


def read_header(stream: BinaryIO) -> list[str] | None:
    """The first record of a CSV stream (as read, not downcased), or None for a file with no records."""
    for record in iter_records(stream):
        return record.fields
    return None


def row_dict(header: Sequence[str], fields: Sequence[str]) -> dict[str, str | None]:
    """Map a record onto the header like Ruby's CSV::Row after Canvas's converters: names stripped and downcased,
    values stripped, missing ones None.

    A duplicated header name keeps its first value (CSV::Row#[] returns the first match).
    """
    row: dict[str, str | None] = {}
    for index, name in enumerate(header):
        key = name.strip().lower()
        if key in row:
            continue
        row[key] = fields[index].strip() if index < len(fields) else None
    return row


def is_blank_row(row: Mapping[str, str | None]) -> bool:
    """A row whose every value is empty (",,,,,"): Canvas skips it without a message (expected_messages.json
    users_notify_blank_row.csv)."""
    return all(not value for value in row.values())


def open_text(data: bytes) -> BinaryIO:
    """A binary stream over `data` (tests and small in-memory files)."""
    return io.BytesIO(data)
