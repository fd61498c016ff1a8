"""The sandbox's Store: every import, stored file, progress and user, behind one lock, with id allocation.

All state lives in one Store guarded by one lock; `changed` is notified on every change so the worker and
waiting request threads wake up. The records themselves: sisdaemon.sandbox.records.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sisdaemon.sandbox.records import Progress, SisImport, StoredFile, User


class Store:
    """Every import, stored file, progress and user of one sandbox, behind one lock.

    `lock` guards all fields; `changed` (a Condition on it) is notified whenever something changes.
    `data_dir` is where uploads and generated files are written.
    """

    def __init__(self, data_dir: Path, base_url: str = "") -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.data_dir = data_dir
        self.base_url = base_url
        self.imports: dict[int, SisImport] = {}
        self.files: dict[int, StoredFile] = {}
        self.progresses: dict[int, Progress] = {}
        self.users: dict[int, User] = {}
        self._next_import_id = 1
        # An older Canvas (before diff_row_count_threshold existed) leaves the key out of every SisImport.
        self.echo_diff_row_count_threshold = True
        self._next_file_id = 1001
        self._next_progress_id = 1
        self._next_error_report = 20001
        # Applied to the next import created (Sandbox.finish_next_as / stick_next).
        self.next_finish_as: list[str] = []
        self.next_stick: list[str] = []

    def new_import_id(self) -> int:
        """Allocate the next import id (1, 2, ...)."""
        with self.lock:
            value = self._next_import_id
            self._next_import_id += 1
            return value

    def new_file_id(self) -> int:
        """Allocate the next file (attachment) id."""
        with self.lock:
            value = self._next_file_id
            self._next_file_id += 1
            return value

    def new_error_report(self) -> int:
        """Allocate an "(Error report N)" number."""
        with self.lock:
            value = self._next_error_report
            self._next_error_report += 1
            return value

    def add_file(self, stored: StoredFile) -> StoredFile:
        """Register a stored file so /files/:id/download serves it."""
        with self.lock:
            self.files[stored.id] = stored
            return stored

    def add_import(self, sis_import: SisImport) -> SisImport:
        """Register a new import and wake waiters."""
        with self.lock:
            self.imports[sis_import.id] = sis_import
            self.changed.notify_all()
            return sis_import

    def new_progress(self, context_id: int, user_id: int | None) -> Progress:
        """Create a queued Progress for restore_states."""
        with self.lock:
            progress = Progress(self._next_progress_id, context_id, user_id)
            self._next_progress_id += 1
            self.progresses[progress.id] = progress
            return progress

    def notify(self) -> None:
        """Wake every thread waiting on `changed`."""
        with self.lock:
            self.changed.notify_all()

    def import_json(self, sis_import: SisImport) -> dict[str, Any]:
        """`sis_import` as the API shows it."""
        with self.lock:
            json = sis_import.as_json(self.base_url, self.users)
            if not self.echo_diff_row_count_threshold:
                json.pop("diff_row_count_threshold", None)
            return json

    def ordered_imports(self) -> list[SisImport]:
        """Every import, oldest first (created_at, then id)."""
        with self.lock:
            return sorted(self.imports.values(), key=lambda item: (item.created_at, item.id))
