"""Finding an import whose POST answer was lost (docs/design.md "Crash protocol", steps 4-5): pure decisions.

Nothing here does I/O, reads a clock or logs. The flight (flight.py) lists the account's imports and hands them to
:func:`decide_lost_import` with its clocks; the answer says adopt, wait, resend or hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sisdaemon import jobs
from sisdaemon.config import PollingSettings

#: How long an import adopted without a tag may stay unconfirmed (its ``csv_attachments`` still empty) before the
#: job says it is holding the file (seconds).
PROVISIONAL_WAIT_SECONDS = 900.0


@dataclass(frozen=True)
class LostImportDecision:
    """What to do about a job whose POST outcome is unknown.

    ``action``: "adopt" (``sis_import`` is ours), "adopt_provisionally" (one untagged candidate), "wait" (look
    again later), "resend" (nothing found for long enough), "ambiguous" (several candidates; hold the file).
    ``late_originals``: imports carrying an earlier attempt's tag of this job; abort them if still queued.
    """

    action: str
    sis_import: Mapping[str, Any] | None = None
    reason: str = ""
    late_originals: tuple[Mapping[str, Any], ...] = ()
    empty: bool = False  # the listing held no candidate and nothing initializing (counts toward a resend)


def own_candidates(
    listing: Iterable[Mapping[str, Any]], *, own_user_id: int | None, known_ids: Iterable[int]
) -> list[Mapping[str, Any]]:
    """Imports that may be a lost POST of ours: by our token's user, not in the ledger or any job."""
    known = set(known_ids)
    found = []
    for item in listing:
        if item.get("id") in known:
            continue
        user = item.get("user") or {}
        if own_user_id is not None and user.get("id") not in (None, own_user_id):
            continue
        found.append(item)
    return found


def is_tag(value: Any) -> bool:
    """Whether a ``diff_row_count_threshold`` value is one of the daemon's attempt tags."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= jobs.TAG_BASE


def late_originals(job: jobs.Job, candidates: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    """The imports among ``candidates`` that carry one of ``job``'s earlier attempt tags: a POST given up on (its
    answer lost, or stuck ``initializing`` past ``initializing_dead_seconds``) that Canvas ran after all. They are
    aborted while still queued."""
    return tuple(c for c in candidates if c.get("diff_row_count_threshold") in job.old_tags)


def decide_lost_import(
    job: jobs.Job,
    candidates: Sequence[Mapping[str, Any]],
    *,
    server_now: float,
    now: float,
    policy: PollingSettings,
    tags_echoed: bool,
) -> LostImportDecision:
    """Decide about a job in ``submitting`` whose answer was lost, from one listing of own, unknown imports.

    ``candidates``: :func:`own_candidates` of the imports created since the intent less the clock skew.
    ``tags_echoed``: whether this Canvas echoes ``diff_row_count_threshold`` (learnt from its answers).
    """
    late = late_originals(job, candidates)
    blocking = [
        c
        for c in candidates
        if c.get("workflow_state") == "initializing"
        and server_now - (jobs.parse_time(c.get("created_at")) or server_now) < policy.initializing_dead_seconds
    ]
    if job.tag is not None and tags_echoed:
        mine = [c for c in candidates if c.get("diff_row_count_threshold") == job.tag]
        if mine:
            return LostImportDecision("adopt", mine[0], "found by its attempt tag", late)
    else:
        untagged = [
            c
            for c in candidates
            if not is_tag(c.get("diff_row_count_threshold"))
            and c.get("workflow_state") != "initializing"
            and c not in late
        ]
        named = [c for c in untagged if attachments_match(c, job)]
        if len(named) == 1:
            return LostImportDecision("adopt", named[0], "found by its attachment's name", late)
        if len(untagged) == 1 and not blocking:
            return LostImportDecision("adopt_provisionally", untagged[0], "one untagged candidate", late)
        if len(untagged) > 1:
            return LostImportDecision(
                "ambiguous", None, f"{len(untagged)} untagged imports could be this file's; not guessing", late
            )
    if blocking:
        return LostImportDecision("wait", None, "an import of ours is still initializing", late)
    listings = job.empty_listings + 1
    waited = now - (job.upload_ended_at or now)
    if listings >= 2 and waited >= policy.resend_after_seconds:
        return LostImportDecision("resend", None, f"no import found after {waited:.0f} s and {listings} listings", late)
    return LostImportDecision("wait", None, "no import found yet", late, empty=True)


def attachments_match(sis_import: Mapping[str, Any], job: jobs.Job) -> bool | None:
    """Whether an import's ``csv_attachments`` are this job's file; None while Canvas has not filled them.

    A CSV is uploaded as ``<job id>_<stem>.csv``, so its attachment carries the job id. A zip is listed by its
    members instead (lib/sis/csv/import_refactored.rb ``prepare``), so it matches when every attachment is one of
    the zip's .csv members (by base name).
    """
    attachments = sis_import.get("csv_attachments") or []
    names = [str(item.get("filename") or item.get("display_name") or "") for item in attachments]
    if not names:
        return None
    if job.zip_members:
        members = set(job.zip_members)
        return all(name in members or name.removesuffix("_filtered.csv") + ".csv" in members for name in names)
    return any(job.job_id in name for name in names)


def after_listing(job: jobs.Job, decision: LostImportDecision, *, now: float, interval: float) -> jobs.Job:
    """Apply a "wait"/"ambiguous" decision: count empty listings and schedule the next look."""
    empty = job.empty_listings + 1 if decision.empty else job.empty_listings
    return dataclasses.replace(job, empty_listings=empty, last_error=decision.reason, next_action_at=now + interval)
