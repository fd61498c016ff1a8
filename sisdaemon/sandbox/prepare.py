"""An import's first step (import_refactored.rb prepare / process_file / number_of_rows): unzip the upload,
recognise each CSV by its header, list the attachments (a users CSV without its password columns), count the rows.

Files are read from disk a chunk or a record at a time (sisdaemon.sis_csv). :class:`Stopped` (the sandbox is
stopping) is raised from here and from the row import, and caught by the Processor.
"""

from __future__ import annotations

import csv
import shutil
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sisdaemon import sis_csv
from sisdaemon.sandbox.records import SisImport, StoredFile
from sisdaemon.sandbox.store import Store

# Canvas refuses a zip whose content is 100x its size or more, or above 50 GB (sis_imports_api_controller.rb
# docs for `attachment`).
ZIP_RATIO_LIMIT = 100
ZIP_SIZE_LIMIT = 50 * 1024**3


class Stopped(Exception):
    """The sandbox is stopping: leave the import as it is."""


class ZipTooLarge(Exception):
    """The zip unpacks to 100x its size or more (Canvas fails the import)."""


@dataclass
class CsvFile:
    """One CSV of an import, recognised by its header: `name` is the name Canvas shows in messages (upload
    filename or path inside the zip), `path` where it is on disk, `rows` its data rows (counted by prepare)."""

    name: str
    path: Path
    importer: str
    rows: int = 0


class Preparer:
    """Turns an import's upload into its CSVs per importer, recording file-level messages on the import."""

    def __init__(self, store: Store, stopping: threading.Event) -> None:
        self.store = store
        self.stopping = stopping

    def prepare(self, sis_import: SisImport, work_dir: Path) -> dict[str, list[CsvFile]]:
        """Unzip, recognise each CSV by its header, list the attachments, count rows (import_refactored.rb
        prepare / process_file / number_of_rows). Returns the CSVs per importer, in import order."""
        upload = sis_import.upload
        found: dict[str, list[CsvFile]] = {name: [] for name in sis_csv.IMPORTERS}
        attachments: list[StoredFile] = []
        if upload is not None and sis_csv.is_zip_name(upload.filename):
            for name, path in self._unzip(sis_import, upload.path, work_dir):
                if not sis_csv.is_csv_name(name):
                    with self.store.lock:
                        sis_import.add_error(name, sis_csv.MSG_UNKNOWN_FILE_TYPE)
                    continue
                attachment = None
                if path.stat().st_size > 0:
                    attachment = self._attachment(name.rsplit("/", 1)[-1], path)
                self._recognise(sis_import, name, path, attachment, found, attachments, work_dir)
        elif upload is not None and sis_csv.is_csv_name(upload.filename):
            self._recognise(sis_import, upload.filename, upload.path, upload, found, attachments, work_dir)
        with self.store.lock:
            sis_import.csv_attachments = attachments
            sis_import.data["downloadable_attachment_ids"] = [att.id for att in attachments]
        for importer in sis_csv.IMPORTERS:
            kept: list[CsvFile] = []
            for item in found[importer]:
                try:
                    item.rows = self._count_rows(item.path)
                    kept.append(item)
                except sis_csv.CsvFileError:
                    with self.store.lock:
                        sis_import.add_error(item.name, sis_csv.MSG_MALFORMED, failure=True)
            found[importer] = kept
        return found

    def _count_rows(self, path: Path) -> int:
        """Data rows (records after the header); CsvFileError for a malformed file; stops with the sandbox."""
        records = 0
        with path.open("rb") as stream:
            for _ in sis_csv.iter_records(stream):
                records += 1
                if records % 10_000 == 0 and self.stopping.is_set():
                    raise Stopped
        return max(0, records - 1)

    def _unzip(self, sis_import: SisImport, zip_path: Path, work_dir: Path) -> list[tuple[str, Path]]:
        with zipfile.ZipFile(zip_path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            total = sum(info.file_size for info in members)
            zip_size = zip_path.stat().st_size
            if total >= ZIP_RATIO_LIMIT * max(zip_size, 1) or total > ZIP_SIZE_LIMIT:
                raise ZipTooLarge(total)
            extracted: list[tuple[str, Path]] = []
            for index, info in enumerate(sorted(members, key=lambda member: member.filename)):
                if sis_csv.is_ignored_zip_entry(info.filename):
                    continue
                target = work_dir / f"member_{index}"
                with archive.open(info) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 16)
                extracted.append((info.filename, target))
            return extracted

    def _attachment(self, display_name: str, path: Path) -> StoredFile:
        stored = StoredFile(
            id=self.store.new_file_id(),
            filename=display_name,
            display_name=display_name,
            content_type="text/csv" if sis_csv.is_csv_name(display_name) else "application/octet-stream",
            path=path,
            size=path.stat().st_size,
        )
        return self.store.add_file(stored)

    def _recognise(
        self,
        sis_import: SisImport,
        name: str,
        path: Path,
        attachment: StoredFile | None,
        found: dict[str, list[CsvFile]],
        attachments: list[StoredFile],
        work_dir: Path,
    ) -> None:
        with path.open("rb") as stream:
            valid = sis_csv.check_utf8(stream)
        if not valid:
            with self.store.lock:
                sis_import.add_error(name, sis_csv.MSG_INVALID_UTF8, failure=True)
            return
        try:
            with path.open("rb") as stream:
                header = sis_csv.read_header(stream)
        except sis_csv.CsvFileError as error:
            with self.store.lock:
                sis_import.add_error(name, error.message, failure=True)
            return
        if header is None:
            return  # an empty file: no rows, no message
        importer = sis_csv.detect_importer(header)
        if importer is None:
            with self.store.lock:
                sis_import.add_error(name, sis_csv.MSG_NO_HEADERS, failure=True)
            return
        lowered = [cell.strip().lower() for cell in header]
        if importer == "user" and sis_csv.PASSWORD_HEADERS.intersection(lowered):
            attachment = self._filtered_copy(name, path, header, work_dir)
        if attachment is not None:
            attachments.append(attachment)
        found[importer].append(CsvFile(name, path, importer))

    def _filtered_copy(self, name: str, path: Path, header: list[str], work_dir: Path) -> StoredFile:
        """A users CSV without its password columns, listed as `<name>_filtered.csv`
        (import_refactored.rb create_filtered_csv)."""
        keep = [index for index, cell in enumerate(header) if cell.strip().lower() not in sis_csv.PASSWORD_HEADERS]
        target = work_dir / f"filtered_{self.store.new_file_id()}.csv"
        with path.open("rb") as stream, target.open("w", newline="", encoding="utf-8") as sink:
            writer = csv.writer(sink, lineterminator="\n")
            for record in sis_csv.iter_records(stream):
                writer.writerow([record.fields[i] if i < len(record.fields) else "" for i in keep])
        basename = name.rsplit("/", 1)[-1]
        stem = basename[:-4] if basename.lower().endswith(".csv") else basename
        return self._attachment(f"{stem}_filtered.csv", target)
