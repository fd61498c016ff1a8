"""Runs the sandbox's imports the way Canvas's SIS job does: one at a time per account, oldest first,
`created` -> `importing` (progress rising) -> `cleanup_batch` in batch mode -> a terminal state, and the
errors CSV a moment later.

Sources: app/models/sis_batch.rb (process_all_for_account, process_without_send_later, finish,
do_batch_end_work, remove_previous_imports, detect_change_item, write_errors_to_file, statistics) and
lib/sis/csv/import_refactored.rb (prepare, process_file, number_of_rows, process, run_all_importers,
update_progress). Rows are read one at a time from disk (sisdaemon.sis_csv), so memory stays flat.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sisdaemon import sis_csv
from sisdaemon.sandbox import importers, row_info
from sisdaemon.sandbox.batch import cleanup_batch, restore_states
from sisdaemon.sandbox.records import SisImport, StoredFile, utc_now
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.world import ImportContext, Statistics, World

# Imports with at most this many rows (plus 1, as Canvas counts) run inline without intermediate progress
# (Setting sis_batch_parallelism_count_threshold, default 50).
RUN_IMMEDIATELY_ROWS = 50
# Canvas refuses a zip whose content is 100x its size or more, or above 50 GB (sis_imports_api_controller.rb
# docs for `attachment`).
ZIP_RATIO_LIMIT = 100
ZIP_SIZE_LIMIT = 50 * 1024**3


@dataclass
class Speed:
    """How fast imports run. `rows_per_second` None = as fast as possible; `start_delay` seconds an import
    stays `created` before it may start; `errors_delay` seconds between the terminal state and the errors
    CSV; `abort_requeue` seconds the queue pauses after an abort while others wait (Canvas: 600)."""

    rows_per_second: float | None = None
    start_delay: float = 0.0
    errors_delay: float = 0.1
    abort_requeue: float = 0.0


@dataclass
class _Csv:
    name: str  # the name Canvas shows in messages: upload filename or path inside the zip
    path: Path
    importer: str
    rows: int = 0


class Processor:
    """The worker thread that runs imports and a scheduler thread for delayed work (errors CSVs, restores).

    Use start() then stop(); both threads are joined by stop().
    """

    def __init__(self, store: Store, world: World, speed: Speed) -> None:
        self.store = store
        self.world = world
        self.speed = speed
        self.stopping = threading.Event()
        self.paused_until = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._threads: list[threading.Thread] = []

    # ---- threads -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and scheduler threads."""
        for name, target in (("sandbox-worker", self._work), ("sandbox-scheduler", self._schedule_loop)):
            thread = threading.Thread(target=target, name=name, daemon=False)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads and wait for them."""
        self.stopping.set()
        self.store.notify()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` (with the store lock held) on the scheduler thread after `delay` seconds."""
        with self.store.lock:
            heapq.heappush(self._events, (time.monotonic() + delay, next(self._sequence), action))
            self.store.changed.notify_all()

    def _schedule_loop(self) -> None:
        with self.store.lock:
            while not self.stopping.is_set():
                now = time.monotonic()
                while self._events and self._events[0][0] <= now:
                    _, _, action = heapq.heappop(self._events)
                    action()
                    self.store.changed.notify_all()
                timeout = 0.5 if not self._events else max(0.0, min(0.5, self._events[0][0] - now))
                self.store.changed.wait(timeout)

    def _next_import(self) -> SisImport | None:
        """The oldest `created` import that may start now, unless one is importing (sis_batch.rb
        process_all_for_account)."""
        imports = self.store.ordered_imports()
        if any(item.workflow_state in {"importing", "cleanup_batch"} for item in imports):
            return None
        if time.monotonic() < self.paused_until:
            return None
        now = utc_now()
        for item in imports:
            if item.workflow_state == "aborted" and item.progress != 100 and item.started_at is None:
                # process_without_send_later: an aborted batch reached by the queue gets progress 100.
                item.progress = 100
                item.touch()
            if item.workflow_state != "created" or item.stuck_in == "created":
                continue
            queued_at = item.queued_at or item.created_at
            if (now - queued_at).total_seconds() < self.speed.start_delay:
                continue
            return item
        return None

    def _work(self) -> None:
        while not self.stopping.is_set():
            with self.store.lock:
                sis_import = self._next_import()
                if sis_import is None:
                    self.store.changed.wait(0.05 if self.speed.start_delay else 0.5)
                    continue
                self._begin(sis_import)
            try:
                self._run(sis_import)
            except _Stopped:
                return
            except Exception as error:  # a crash: Canvas's fail_with_error!
                with self.store.lock:
                    self._crash(sis_import, None, error)

    # ---- one import --------------------------------------------------------------------------------------

    def _hold(self, sis_import: SisImport, state: str) -> None:
        """Wait while the import is stuck in `state` (Sandbox.stick)."""
        with self.store.lock:
            while sis_import.stuck_in == state and sis_import.workflow_state == state:
                if self.stopping.is_set():
                    raise _Stopped
                self.store.changed.wait(0.1)

    def _begin(self, sis_import: SisImport) -> None:
        sis_import.workflow_state = "importing"
        sis_import.progress = 0
        sis_import.started_at = utc_now()
        sis_import.touch()
        self.store.changed.notify_all()

    def _aborted(self, sis_import: SisImport) -> bool:
        if self.stopping.is_set():
            raise _Stopped
        return sis_import.workflow_state == "aborted"

    def _run(self, sis_import: SisImport) -> None:
        self._hold(sis_import, "importing")
        if sis_import.finish_as == "aborted":
            with self.store.lock:
                sis_import.workflow_state = "aborted"
                sis_import.touch()
            return
        if sis_import.finish_as == "failed":
            with self.store.lock:
                # process_without_send_later's rescue: error_message + stack_trace, state failed, nothing else.
                sis_import.data["error_message"] = "sandbox: forced failure"
                sis_import.data["stack_trace"] = "sandbox: forced failure\n(sisdaemon sandbox finish_as)"
                sis_import.workflow_state = "failed"
                sis_import.touch()
            return
        with self.store.lock:
            # Nothing the worker changes is saved (shown) until _import_rows knows the import is not running
            # immediately, or until it ends.
            sis_import.hold()
        work_dir = self.store.data_dir / f"import_{sis_import.id}"
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            csvs = self._prepare(sis_import, work_dir)
        except (zipfile.BadZipFile, _ZipTooLarge, OSError) as error:
            with self.store.lock:
                self._crash(sis_import, None, error)
            return
        if self._aborted(sis_import):
            return
        self._import_rows(sis_import, csvs)
        if self._aborted(sis_import):
            return
        with self.store.lock:
            self._finish(sis_import)

    def _crash(self, sis_import: SisImport, filename: str | None, error: BaseException) -> None:
        """import_refactored.rb fail_with_error!: an "Error while importing CSV" failure, then finish."""
        if sis_import.workflow_state == "aborted":
            return
        number = self.store.new_error_report()
        sis_import.add_error(filename, sis_csv.MSG_CRASH.format(number=number), failure=True)
        self._end_work(sis_import, import_finished=False)

    def _prepare(self, sis_import: SisImport, work_dir: Path) -> dict[str, list[_Csv]]:
        """Unzip, recognise each CSV by its header, list the attachments, count rows (import_refactored.rb
        prepare / process_file / number_of_rows). Returns the CSVs per importer, in import order."""
        upload = sis_import.upload
        found: dict[str, list[_Csv]] = {name: [] for name in sis_csv.IMPORTERS}
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
            kept: list[_Csv] = []
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
                    raise _Stopped
        return max(0, records - 1)

    def _unzip(self, sis_import: SisImport, zip_path: Path, work_dir: Path) -> list[tuple[str, Path]]:
        with zipfile.ZipFile(zip_path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            total = sum(info.file_size for info in members)
            zip_size = zip_path.stat().st_size
            if total >= ZIP_RATIO_LIMIT * max(zip_size, 1) or total > ZIP_SIZE_LIMIT:
                raise _ZipTooLarge(total)
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
        found: dict[str, list[_Csv]],
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
        lowered = [cell.lower() for cell in header]
        if importer == "user" and sis_csv.PASSWORD_HEADERS.intersection(lowered):
            attachment = self._filtered_copy(name, path, header, work_dir)
        if attachment is not None:
            attachments.append(attachment)
        found[importer].append(_Csv(name, path, importer))

    def _filtered_copy(self, name: str, path: Path, header: list[str], work_dir: Path) -> StoredFile:
        """A users CSV without its password columns, listed as `<name>_filtered.csv`
        (import_refactored.rb create_filtered_csv)."""
        keep = [index for index, cell in enumerate(header) if cell.lower() not in sis_csv.PASSWORD_HEADERS]
        target = work_dir / f"filtered_{self.store.new_file_id()}.csv"
        with path.open("rb") as stream, target.open("w", newline="", encoding="utf-8") as sink:
            writer = csv.writer(sink, lineterminator="\n")
            for record in sis_csv.iter_records(stream):
                writer.writerow([record.fields[i] if i < len(record.fields) else "" for i in keep])
        basename = name.rsplit("/", 1)[-1]
        stem = basename[:-4] if basename.lower().endswith(".csv") else basename
        return self._attachment(f"{stem}_filtered.csv", target)

    # ---- rows --------------------------------------------------------------------------------------------

    def _import_rows(self, sis_import: SisImport, csvs: dict[str, list[_Csv]]) -> None:
        total_rows = 1 + sum(item.rows for items in csvs.values() for item in items)
        running_immediately = total_rows <= RUN_IMMEDIATELY_ROWS
        chunk = min(max(math.ceil(total_rows / 99), 100), 1000)
        total_chunks = sum(math.ceil(item.rows / chunk) for items in csvs.values() for item in items) or 1
        stats = Statistics()
        context = ImportContext(sis_import.id, sis_import.options, stats, sis_import.rollback)
        with self.store.lock:
            data = sis_import.data
            data["supplied_batches"] = [name for name in sis_csv.IMPORTERS if csvs[name]]
            data["counts"] = {sis_csv.COUNT_KEYS[name]: 0 for name in sis_csv.IMPORTERS}
            data["running_immediately"] = running_immediately
            data["completed_importers"] = []
            sis_import.statistics = stats
            if not running_immediately:
                # `@batch.save! unless @run_immediately`: a larger import shows its attachments and
                # supplied_batches now; a small one only when it ends.
                sis_import.release()
                sis_import.touch()
                self.store.changed.notify_all()
        pacer = _Pacer(self.speed.rows_per_second, self.stopping)
        done_chunks = 0
        for importer in sis_csv.IMPORTERS:
            for item in csvs[importer]:
                succeeded = self._import_csv(
                    sis_import, item, context, pacer, chunk, running_immediately, done_chunks, total_chunks
                )
                if succeeded is None:
                    return  # aborted
                done_chunks += math.ceil(item.rows / chunk)
                with self.store.lock:
                    counts = sis_import.data["counts"]
                    counts[sis_csv.COUNT_KEYS[importer]] += succeeded
                    sis_import.data["completed_importers"].append(importer)
                    if sis_import.held is None:
                        sis_import.touch()

    def _import_csv(
        self,
        sis_import: SisImport,
        item: _Csv,
        context: ImportContext,
        pacer: _Pacer,
        chunk: int,
        running_immediately: bool,
        chunks_before: int,
        total_chunks: int,
    ) -> int | None:
        """Import one CSV; returns the rows that succeeded, or None when the import was aborted.

        Enrollment rows get every row's own checks first and the lookups (role, course, user) in a second
        pass, as Canvas's enrollment importer does; other importers check and apply row by row.
        """
        apply = importers.importer(item.importer)
        deferred = item.importer == "enrollment"
        succeeded = 0
        row_index = 0
        passes = ("check", "apply") if deferred else ("both",)
        for phase in passes:
            row_index = 0
            with item.path.open("rb") as stream:
                records = sis_csv.iter_records(stream)
                header = next(records).fields
                for record in records:
                    row_index += 1
                    pacer.tick()
                    if row_index % 50 == 0 and self._aborted(sis_import):
                        return None
                    row = sis_csv.row_dict(header, record.fields)
                    if sis_csv.is_blank_row(row):
                        continue
                    # csv_rows' lineno: data records counted from 2 (the header is 1), blank lines not counted.
                    lineno = row_index + 1
                    csv_info = row_info.csv_row_info(header, record.fields, lineno)
                    problem = sis_csv.row_problem(item.importer, row)
                    if problem is not None:
                        if phase != "apply":
                            with self.store.lock:
                                sis_import.add_error(item.name, problem, row=lineno, row_info=csv_info)
                        continue
                    if phase == "check":
                        continue
                    if context.options.get("skip_deletes") and (row.get("status") or "").lower() == "deleted":
                        continue
                    with self.store.lock:
                        for warning in sis_csv.row_warnings(item.importer, row):
                            sis_import.add_error(item.name, warning, row=lineno, row_info=csv_info)
                        message = apply(self.world, row, context)
                        if message is None:
                            succeeded += 1
                        else:
                            # Found while applying a batch of rows: enrollments, users and logins then dump
                            # their model; other importers raised ImportError with the CSV row.
                            info = row_info.model_row_info(item.importer, row) or csv_info
                            sis_import.add_error(item.name, message, row=lineno, row_info=info)
                    if not running_immediately and row_index % chunk == 0:
                        self._progress(sis_import, chunks_before + row_index // chunk, total_chunks)
        if not running_immediately:
            self._progress(sis_import, chunks_before + math.ceil(item.rows / chunk), total_chunks)
        return succeeded

    def _progress(self, sis_import: SisImport, done: int, total: int) -> None:
        with self.store.lock:
            value = min(99, round(done * 100 / total))
            if value > sis_import.progress and sis_import.workflow_state == "importing":
                sis_import.progress = value
                sis_import.touch()
                self.store.changed.notify_all()

    # ---- the end -----------------------------------------------------------------------------------------

    def _finish(self, sis_import: SisImport) -> None:
        forced = sis_import.finish_as
        if forced == "failed_with_messages":
            number = self.store.new_error_report()
            sis_import.add_error(None, sis_csv.MSG_CRASH.format(number=number), failure=True)
        elif forced == "imported_with_messages" and not sis_import.errors:
            sis_import.add_error(None, "sandbox: forced warning")
        elif forced == "imported":
            sis_import.errors.clear()
        self._end_work(sis_import, import_finished=True)

    def _end_work(self, sis_import: SisImport, *, import_finished: bool) -> None:
        """sis_batch.rb do_batch_end_work (the caller holds the lock)."""
        if sis_import.workflow_state == "aborted":
            return
        if sis_import.batch_mode and import_finished:
            self._cleanup_batch(sis_import)
        has_errors = bool(sis_import.errors)
        if import_finished:
            import_finished = not any(error.failure for error in sis_import.errors)
        if sis_import.workflow_state != "aborted":
            if import_finished:
                sis_import.workflow_state = "imported_with_messages" if has_errors else "imported"
            else:
                sis_import.workflow_state = "failed_with_messages" if has_errors else "failed"
        sis_import.release()  # finish saves the batch
        sis_import.populate_messages()
        stats = sis_import.statistics or Statistics()
        sis_import.data["statistics"] = stats.as_json()
        if import_finished:
            sis_import.progress = 100
        sis_import.ended_at = utc_now()
        sis_import.touch(sis_import.ended_at)
        self.store.changed.notify_all()
        if has_errors:
            self.later(self.speed.errors_delay, lambda: self._write_errors_file(sis_import))

    def _write_errors_file(self, sis_import: SisImport) -> None:
        """The errors CSV `sis_import_id,file,message,row`, one line per message (write_errors_to_file)."""
        stamp = utc_now().strftime("%Y-%m-%d+%H%M%S+UTC")
        path = self.store.data_dir / f"errors_{sis_import.id}.csv"
        with path.open("w", newline="", encoding="utf-8") as sink:
            writer = csv.writer(sink, lineterminator="\n")
            writer.writerow(["sis_import_id", "file", "message", "row"])
            for error in sis_import.errors:
                writer.writerow([error.sis_import_id, error.file or "", error.message, error.row or ""])
        stored = StoredFile(
            id=self.store.new_file_id(),
            filename=f"{sis_import.id}_processing_warnings_and_errors{stamp}.csv",
            display_name=f"sis_errors_attachment_{sis_import.id}.csv",
            content_type="csv",
            path=path,
            size=path.stat().st_size,
        )
        sis_import.errors_attachment = self.store.add_file(stored)
        sis_import.touch()

    def _cleanup_batch(self, sis_import: SisImport) -> None:
        def hold() -> None:
            if sis_import.stuck_in == "cleanup_batch":
                self.store.lock.release()
                try:
                    self._hold(sis_import, "cleanup_batch")
                finally:
                    self.store.lock.acquire()

        cleanup_batch(self.world, sis_import, self.store.changed.notify_all, hold)

    def restore_later(
        self, sis_import: SisImport, progress_id: int, *, undelete_only: bool, unconclude_only: bool, batch_mode: bool
    ) -> None:
        """restore_states: `restoring` now, the changes undone a moment later on the scheduler thread."""
        progress = self.store.progresses[progress_id]
        self.later(
            self.speed.errors_delay,
            lambda: restore_states(
                self.world,
                sis_import,
                progress,
                undelete_only=undelete_only,
                unconclude_only=unconclude_only,
                batch_mode=batch_mode,
            ),
        )


class _Stopped(Exception):
    """The sandbox is stopping: leave the import as it is."""


class _ZipTooLarge(Exception):
    """The zip unpacks to 100x its size or more (Canvas fails the import)."""


class _Pacer:
    """Keeps row processing at `rows_per_second` (None: no pacing) by waiting on the stop event."""

    def __init__(self, rows_per_second: float | None, stopping: threading.Event) -> None:
        self.rate = rows_per_second
        self.stopping = stopping
        self.started = time.monotonic()
        self.rows = 0

    def tick(self) -> None:
        """Count one row, waiting if ahead of schedule; raises _Stopped when the sandbox stops."""
        if self.stopping.is_set():
            raise _Stopped
        if not self.rate:
            return
        self.rows += 1
        ahead = self.started + self.rows / self.rate - time.monotonic()
        if ahead > 0.02 and self.stopping.wait(ahead):
            raise _Stopped
