"""An import's rows: each CSV read record by record, checked (sisdaemon.sis_csv) and applied to the World by its
importer (sisdaemon.sandbox.importers), messages recorded with their row, progress raised chunk by chunk, counts
kept (import_refactored.rb process / run_all_importers / update_progress).
"""

from __future__ import annotations

import math
import threading
import time

from sisdaemon import sis_csv
from sisdaemon.sandbox import importers, row_info
from sisdaemon.sandbox.prepare import CsvFile, Stopped
from sisdaemon.sandbox.records import SisImport
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.world import ImportContext, Statistics, World

# Imports with at most this many rows (plus 1, as Canvas counts) run inline without intermediate progress
# (Setting sis_batch_parallelism_count_threshold, default 50).
RUN_IMMEDIATELY_ROWS = 50


def aborted(sis_import: SisImport, stopping: threading.Event) -> bool:
    """Whether the import was aborted; raises Stopped when the sandbox is stopping."""
    if stopping.is_set():
        raise Stopped
    return sis_import.workflow_state == "aborted"


class RowImporter:
    """Imports the rows of an import's CSVs, in importer order, into the World."""

    def __init__(self, store: Store, world: World, stopping: threading.Event) -> None:
        self.store = store
        self.world = world
        self.stopping = stopping

    def import_rows(self, sis_import: SisImport, csvs: dict[str, list[CsvFile]], rows_per_second: float | None) -> None:
        """Import every CSV's rows, pacing them at `rows_per_second` (None: as fast as possible); returns early
        when the import is aborted."""
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
        pacer = _Pacer(rows_per_second, self.stopping)
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
        item: CsvFile,
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
                    if row_index % 50 == 0 and aborted(sis_import, self.stopping):
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


class _Pacer:
    """Keeps row processing at `rows_per_second` (None: no pacing) by waiting on the stop event."""

    def __init__(self, rows_per_second: float | None, stopping: threading.Event) -> None:
        self.rate = rows_per_second
        self.stopping = stopping
        self.started = time.monotonic()
        self.rows = 0

    def tick(self) -> None:
        """Count one row, waiting if ahead of schedule; raises Stopped when the sandbox stops."""
        if self.stopping.is_set():
            raise Stopped
        if not self.rate:
            return
        self.rows += 1
        ahead = self.started + self.rows / self.rate - time.monotonic()
        if ahead > 0.02 and self.stopping.wait(ahead):
            raise Stopped
