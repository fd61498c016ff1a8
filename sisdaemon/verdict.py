"""What a finished import means: Canvas's workflow_states, a job's outcome and folder for each, and the messages
that say why (pure; docs/design.md "A dropped file's life", "The sidecar"; Canvas's facts from docs/canvas-api.md
§1, §2: app/models/sis_batch.rb).

Nothing here does I/O, reads a clock or logs."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

# Canvas's workflow_state values (app/models/sis_batch.rb; docs/canvas-api.md §2).
DONE_STATES = frozenset({"imported", "imported_with_messages"})
FAILED_STATES = frozenset({"failed", "failed_with_messages", "aborted"})
#: An import whose changes were undone afterwards (PUT .../restore_states: restoring -> restored, or
#: partially_restored when a flag narrowed it; docs/canvas-api.md §1, §2). Terminal: filed in failed/, since what the
#: file set is no longer (all) in Canvas.
RESTORED_STATES = frozenset({"restored", "partially_restored"})
TERMINAL_STATES = DONE_STATES | FAILED_STATES | RESTORED_STATES
QUEUED_STATES = frozenset({"created"})
RUNNING_STATES = frozenset({"importing", "cleanup_batch", "restoring"})


class Outcome(StrEnum):
    """The sidecar's ``outcome`` (docs/design.md "The sidecar")."""

    IMPORTED = "imported"
    IMPORTED_WITH_MESSAGES = "imported_with_messages"
    FAILED = "failed"
    FAILED_WITH_MESSAGES = "failed_with_messages"
    ABORTED = "aborted"
    REJECTED = "rejected"
    RESTORED = "restored"
    PARTIALLY_RESTORED = "partially_restored"
    DUPLICATE_SKIPPED = "duplicate_skipped"  # the same content as a recent import of its feed: done/, never sent
    SUPERSEDED = "superseded"  # a newer file of the same SIS types waited in drop/ (supersede: true): done/, never sent
    UNKNOWN = "unknown"  # Canvas no longer knows the import (404, vanished.py): whether it applied is unknown; failed/


class AbortReason(StrEnum):
    """Why the daemon asked Canvas to abort an import; decides what happens once it is aborted."""

    TIMED_OUT = "timed_out"  # queued or running too long: file it in failed/
    FILE_CHANGED = "file_changed"  # the upload was of a partial file: settle again and resend
    OPTION_NOT_APPLIED = "option_not_applied"  # Canvas ignored an option: hold the feed, resend later
    OPERATOR = "operator"  # `sisdaemon abort`: file it in failed/ as aborted_by_operator


def outcome_for(workflow_state: str, abort_reason: AbortReason | None) -> tuple[Outcome, str, str | None, str | None]:
    """(outcome, folder, reason_code, reason) for a terminal ``workflow_state`` (docs/design.md states)."""
    if workflow_state in DONE_STATES and abort_reason is AbortReason.FILE_CHANGED:
        # The file changed after its upload and Canvas ran the import before the abort landed: what Canvas imported
        # is not the whole file. Not done: an operator must look (docs/design.md "Settling is a promise").
        return (
            Outcome(workflow_state),
            "failed",
            "changed_during_import",
            "the file changed after its upload and Canvas imported what was sent: a partial file; send the whole "
            "file again once its writer has finished",
        )
    if workflow_state == "imported":
        return Outcome.IMPORTED, "done", None, None
    if workflow_state == "imported_with_messages":
        return Outcome.IMPORTED_WITH_MESSAGES, "done", None, None
    if workflow_state == "aborted":
        if abort_reason is AbortReason.OPERATOR:
            return Outcome.ABORTED, "failed", "aborted_by_operator", "aborted at an operator's request"
        if abort_reason is AbortReason.TIMED_OUT:
            return Outcome.ABORTED, "failed", "timed_out", "sisdaemon aborted the import: it did not finish in time"
        return Outcome.ABORTED, "failed", "aborted", "the import was aborted in Canvas"
    if workflow_state in RESTORED_STATES:
        how = "all" if workflow_state == "restored" else "some"
        return (
            Outcome(workflow_state),
            "failed",
            "restored",
            f"the import ran, then {how} of its changes were undone in Canvas (restore_states): what this file set "
            "is not in Canvas",
        )
    if workflow_state == "failed_with_messages":
        return Outcome.FAILED_WITH_MESSAGES, "failed", "canvas_errors", "Canvas reported errors for this file"
    return Outcome.FAILED, "failed", "canvas_failed", "Canvas could not run the import"


def canvas_message(sis_import: Mapping[str, Any]) -> str | None:
    """The message that best says why an import did not go through: Canvas's crash message (``data.error_message``),
    else the first batch-level message (file null: a threshold or an abort), else the first error, else None."""
    data = sis_import.get("data") or {}
    if data.get("error_message"):
        return str(data["error_message"])
    pairs = [*(sis_import.get("processing_errors") or []), *(sis_import.get("processing_warnings") or [])]
    batch = [pair for pair in pairs if isinstance(pair, list | tuple) and len(pair) == 2 and pair[0] is None]
    chosen = batch or [pair for pair in pairs if isinstance(pair, list | tuple) and len(pair) == 2]
    return str(chosen[0][1]) if chosen else None


#: Canvas's message when batch mode's change_threshold aborts an import (sis_batch.rb, detect_change_item):
#: "%{count} %{type} would be deleted and exceeds the set threshold of %{change_threshold}%".
CHANGE_THRESHOLD_MESSAGE = "would be deleted and exceeds the set threshold"
#: Canvas's warnings when a threshold stops a diff (sis_batch.rb generate_diff; diff_row_count_threshold).
DIFF_SKIPPED_MESSAGE = "Diffing not performed because"


def canvas_verdict(sis_import: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What Canvas's own guards said of a batch-mode or diffing import (None for any other import, or none yet):
    ``{"change_threshold": n | None, "change_threshold_exceeded": Canvas's abort message | None}`` and, with a
    diffing identifier, ``"diffing_threshold_exceeded": bool``, ``"diffing_skipped": Canvas's warning | None``,
    ``"diffed_against_import_id"`` (docs/canvas-api.md §1: change_threshold; the SisImport JSON's
    diffing_threshold_exceeded, present only with an identifier)."""
    if not sis_import:
        return None
    diffing = sis_import.get("diffing_data_set_identifier")
    if not (sis_import.get("batch_mode") or sis_import.get("multi_term_batch_mode") or diffing):
        return None
    messages = [
        str(pair[1])
        for pair in [*(sis_import.get("processing_errors") or []), *(sis_import.get("processing_warnings") or [])]
        if isinstance(pair, list | tuple) and len(pair) == 2 and pair[0] is None
    ]
    verdict: dict[str, Any] = {
        "change_threshold": sis_import.get("change_threshold"),
        "change_threshold_exceeded": next((m for m in messages if CHANGE_THRESHOLD_MESSAGE in m), None),
    }
    if diffing:
        verdict["diffing_threshold_exceeded"] = bool(sis_import.get("diffing_threshold_exceeded"))
        verdict["diffing_skipped"] = next((m for m in messages if m.startswith(DIFF_SKIPPED_MESSAGE)), None)
        verdict["diffed_against_import_id"] = sis_import.get("diffed_against_import_id")
    return verdict
