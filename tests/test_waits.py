"""Why work waits, and until when (waits.py): pure decisions, tested alone; and the gate's journal lines for a fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from sisdaemon import waits
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.config import PollingSettings
from sisdaemon.gate import Gate
from sisdaemon.ledger import Ledger
from sisdaemon.submit import where_it_stands

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


def test_a_claimed_job_past_the_accounts_max_pending_imports_waits_for_one_to_end() -> None:
    claimed = {"state": "claimed", "job_id": "b", "next_action_at": NOW}
    ahead = {"job_id": "a", "state": "submitting"}
    full = wait(claimed, in_canvas=2, max_pending=2, first_in_line=ahead)
    assert full is not None and full["reason"] == "max_pending_imports" and full["until"] is None
    assert "max_pending_imports 2" in full["text"] and "2 imports" in full["text"]
    assert wait(claimed, in_canvas=1, max_pending=2) is None  # room: it is sent now
    assert wait(claimed, in_canvas=5) is None  # no limit given


def test_a_file_settling_again_in_work_waits_for_its_settle_time() -> None:
    found = wait({"state": "claimed", "stable_since": NOW - 4, "next_action_at": NOW})
    assert found is not None and found["reason"] == "settling_in_work" and found["until"] == NOW + 6


def test_a_feed_with_files_waiting_says_why_they_are_not_taken() -> None:
    common: dict[str, Any] = {"paused": None, "held": None, "fault": None, "in_flight": 0, "max_in_flight": 2}
    assert waits.feed_wait(waiting=3, **common) is None
    assert waits.feed_wait(waiting=3, **{**common, "in_flight": 2})["reason"] == "feed_full"  # type: ignore[index]
    assert waits.feed_wait(waiting=0, **{**common, "held": "x"})["reason"] == "feed_held"  # type: ignore[index]


def test_a_canvas_fault_says_until_its_next_retry_for_claimed_and_submitted_jobs_and_feeds() -> None:
    fault = {"kind": "transient", "message": "Canvas answered 503", "retry_at": NOW + 30}
    claimed = wait({"state": "claimed", "job_id": "b", "next_action_at": NOW}, fault=fault)
    polled = wait({"state": "submitted", "import_id": 7, "workflow_state": "importing"}, fault=fault)
    feed = waits.feed_wait(waiting=2, paused=None, held=None, fault=fault, in_flight=0, max_in_flight=4)
    for found in (claimed, polled, feed):
        assert found is not None and found["reason"] == "canvas_fault" and found["until"] == NOW + 30
        assert "Canvas answered 503" in found["text"]


def test_a_queued_import_waits_behind_the_import_canvas_runs_else_the_oldest_own_import_ahead() -> None:
    someone_elses = [{"id": 40, "workflow_state": "importing"}]
    own = [
        {"import_id": 41, "workflow_state": "created"},
        {"import_id": 43, "workflow_state": "created"},  # ours
        {"import_id": 44, "workflow_state": "created"},  # behind ours: not ahead
        {"import_id": None, "workflow_state": None},  # a claimed job
    ]
    assert waits.queued_behind(43, someone_elses, own) == 40
    assert waits.queued_behind(43, [], own) == 41
    assert waits.queued_behind(43, [], [{"import_id": 42, "workflow_state": "importing"}, *own]) == 42
    assert waits.queued_behind(41, [], own) is None  # first in line: Canvas starts it next
    assert waits.queued_behind(43, [{"id": 43, "workflow_state": "importing"}], []) is None


def test_a_queued_job_names_the_import_it_waits_behind() -> None:
    job = {"state": "submitted", "import_id": 43, "workflow_state": "created", "queued_behind": 40}
    found = wait({**job, "queued_behind_at": NOW})
    assert found is not None and found["reason"] == "queued_in_canvas" and "behind import 40" in found["text"]


def test_submit_s_line_changes_only_when_where_the_job_stands_changes() -> None:
    queued = {"state": "submitted", "import_id": 43, "workflow_state": "created", "progress": 0, "queued_behind": 40}
    assert where_it_stands(queued) == "import 43 created, queued in Canvas behind import 40"
    running = {**queued, "workflow_state": "importing", "progress": 35, "queued_behind": None}
    assert where_it_stands(running) == "import 43 importing, progress 35%"
    claimed = {"state": "claimed", "import_id": None}
    lost = {"reason": "one_upload_per_account", "text": "behind job a (submitting)", "until": None}
    assert where_it_stands(claimed, lost) == "claimed — waits: behind job a (submitting)"
    retry = {"reason": "canvas_fault", "text": "Canvas calls fail (transient): 503", "until": NOW}
    later = {**retry, "until": NOW + 60}  # the next retry moves at each fault: not a new line each time
    assert where_it_stands(claimed, retry) == where_it_stands(claimed, later)
    resend = {"reason": "upload_outcome_unknown", "text": "the upload's answer was lost", "until": NOW}
    assert "(until 2027-01-15T08:00:00Z)" in where_it_stands({"state": "submitting", "import_id": None}, resend)


# --- the gate's journal: a fault is said when it starts, changes and ends, each retry only at debug --------------


def test_the_gate_says_a_fault_once_while_it_lasts_and_once_when_it_ends_and_records_its_next_retry(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "state.json")
    ledger.load([])
    gate = Gate(
        CanvasClient("http://127.0.0.1:9", "1", lambda: "token-never-sent", timeout=1),
        ledger,
        PollingSettings(interval_seconds=1, max_interval_seconds=8),
        notify=lambda text: None,
        jitter=lambda: 0.0,
        to_wall=lambda moment: None if moment is None else moment + 1000,  # the wall clock was stepped forward
    )

    def failing(message: str, kind: FaultKind = FaultKind.TRANSIENT) -> Callable[[], None]:
        def call() -> None:
            raise CanvasError(kind, message)

        return call

    with structlog.testing.capture_logs() as lines:
        for turn in range(5):
            with pytest.raises(CanvasError):
                gate.call(NOW + turn, failing("Canvas answered 503"))
        on_disk = json.loads((tmp_path / "state.json").read_text())["fault"]
        assert on_disk["count"] == 5 and on_disk["retry_at"] == gate.health.retry_at + 1000
        assert on_disk["since"] == NOW + 1000
        with pytest.raises(CanvasError):
            gate.call(NOW + 6, failing("Canvas answered 429", FaultKind.THROTTLED))
        gate.call(NOW + 7, lambda: "answer")
    said = [(line["event"], line["log_level"]) for line in lines]
    assert said == [
        ("canvas_unavailable", "warning"),
        *[("canvas_unavailable", "debug")] * 4,  # each retry, with its fields, only for a debug journal
        ("canvas_fault_changed", "info"),
        ("canvas_throttled", "warning"),
        ("canvas_recovered", "info"),
    ]
    assert lines[1]["attempt"] == 2 and lines[1]["retry_at"] is not None
    assert lines[-1]["after_faults"] == 6
    assert json.loads((tmp_path / "state.json").read_text())["fault"] is None


def test_a_queued_job_says_how_old_the_observation_of_its_place_is_and_names_none_of_unknown_age() -> None:
    queued = {"state": "submitted", "import_id": 43, "workflow_state": "created", "queued_behind": 40}
    found = wait({**queued, "queued_behind_at": NOW - 125.4})
    assert found is not None and found["text"] == "import 43 is queued in Canvas behind import 40 (as of 125 s ago)"
    found = wait(queued)  # a state written before the time was recorded: its age is unknown
    assert found is not None and found["text"] == "import 43 is queued in Canvas"
    running = {**queued, "workflow_state": "importing", "progress": 35, "queued_behind_at": NOW}
    found = wait(running)
    assert found is not None and "40" not in found["text"]
