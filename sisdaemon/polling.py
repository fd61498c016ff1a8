"""Polling and retry decisions: when to look at an import again, when it is stuck, when to try Canvas again.

Pure functions of a job, Canvas's answer and the clocks (``now``: the daemon's clock; ``server_now``: Canvas's, from its
``Date`` header); the timing comes from the config's ``polling`` settings. No I/O, clock or logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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


#: The longest wait between two looks once an import's end is due: its end is noticed at most this late.
TAIL_SECONDS = 4.0
#: How many ``max_interval``s a wait guided by an estimate may last (the blind backoff stops at one).
GUIDED_WAIT_FACTOR = 10


def next_interval(current: float, policy: PollingSettings) -> float:
    """Poll backoff: double from ``interval`` up to ``max_interval`` seconds."""
    if current <= 0:
        return policy.interval_seconds
    return min(current * 2, policy.max_interval_seconds)


def _progress(value: Any) -> int | None:
    """Canvas's ``progress`` as an integer 0-100 (an integer in the code, a string in the docs), or None."""
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= 100 else None


def expected_running_seconds(records: Sequence[Mapping[str, Any]], name: str, size: int) -> float | None:
    """How long Canvas will likely run an import of ``name`` (``size`` bytes), from the feed's history ``records``
    (newest last, with ``running_seconds``; history.py): the newest import of the same dropped name, else the
    feed's newest, scaled by the sizes (the factor kept between 0.5 and 2). None when no record says."""
    timed = [record for record in records if isinstance(record.get("running_seconds"), int | float)]
    same = [record for record in timed if record.get("file") == name]
    return scaled_running_seconds((same or timed)[-1] if timed else None, size)


def scaled_running_seconds(chosen: Mapping[str, Any] | None, size: int) -> float | None:
    """:func:`expected_running_seconds` from the record it chooses (``History.timed_record`` finds it without a
    pass over the history): its ``running_seconds`` scaled by ``size`` over its size (the factor kept between 0.5
    and 2). None when ``chosen`` is None."""
    if chosen is None:
        return None
    seconds = float(chosen["running_seconds"])
    earlier_size = chosen.get("size")
    if isinstance(earlier_size, int) and earlier_size > 0 and size > 0:
        seconds *= min(max(size / earlier_size, 0.5), 2.0)
    return seconds


def first_poll_delay(expected_running: float | None, policy: PollingSettings) -> float:
    """Seconds from Canvas's answer to the POST to the first look: the expected running time when the history
    gives one (no sooner than ``interval``, no later than ``max_interval``), else ``interval``."""
    if expected_running is None:
        return policy.interval_seconds
    return min(max(expected_running, policy.interval_seconds), policy.max_interval_seconds)


def next_poll_delay(
    sis_import: Mapping[str, Any],
    *,
    server_now: float,
    previous: float,
    expected_running: float | None,
    policy: PollingSettings,
) -> float:
    """Seconds until the next look at a non-terminal import, aimed just after its expected end.

    ``sis_import``: Canvas's latest answer (``workflow_state``, ``progress``, ``started_at``); ``server_now``:
    Canvas's time (seconds since the epoch); ``previous``: the last delay (seconds; 0 for none);
    ``expected_running``: :func:`expected_running_seconds`, or None.

    Canvas's ``progress`` while ``importing`` is the share of row chunks done, an integer capped at 99 until the
    end, 0 while queued (docs/canvas-api.md §2). With ``p`` at ``e`` seconds after ``started_at``, a steady import
    ends between ``e*100/(p+1)`` and ``e*100/p``: the next look is at the earliest end, or, once those bounds are
    :data:`TAIL_SECONDS` apart or closer, at the latest; once the end is due, every :data:`TAIL_SECONDS` (never
    more often than ``interval``). The history's running time, when sooner than that, sets the earliest end
    instead (an import whose chunks speed up ends before a steady one would); without progress, it alone does; with
    neither, or while ``created`` (queued behind other imports, which no answer measures), the blind backoff
    (:func:`next_interval`) applies, but no sooner than the expected running time. ``cleanup_batch`` restarts
    progress with no start time of its own: looks every two tails. Waits stop at ``GUIDED_WAIT_FACTOR`` times
    ``max_interval``.
    """
    tail = min(TAIL_SECONDS, policy.interval_seconds)
    longest = policy.max_interval_seconds * GUIDED_WAIT_FACTOR
    blind = next_interval(previous, policy)
    state = str(sis_import.get("workflow_state"))
    if state == "cleanup_batch":
        return 2 * tail
    started = jobs.parse_time(sis_import.get("started_at"))
    if state not in jobs.RUNNING_STATES or started is None:
        return min(max(blind, expected_running or 0.0), longest)
    elapsed = max(server_now - started, 0.0)
    progress = _progress(sis_import.get("progress"))
    earliest: float | None
    latest = float("inf")
    if progress is not None and 1 <= progress <= 98:
        earliest, latest = elapsed * 100 / (progress + 1), elapsed * 100 / progress
    elif progress is not None and progress >= 99:
        earliest = elapsed  # capped at 99 until Canvas finishes: it is due now
    else:
        earliest = expected_running
    if earliest is None:
        return blind
    if expected_running is not None and elapsed < expected_running < earliest:
        earliest, latest = expected_running, float("inf")  # the last run of this file says sooner: look then
    if earliest - elapsed <= tail:
        return tail
    if latest - earliest <= tail:
        return min(latest - elapsed, longest)
    return min(earliest - elapsed, longest)


def on_poll(
    job: jobs.Job,
    sis_import: Mapping[str, Any],
    *,
    now: float,
    server_now: float,
    policy: PollingSettings,
    expected_running: float | None = None,
) -> tuple[jobs.Job, PollDecision]:
    """A fresh SisImport for a submitted job: record it and decide the next step; the next look is timed by
    :func:`next_poll_delay` (``expected_running``: from the feed's history, or None)."""
    state = str(sis_import.get("workflow_state"))
    interval = next_poll_delay(
        sis_import, server_now=server_now, previous=job.poll_interval, expected_running=expected_running, policy=policy
    )
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
