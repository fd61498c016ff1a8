"""vanished.py: a submitted job whose import Canvas answers 404 for waits out its grace, then goes to failed/ with
outcome ``unknown``; an abort asked for meanwhile files it at once. Pure, no I/O."""

from __future__ import annotations

import dataclasses

import pytest

from sisdaemon import jobs, vanished
from sisdaemon.jobs import AbortReason, Fingerprint, JobState, Outcome, TransitionError

NOW = 1_800_000_000.0
GRACE = 3600.0


def submitted(**changes: object) -> jobs.Job:
    job = jobs.claim("abc123", "nightly", "users.csv", Fingerprint(7, 100, 5, 9), seen_at=NOW - 20, now=NOW - 10)
    fields = {"import_id": 42, "workflow_state": "created", "submitted_at": NOW - 5, **changes}
    return dataclasses.replace(job, state=JobState.SUBMITTED, **fields)  # type: ignore[arg-type]


def test_the_first_404_is_recorded_and_the_job_stays_submitted_through_its_grace() -> None:
    first = vanished.on_not_found(submitted(), now=NOW, grace=GRACE)
    assert first.state is JobState.SUBMITTED and first.not_found_since == NOW and first.outcome is None
    later = vanished.on_not_found(first, now=NOW + GRACE - 1, grace=GRACE)
    assert later.state is JobState.SUBMITTED and later.not_found_since == NOW  # the grace runs from the first 404
    assert vanished.gone_for(later, NOW + 100) == 100


def test_after_its_grace_the_file_goes_to_failed_with_outcome_unknown_and_the_lost_import_named() -> None:
    job = vanished.on_not_found(submitted(not_found_since=NOW), now=NOW + GRACE, grace=GRACE)
    assert job.state is JobState.FINISHING and job.folder == "failed"
    assert job.outcome is Outcome.UNKNOWN and job.reason_code == "import_not_found"
    assert job.reason is not None and "import 42" in job.reason and "3600 s" in job.reason
    assert job.finished_at == NOW + GRACE and job.errors_csv_deadline is None


@pytest.mark.parametrize("reason", list(AbortReason))
def test_an_abort_asked_for_files_it_at_once_as_there_is_nothing_left_to_abort(reason: AbortReason) -> None:
    job = vanished.on_not_found(submitted(abort_reason=reason), now=NOW, grace=GRACE)
    assert job.state is JobState.FINISHING and job.outcome is Outcome.UNKNOWN and job.reason_code == "import_not_found"


def test_an_operators_abort_is_named_in_the_notes() -> None:
    job = submitted(aborted_by={"by": "alice", "at": "2026-12-04T06:00:00Z"}, abort_reason=AbortReason.OPERATOR)
    filed = vanished.on_not_found(job, now=NOW, grace=GRACE)
    assert any("alice" in note for note in filed.notes)


def test_an_import_found_again_ends_the_run_of_404s() -> None:
    job = vanished.on_found(submitted(not_found_since=NOW))
    assert job.not_found_since is None and vanished.gone_for(job, NOW + 10) == 0.0
    untouched = submitted()
    assert vanished.on_found(untouched) is untouched


def test_only_a_submitted_job_has_an_import_to_lose() -> None:
    claimed = jobs.claim("abc123", "nightly", "users.csv", Fingerprint(7, 100, 5, 9), seen_at=NOW, now=NOW)
    with pytest.raises(TransitionError):
        vanished.on_not_found(claimed, now=NOW, grace=GRACE)


def test_the_first_404_survives_a_round_trip_through_the_state_file() -> None:
    job = vanished.on_not_found(submitted(), now=NOW, grace=GRACE)
    assert jobs.Job.from_dict(job.to_dict()).not_found_since == NOW
