"""An import that Canvas no longer knows: what a submitted job does when polling its import answers 404. Pure: no
I/O, no clock of its own (docs/design.md "Errors").

Canvas answers ``GET /api/v1/accounts/:account_id/sis_imports/:id`` with 404 when it has no such import in the
account (docs/canvas-api.md): a test or beta instance refreshed from production, a database restored from before the
import, a state file copied to another Canvas. The account itself answered (a 404 for the account is a configuration
fault and holds every feed), so the import is gone, not hidden. The file waits in work/ for
``polling.import_not_found_seconds`` in case Canvas comes back whole (a restore in progress), then goes to failed/
with outcome ``unknown`` and reason ``import_not_found``: whether Canvas applied it before it was lost cannot be known,
so an operator decides (``sisdaemon retry`` sends it again). An abort asked for meanwhile (an operator's, or the
daemon's own at a timeout) files it at once: there is nothing left in Canvas to abort.
"""

from __future__ import annotations

import dataclasses

from sisdaemon.jobs import Job, JobState, move
from sisdaemon.verdict import AbortReason, Outcome

REASON_CODE = "import_not_found"


def gone_for(job: Job, now: float) -> float:
    """Seconds since the first 404 of the job's import in a row (0.0 when its import was found at the last poll)."""
    return 0.0 if job.not_found_since is None else max(now - job.not_found_since, 0.0)


def on_not_found(job: Job, *, now: float, grace: float) -> Job:
    """A poll of submitted ``job``'s import answered 404 at ``now`` (epoch seconds). Returns the job with the first
    404's time recorded (it stays submitted and is polled again), or moved to finishing in failed/ (outcome
    ``unknown``, reason_code ``import_not_found``) once 404s have lasted ``grace`` seconds or an abort was asked for.
    Raises TransitionError unless the job is submitted."""
    since = job.not_found_since if job.not_found_since is not None else now
    job = move(job, JobState.SUBMITTED, not_found_since=since)
    if now - since < grace and job.abort_reason is None:
        return job
    waited = round(now - since)
    reason = (
        f"Canvas no longer knows import {job.import_id} (404 for {waited} s, polling.import_not_found_seconds): "
        "whether it applied before it was lost is unknown; check the account in Canvas, then `sisdaemon retry` "
        "sends the file again if it should be"
    )
    notes = job.notes
    if job.abort_reason is AbortReason.OPERATOR and job.aborted_by:
        notes = (*notes, f"an abort was asked for by {job.aborted_by.get('by')} at {job.aborted_by.get('at')}")
    return move(
        job,
        JobState.FINISHING,
        outcome=Outcome.UNKNOWN,
        folder="failed",
        reason_code=REASON_CODE,
        reason=reason,
        finished_at=now,
        errors_csv_deadline=None,
        next_action_at=now,
        notes=notes,
    )


def on_found(job: Job) -> Job:
    """The job's import answered again: the run of 404s is over."""
    return job if job.not_found_since is None else dataclasses.replace(job, not_found_since=None)
