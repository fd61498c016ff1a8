"""The sandbox's records: SIS imports (Canvas's SisBatch), their stored files, messages and progress, the users,
and the JSON the API shows of each; the workflow states and Canvas's time format.

JSON shapes follow app/models/sis_batch.rb `as_json` (key order included) and lib/api/v1/sis_import.rb
`sis_import_json` (errors_attachment, user, csv_attachments appended, each only when present). The records
hold no lock: the Store (sisdaemon.sandbox.store) guards them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Every workflow_state Canvas has (sis_batch.rb `workflow`), in Canvas's order.
WORKFLOW_STATES: tuple[str, ...] = (
    "initializing",
    "created",
    "importing",
    "cleanup_batch",
    "imported",
    "imported_with_messages",
    "aborted",
    "failed",
    "failed_with_messages",
    "restoring",
    "partially_restored",
    "restored",
)
TERMINAL_STATES: frozenset[str] = frozenset(
    {"imported", "imported_with_messages", "aborted", "failed", "failed_with_messages"}
)
NOT_COMPLETED: frozenset[str] = frozenset({"initializing", "created", "importing", "cleanup_batch"})
NOT_STARTED: frozenset[str] = frozenset({"initializing", "created"})
IMPORTING: frozenset[str] = frozenset({"importing", "cleanup_batch"})

# processing_errors / processing_warnings hold at most this many pairs, then one "and N more" pair
# (sis_batch.rb populate_old_warnings_and_errors).
MESSAGE_CAP = 24


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """Canvas's JSON time format: ISO 8601 UTC to the second, `2023-09-12T20:48:57Z`; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class User:
    """A Canvas user as the User JSON of `user` shows it (grouper-wiki's 2024 POST answer)."""

    id: int
    name: str
    login_id: str
    created_at: datetime = field(default_factory=utc_now)

    def as_json(self) -> dict[str, Any]:
        """User JSON: id, name, created_at, sortable_name, short_name, sis_user_id, integration_id,
        sis_import_id, login_id."""
        parts = self.name.split(" ", 1)
        sortable = f"{parts[1]}, {parts[0]}" if len(parts) == 2 else self.name
        return {
            "id": self.id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "sortable_name": sortable,
            "short_name": self.name,
            "sis_user_id": None,
            "integration_id": None,
            "sis_import_id": None,
            "login_id": self.login_id,
        }


@dataclass
class StoredFile:
    """A file the sandbox keeps (an upload, a CSV from a zip, an errors CSV) and serves for download.

    `path` is on disk under the sandbox's data folder; `size` in bytes.
    """

    id: int
    filename: str
    display_name: str
    content_type: str
    path: Path
    size: int
    created_at: datetime = field(default_factory=utc_now)
    uuid: str = field(default_factory=lambda: secrets.token_urlsafe(30)[:40])

    def download_url(self, base_url: str) -> str:
        """The File JSON `url`: `<base>/files/<id>/download?download_frd=1&verifier=<uuid>`."""
        return f"{base_url}/files/{self.id}/download?download_frd=1&verifier={self.uuid}"

    def as_json(self, base_url: str) -> dict[str, Any]:
        """File JSON with the keys of braven-platform2's 2022 answer (lib/api/v1/attachment.rb)."""
        stamp = iso(self.created_at)
        return {
            "id": self.id,
            "uuid": self.uuid,
            "folder_id": None,
            "display_name": self.display_name,
            "filename": self.filename,
            "upload_status": "success",
            "content-type": self.content_type,
            "url": self.download_url(base_url),
            "size": self.size,
            "created_at": stamp,
            "updated_at": stamp,
            "unlock_at": None,
            "locked": False,
            "hidden": False,
            "lock_at": None,
            "hidden_for_user": False,
            "thumbnail_url": None,
            "modified_at": stamp,
            "mime_class": "file",
            "media_entry_id": None,
            "locked_for_user": False,
        }


