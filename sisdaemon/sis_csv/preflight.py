"""Pre-flight check of one SIS CSV stream, as Canvas would read it, in one pass and constant memory.

What it finds (docs/canvas-api.md §3; the messages Canvas itself gives are in :mod:`sisdaemon.sis_csv.schema`):

- encoding: UTF-8 (a BOM is fine); UTF-16 (Excel's "Unicode Text"), Windows-1252 (Excel's "CSV" on Windows) and
  binary content are named as such. Fatal: Canvas says "Invalid UTF-8" and skips the file. A multi-byte character
  split across two read blocks is no error (the decoder is incremental);
- the header: the SIS type it selects by Canvas's rules and order (:func:`~sisdaemon.sis_csv.detect_importer`);
  none is fatal ("Couldn't find Canvas CSV import headers"), and a header that is one cell holding ``;`` or tabs
  is named as the wrong delimiter. A required column missing is fatal too: every row of the CSV would be skipped;
- quoting: a quote never closed, or text after a closing quote, is fatal ("Malformed CSV": the whole file is
  skipped);
- rows (warnings; Canvas skips the row and goes on): the per-row checks Canvas makes before looking anything up
  (:func:`~sisdaemon.sis_csv.row_problem`), status values it does not know, rows with more or fewer fields than
  the header, and a last row cut short (no final line break and fewer fields than the header).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from sisdaemon.sis_csv.problems import Cancelled, Problem, Report
from sisdaemon.sis_csv.reading import _LineSource, iter_chunks
from sisdaemon.sis_csv.rows import row_problem
from sisdaemon.sis_csv.schema import (
    MSG_INVALID_UTF8,
    MSG_MALFORMED,
    MSG_NO_HEADERS,
    STATUSES,
    detect_importer,
    missing_columns,
)

#: Rows between two looks at ``should_stop``.
STOP_EVERY = 5_000

_SAVE_AS = 'save it as "CSV UTF-8 (Comma delimited)" and send it again'

# File signatures of formats people send by mistake under a .csv name.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) workbook"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def _sniff(head: bytes) -> tuple[str, str] | None:
    """(code, message) for content that is certainly not UTF-8 text, judged on the first block; None otherwise."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf16", f'the file is UTF-16 text (Excel\'s "Unicode Text"), not UTF-8: {_SAVE_AS}'
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return "binary", f"the file is {what}, not CSV text"
    sample = head[:4096]
    if sample and sample.count(0) * 4 >= len(sample):
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if max(even, odd) * 2 >= len(sample) // 2 and min(even, odd) * 10 < len(sample) // 2:
            return "utf16", f"the file is UTF-16 text without a byte-order mark, not UTF-8: {_SAVE_AS}"
    if b"\x00" in sample:
        return "binary", "the file holds binary data (NUL bytes), not CSV text"
    return None


