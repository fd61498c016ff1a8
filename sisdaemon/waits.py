"""Why work waits, and until when: what ``status`` shows beside each waiting job and feed (pure: no I/O, no clock).

Each answer is ``{"reason": <code>, "text": <a sentence>, "until": <seconds since the epoch> | None}``; ``until`` is
None when the wait ends on an event rather than at a time (a resume, a config change, Canvas answering). Codes:

    uploading             the POST is being sent
    upload_outcome_unknown  the POST's answer was lost: the import is looked for before anything is sent again
                          (at most one such per account; until: the earliest moment it may be sent again)
    one_upload_per_account  another job's upload or lost answer goes first (docs/design.md "Crash protocol")
    settling_in_work      the file changed after its claim; it is sent once unchanged for settle_seconds
    feed_paused           an operator paused the feed (``sisdaemon resume``)
    feed_held             a configuration fault holds the feed (fix the config; a reload releases it)
    canvas_fault          Canvas calls fail (credential, configuration, throttling, down): retried with backoff
                          (until: the next retry, the state's ``fault.retry_at``)
    retry_later           this job's last step failed; tried again at ``until``
    queued_in_canvas      Canvas has the import queued (``created``) behind others of the account (the text names the
                          import it waits behind when known, the job's ``queued_behind``, and how long ago that was
                          seen: ``queued_behind_at``)
    importing             Canvas runs the import (``progress`` says how far)
    errors_csv            Canvas has not written the errors CSV yet; waited for until ``until``
    feed_full             the feed has max_in_flight files in flight; the next is taken when one is filed
    max_pending_imports   the Canvas account has max_pending_imports files claimed and not finished in Canvas (being
                          sent, queued or running); the next is taken when one of them ends
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Canvas's states of an import it runs now (one at a time per root account; docs/canvas-api.md §5).
RUNNING_STATES = ("importing", "cleanup_batch")


def _wait(reason: str, text: str, until: float | None = None) -> dict[str, Any]:
    return {"reason": reason, "text": text, "until": until}


def _fault_wait(fault: Mapping[str, Any]) -> dict[str, Any]:
    """The state's Canvas fault as a wait: until its next retry (``retry_at``, wall clock), when known."""
    text = f"Canvas calls fail ({fault.get('kind')}): {fault.get('message')}"
    return _wait("canvas_fault", text, fault.get("retry_at"))


def job_wait(
    job: Mapping[str, Any],
    *,
    paused: Mapping[str, Any] | None,
    held: str | None,
    fault: Mapping[str, Any] | None,
    first_in_line: Mapping[str, Any] | None,
    resend_after_seconds: float,
    settle_seconds: float,
    now: float,
    in_canvas: int = 0,
    max_pending: int | None = None,
) -> dict[str, Any] | None:
    """Why the job ``job`` (its stored form, :meth:`~sisdaemon.jobs.Job.to_dict`) waits, or None when it does not.

    ``paused``/``held``: its feed's pause (``{"by", "at", "reason"}``) and hold reason; ``fault``: the state's
    Canvas fault; ``first_in_line``: the account's job whose upload runs or whose answer is lost (at most one), if
    another's. ``in_canvas``: the account's jobs being sent, queued or running in Canvas; ``max_pending``: its
    ``max_pending_imports`` (None: not applied). Times are seconds since the epoch.
    """
    state = job.get("state")
    if state == "submitting":
        if not job.get("outcome_unknown"):
            return _wait("uploading", "the file is being sent to Canvas")
        ended = job.get("upload_ended_at")
        until = ended + resend_after_seconds if ended is not None else None
        return _wait(
            "upload_outcome_unknown",
            "the upload's answer was lost: looking for its import in Canvas before sending it again; no other file "
            "of this account is sent meanwhile",
            until,
        )
    if state == "claimed":
        if job.get("stable_since") is not None:
            return _wait(
                "settling_in_work",
                "the file changed after it was claimed: sent once it stays unchanged",
                job["stable_since"] + settle_seconds,
            )
        if paused is not None:
            why = f": {paused.get('reason')}" if paused.get("reason") else ""
            return _wait("feed_paused", f"feed paused by {paused.get('by')} at {paused.get('at')}{why}")
        if held is not None:
            return _wait("feed_held", f"feed held by a configuration fault: {held}")
        if fault:
            return _fault_wait(fault)
        if max_pending is not None and in_canvas >= max_pending:
            return _wait(
                "max_pending_imports",
                f"the Canvas account has {in_canvas} imports being sent, queued or running (max_pending_imports "
                f"{max_pending}): sent when one of them ends",
            )
        if first_in_line is not None:
            return _wait(
                "one_upload_per_account",
                f"behind job {first_in_line.get('job_id')} ({first_in_line.get('state')}): one upload per Canvas "
                "account at a time",
            )
        if job.get("next_action_at", 0) > now:
            return _wait("retry_later", str(job.get("last_error") or "tried again later"), job["next_action_at"])
        return None
    if state == "submitted":
        if fault:
            return _fault_wait(fault)
        if job.get("workflow_state") == "created":
            return _wait("queued_in_canvas", f"import {job.get('import_id')} is queued in Canvas{_behind(job, now)}")
        return _wait("importing", f"Canvas runs import {job.get('import_id')} ({job.get('progress')}%)")
    if state == "finishing" and job.get("errors_csv_deadline") and not job.get("errors_csv"):
        return _wait("errors_csv", "waiting for Canvas to write the errors CSV", job["errors_csv_deadline"])
    return None


