"""Whose turn it is: one upload per Canvas account, and one import at a time per account in Canvas's queue.

Two waits that no fault causes and that look like a hang when nothing says so: a claimed file waits while another
job's upload runs or its answer is lost (the crash protocol's one-upload-per-account rule, :meth:`Gate.may_upload`),
and an import Canvas has queued (``created``) waits while Canvas runs the account's imports one at a time, oldest
first (docs/canvas-api.md §5). :class:`Turns` says the first in the journal when it starts, changes and ends, and
finds the import the second waits behind, for ``status`` and ``submit --wait``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog

from sisdaemon import jobs, waits
from sisdaemon.canvas import CanvasClient, CanvasError
from sisdaemon.gate import Gate
from sisdaemon.jobs import Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import ConditionKey, Conditions

log = structlog.get_logger("sisdaemon")

#: The journal's event (and condition kind) of a job that waits for another job's upload or lost answer.
ACCOUNT_WAIT = "upload_waits_for_account"


class Turns:
    """The journal's lines for a job waiting for the account's one upload, and where a queued import stands.

    ``conditions``: the daemon's lasting conditions (a line when a wait starts and when it ends); ``to_wall``: a
    reading of the daemon's clock as wall time, for the times the journal shows. The polling settings are the
    gate's (a reload changes them there).
    """

    def __init__(
        self,
        ledger: Ledger,
        gate: Gate,
        client: CanvasClient,
        conditions: Conditions,
        *,
        to_wall: Callable[[float | None], float | None] = lambda moment: moment,
    ) -> None:
        self.ledger = ledger
        self.gate = gate
        self.client = client
        self.conditions = conditions
        self.to_wall = to_wall
        #: Canvas's last answer to "which import runs now", and when it was asked (the daemon's clock).
        self._running: tuple[float, list[dict[str, Any]]] = (float("-inf"), [])

    # --- one upload per account ------------------------------------------------------------------------------

    def wait_for_upload(self, job: Job) -> None:
        """``job`` may not be sent yet: another job's upload runs or its answer is lost. Journaled once when the
        wait starts (``upload_waits_for_account``: the job ahead, why, and until when at the earliest for a lost
        answer), again only when that changes, and when it ends (``upload_wait_over``)."""
        uploading = self.ledger.job(self.gate.uploading) if self.gate.uploading else None
        sending = [other for other in self.ledger.jobs() if other.state is JobState.SUBMITTING]
        ahead = uploading or next((other for other in sending if other.job_id != job.job_id), None)
        if ahead is None:
            return
        unknown = ahead.outcome_unknown and ahead.job_id != self.gate.uploading
        reason = "upload_outcome_unknown" if unknown else "uploading"
        key = (ACCOUNT_WAIT, job.job_id, ahead.job_id, reason)
        self._end_upload_waits(job.job_id, keep=key)
        ended = ahead.upload_ended_at
        until = ended + self.gate.policy.resend_after_seconds if unknown and ended is not None else None
        self.conditions.start(
            key,
            ACCOUNT_WAIT,
            level="warning" if unknown else "info",
            behind_job_id=ahead.job_id,
            reason=reason,
            until=jobs.iso(self.to_wall(until)),
            hint="one upload per Canvas account at a time",
        )

    def upload_starts(self, job_id: str) -> None:
        """Job ``job_id``'s upload starts: its wait, if it had one, ends."""
        self._end_upload_waits(job_id)

    def end_waits_of_gone_jobs(self) -> None:
        """End the waits of jobs no longer in flight (filed or forgotten), so that each wait has its end line."""
        for key in self.conditions.active():
            if key[0] == ACCOUNT_WAIT and self.ledger.job(key[1]) is None:
                self._end_upload_waits(key[1])

    def _end_upload_waits(self, job_id: str, keep: ConditionKey | None = None) -> None:
        for key in self.conditions.active():
            if key[:2] == (ACCOUNT_WAIT, job_id) and key != keep:
                self.conditions.end(key, "upload_wait_over", job_id=job_id, behind_job_id=key[2], reason=key[3])

    # --- one import at a time per account, in Canvas ---------------------------------------------------------

    def place_in_queue(self, job: Job, now: float) -> Job:
        """``job`` (just polled) with :attr:`~sisdaemon.jobs.Job.queued_behind` set while Canvas has its import
        queued (``created``): the import Canvas runs now, whoever sent it (``GET .../sis_imports/importing``, asked
        at most every ``interval_seconds`` whatever the number of queued jobs), or an own import ahead
        (:func:`sisdaemon.waits.queued_behind`); journaled (``import_queued``) when it changes.
        :attr:`~sisdaemon.jobs.Job.queued_behind_at` says when Canvas was asked (the daemon's clock), so that
        ``status`` shows how old the observation is. Cleared once Canvas starts it (and by any move out of
        ``created``: jobs.move). A failed question leaves it as it was, its time too (the gate recorded the fault)."""
        if job.workflow_state != "created" or job.import_id is None:
            if job.queued_behind is None and job.queued_behind_at is None:
                return job
            return dataclasses.replace(job, queued_behind=None, queued_behind_at=None)
        asked_at, running = self._running
        if now - asked_at >= self.gate.policy.interval_seconds:
            try:
                running = self.gate.call(now, self.client.importing_sis_imports)
            except CanvasError:
                return job
            asked_at = now
            self._running = (now, running)
        own = [{"import_id": other.import_id, "workflow_state": other.workflow_state} for other in self.ledger.jobs()]
        behind = waits.queued_behind(job.import_id, running, own)
        seen_at = asked_at if behind is not None else None
        if behind != job.queued_behind and behind is not None:  # its wait's end is import_progress (importing)
            log.info("import_queued", behind_import_id=behind, hint="Canvas runs one import at a time per account")
        if (behind, seen_at) == (job.queued_behind, job.queued_behind_at):
            return job
        return dataclasses.replace(job, queued_behind=behind, queued_behind_at=seen_at)
