"""The job core on its own (jobs.py, lost.py, polling.py): transitions, lost-import decisions, polling decisions,
outcomes. No I/O."""

from __future__ import annotations

import dataclasses

import pytest

from sisdaemon import jobs, lost, polling
from sisdaemon.config import PollingSettings
from sisdaemon.jobs import AbortReason, Fingerprint, JobState, Outcome, TransitionError

NOW = 1_800_000_000.0
POLICY = PollingSettings(
    interval_seconds=1.0,
    max_interval_seconds=8.0,
    queued_timeout_seconds=100.0,
    running_timeout_seconds=200.0,
    resend_after_seconds=900.0,
    clock_skew_seconds=300.0,
    initializing_dead_seconds=600.0,
    errors_csv_wait_seconds=60.0,
)


def claimed(**changes: object) -> jobs.Job:
    job = jobs.claim("abc123", "nightly", "users.csv", Fingerprint(7, 100, 5, 9), seen_at=NOW - 20, now=NOW)
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def sis_import(id_: int, state: str = "created", **extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": id_,
        "workflow_state": state,
        "progress": 0,
        "created_at": jobs.iso(NOW),
        "started_at": None,
        "user": {"id": 1},
    }
    data.update(extra)
    return data


def test_a_claimed_job_gets_a_sortable_unique_work_name_and_drops_ctime() -> None:
    job = claimed()
    assert job.work_name == "20270115T080000Z_abc123_users.csv"
    assert job.fingerprint.ctime_ns == 0
    assert job.state is JobState.CLAIMED


def test_a_move_outside_the_table_raises() -> None:
    with pytest.raises(TransitionError):
        jobs.move(claimed(), JobState.SUBMITTED)
    finishing = jobs.reject(claimed(), "empty_file", "empty", now=NOW)
    with pytest.raises(TransitionError):
        jobs.move(finishing, JobState.CLAIMED)


def test_a_job_survives_a_round_trip_through_its_stored_form() -> None:
    job = jobs.begin_attempt(claimed(), tag=jobs.TAG_BASE + 5, intent_at="2027-01-15T08:00:00Z", now=NOW)
    job = jobs.post_refused(job, "HTTP 503", retry_at=NOW + 3)
    assert jobs.Job.from_dict(job.to_dict()) == job


def test_an_attempt_records_its_intent_and_a_refusal_keeps_the_old_tag() -> None:
    job = jobs.begin_attempt(claimed(), tag=jobs.TAG_BASE + 1, intent_at="2027-01-15T08:00:00Z", now=NOW)
    assert (job.state, job.attempts, job.first_intent_at) == (JobState.SUBMITTING, 1, "2027-01-15T08:00:00Z")
    job = jobs.post_refused(job, "HTTP 429", retry_at=NOW + 5)
    assert job.state is JobState.CLAIMED and job.tag is None and job.old_tags == (jobs.TAG_BASE + 1,)
    assert not jobs.may_submit(job, NOW) and jobs.may_submit(job, NOW + 5)


def test_a_changed_file_must_settle_again_in_work_before_it_is_sent() -> None:
    job = claimed()
    changed = jobs.observe_in_work(job, Fingerprint(7, 150, 6, 1), NOW, settle=2.0)
    assert changed.stable_since == NOW and not jobs.may_submit(changed, NOW + 10)
    still = jobs.observe_in_work(changed, Fingerprint(7, 150, 6, 99), NOW + 1, settle=2.0)
    assert still.stable_since == NOW
    settled = jobs.observe_in_work(still, Fingerprint(7, 150, 6, 99), NOW + 2, settle=2.0)
    assert settled.stable_since is None and settled.size == 150 and jobs.may_submit(settled, NOW + 2)


def unknown(tag: int | None = jobs.TAG_BASE + 42) -> jobs.Job:
    job = jobs.begin_attempt(claimed(), tag=tag, intent_at=jobs.iso(NOW), now=NOW)
    return jobs.post_unknown(job, "reset", now=NOW)


def test_a_lost_import_is_adopted_by_its_tag() -> None:
    ours = sis_import(9, diff_row_count_threshold=jobs.TAG_BASE + 42)
    other = sis_import(8, diff_row_count_threshold=jobs.TAG_BASE + 7)
    decision = lost.decide_lost_import(
        unknown(), [other, ours], server_now=NOW, now=NOW, policy=POLICY, tags_echoed=True
    )
    assert decision.action == "adopt" and decision.sis_import == ours