class _Text:
    """Decodes UTF-8 incrementally (a leading BOM dropped) and remembers where it is: the physical line, the
    number of commas since the last line break (for a column), whether the text ends with a line break."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.line = 1
        self.commas = 0
        self.ends_with_break = True
        self.bad: tuple[int, int, bytes] | None = None  # (line, comma count, the bad bytes) once decoding failed

    def _advance(self, text: str) -> None:
        breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
        self.line += breaks
        last = max(text.rfind("\n"), text.rfind("\r"))
        self.commas = text[last + 1 :].count(",") if last >= 0 else self.commas + text.count(",")
        self.ends_with_break = text[-1] in "\r\n"

    def __iter__(self) -> Iterator[str]:
        first = True
        for chunk in self._chunks:
            try:
                text = self._decoder.decode(chunk)
            except UnicodeDecodeError as error:
                valid = bytes(error.object[: error.start]).decode("utf-8", "replace")
                if first and valid.startswith("\ufeff"):
                    valid = valid[1:]
                if valid:
                    self._advance(valid)
                self.bad = (self.line, self.commas, bytes(error.object[error.start : error.start + 4]))
                if valid:
                    yield valid  # the lines before the bad byte (the header among them) are read as usual
                return
            if first and text:
                first = False
                if text.startswith("\ufeff"):
                    text = text[1:]
            if text:
                self._advance(text)
                yield text
        try:
            tail = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            self.bad = (self.line, self.commas, bytes(error.object[error.start :]))
            return
        if tail:
            self._advance(tail)
            yield tail


def _column_name(header: Sequence[str], index: int) -> str:
    if index < len(header) and header[index].strip():
        return header[index].strip()
    return f"column {index + 1}"


def _encoding_problem(name: str, line: int, commas: int, bad: bytes, header: Sequence[str]) -> Problem:
    try:
        bad.decode("cp1252")
        windows = any(byte >= 0x80 for byte in bad[:1])
    except UnicodeDecodeError:
        windows = False
    shown = f"0x{bad[0]:02X}" if bad else "(a character cut off at the end)"
    if windows:
        sample = bad[:1].decode("cp1252")
        meant = f" (there it is {sample!r})" if sample.isprintable() and not sample.isspace() else ""
        message = (
            f"byte {shown} is not UTF-8; the file looks like Windows-1252 or Latin-1{meant}, as "
            f'Excel\'s "CSV (Comma delimited)" saves on Windows: {_SAVE_AS}'
        )
        code = "windows_1252"
    else:
        message = f"byte {shown} is not UTF-8: {_SAVE_AS}"
        code = "not_utf8"
    return Problem(name, line, _column_name(header, commas), code, True, message, MSG_INVALID_UTF8)


def check_csv(
    name: str,
    stream: IO[bytes],
    report: Report,
    *,
    should_stop: Callable[[], bool] | None = None,
    chunk_size: int = 1 << 16,
) -> str | None:
    """Check one CSV read from ``stream`` (binary, read to EOF in ``chunk_size`` blocks), adding its problems and
    row counts to ``report`` under ``name``. Returns the SIS type it was recognised as (Canvas's importer name),
    or None (not recognised, empty, or a fatal problem before the header).

    Raises Cancelled when ``should_stop()`` turns true (looked at every STOP_EVERY rows); OSError from the stream.
    """
    chunks = iter_chunks(stream, chunk_size)
    head = next(chunks, b"")
    if not head:
        return None  # an empty CSV: Canvas reads no rows and says nothing
    sniffed = _sniff(head)
    if sniffed is not None:
        report.add(Problem(name, None, None, sniffed[0], True, sniffed[1], MSG_INVALID_UTF8))
        return None

    def all_chunks() -> Iterator[bytes]:
        yield head
        yield from chunks

    text = _Text(all_chunks())
    reader = csv.reader(_LineSource(text), strict=True)
    header: list[str] = []
    importer: str | None = None
    width = 0
    status_index: int | None = None
    rows = 0
    positions: list[tuple[str, int]] = []
    last: tuple[int, int] | None = None  # (line, field count) of the last data record
    record_start = 1
    try:
        for fields in reader:
            if not fields:
                record_start = reader.line_num + 1
                continue
            if not header:
                header = fields
                importer = _header(name, header, report)
                if importer is None:
                    return None
                width = len(header)
                lowered = [cell.strip().lower() for cell in header]
                positions = [(key, lowered.index(key)) for key in dict.fromkeys(lowered)]  # CSV::Row: first wins
                status_column = "grade_publishing_status" if importer == "grade_publishing_results" else "status"
                status_index = lowered.index(status_column) if status_column in lowered else None
                report.csvs[name] = importer
                record_start = reader.line_num + 1
                continue
            line = reader.line_num
            record_start = line + 1
            last = (line, len(fields))
            count = len(fields)
            row = {key: fields[index].strip() if index < count else None for key, index in positions}
            if not any(row.values()):
                continue  # a blank row (",,,"): Canvas skips it without a word
            rows += 1
            if rows % STOP_EVERY == 0 and should_stop is not None and should_stop():
                raise Cancelled
            if len(fields) != width:
                _ragged(name, line, len(fields), header, report)
            _row(name, line, importer, row, header, status_index, fields, report)
    except csv.Error as error:
        if text.bad is None:  # a bad byte cut the text short: that is the problem, not the quote it left open
            report.add(_malformed(name, str(error), record_start, reader.line_num))
            return importer
    if text.bad is not None:
        bad_line, commas, bad = text.bad
        # What the reader made of the line the bad byte cut short is no problem of its own.
        report.problems[:] = [p for p in report.problems if p.file != name or p.line is None or p.line < bad_line]
        report.add(_encoding_problem(name, bad_line, commas, bad, header))
        return importer
    if importer is not None:
        report.types[importer] += rows
    if last is not None and not text.ends_with_break and last[1] < width:
        report.add(
            Problem(
                name,
                last[0],
                _column_name(header, last[1] - 1),
                "cut_short",
                False,
                f"the last row has {last[1]} of the header's {width} fields and the file does not end with a line "
                "break: the file may have been cut short",
            )
        )
    return importer


def _header(name: str, header: Sequence[str], report: Report) -> str | None:
    importer = detect_importer(header)
    if importer is None:
        single = header[0] if len(header) == 1 else ""
        if ";" in single or "\t" in single:
            delimiter = "semicolons" if single.count(";") >= single.count("\t") else "tabs"
            report.add(
                Problem(
                    name,
                    1,
                    None,
                    "delimiter",
                    True,
                    f"the header is separated by {delimiter}; Canvas reads only commas: save the file with commas "
                    '("CSV UTF-8 (Comma delimited)")',
                    MSG_NO_HEADERS,
                )
            )
        else:
            shown = ",".join(cell.strip() for cell in header[:8]) + (",…" if len(header) > 8 else "")
            report.add(
                Problem(
                    name,
                    1,
                    None,
                    "no_headers",
                    True,
                    f"the header row ({shown}) names no SIS CSV type Canvas knows; see Canvas's SIS CSV format",
                    MSG_NO_HEADERS,
                )
            )
        return None
    missing = missing_columns(importer, [cell.strip().lower() for cell in header])
    if missing:
        listed = ", ".join(column.replace("|", " or ") for column in missing)
        report.add(
            Problem(
                name,
                1,
                None,
                "missing_columns",
                True,
                f"read as {importer} rows, it lacks the required column(s) {listed}: Canvas would skip every row",
            )
        )
    return importer


def _ragged(name: str, line: int, count: int, header: Sequence[str], report: Report) -> None:
    width = len(header)
    if count > width:
        message = f"the row has {count} fields, the header {width}: Canvas ignores the extra values"
        column = f"column {width + 1}"
    else:
        message = f"the row has {count} of the header's {width} fields: Canvas reads the missing ones as empty"
        column = _column_name(header, count)
    report.add(Problem(name, line, column, "ragged_row", False, message))


def _row(
    name: str,
    line: int,
    importer: str | None,
    row: dict[str, str | None],
    header: Sequence[str],
    status_index: int | None,
    fields: Sequence[str],
    report: Report,
) -> None:
    assert importer is not None
    if status_index is not None and status_index < len(fields):
        status = fields[status_index].strip()
        if status and status.lower() not in STATUSES[importer]:
            known = "|".join(sorted(STATUSES[importer]))
            report.add(
                Problem(
                    name,
                    line,
                    _column_name(header, status_index),
                    "unknown_status",
                    False,
                    f'status "{status}" is not one Canvas knows for {importer} rows ({known}): Canvas skips the row',
                )
            )
            return
    message = row_problem(importer, row)
    if message is not None:
        report.add(Problem(name, line, None, "row_skipped", False, "Canvas skips this row with a warning", message))


def _malformed(name: str, error: str, record_start: int, line: int) -> Problem:
    if "unexpected end of data" in error:
        message = "a quote opened in this row is never closed: Canvas skips the whole file"
        return Problem(name, record_start, None, "unterminated_quote", True, message, MSG_MALFORMED)
    if "field larger than field limit" in error:
        message = (
            "a quoted field opened in this row runs on past 128 KiB: most likely a quote that is never closed; "
            "Canvas skips the whole file"
        )
        return Problem(name, record_start, None, "unterminated_quote", True, message, MSG_MALFORMED)
    message = f"text follows a closing quote ({error}): Canvas skips the whole file"
    return Problem(name, line, None, "malformed", True, message, MSG_MALFORMED)
