"""Runs the sandbox's imports the way Canvas's SIS job does: one at a time per account, oldest first,
`created` -> `importing` (progress rising) -> `cleanup_batch` in batch mode -> a terminal state, and the
errors CSV a moment later.

Sources: app/models/sis_batch.rb (process_all_for_account, process_without_send_later, finish,
do_batch_end_work, remove_previous_imports, detect_change_item, write_errors_to_file, statistics) and
lib/sis/csv/import_refactored.rb (prepare, process_file, number_of_rows, process, run_all_importers,
update_progress). Rows are read one at a time from disk (sisdaemon.sis_csv), so memory stays flat.

This module is the driver: the queue, the worker and scheduler threads, one import's course and its end. The
steps it drives: sisdaemon.sandbox.prepare (the upload's CSVs) and sisdaemon.sandbox.import_rows (their rows).
"""

from __future__ import annotations

import csv
import heapq
import itertools
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sisdaemon import sis_csv
from sisdaemon.sandbox import diffing
from sisdaemon.sandbox.batch import cleanup_batch, restore_states
from sisdaemon.sandbox.import_rows import RowImporter, aborted
from sisdaemon.sandbox.prepare import CsvFile, Preparer, Stopped, ZipTooLarge
from sisdaemon.sandbox.records import SisImport, StoredFile, utc_now
from sisdaemon.sandbox.store import Store
from sisdaemon.sandbox.world import Statistics, World


@dataclass
class Speed:
    """How fast imports run. `rows_per_second` None = as fast as possible; `start_delay` seconds an import
    stays `created` before it may start; `errors_delay` seconds between the terminal state and the errors
    CSV; `abort_requeue` seconds the queue pauses after an abort while others wait (Canvas: 600)."""

    rows_per_second: float | None = None
    start_delay: float = 0.0
    errors_delay: float = 0.1
    abort_requeue: float = 0.0


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
        self._preparer = Preparer(store, self.stopping)
        self._rows = RowImporter(store, world, self.stopping)

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
            except Stopped:
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
                    raise Stopped
                self.store.changed.wait(0.1)

    def _begin(self, sis_import: SisImport) -> None:
        sis_import.workflow_state = "importing"
        sis_import.progress = 0
        sis_import.started_at = utc_now()
        sis_import.touch()
        self.store.changed.notify_all()

    def _aborted(self, sis_import: SisImport) -> bool:
        return aborted(sis_import, self.stopping)

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
            csvs = self._preparer.prepare(sis_import, work_dir)
        except (zipfile.BadZipFile, ZipTooLarge, OSError) as error:
            with self.store.lock:
                self._crash(sis_import, None, error)
            return
        if self._aborted(sis_import):
            return
        csvs = self._diff(sis_import, csvs, work_dir)
        self._rows.import_rows(sis_import, csvs, self.speed.rows_per_second)
        if self._aborted(sis_import):
            return
        with self.store.lock:
            self._finish(sis_import)

    def _diff(self, sis_import: SisImport, csvs: dict[str, list[CsvFile]], work_dir: Path) -> dict[str, list[CsvFile]]:
        """Diffing mode (sandbox.diffing): the CSVs to apply instead of the upload's, where a diff was made."""
        current = {importer: [item.path for item in items] for importer, items in csvs.items() if items}
        with self.store.lock:
            sis_import.prepared = current
            base = diffing.base_import(self.store, sis_import)
        if base is None:
            return csvs
        diffed = diffing.generate_diff(self.store, sis_import, base, current, work_dir)
        for item in diffed or []:
            [original] = csvs[item.importer]
            csvs[item.importer] = [CsvFile(original.name, item.path, item.importer, item.rows)]
        return csvs

    def _crash(self, sis_import: SisImport, filename: str | None, error: BaseException) -> None:
        """import_refactored.rb fail_with_error!: an "Error while importing CSV" failure, then finish."""
        if sis_import.workflow_state == "aborted":
            return
        number = self.store.new_error_report()
        sis_import.add_error(filename, sis_csv.MSG_CRASH.format(number=number), failure=True)
        self._end_work(sis_import, import_finished=False)

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
        """restore_states: a queued Progress now; a moment later the job runs (`restoring`: sis_batch.rb
        restore_states_for_batch sets it when it starts), and a moment after that the changes are undone."""
        progress = self.store.progresses[progress_id]

        def begin() -> None:
            sis_import.workflow_state = "restoring"
            sis_import.touch()
            progress.workflow_state = "running"

        self.later(self.speed.errors_delay, begin)
        self.later(
            2 * self.speed.errors_delay,
            lambda: restore_states(
                self.world,
                sis_import,
                progress,
                undelete_only=undelete_only,
                unconclude_only=unconclude_only,
                batch_mode=batch_mode,
            ),
        )