def test_an_own_initializing_import_blocks_any_decision_until_it_is_dead() -> None:
    initializing = sis_import(9, "initializing", created_at=jobs.iso(NOW))
    decision = lost.decide_lost_import(
        unknown(), [initializing], server_now=NOW + 10, now=NOW + 10_000, policy=POLICY, tags_echoed=True
    )
    assert decision.action == "wait" and not decision.empty
    dead = lost.decide_lost_import(
        dataclasses.replace(unknown(), empty_listings=1),
        [initializing],
        server_now=NOW + 601,
        now=NOW + 10_000,
        policy=POLICY,
        tags_echoed=True,
    )
    assert dead.action == "resend"


def test_a_resend_needs_two_empty_listings_and_the_resend_delay() -> None:
    job = unknown()
    first = lost.decide_lost_import(job, [], server_now=NOW, now=NOW + 1000, policy=POLICY, tags_echoed=True)
    assert first.action == "wait" and first.empty
    job = lost.after_listing(job, first, now=NOW + 1000, interval=1.0)
    too_soon = lost.decide_lost_import(job, [], server_now=NOW, now=NOW + 10, policy=POLICY, tags_echoed=True)
    assert too_soon.action == "wait"
    second = lost.decide_lost_import(job, [], server_now=NOW, now=NOW + 901, policy=POLICY, tags_echoed=True)
    assert second.action == "resend"
    again = jobs.resend(job, now=NOW + 901)
    assert again.state is JobState.CLAIMED and again.old_tags == (jobs.TAG_BASE + 42,)


def test_an_earlier_attempt_that_turns_up_late_is_reported_for_abort() -> None:
    job = dataclasses.replace(unknown(jobs.TAG_BASE + 2), old_tags=(jobs.TAG_BASE + 1,))
    late = sis_import(5, diff_row_count_threshold=jobs.TAG_BASE + 1)
    decision = lost.decide_lost_import(job, [late], server_now=NOW, now=NOW, policy=POLICY, tags_echoed=True)
    assert decision.late_originals == (late,) and decision.action == "wait"


def test_without_tags_one_candidate_is_adopted_provisionally_and_several_are_never_guessed() -> None:
    job = unknown(tag=None)
    one = lost.decide_lost_import(job, [sis_import(3)], server_now=NOW, now=NOW, policy=POLICY, tags_echoed=False)
    assert one.action == "adopt_provisionally"
    two = lost.decide_lost_import(
        job, [sis_import(3), sis_import(4)], server_now=NOW, now=NOW, policy=POLICY, tags_echoed=False
    )
    assert two.action == "ambiguous"
    named = sis_import(4, csv_attachments=[{"filename": "abc123_users.csv"}])
    by_name = lost.decide_lost_import(
        job, [sis_import(3), named], server_now=NOW, now=NOW, policy=POLICY, tags_echoed=False
    )
    assert by_name.action == "adopt" and by_name.sis_import == named


def test_own_candidates_leave_out_other_users_and_known_imports() -> None:
    listing = [sis_import(1), sis_import(2, user={"id": 2}), sis_import(3)]
    found = lost.own_candidates(listing, own_user_id=1, known_ids={3})
    assert [item["id"] for item in found] == [1]


def submitted() -> jobs.Job:
    job = jobs.begin_attempt(claimed(), tag=None, intent_at=None, now=NOW)
    return jobs.post_created(job, sis_import(9), now=NOW, interval=POLICY.interval_seconds)


