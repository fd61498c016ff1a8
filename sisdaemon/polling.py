"""Polling and retry decisions: when to look at an import again, when it is stuck, when to try Canvas again.

Pure functions of a job, Canvas's answer and the clocks (``now``: the daemon's clock; ``server_now``: Canvas's, from its
``Date`` header); the timing comes from the config's ``polling`` settings. No I/O, clock or logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sisdaemon import jobs
from sisdaemon.config import PollingSettings
from sisdaemon.lost import PROVISIONAL_WAIT_SECONDS, attachments_match


@dataclass(frozen=True)
class PollDecision:
    """After a poll: ``action`` is "wait", "abort" (ask Canvas to abort, ``abort_reason`` says why), "finish",
    "resend" (the import will never apply; back to claimed), "release" (a provisional adoption was wrong) or "hold"
    (the import Canvas shows under this id is another file's: keep the file in work/ and say so)."""

    action: str
    reason: str = ""


def next_interval(current: float, policy: PollingSettings) -> float:
    """Poll backoff: double from ``interval`` up to ``max_interval`` seconds."""
    if current <= 0:
        return policy.interval_seconds
    return min(current * 2, policy.max_interval_seconds)


def on_poll(
    job: jobs.Job,
    sis_import: Mapping[str, Any],
    *,
    now: float,
    server_now: float,
    policy: PollingSettings,
) -> tuple[jobs.Job, PollDecision]:
    """A fresh SisImport for a submitted job: record it and decide the next step."""
    state = str(sis_import.get("workflow_state"))
    interval = next_interval(job.poll_interval, policy)
    job = jobs.move(
        job,
        jobs.JobState.SUBMITTED,
        workflow_state=state,
        progress=sis_import.get("progress"),
        sis_import=dict(sis_import),
        poll_interval=interval,
        next_action_at=now + interval,
        last_error=None,
    )
    if job.provisional:
        match = attachments_match(sis_import, job)
        if match:
            job = dataclasses.replace(job, provisional=False)
        elif match is False:
            return job, PollDecision("release", "the import's attachments are not this file")
        elif now - (job.provisional_since or now) >= PROVISIONAL_WAIT_SECONDS:
            return dataclasses.replace(
                job, last_error="adopted import not confirmed yet; holding the file"
            ), PollDecision("wait", "unconfirmed")
    if state in jobs.TERMINAL_STATES and attachments_match(sis_import, job) is False:
        # Canvas filled the import's attachments and none is this file (a Canvas reset or restored, a config pointed
        # at another instance, an import id reused): never file it by another file's verdict, and never guess.
        return dataclasses.replace(
            job,
            last_error=f"import {job.import_id} is not this file's (its attachments name another job); holding the "
            "file in work/: check Canvas, then send it again",
            next_action_at=now + policy.max_interval_seconds,
        ), PollDecision("hold", "the import's attachments are another file's")
    if state in jobs.TERMINAL_STATES:
        if state == "aborted" and job.abort_reason in (
            jobs.AbortReason.FILE_CHANGED,
            jobs.AbortReason.OPTION_NOT_APPLIED,
        ):
            return job, PollDecision("resend", f"aborted by sisdaemon ({job.abort_reason})")
        # Canvas ran a partial upload before the abort landed: "finish" files it in failed/ as
        # changed_during_import (jobs.outcome_for); it is not sent again behind the operator's back.
        return job, PollDecision("finish", state)
    if job.abort_reason is not None:
        return job, PollDecision("abort", str(job.abort_reason))
    if state == "initializing":
        created = jobs.parse_time(sis_import.get("created_at"))
        if created is not None and server_now - created >= policy.initializing_dead_seconds:
            return job, PollDecision("resend", "import stuck in initializing: Canvas never runs it")
    if state in jobs.QUEUED_STATES:
        created = jobs.parse_time(sis_import.get("created_at"))
        if created is not None and server_now - created >= policy.queued_timeout_seconds:
            return dataclasses.replace(job, abort_reason=jobs.AbortReason.TIMED_OUT), PollDecision(
                "abort", f"queued for more than {policy.queued_timeout_seconds:.0f} s"
            )
    if state in jobs.RUNNING_STATES:
        started = jobs.parse_time(sis_import.get("started_at")) or jobs.parse_time(sis_import.get("created_at"))
        if started is not None and server_now - started >= policy.running_timeout_seconds:
            return dataclasses.replace(job, abort_reason=jobs.AbortReason.TIMED_OUT), PollDecision(
                "abort", f"running for more than {policy.running_timeout_seconds:.0f} s"
            )
    return job, PollDecision("wait")


def retry_delay(fault_kind: str, failures: int, policy: PollingSettings, *, jitter: float) -> float:
    """Seconds before talking to Canvas again after ``failures`` faults in a row (docs/design.md "Errors").

    A credential or configuration fault ("credential", "configuration") will not clear by itself: retry slowly,
    every ``max_interval``. Anything else (transient, throttled): exponential from ``interval``, capped at
    ``max_interval``, scaled by ``jitter`` in [0, 1) to between half and all of it, so that many clients do not
    retry in step.
    """
    if fault_kind in ("credential", "configuration"):
        return max(policy.max_interval_seconds, policy.interval_seconds)
    delay: float = min(policy.interval_seconds * 2.0 ** min(max(failures, 1), 20), policy.max_interval_seconds)
    return delay * (0.5 + jitter / 2)
