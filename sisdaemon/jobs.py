"""A job's record and its pure state transitions.

A job is one dropped file from the moment it is claimed until it is filed in done/ or failed/. Only claimed and
in-flight jobs exist (the drop folder is the queue; see docs/design.md "A dropped file's life").

    claimed --begin_attempt--> submitting --post_created / adopt--> submitted --poll: terminal--> finishing
    claimed --reject--> finishing                     (refused before upload: empty file, not a regular file,
                                                       pre-flight: Canvas would fail it, the shrink guard)
    claimed --skip_duplicate--> finishing             (the same content as a recent import: done/, unsent)
    claimed --supersede--> finishing                  (a newer snapshot of the same SIS types waits: done/, unsent)
    submitting --refused_as_file--> finishing         (Canvas refused the file itself: too large)
    submitting --post_refused--> claimed              (Canvas created nothing; try again later)
    submitting --resend--> claimed                    (answer lost, no import found for long enough)
    submitted --aborted after a change / dead--> claimed   (the import will never apply; send again)

Nothing here does I/O, reads a clock or logs: every function takes ``now`` (seconds since the epoch, the daemon's
clock) or ``server_now`` (Canvas's clock, from its ``Date`` header) and returns a new :class:`Job`. The table
:data:`TRANSITIONS` is the only place where allowed moves are listed; :func:`move` raises on any other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sisdaemon.verdict import (
    CHANGE_THRESHOLD_MESSAGE,
    DIFF_SKIPPED_MESSAGE,
    DONE_STATES,
    FAILED_STATES,
    QUEUED_STATES,
    RESTORED_STATES,
    RUNNING_STATES,
    TERMINAL_STATES,
    AbortReason,
    Outcome,
    canvas_message,
    canvas_verdict,
    outcome_for,
)

# Re-exported: what a finished import means (verdict.py) is part of every caller's vocabulary of a job.
__all__ = [
    "CHANGE_THRESHOLD_MESSAGE",
    "DIFF_SKIPPED_MESSAGE",
    "DONE_STATES",
    "FAILED_STATES",
    "QUEUED_STATES",
    "RESTORED_STATES",
    "RUNNING_STATES",
    "TERMINAL_STATES",
    "AbortReason",
    "Outcome",
    "canvas_message",
    "canvas_verdict",
    "outcome_for",
]

#: The attempt tag sent as ``diff_row_count_threshold``: TAG_BASE + a random 30-bit number
#: (docs/design.md, crash protocol).
TAG_BASE = 1_000_000_000


class JobState(StrEnum):
    """Where a claimed job stands; stored by value in the state file."""

    CLAIMED = "claimed"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FINISHING = "finishing"


TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.CLAIMED: frozenset({JobState.CLAIMED, JobState.SUBMITTING, JobState.FINISHING}),
    JobState.SUBMITTING: frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.CLAIMED, JobState.FINISHING}),
    JobState.SUBMITTED: frozenset({JobState.SUBMITTED, JobState.FINISHING, JobState.CLAIMED}),
    JobState.FINISHING: frozenset({JobState.FINISHING}),
}


class TransitionError(Exception):
    """A move that :data:`TRANSITIONS` does not allow."""


@dataclass(frozen=True)
class Fingerprint:
    """What must stay unchanged for a file to count as settled: inode, size (bytes), mtime and ctime (ns).

    ctime is left out (``ctime_ns=0``) when comparing across a rename, which changes it.
    """

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int = 0

    def without_ctime(self) -> Fingerprint:
        return dataclasses.replace(self, ctime_ns=0)


@dataclass(frozen=True)
class Job:
    """One claimed file. Times are seconds since the epoch (floats); Canvas times are kept as Canvas sent them."""

    job_id: str
    feed: str
    name: str  # the name it was dropped under
    work_name: str  # "<UTC stamp>_<job id>_<name>", its name in work/, done/ and failed/
    state: JobState
    fingerprint: Fingerprint  # at claim, without ctime; refreshed when it settles again in work/
    seen_at: float
    claimed_at: float
    size: int = 0
    sha256: str | None = None
    stable_since: float | None = None  # set while re-settling in work/ after a change
    attempts: int = 0
    tag: int | None = None
    old_tags: tuple[int, ...] = ()
    intent_at: str | None = None  # Canvas's time (ISO 8601) when the current attempt was decided
    first_intent_at: str | None = None
    upload_ended_at: float | None = None
    outcome_unknown: bool = False
    empty_listings: int = 0
    provisional: bool = False  # adopted without a tag; confirmed by csv_attachments
    provisional_since: float | None = None
    import_id: int | None = None
    dead_import_ids: tuple[int, ...] = ()
    submitted_at: float | None = None
    workflow_state: str | None = None
    progress: Any = None
    queued_behind: int | None = None  # while Canvas has it queued (`created`): the import it waits behind, if known
    queued_behind_at: float | None = None  # when Canvas was asked where it stands (queued_behind's observation)
    not_found_since: float | None = None  # the first of the polls in a row that Canvas answered 404 (vanished.py)
    poll_interval: float = 0.0
    next_action_at: float = 0.0
    abort_reason: AbortReason | None = None
    last_error: str | None = None
    sis_import: Mapping[str, Any] | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    reason_code: str | None = None
    reason: str | None = None
    folder: str | None = None  # "done" | "failed" once finishing
    errors_csv_deadline: float | None = None
    errors_csv: str | None = None  # local file name once saved
    zip_members: tuple[str, ...] = ()  # base names of a zip's .csv members, to recognise its import untagged
    # `sisdaemon retry`: the failed file this job sends again ({"file": its name in failed/, "job_id", "outcome",
    # "reason_code", "sidecar": the old sidecar's new name in failed/, "by": login name, "at": ISO 8601 UTC})
    retry_of: Mapping[str, Any] | None = None
    aborted_by: Mapping[str, Any] | None = None  # `sisdaemon abort`: {"by": login name, "at": ISO 8601 UTC}
    preflight: Mapping[str, Any] | None = None  # the pre-flight check's findings (flight.preflight_summary)
    # What the check's pass over the file counted: {"rows": {SIS type: data rows}, "types": [the types it holds]}
    # (None until it is checked; the check also sets sha256). Kept in the history for the shrink guard.
    scan: Mapping[str, Any] | None = None
    guard: Mapping[str, Any] | None = None  # the shrink guard's findings (guard.py), the sidecar's shrink_guard
    diff: Mapping[str, Any] | None = None  # the comparison with the feed's last imported file (guard.diff_summary)
    duplicate_of: Mapping[str, Any] | None = None  # skipped: the earlier import with the same sha256
    released_by: Mapping[str, Any] | None = None  # `sisdaemon retry --force`: {"by", "at"}; the guard lets it pass
    # supersede: true: the newer file in drop/ that replaces this one ({"file", "size", "mtime", "types"}), recorded
    # with the claim, so that the file is never sent whatever happens between its claim and its filing
    superseded_by: Mapping[str, Any] | None = None
    # A set of related files sent as one zip (sets.py): {"members": [{"name", "work_name", "role", "ino", "size",
    # "mtime_ns", "sha256"}], "built": whether the zip is whole in work/, "manifest": its name or None, and for a
    # refused set "missing"/"unsettled": the listed names not there}. None for a single file.
    file_set: Mapping[str, Any] | None = None
    # The file's Canvas options and where each came from (file_options.work_out): recorded at the claim when a params
    # file or the file name sets them (so a restart sends the same), else at each attempt from the feed's options.
    file_options: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in the state file: one key per field, the fingerprint as a dict, tuples as
        lists, enums as their values.

        Shallow: the nested mappings (``sis_import``, ``scan``, ...) are the job's own, shared, not copied (a deep
        copy per job per state write was a third of the daemon's CPU; issue 9): read it, never change it."""
        data = dict(self.__dict__)
        data["fingerprint"] = dict(self.fingerprint.__dict__)
        data["state"] = self.state.value
        for name in ("abort_reason", "outcome"):
            if data[name] is not None:
                data[name] = data[name].value
        for name in ("old_tags", "dead_import_ids", "notes", "zip_members"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_dict`'s output. Raises KeyError/TypeError/ValueError on a damaged record."""
        values = dict(data)
        values["state"] = JobState(values["state"])
        values["fingerprint"] = Fingerprint(**values["fingerprint"])
        values["old_tags"] = tuple(values.get("old_tags", ()))
        values["dead_import_ids"] = tuple(values.get("dead_import_ids", ()))
        values["notes"] = tuple(values.get("notes", ()))
        values["zip_members"] = tuple(values.get("zip_members", ()))
        if values.get("abort_reason"):
            values["abort_reason"] = AbortReason(values["abort_reason"])
        if values.get("outcome"):
            values["outcome"] = Outcome(values["outcome"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def retired_tags(job: Job) -> tuple[int, ...]:
    """The job's earlier attempt tags plus the current one, as kept when an attempt ends without an import of its
    own (a late import carrying any of them is aborted while still queued)."""
    return (*job.old_tags, job.tag) if job.tag is not None else job.old_tags


def move(job: Job, state: JobState, **changes: Any) -> Job:
    """Return ``job`` in ``state`` with ``changes`` applied. Raises TransitionError for a move the table forbids.

    A move that takes the job's import out of ``created``, gives it another import (or none), or takes the job out
    of ``submitted`` forgets the import the queued one waited behind (``queued_behind``, ``queued_behind_at``): that
    was seen of this import while queued, and ``status`` must never name it for a running import, a finished one or
    the next attempt's."""
    if state not in TRANSITIONS[job.state]:
        raise TransitionError(f"job {job.job_id}: {job.state} -> {state} is not allowed")
    moved = dataclasses.replace(job, state=state, **changes)
    if moved.queued_behind_at is not None or moved.queued_behind is not None:
        left = moved.state is not JobState.SUBMITTED or moved.workflow_state != "created"
        if left or moved.import_id != job.import_id:
            moved = dataclasses.replace(moved, queued_behind=None, queued_behind_at=None)
    return moved


# --- claim and attempts ---------------------------------------------------------------------------------------


#: Longest work name in bytes: NAME_MAX (255) less the longest suffix added to it (".result.json" plus an atomic
#: write's ".<8 hex>.tmp" and leading dot), so every derived name is still a legal file name.
WORK_NAME_MAX = 228


def work_name_for(name: str, job_id: str, now: float) -> str:
    """``<UTC stamp>_<job id>_<name>``: sortable, unique, never equal to a dropped name's later namesake.

    A name too long for that (a legal 240-byte upstream name would overflow NAME_MAX) is shortened in the middle,
    keeping its start and its extension, with "~" marking the cut.
    """
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"{stamp}_{job_id}_"
    budget = WORK_NAME_MAX - len(prefix)
    if len(os.fsencode(name)) <= budget:
        return prefix + name
    stem, dot, extension = name.rpartition(".")
    tail = f"~{dot}{extension}" if dot and len(extension) <= 10 else "~"
    head = stem if dot and len(extension) <= 10 else name
    while head and len(os.fsencode(head + tail)) > budget:
        head = head[:-1]
    return prefix + head + tail


def display_name(name: str) -> str:
    """A file name as valid text for logs and JSON: bytes that are not UTF-8 (kept by Python as lone surrogates)
    are shown as ``\\xNN`` escapes, so strict JSON parsers accept it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def parse_time(value: str | None) -> float | None:
    """Canvas's ISO 8601 time (``2023-09-12T20:48:57Z``) as seconds since the epoch; None for None/unparsable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with a ``Z`` (second precision); None stays None."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim(
    job_id: str,
    feed: str,
    name: str,
    fingerprint: Fingerprint,
    *,
    seen_at: float,
    now: float,
    superseded_by: Mapping[str, Any] | None = None,
) -> Job:
    """A new job for a ready file, before it is renamed out of drop/ (persist this first). ``superseded_by``: the
    newer file that replaces it (order.py, ``supersede: true``): once in work/ it is filed by :func:`supersede`,
    never sent."""
    return Job(
        job_id=job_id,
        feed=feed,
        name=name,
        work_name=work_name_for(name, job_id, now),
        state=JobState.CLAIMED,
        fingerprint=fingerprint.without_ctime(),
        seen_at=seen_at,
        claimed_at=now,
        size=fingerprint.size,
        next_action_at=now,
        superseded_by=dict(superseded_by) if superseded_by is not None else None,
    )


def reject(job: Job, reason_code: str, reason: str, *, now: float) -> Job:
    """Refuse a claimed file (outcome ``rejected``): it goes to failed/. Raises TransitionError from a state the
    table does not allow."""
    return move(
        job,
        JobState.FINISHING,
        outcome=Outcome.REJECTED,
        reason_code=reason_code,
        reason=reason,
        folder="failed",
        finished_at=now,
        errors_csv_deadline=None,
    )


def skip_duplicate(job: Job, earlier: Mapping[str, Any], reason: str, *, now: float) -> Job:
    """claimed -> finishing: the file's content was imported by its feed a short while ago (``earlier``: that
    import's ``{"job_id", "import_id", "file", "finished_at"}``); it goes to done/ unsent, outcome
    ``duplicate_skipped``. Raises TransitionError from a state the table does not allow."""
    return move(
        job,
        JobState.FINISHING,
        outcome=Outcome.DUPLICATE_SKIPPED,
        reason_code="duplicate",
        reason=reason,
        folder="done",
        finished_at=now,
        errors_csv_deadline=None,
        duplicate_of=dict(earlier),
        next_action_at=now,
    )


def supersede(job: Job, *, now: float) -> Job:
    """claimed -> finishing: a newer file of the same SIS types (``job.superseded_by``, set at the claim) waits in
    drop/ on a ``supersede: true`` feed; this one goes to done/ unsent, outcome ``superseded``. Raises
    TransitionError from a state the table does not allow, ValueError for a job claimed without ``superseded_by``."""
    if job.superseded_by is None:
        raise ValueError(f"job {job.job_id}: nothing supersedes it")
    newer = display_name(str(job.superseded_by.get("file")))
    return move(
        job,
        JobState.FINISHING,
        outcome=Outcome.SUPERSEDED,
        reason_code="superseded",
        reason=f"a newer file of the same SIS type(s), {newer}, waited in drop/: only the newest is imported; this "
        "one was not sent",
        folder="done",
        finished_at=now,
        errors_csv_deadline=None,
        next_action_at=now,
    )


def refused_as_file(job: Job, reason_code: str, reason: str, *, now: float) -> Job:
    """submitting -> finishing: Canvas refused the file itself and created nothing (a 413: too large). The file goes
    to failed/ (outcome ``rejected``, as :func:`reject`) with its attempt's tag retired; its feed goes on."""
    retired = dataclasses.replace(job, tag=None, old_tags=retired_tags(job), last_error=None)
    return reject(retired, reason_code, reason, now=now)


def may_submit(job: Job, now: float) -> bool:
    """A claimed job may start an upload: it is due and, if it was re-settling in work/, settled."""
    return job.state is JobState.CLAIMED and job.stable_since is None and job.next_action_at <= now


def observe_in_work(job: Job, fingerprint: Fingerprint, now: float, settle: float) -> Job:
    """Track a claimed job's file in work/: a change restarts its settle time; settled clears ``stable_since``.

    Used after a claim or an upload found the file changing (the writer was still writing).
    """
    current = fingerprint.without_ctime()
    if current != job.fingerprint:
        # What was learnt of the old content (hash, counts, findings) no longer holds: it is checked again.
        return dataclasses.replace(
            job,
            fingerprint=current,
            size=current.size,
            stable_since=now,
            sha256=None,
            scan=None,
            preflight=None,
            guard=None,
            diff=None,
        )
    if job.stable_since is not None and now - job.stable_since >= settle:
        return dataclasses.replace(job, stable_since=None, next_action_at=now)
    return job


def due_by(job: Job, now: float) -> Job:
    """A job from an earlier run with no time later than ``now``: its next action is due by then at the latest, and
    a settle that started "in the future" starts now (readings of an earlier run's clock after a wall-clock step)."""
    changes: dict[str, Any] = {}
    if job.next_action_at > now:
        changes["next_action_at"] = now
    if job.stable_since is not None and job.stable_since > now:
        changes["stable_since"] = now
    return dataclasses.replace(job, **changes) if changes else job


def begin_attempt(job: Job, *, tag: int | None, intent_at: str | None, now: float) -> Job:
    """claimed -> submitting: record the intent (tag, Canvas time) before the POST."""
    return move(
        job,
        JobState.SUBMITTING,
        attempts=job.attempts + 1,
        tag=tag,
        intent_at=intent_at,
        first_intent_at=job.first_intent_at or intent_at,
        outcome_unknown=False,
        empty_listings=0,
        upload_ended_at=None,
        last_error=None,
    )


def post_created(job: Job, sis_import: Mapping[str, Any], *, now: float, interval: float) -> Job:
    """submitting -> submitted: Canvas answered with the SisImport (or it was found again)."""
    return move(
        job,
        JobState.SUBMITTED,
        import_id=int(sis_import["id"]),
        workflow_state=str(sis_import.get("workflow_state")),
        progress=sis_import.get("progress"),
        sis_import=dict(sis_import),
        submitted_at=job.submitted_at or now,
        outcome_unknown=False,
        provisional=False,
        upload_ended_at=job.upload_ended_at or now,
        poll_interval=interval,
        next_action_at=now + interval,
        last_error=None,
    )


def post_refused(job: Job, error: str, *, retry_at: float) -> Job:
    """submitting -> claimed: Canvas created nothing (connection never made, or a refusal). Try again later."""
    return move(job, JobState.CLAIMED, tag=None, old_tags=retired_tags(job), last_error=error, next_action_at=retry_at)


def post_unknown(job: Job, error: str, *, now: float) -> Job:
    """submitting -> submitting: the answer was lost; the import may exist. Look for it."""
    return move(
        job, JobState.SUBMITTING, outcome_unknown=True, upload_ended_at=now, last_error=error, next_action_at=now
    )


def upload_ended(job: Job, *, now: float) -> Job:
    """Record the end of the upload (for the resend clock) while the answer is being read."""
    return dataclasses.replace(job, upload_ended_at=now)


# --- lost answers and polling (the decisions are in lost.py and polling.py) ----------------------------------


def resend(job: Job, *, now: float) -> Job:
    """submitting -> claimed: no import turned up; the next attempt gets a new tag."""
    return move(
        job,
        JobState.CLAIMED,
        tag=None,
        old_tags=retired_tags(job),
        outcome_unknown=False,
        next_action_at=now,
        last_error="answer lost and no import found: sending again",
    )


def adopt_provisionally(job: Job, sis_import: Mapping[str, Any], *, now: float, interval: float) -> Job:
    """Adopt the single untagged candidate until Canvas fills ``csv_attachments`` to confirm it."""
    adopted = post_created(job, sis_import, now=now, interval=interval)
    return dataclasses.replace(adopted, provisional=True, provisional_since=now)


def request_abort(job: Job, reason: AbortReason, *, now: float) -> Job:
    """Mark a submitted job's import for abort (the next step calls Canvas)."""
    return dataclasses.replace(job, abort_reason=reason, next_action_at=now)


def abort_by_operator(job: Job, *, by: str, at: str, now: float) -> Job:
    """``sisdaemon abort``: mark a submitted job's import for abort at an operator's request (``by``: login name;
    ``at``: ISO 8601 UTC); once Canvas shows it ``aborted``, it is filed in failed/ as ``aborted_by_operator``.
    Raises TransitionError unless the job is submitted."""
    marked = move(job, JobState.SUBMITTED, aborted_by={"by": by, "at": at})
    return request_abort(marked, AbortReason.OPERATOR, now=now)


def back_to_claimed(job: Job, reason: str, *, now: float, settle_again: bool) -> Job:
    """submitted -> claimed: the import will not apply (aborted by us, dead, or not ours); send again later."""
    dead = (*job.dead_import_ids, job.import_id) if job.import_id is not None else job.dead_import_ids
    return move(
        job,
        JobState.CLAIMED,
        import_id=None,
        workflow_state=None,
        progress=None,
        sis_import=None,
        dead_import_ids=dead,
        tag=None,
        old_tags=retired_tags(job),
        abort_reason=None,
        provisional=False,
        stable_since=now if settle_again else None,
        next_action_at=now,
        last_error=reason,
        poll_interval=0.0,
    )


# --- finishing -----------------------------------------------------------------------------------------------------


def changed_at_filing(job: Job, why: str) -> Job:
    """A finishing job whose file changed since its upload (found when it is filed): it goes to failed/ with
    ``reason_code`` ``changed_during_import``, whatever Canvas made of the part it was sent."""
    if job.folder == "failed" and job.reason_code == "changed_during_import":
        return job
    outcome, folder, reason_code, reason = outcome_for(str(job.workflow_state), AbortReason.FILE_CHANGED)
    if job.folder != "done":  # Canvas failed it anyway: keep Canvas's verdict, say what else is wrong
        return dataclasses.replace(job, notes=(*job.notes, f"the file changed after its upload ({why})"))
    return dataclasses.replace(job, outcome=outcome, folder=folder, reason_code=reason_code, reason=f"{reason} ({why})")


def finish(job: Job, *, now: float, errors_csv_wait: float) -> Job:
    """submitted -> finishing: record the outcome and folder (persist before writing the sidecar and moving)."""
    state = str(job.workflow_state)
    outcome, folder, reason_code, reason = outcome_for(state, job.abort_reason)
    sis_import = job.sis_import or {}
    message = canvas_message(sis_import) if reason_code not in (None, "timed_out", "aborted_by_operator") else None
    if reason_code == "aborted" and (canvas_verdict(sis_import) or {}).get("change_threshold_exceeded"):
        # Batch mode's own guard: Canvas aborted the import before deleting more than change_threshold allows.
        reason_code, reason = "change_threshold", "Canvas aborted the import: its change_threshold was exceeded"
    if message:
        reason = f"{reason}: {message}"
    notes = job.notes
    if job.abort_reason is AbortReason.OPERATOR and job.aborted_by:
        who = f"{job.aborted_by.get('by')} at {job.aborted_by.get('at')}"
        if reason_code == "aborted_by_operator":
            reason = f"{reason} ({who}, `sisdaemon abort`)"
        else:  # Canvas had ended it before the abort landed: its verdict stands
            notes = (*notes, f"an abort was asked for by {who}, but Canvas had already ended the import ({state})")
    wants_errors_csv = bool(sis_import.get("processing_errors") or sis_import.get("processing_warnings")) or bool(
        sis_import.get("errors_attachment")
    )
    return move(
        job,
        JobState.FINISHING,
        outcome=outcome,
        folder=folder,
        reason_code=reason_code,
        reason=reason,
        finished_at=now,
        errors_csv_deadline=now + errors_csv_wait if wants_errors_csv else None,
        next_action_at=now,
        notes=notes,
    )
