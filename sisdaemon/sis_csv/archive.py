"""Pre-flight check of an input file: a CSV, or a zip of CSVs, judged as Canvas would read it.

A file is a zip when it starts with a zip signature (as the daemon names its upload: ``spool.sniff_extension``),
else a CSV. For a zip (docs/canvas-api.md §1 and §3): it must open and every member Canvas reads must pass its
CRC check; the unpacked size must stay below 100 times the zip's size and 50 GB (Canvas fails the import
otherwise); member names that climb out of the folder (``../``) or are absolute are refused; junk members
(``__MACOSX``, dot-files, "Desktop DB") are ignored by Canvas and named as such; other non-CSV members get
Canvas's "Skipping unknown file type"; every CSV member is checked as a CSV (:func:`check_csv`); and at least one
CSV must be recognised, or the import would do nothing.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

from sisdaemon.sis_csv.hashing import HashingReader
from sisdaemon.sis_csv.preflight import check_csv
from sisdaemon.sis_csv.problems import Problem, Report
from sisdaemon.sis_csv.schema import MSG_UNKNOWN_FILE_TYPE, is_csv_name, is_ignored_zip_entry

#: Canvas fails a zip whose content is this many times its own size, or more (sis_imports_api_controller.rb docs).
ZIP_RATIO_LIMIT = 100
#: ... or whose content is above 50 GB.
ZIP_SIZE_LIMIT = 50 * 1024**3

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_DRIVE = re.compile(r"\A[A-Za-z]:")


def is_zip(path: Path) -> bool:
    """Whether ``path`` starts with a zip signature. Raises OSError."""
    with path.open("rb") as stream:
        return stream.read(4) in _ZIP_MAGIC


def unsafe_member_name(name: str) -> bool:
    """A member name that is absolute (``/x``, ``\\x``, ``C:x``) or climbs out of its folder (a ``..`` part)."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return True
    return ".." in re.split(r"[/\\]", name)


def check_file(path: Path, *, name: str | None = None, should_stop: Callable[[], bool] | None = None) -> Report:
    """Check the CSV or zip at ``path`` as Canvas would read it; ``name`` is what problems call it (default: the
    file's name). Streams: memory does not grow with the file's size. The report's ``sha256`` is the file's, taken
    from the same reads (:class:`~sisdaemon.sis_csv.hashing.HashingReader`: a CSV is read once; a zip's bytes its
    reader skipped are read once more at the end).

    Raises OSError when the file cannot be read; Cancelled when ``should_stop()`` turns true.
    """
    shown = name or path.name
    report = Report(shown)
    with path.open("rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        reader = HashingReader(raw)
        stream = cast(IO[bytes], reader)  # a seekable binary reader: what zipfile and check_csv use of IO
        if size == 0:
            report.add(
                Problem(
                    shown, None, None, "empty_file", True, "the file is empty (0 bytes); sisdaemon does not send it"
                )
            )
        elif stream.read(4) in _ZIP_MAGIC:
            stream.seek(0)
            _check_zip(stream, shown, size, report, should_stop)
        else:
            stream.seek(0)
            _check_one_csv(shown, stream, report, should_stop)
        report.sha256 = reader.finish()
    return report


def _check_one_csv(name: str, stream: IO[bytes], report: Report, should_stop: Callable[[], bool] | None) -> None:
    importer = check_csv(name, stream, report, should_stop=should_stop)
    if importer is None and not report.fatal:
        report.add(Problem(name, None, None, "empty_file", True, "the file has no header row: Canvas imports nothing"))


def _check_zip(
    stream: IO[bytes], shown: str, size: int, report: Report, should_stop: Callable[[], bool] | None
) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError) as error:
        report.add(Problem(shown, None, None, "zip_damaged", True, f"the zip cannot be read: {error}"))
        return
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        if total >= ZIP_RATIO_LIMIT * size or total > ZIP_SIZE_LIMIT:
            report.add(
                Problem(
                    shown,
                    None,
                    None,
                    "zip_too_large",
                    True,
                    f"the zip unpacks to {total} bytes, {total / size:.0f} times its {size} bytes: Canvas fails a zip "
                    "whose content is 100 times its size or more (or above 50 GB)",
                )
            )
            return
        recognised = 0
        for info in sorted(members, key=lambda member: member.filename):
            member = f"{shown}: {info.filename}"
            if unsafe_member_name(info.filename):
                report.add(
                    Problem(
                        member,
                        None,
                        None,
                        "zip_unsafe_name",
                        True,
                        "the member's name is absolute or climbs out of the zip's folder (..): refused, it could "
                        "write outside the folder it is unpacked into",
                    )
                )
                continue
            if is_ignored_zip_entry(info.filename):
                report.add(
                    Problem(member, None, None, "zip_junk", False, "Canvas ignores this member (__MACOSX, dot-file)")
                )
                continue
            if info.flag_bits & 0x1:
                report.add(Problem(member, None, None, "zip_encrypted", True, "the member is encrypted"))
                continue
            try:
                with archive.open(info) as stream:
                    if is_csv_name(info.filename):
                        if check_csv(member, stream, report, should_stop=should_stop) is not None:
                            recognised += 1
                    else:
                        report.add(
                            Problem(
                                member,
                                None,
                                None,
                                "zip_unknown_file",
                                False,
                                "not a .csv member: Canvas skips it",
                                MSG_UNKNOWN_FILE_TYPE,
                            )
                        )
                        while stream.read(1 << 16):  # read to the end: the CRC is checked there
                            pass
            except (zipfile.BadZipFile, NotImplementedError, EOFError) as error:
                report.add(Problem(member, None, None, "zip_damaged", True, f"the member cannot be read: {error}"))
        if recognised == 0 and not report.fatal:
            report.add(
                Problem(
                    shown, None, None, "zip_no_csv", True, "the zip holds no CSV Canvas recognises: it imports nothing"
                )
            )
