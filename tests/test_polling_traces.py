"""The polling policy (polling.py, pure) replayed on progress traces (benchmarks/replay.py): few calls, the end
noticed within seconds; and its parts on their own."""

from __future__ import annotations

import pytest

from benchmarks import replay
from sisdaemon import polling
from sisdaemon.config import PollingSettings

POLICY = PollingSettings()
T0 = replay.START


def importing(progress: object, elapsed: float, state: str = "importing") -> dict[str, object]:
    return {"workflow_state": state, "progress": progress, "started_at": replay._iso(T0 - elapsed)}


@pytest.mark.parametrize(("seconds", "most_calls"), [(10.0, 5), (60.0, 5), (600.0, 10)])
def test_a_steady_import_costs_few_calls_and_its_end_is_noticed_within_five_seconds(
    seconds: float, most_calls: int
) -> None:
    result = replay.replay(replay.trace("steady", seconds))
    assert result.calls <= most_calls
    assert 0 <= result.late <= 5.0
    before = replay.old_policy(replay.trace("steady", seconds))
    assert result.late < before.late


def test_an_import_that_slows_down_is_polled_early_never_late() -> None:
    for seconds in (60.0, 600.0):
        result = replay.replay(replay.trace("slow_end", seconds))
        assert 0 <= result.late <= 5.0
    assert replay.replay(replay.trace("slow_end", 600.0)).calls <= 10


def test_an_import_queued_behind_another_costs_calls_while_queued_but_its_end_is_noticed_in_time() -> None:
    result = replay.replay(replay.trace("queued", 600.0, queued=120.0))
    assert result.late <= 5.0
    assert result.calls <= replay.old_policy(replay.trace("queued", 600.0, queued=120.0)).calls


def test_the_history_s_running_time_catches_an_import_that_speeds_up() -> None:
    subject = replay.trace("fast_end", 600.0)
    assert replay.replay(subject).late > 5.0  # progress alone cannot foresee the speed-up
    with_history = replay.replay(subject, expected_running=600.0)
    assert with_history.late <= 5.0 and with_history.calls <= 5


def test_a_history_that_overestimates_never_makes_the_end_late() -> None:
    result = replay.replay(replay.trace("steady", 60.0), expected_running=120.0)
    assert result.late <= 5.0


def test_at_99_percent_the_end_is_due_and_looked_for_every_tail() -> None:
    delay = polling.next_poll_delay(
        importing(99, 300.0), server_now=T0, previous=100.0, expected_running=None, policy=POLICY
    )
    assert delay == polling.TAIL_SECONDS


def test_tight_bounds_aim_just_after_the_latest_end() -> None:
    delay = polling.next_poll_delay(
        importing(92, 55.0), server_now=T0, previous=5.0, expected_running=None, policy=POLICY
    )
    assert delay == pytest.approx(55.0 * 100 / 92 - 55.0)


def test_loose_bounds_aim_at_the_earliest_end_and_long_waits_are_capped() -> None:
    delay = polling.next_poll_delay(
        importing(2, 15.0), server_now=T0, previous=10.0, expected_running=None, policy=POLICY
    )
    assert delay == pytest.approx(15.0 * 100 / 3 - 15.0)
    capped = polling.next_poll_delay(
        importing(1, 60.0), server_now=T0, previous=10.0, expected_running=None, policy=POLICY
    )
    assert capped == POLICY.max_interval_seconds * polling.GUIDED_WAIT_FACTOR


def test_without_progress_or_history_the_blind_backoff_applies() -> None:
    for answer in (importing(0, 10.0), importing("n/a", 10.0), {"workflow_state": "created", "progress": 0}):
        delay = polling.next_poll_delay(answer, server_now=T0, previous=5.0, expected_running=None, policy=POLICY)
        assert delay == polling.next_interval(5.0, POLICY)


def test_cleanup_restarts_progress_and_is_looked_at_every_two_tails() -> None:
    answer = importing(40, 500.0, state="cleanup_batch")
    delay = polling.next_poll_delay(answer, server_now=T0, previous=100.0, expected_running=None, policy=POLICY)
    assert delay == 2 * polling.TAIL_SECONDS


def test_the_expected_running_time_comes_from_the_newest_import_of_the_same_file_scaled_by_size() -> None:
    records = [
        {"job_id": "a", "file": "users.csv", "size": 1000, "running_seconds": 100.0},
        {"job_id": "b", "file": "enrollments.csv", "size": 1000, "running_seconds": 40.0},
        {"job_id": "c", "file": "courses.csv", "size": 1000, "running_seconds": None},
    ]
    assert polling.expected_running_seconds(records, "users.csv", 1500) == pytest.approx(150.0)
    assert polling.expected_running_seconds(records, "users.csv", 10_000) == pytest.approx(200.0)  # at most 2x
    assert polling.expected_running_seconds(records, "terms.csv", 1000) == pytest.approx(40.0)  # the feed's newest
    assert polling.expected_running_seconds([], "users.csv", 1000) is None


def test_the_first_look_after_the_post_waits_for_the_expected_running_time_within_the_intervals() -> None:
    assert polling.first_poll_delay(None, POLICY) == POLICY.interval_seconds
    assert polling.first_poll_delay(30.0, POLICY) == 30.0
    assert polling.first_poll_delay(1.0, POLICY) == POLICY.interval_seconds
    assert polling.first_poll_delay(600.0, POLICY) == POLICY.max_interval_seconds