def test_polling_backs_off_up_to_the_cap() -> None:
    job = submitted()
    intervals = []
    for _ in range(6):
        job, decision = polling.on_poll(
            job, sis_import(9, "importing", started_at=jobs.iso(NOW)), now=NOW, server_now=NOW, policy=POLICY
        )
        assert decision.action == "wait"
        intervals.append(job.poll_interval)
    assert intervals == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize(
    ("state", "outcome", "folder"),
    [
        ("imported", Outcome.IMPORTED, "done"),
        ("imported_with_messages", Outcome.IMPORTED_WITH_MESSAGES, "done"),
        ("failed", Outcome.FAILED, "failed"),
        ("failed_with_messages", Outcome.FAILED_WITH_MESSAGES, "failed"),
        ("aborted", Outcome.ABORTED, "failed"),
        ("restored", Outcome.RESTORED, "failed"),
        ("partially_restored", Outcome.PARTIALLY_RESTORED, "failed"),
    ],
)
def test_a_terminal_workflow_state_decides_the_folder(state: str, outcome: Outcome, folder: str) -> None:
    job, decision = polling.on_poll(
        submitted(), sis_import(9, state, progress="100"), now=NOW, server_now=NOW, policy=POLICY
    )
    assert decision.action == "finish"
    finished = jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds)
    assert (finished.outcome, finished.folder, finished.state) == (outcome, folder, JobState.FINISHING)


@pytest.mark.parametrize(("state", "how"), [("restored", "all"), ("partially_restored", "some")])
def test_an_import_restored_in_canvas_ends_polling_and_says_its_changes_were_undone(state: str, how: str) -> None:
    job, decision = polling.on_poll(submitted(), sis_import(9, "restoring"), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "wait"  # restore_states runs: not over yet
    job, decision = polling.on_poll(job, sis_import(9, state), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "finish"
    finished = jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds)
    assert finished.reason_code == "restored" and f"then {how} of its changes were undone" in str(finished.reason)


def test_progress_never_decides_success() -> None:
    _job, decision = polling.on_poll(
        submitted(), sis_import(9, "importing", progress=100), now=NOW, server_now=NOW, policy=POLICY
    )
    assert decision.action == "wait"


def test_a_queued_import_past_its_timeout_is_aborted_then_filed_as_timed_out() -> None:
    job, decision = polling.on_poll(submitted(), sis_import(9, "created"), now=NOW, server_now=NOW + 101, policy=POLICY)
    assert decision.action == "abort" and job.abort_reason is AbortReason.TIMED_OUT
    job, decision = polling.on_poll(job, sis_import(9, "aborted"), now=NOW, server_now=NOW + 102, policy=POLICY)
    finished = jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds)
    assert (finished.outcome, finished.reason_code, finished.folder) == (Outcome.ABORTED, "timed_out", "failed")


def test_a_running_import_is_timed_from_its_start() -> None:
    running = sis_import(9, "importing", started_at=jobs.iso(NOW + 150))
    _, decision = polling.on_poll(submitted(), running, now=NOW, server_now=NOW + 300, policy=POLICY)
    assert decision.action == "wait"
    _, decision = polling.on_poll(submitted(), running, now=NOW, server_now=NOW + 351, policy=POLICY)
    assert decision.action == "abort"