@dataclass
class SisError:
    """One SisBatchError: `failure` True for file-level failures (processing_errors), False for warnings.

    `row` is the data row's number counting the header as 1 (csv_rows' lineno: records, not physical lines)
    or None; `row_info` the row as Canvas dumps it (sisdaemon.sandbox.row_info) or None; `file` None for
    batch-level messages.
    """

    sis_import_id: int
    file: str | None
    message: str
    failure: bool = False
    row: int | None = None
    row_info: str | None = None
    created_at: datetime = field(default_factory=utc_now)

    def as_json(self) -> dict[str, Any]:
        """SisImportError JSON: sis_import_id, file, message, row_info, row."""
        return {
            "sis_import_id": self.sis_import_id,
            "file": self.file,
            "message": self.message,
            "row_info": self.row_info,
            "row": self.row,
        }


@dataclass
class SisImport:
    """One SIS import (Canvas's SisBatch) and everything the API shows of it.

    `options` holds what Canvas keeps in `sis_batches.options` (skip_deletes, override_sis_stickiness, ...,
    diff_row_count_threshold, batch_mode_enrollment_drop_status); `data` is the JSON `data` object.
    """

    id: int
    account_id: int
    user_id: int | None
    upload: StoredFile | None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    progress: int = 0
    workflow_state: str = "initializing"
    data: dict[str, Any] = field(default_factory=lambda: {"import_type": "instructure_csv"})
    batch_mode: bool | None = None
    batch_mode_term_id: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    diffing_data_set_identifier: str | None = None
    diffing_remaster: bool | None = None
    diffing_threshold_exceeded: bool = False
    change_threshold: int | None = None
    processing_errors: list[list[str | None]] = field(default_factory=list)
    processing_warnings: list[list[str | None]] = field(default_factory=list)
    errors: list[SisError] = field(default_factory=list)
    csv_attachments: list[StoredFile] = field(default_factory=list)
    errors_attachment: StoredFile | None = None
    # Kept for the processor (not shown as such in JSON): when it became `created`, its Statistics.
    queued_at: datetime | None = None
    statistics: Any = None
    # What the API shows of `data` and `csv_attachments` while an import runs unsaved (hold/release).
    held: dict[str, Any] | None = None
    # Sandbox controls (not shown in JSON).
    stuck_in: str | None = None
    finish_as: str | None = None
    rollback: list[tuple[str, str, Any]] = field(default_factory=list)
    # Diffing: the import's CSVs as uploaded, per importer (the base of the data set's next import), and the diffed
    # CSVs that were applied instead (sandbox.diffing).
    prepared: dict[str, list[Path]] = field(default_factory=dict)
    diffed_csv_attachments: list[StoredFile] = field(default_factory=list)

    def touch(self, moment: datetime | None = None) -> None:
        """Set updated_at (Canvas updates it on every save)."""
        self.updated_at = moment or utc_now()

    def hold(self) -> None:
        """Keep showing `data` and `csv_attachments` as they are now while the worker changes them: Canvas
        does not save a batch of 50 rows or fewer until it finishes (import_refactored.rb `process`:
        `@batch.save! unless @run_immediately`)."""
        self.held = {"data": _copy_json(self.data), "csv_attachments": list(self.csv_attachments)}

    def release(self) -> None:
        """Show the worker's `data` and `csv_attachments` again (the batch was saved)."""
        self.held = None

    def add_error(
        self,
        file: str | None,
        message: str,
        *,
        failure: bool = False,
        row: int | None = None,
        row_info: str | None = None,
    ) -> SisError:
        """Record a message (SisBatch.add_error); failure=True makes the import failed_with_messages. `row`
        and `row_info` locate a row-level message (sisdaemon.sandbox.row_info)."""
        error = SisError(self.id, file, message, failure=failure, row=row, row_info=row_info)
        self.errors.append(error)
        return error

    def populate_messages(self) -> None:
        """Fill processing_errors/warnings (first 24 of each + "and N more") and data.counts error/warning
        counts from the recorded messages (sis_batch.rb populate_old_warnings_and_errors)."""
        counts = self.data.setdefault("counts", {})
        failures = [e for e in self.errors if e.failure]
        warnings = [e for e in self.errors if not e.failure]
        self.processing_errors = [[e.file, e.message] for e in failures[:MESSAGE_CAP]]
        self.processing_warnings = [[e.file, e.message] for e in warnings[:MESSAGE_CAP]]
        if len(failures) > MESSAGE_CAP:
            self.processing_errors.append(
                [
                    f"and {len(failures) - MESSAGE_CAP} more errors that were not included",
                    "Download the error file to see all errors.",
                ]
            )
        if len(warnings) > MESSAGE_CAP:
            self.processing_warnings.append(
                [
                    f"and {len(warnings) - MESSAGE_CAP} more warnings that were not included",
                    "Download the error file to see all warnings.",
                ]
            )
        counts["error_count"] = len(failures)
        counts["warning_count"] = len(warnings)

    def as_json(self, base_url: str, users: dict[int, User]) -> dict[str, Any]:
        """The SisImport JSON as show/index/create answer it (sis_batch.rb as_json + Api::V1::SisImport)."""
        data = self.held["data"] if self.held is not None else self.data
        attachments = self.held["csv_attachments"] if self.held is not None else self.csv_attachments
        json: dict[str, Any] = {
            "id": self.id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "updated_at": iso(self.updated_at),
            "progress": self.progress,
            "workflow_state": self.workflow_state,
            "data": _copy_json(data),
            "batch_mode": self.batch_mode,
            "batch_mode_term_id": self.batch_mode_term_id,
            "multi_term_batch_mode": self.options.get("multi_term_batch_mode"),
            "override_sis_stickiness": self.options.get("override_sis_stickiness"),
            "add_sis_stickiness": self.options.get("add_sis_stickiness"),
            "update_sis_id_if_login_claimed": self.options.get("update_sis_id_if_login_claimed"),
            "clear_sis_stickiness": self.options.get("clear_sis_stickiness"),
            "diffing_data_set_identifier": self.diffing_data_set_identifier,
            "diffing_remaster": self.diffing_remaster,
            "diffed_against_import_id": self.options.get("diffed_against_sis_batch_id"),
            "diffing_drop_status": self.options.get("diffing_drop_status"),
            "diffing_user_remove_status": self.options.get("diffing_user_remove_status"),
            "skip_deletes": self.options.get("skip_deletes"),
            "change_threshold": self.change_threshold,
            "diff_row_count_threshold": self.options.get("diff_row_count_threshold"),
        }
        if self.processing_errors:
            json["processing_errors"] = [list(pair) for pair in self.processing_errors]
        if self.processing_warnings:
            json["processing_warnings"] = [list(pair) for pair in self.processing_warnings]
        if self.diffing_data_set_identifier:
            json["diffing_threshold_exceeded"] = self.diffing_threshold_exceeded
        if self.errors_attachment is not None:
            json["errors_attachment"] = self.errors_attachment.as_json(base_url)
        user = users.get(self.user_id) if self.user_id is not None else None
        if user is not None:
            json["user"] = user.as_json()
        if attachments:
            json["csv_attachments"] = [att.as_json(base_url) for att in attachments]
        if self.diffed_csv_attachments and self.held is None:
            json["diffed_csv_attachments"] = [att.as_json(base_url) for att in self.diffed_csv_attachments]
        return json


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


@dataclass
class Progress:
    """A Canvas Progress object (restore_states answers one; GET /api/v1/progress/:id shows it)."""

    id: int
    context_id: int
    user_id: int | None
    tag: str = "sis_batch_state_restore"
    completion: float = 0.0
    workflow_state: str = "queued"
    message: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    def as_json(self, base_url: str) -> dict[str, Any]:
        """Progress JSON (lib/api/v1/progress.rb)."""
        return {
            "id": self.id,
            "context_id": self.context_id,
            "context_type": "SisBatch",
            "user_id": self.user_id,
            "tag": self.tag,
            "completion": self.completion,
            "workflow_state": self.workflow_state,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "message": self.message,
            "url": f"{base_url}/api/v1/progress/{self.id}",
        }
