"""A dropped file's SIS types, from its first line (a CSV) or its CSV members' first lines (a zip): a small bounded
read for the claim order (order.py), made once per fingerprint (the settle tracker keeps the answer with the file's
record).

A read is at most :data:`HEADER_BYTES` per CSV and :data:`ZIP_MEMBERS_READ` members per zip, of a local file the
daemon already looked at, so it needs no deadline of its own. Nothing here raises: a file that cannot be read, or
whose first line is not in yet, has no known type (None), and so holds nothing back.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from sisdaemon import order, sis_csv, spool
from sisdaemon.order import Kind

#: At most this many bytes of a CSV are read for its first line; a longer header has no known type.
HEADER_BYTES = 64 * 1024
#: Bytes read at a time while looking for the end of the first line (most headers fit in one read).
_CHUNK = 4096
#: At most this many CSV members of a zip are read; the rest are not looked at.
ZIP_MEMBERS_READ = 64
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _first_line(fd: int, *, settled: bool) -> bytes | None:
    """The first line of the open file ``fd`` (without its line break), or None when it is not complete yet: no line
    break within :data:`HEADER_BYTES`, unless the file has settled and holds nothing more (a header-only file
    without a final line break)."""
    data = b""
    while len(data) < HEADER_BYTES:
        block = os.pread(fd, _CHUNK, len(data))
        if not block:
            return data if settled and data else None
        data += block
        end = data.find(b"\n")
        if end >= 0:
            return data[:end]
    return None


def _types_of_line(line: bytes) -> frozenset[str]:
    """The importer a header line selects, as a set of at most one (none for a line Canvas does not recognise)."""
    try:
        header = sis_csv.read_header(io.BytesIO(line + b"\n"))
    except sis_csv.CsvFileError:
        return frozenset()
    importer = sis_csv.detect_importer(header) if header else None
    return frozenset({importer}) if importer else frozenset()


def _zip_types(path: Path) -> frozenset[str]:
    """The types of a zip's CSV members (at most :data:`ZIP_MEMBERS_READ`; entries Canvas skips left out), each
    from at most :data:`HEADER_BYTES` of its decompressed start."""
    found: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and sis_csv.is_csv_name(info.filename)
            and not sis_csv.is_ignored_zip_entry(info.filename)
        ]
        for info in members[:ZIP_MEMBERS_READ]:
            with archive.open(info) as member:
                start = member.read(HEADER_BYTES)
            end = start.find(b"\n")
            line = start[:end] if end >= 0 else start if len(start) < HEADER_BYTES else b""
            found |= _types_of_line(line)
    return frozenset(found)


def kind_of_file(path: Path, *, settled: bool) -> Kind | None:
    """The SIS types of the file at ``path`` (a CSV's first line; a zip's CSV members), or None when none is known:
    not readable, empty, its first line not complete while it still settles (``settled`` False), a zip not
    readable as one yet, or no header Canvas knows. Never raises."""
    try:
        fd = spool.open_for_reading(path)
    except OSError:
        return None
    try:
        start = os.pread(fd, 4, 0)
        if start in _ZIP_MAGIC:
            try:
                return order.kind_of(_zip_types(path))
            except Exception:  # a zip still being written, damaged, encrypted or odd: no known type
                return None
        line = _first_line(fd, settled=settled)
    except OSError:
        return None
    finally:
        os.close(fd)
    return order.kind_of(_types_of_line(line)) if line is not None else None