def test_an_import_aborted_for_a_changed_file_is_sent_again_after_settling() -> None:
    job = jobs.request_abort(submitted(), AbortReason.FILE_CHANGED, now=NOW)
    job, decision = polling.on_poll(job, sis_import(9, "aborted"), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "resend"
    again = jobs.back_to_claimed(job, decision.reason, now=NOW, settle_again=True)
    assert again.state is JobState.CLAIMED and again.stable_since == NOW and again.dead_import_ids == (9,)


def test_an_operators_abort_is_filed_as_aborted_by_operator_naming_who_and_never_overrules_canvas() -> None:
    job = jobs.abort_by_operator(submitted(), by="alice", at="2026-11-30T02:00:00Z", now=NOW)
    assert job.abort_reason is AbortReason.OPERATOR and job.next_action_at == NOW
    aborted, decision = polling.on_poll(job, sis_import(9, "aborted"), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "finish"
    filed = jobs.finish(aborted, now=NOW, errors_csv_wait=0)
    assert (filed.outcome, filed.reason_code, filed.folder) == (Outcome.ABORTED, "aborted_by_operator", "failed")
    assert "alice at 2026-11-30T02:00:00Z" in str(filed.reason)
    imported, _ = polling.on_poll(job, sis_import(9, "imported"), now=NOW, server_now=NOW, policy=POLICY)
    late = jobs.finish(imported, now=NOW, errors_csv_wait=0)
    assert late.folder == "done" and "alice" in late.notes[-1]
    with pytest.raises(TransitionError):
        jobs.abort_by_operator(claimed(), by="alice", at="2026-11-30T02:00:00Z", now=NOW)


def test_an_import_stuck_initializing_is_dead() -> None:
    stuck = sis_import(9, "initializing")
    _, decision = polling.on_poll(submitted(), stuck, now=NOW, server_now=NOW + 601, policy=POLICY)
    assert decision.action == "resend"


def test_finishing_waits_for_the_errors_csv_only_when_there_were_messages() -> None:
    quiet, _ = polling.on_poll(submitted(), sis_import(9, "imported"), now=NOW, server_now=NOW, policy=POLICY)
    assert jobs.finish(quiet, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds).errors_csv_deadline is None
    noisy, _ = polling.on_poll(
        submitted(),
        sis_import(9, "imported_with_messages", processing_warnings=[["users.csv", "x"]]),
        now=NOW,
        server_now=NOW,
        policy=POLICY,
    )
    assert jobs.finish(noisy, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds).errors_csv_deadline == NOW + 60.0


def test_canvas_times_parse_and_print_in_utc() -> None:
    assert jobs.parse_time("2023-09-12T20:48:57Z") == 1694551737.0
    assert jobs.iso(1694551737.0) == "2023-09-12T20:48:57Z"
    assert jobs.parse_time("not a time") is None


def test_a_partial_file_that_canvas_ran_before_the_abort_is_filed_in_failed_as_changed_during_import() -> None:
    # Issue 7 (defect 13) replaced "sent again whole" by telling the operator: nothing is sent behind their back.
    job = jobs.request_abort(submitted(), AbortReason.FILE_CHANGED, now=NOW)
    job, decision = polling.on_poll(job, sis_import(9, "imported"), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "finish"
    finished = jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds)
    assert (finished.folder, finished.reason_code, finished.outcome) == ("failed", "changed_during_import", "imported")


def test_a_partial_file_aborted_while_queued_is_sent_again_whole() -> None:
    job = jobs.request_abort(submitted(), AbortReason.FILE_CHANGED, now=NOW)
    _job, decision = polling.on_poll(job, sis_import(9, "aborted"), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "resend"


def test_a_file_found_changed_at_filing_goes_to_failed_unless_canvas_failed_it_anyway() -> None:
    done = jobs.finish(dataclasses.replace(submitted(), workflow_state="imported"), now=NOW, errors_csv_wait=1.0)
    changed = jobs.changed_at_filing(done, "size 100 -> 200 bytes since the upload")
    assert changed.folder == "failed" and changed.reason_code == "changed_during_import"
    assert "size 100 -> 200" in (changed.reason or "")
    assert jobs.changed_at_filing(changed, "again") == changed
    failed = jobs.finish(dataclasses.replace(submitted(), workflow_state="failed"), now=NOW, errors_csv_wait=1.0)
    noted = jobs.changed_at_filing(failed, "rewritten")
    assert noted.reason_code == "canvas_failed" and noted.notes[-1] == "the file changed after its upload (rewritten)"


def test_an_untagged_zip_import_is_confirmed_by_its_member_names() -> None:
    job = dataclasses.replace(unknown(tag=None), zip_members=("users.csv", "courses.csv"))
    adopted = jobs.adopt_provisionally(job, sis_import(3), now=NOW, interval=1.0)
    queued, decision = polling.on_poll(adopted, sis_import(3), now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "wait" and queued.provisional
    members = [{"filename": "users.csv"}, {"filename": "courses.csv"}]
    confirmed, decision = polling.on_poll(
        queued, sis_import(3, "importing", csv_attachments=members), now=NOW, server_now=NOW, policy=POLICY
    )
    assert decision.action == "wait" and not confirmed.provisional
    _other, decision = polling.on_poll(
        queued,
        sis_import(3, "importing", csv_attachments=[{"filename": "x.csv"}]),
        now=NOW,
        server_now=NOW,
        policy=POLICY,
    )
    assert decision.action == "release"


def test_retries_back_off_exponentially_with_jitter_and_slowly_for_faults_that_do_not_clear() -> None:
    delays = [polling.retry_delay("transient", failures, POLICY, jitter=0.999999) for failures in range(1, 6)]
    assert [round(delay, 3) for delay in delays] == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert polling.retry_delay("throttled", 1, POLICY, jitter=0.0) == 1.0  # half of 2 s at the least jitter
    assert polling.retry_delay("credential", 1, POLICY, jitter=0.5) == POLICY.max_interval_seconds
    assert polling.retry_delay("configuration", 9, POLICY, jitter=0.5) == POLICY.max_interval_seconds


def test_the_sidecar_reason_carries_canvas_s_own_words() -> None:
    message = "15 courses would be deleted and exceeds the set threshold of 10%"
    aborted = sis_import(9, "aborted", processing_warnings=[["users.csv", "row 3"], [None, message]])
    job, _ = polling.on_poll(submitted(), aborted, now=NOW, server_now=NOW, policy=POLICY)
    assert (
        jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds).reason
        == f"the import was aborted in Canvas: {message}"
    )
    crashed = sis_import(9, "failed", data={"error_message": "undefined method"})
    job, _ = polling.on_poll(submitted(), crashed, now=NOW, server_now=NOW, policy=POLICY)
    assert (
        jobs.finish(job, now=NOW, errors_csv_wait=POLICY.errors_csv_wait_seconds).reason
        == "Canvas could not run the import: undefined method"
    )


def test_a_job_from_an_earlier_run_is_due_by_now_whatever_that_runs_clock_said() -> None:
    future = dataclasses.replace(claimed(), next_action_at=NOW + 3600, stable_since=NOW + 3000)
    due = jobs.due_by(future, NOW)
    assert due.next_action_at == NOW and due.stable_since == NOW
    assert jobs.due_by(claimed(), NOW + 1) == claimed()


def test_a_finished_import_whose_attachments_are_another_file_s_is_held_never_filed() -> None:
    theirs = sis_import(9, "imported", csv_attachments=[{"filename": "0123456789_small.csv"}])
    job, decision = polling.on_poll(submitted(), theirs, now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "hold" and "not this file's" in (job.last_error or "")
    ours = sis_import(9, "imported", csv_attachments=[{"filename": f"{submitted().job_id}_users.csv"}])
    _job, decision = polling.on_poll(submitted(), ours, now=NOW, server_now=NOW, policy=POLICY)
    assert decision.action == "finish"


def queued_behind_8(job: jobs.Job) -> jobs.Job:
    """``job`` as Turns.place_in_queue leaves it when Canvas runs import 8 ahead of its queued import."""
    return dataclasses.replace(job, queued_behind=8, queued_behind_at=NOW)


def test_a_job_that_leaves_created_forgets_the_import_it_waited_behind() -> None:
    queued = queued_behind_8(submitted())
    still, _ = polling.on_poll(queued, sis_import(9, "created"), now=NOW + 1, server_now=NOW, policy=POLICY)
    assert still.queued_behind == 8  # still queued: the observation stands until the next look at the queue
    running, _ = polling.on_poll(queued, sis_import(9, "importing"), now=NOW + 1, server_now=NOW, policy=POLICY)
    assert running.queued_behind is None and running.queued_behind_at is None
    ended, decision = polling.on_poll(queued, sis_import(9, "imported"), now=NOW + 1, server_now=NOW, policy=POLICY)
    assert decision.action == "finish"
    finishing = jobs.finish(ended, now=NOW + 1, errors_csv_wait=60.0)
    assert finishing.queued_behind is None and finishing.queued_behind_at is None


def test_a_queued_import_that_will_not_apply_leaves_no_queue_place_to_the_next_attempt() -> None:
    # Adopted without a tag while queued, then Canvas's attachments show it is another file's: the job is sent
    # again, and its new import must not be said to wait behind the import the old one waited behind.
    job = jobs.adopt_provisionally(unknown(tag=None), sis_import(9), now=NOW, interval=POLICY.interval_seconds)
    not_ours = sis_import(9, "created", csv_attachments=[{"filename": "0123456789_other.csv"}])
    job, decision = polling.on_poll(queued_behind_8(job), not_ours, now=NOW + 1, server_now=NOW, policy=POLICY)
    assert decision.action == "release"
    again = jobs.back_to_claimed(job, decision.reason, now=NOW + 1, settle_again=False)
    assert again.queued_behind is None and again.queued_behind_at is None
    attempt = jobs.begin_attempt(queued_behind_8(again), tag=None, intent_at=None, now=NOW + 2)
    new = jobs.post_created(attempt, sis_import(12), now=NOW + 2, interval=POLICY.interval_seconds)
    assert new.workflow_state == "created" and new.queued_behind is None  # another import: not observed yet