def _behind(job: Mapping[str, Any], now: float) -> str:
    """ " behind import N (as of S s ago)" for a queued job: the import it waited behind when Canvas was last asked
    (``queued_behind_at``), never more; "" when none is known, or when the observation's time is not (a state written
    before it was recorded): a name of unknown age may be an import that ended long since."""
    behind, seen_at = job.get("queued_behind"), job.get("queued_behind_at")
    if not behind or not isinstance(seen_at, int | float):
        return ""
    return f" behind import {behind} (as of {max(round(now - seen_at), 0)} s ago)"


def feed_wait(
    *,
    waiting: int | None,
    paused: Mapping[str, Any] | None,
    held: str | None,
    fault: Mapping[str, Any] | None,
    in_flight: int,
    max_in_flight: int,
    pending: int = 0,
    max_pending: int | None = None,
) -> dict[str, Any] | None:
    """Why files in a feed's drop folder (``waiting`` of them) are not taken yet, or None (nothing waits, or they
    are taken as soon as they settle). ``pending``: the account's jobs not yet finished (every feed's); ``max_pending``:
    the account's ``max_pending_imports`` (the smallest among the feeds; None: no limit)."""
    if paused is not None:
        why = f": {paused.get('reason')}" if paused.get("reason") else ""
        return _wait("feed_paused", f"paused by {paused.get('by')} at {paused.get('at')}{why}")
    if held is not None:
        return _wait("feed_held", f"held by a configuration fault: {held}")
    if not waiting:
        return None
    if fault:
        return _fault_wait(fault)
    if max_pending is not None and pending >= max_pending:
        return _wait(
            "max_pending_imports",
            f"{pending} file(s) of this Canvas account claimed, queued or running in Canvas (max_pending_imports "
            f"{max_pending}); the next is taken when one of them ends",
        )
    if in_flight >= max_in_flight:
        return _wait("feed_full", f"{in_flight} file(s) in flight (max_in_flight {max_in_flight})")
    return None


def queued_behind(import_id: int, running: Iterable[Mapping[str, Any]], own: Iterable[Mapping[str, Any]]) -> int | None:
    """The import that the queued (``created``) import ``import_id`` waits behind, or None when none is known.

    Canvas runs one import at a time per root account, the ``created`` ones oldest first (docs/canvas-api.md §5,
    sis_batch.rb process_all_for_account), and import ids grow in the order they were created. So it waits behind
    the import Canvas runs now: one in ``running`` (Canvas's ``GET .../sis_imports/importing`` answer, whoever sent
    it) or an own one running; else behind the oldest own import ahead of it that Canvas has not started.
    ``own``: this daemon's jobs (``{"import_id", "workflow_state"}``).
    """
    ahead = {
        int(item["import_id"]): item.get("workflow_state")
        for item in own
        if isinstance(item.get("import_id"), int) and item["import_id"] < import_id
    }
    runs = [int(item["id"]) for item in running if isinstance(item.get("id"), int) and item["id"] != import_id]
    runs += [ahead_id for ahead_id, state in ahead.items() if state in RUNNING_STATES]
    if runs:
        return min(runs)
    queued = [ahead_id for ahead_id, state in ahead.items() if state == "created"]
    return min(queued) if queued else None
