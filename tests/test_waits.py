"""Why work waits, and until when (waits.py): pure decisions, tested alone."""

from __future__ import annotations

from typing import Any

from sisdaemon import waits

NOW = 1_800_000_000.0


def wait(job: dict[str, Any], **context: Any) -> dict[str, Any] | None:
    options: dict[str, Any] = {
        "paused": None,
        "held": None,
        "fault": None,
        "first_in_line": None,
        "resend_after_seconds": 900.0,
        "settle_seconds": 10.0,
        "now": NOW,
    }
    return waits.job_wait(job, **{**options, **context})


def test_a_lost_answer_waits_until_the_earliest_resend() -> None:
    found = wait({"state": "submitting", "outcome_unknown": True, "upload_ended_at": NOW - 100})
    assert found is not None and found["reason"] == "upload_outcome_unknown" and found["until"] == NOW + 800


def test_a_claimed_job_names_what_it_waits_for_first_pause_then_hold_then_fault_then_the_upload_ahead() -> None:
    claimed = {"state": "claimed", "job_id": "b", "next_action_at": NOW}
    ahead = {"job_id": "a", "state": "submitting"}
    pause = {"by": "alice", "at": "2026-11-30T02:00:00Z", "reason": "term change"}
    fault = {"kind": "credential", "message": "401"}
    assert wait(claimed, paused=pause, held="bad term", first_in_line=ahead)["reason"] == "feed_paused"  # type: ignore[index]
    assert "alice" in wait(claimed, paused=pause)["text"]  # type: ignore[index]
    assert wait(claimed, held="bad term", fault=fault)["reason"] == "feed_held"  # type: ignore[index]
    assert wait(claimed, fault=fault)["reason"] == "canvas_fault"  # type: ignore[index]
    behind = wait(claimed, first_in_line=ahead)
    assert behind is not None and behind["reason"] == "one_upload_per_account" and "job a" in behind["text"]
    assert wait(claimed) is None  # nothing holds it: it is sent now


def test_a_file_settling_again_in_work_waits_for_its_settle_time() -> None:
    found = wait({"state": "claimed", "stable_since": NOW - 4, "next_action_at": NOW})
    assert found is not None and found["reason"] == "settling_in_work" and found["until"] == NOW + 6


def test_a_feed_with_files_waiting_says_why_they_are_not_taken() -> None:
    common: dict[str, Any] = {"paused": None, "held": None, "fault": None, "in_flight": 0, "max_in_flight": 2}
    assert waits.feed_wait(waiting=3, **common) is None
    assert waits.feed_wait(waiting=3, **{**common, "in_flight": 2})["reason"] == "feed_full"  # type: ignore[index]
    assert waits.feed_wait(waiting=0, **{**common, "held": "x"})["reason"] == "feed_held"  # type: ignore[index]
