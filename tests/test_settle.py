"""SettleTracker.retime (pure, no I/O): a reload's new settle and grace times reach the files already settling."""

from __future__ import annotations

from sisdaemon.jobs import Fingerprint
from sisdaemon.settle import Observation, SettleTracker


def seen(name: str, size: int = 10, ino: int = 1, regular: bool = True) -> Observation:
    return Observation(name, Fingerprint(ino, size, 1, 0), regular, "file" if regular else "fifo")


def ready_names(tracker: SettleTracker) -> list[str]:
    return [item.name for item in tracker.ready()]


def test_a_lowered_settle_time_makes_a_file_already_settling_due_at_its_new_end() -> None:
    tracker = SettleTracker(settle=600.0, empty_grace=600.0)
    tracker.observe("users.csv", seen("users.csv"), 100.0)
    assert tracker.next_due(100.0) == 700.0
    tracker.retime(10.0, 600.0)  # a reload at 105
    assert tracker.next_due(105.0) == 110.0
    assert tracker.due(109.9) == [] and tracker.due(110.0) == ["users.csv"]
    tracker.observe("users.csv", seen("users.csv"), 110.0)
    assert ready_names(tracker) == ["users.csv"]


def test_a_lowered_settle_time_whose_end_has_passed_makes_the_file_due_at_once() -> None:
    tracker = SettleTracker(settle=600.0, empty_grace=600.0)
    tracker.observe("users.csv", seen("users.csv"), 100.0)
    tracker.retime(10.0, 600.0)  # a reload at 400: the file has held still for 300 s already
    assert tracker.next_due(400.0) == 110.0
    assert tracker.due(400.0) == ["users.csv"]
    tracker.observe("users.csv", seen("users.csv"), 400.0)
    assert ready_names(tracker) == ["users.csv"]
    assert tracker.due(10_000.0) == []  # its old entry (700) went stale: it is never named again


def test_a_raised_settle_time_holds_a_settling_file_longer_and_leaves_ready_files_ready() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    tracker.observe("early.csv", seen("early.csv", ino=1), 0.0)
    tracker.observe("early.csv", seen("early.csv", ino=1), 1.0)  # settled
    tracker.observe("late.csv", seen("late.csv", ino=2), 0.5)
    tracker.retime(60.0, 30.0)
    assert ready_names(tracker) == ["early.csv"]  # it held still for the wait that applied then
    assert tracker.due(1.5) == []  # the old end (1.5) went stale
    tracker.observe("late.csv", seen("late.csv", ino=2), 1.5)  # an event's look meanwhile: not ready
    assert ready_names(tracker) == ["early.csv"]
    assert tracker.next_due(1.5) == 60.5 and tracker.due(60.5) == ["late.csv"]


def test_an_empty_file_gets_the_new_grace_and_another_file_the_new_settle_time() -> None:
    tracker = SettleTracker(settle=5.0, empty_grace=300.0)
    tracker.observe("empty.csv", seen("empty.csv", size=0, ino=1), 0.0)
    tracker.observe("users.csv", seen("users.csv", ino=2), 0.0)
    tracker.observe("pipe.csv", seen("pipe.csv", size=0, ino=3, regular=False), 0.0)  # not a regular file
    tracker.retime(2.0, 20.0)
    assert sorted(tracker.due(2.0)) == ["pipe.csv", "users.csv"]
    for name in ("pipe.csv", "users.csv"):
        tracker.observe(name, tracker._records[name].seen, 2.0)
    assert tracker.next_due(2.0) == 20.0 and tracker.due(20.0) == ["empty.csv"]
    tracker.observe("empty.csv", seen("empty.csv", size=0, ino=1), 20.0)
    assert sorted(ready_names(tracker)) == ["empty.csv", "pipe.csv", "users.csv"]
    tracker.retime(2.0, 1.0)  # a grace shorter than the settle time: an empty file waits the settle time
    tracker.observe("later.csv", seen("later.csv", size=0, ino=4), 30.0)
    assert tracker.next_due(30.0) == 32.0


def test_a_reload_keeps_a_hold_that_ends_later_than_the_new_wait() -> None:
    tracker = SettleTracker(settle=600.0, empty_grace=600.0)
    tracker.observe("users.csv", seen("users.csv"), 0.0)
    tracker.hold("users.csv", 50.0)  # its params file is still being written
    tracker.retime(10.0, 600.0)
    assert tracker.next_due(0.0) == 50.0
    assert tracker.due(49.0) == [] and tracker.due(50.0) == ["users.csv"]


def test_a_reload_that_changes_no_time_adds_no_heap_entry() -> None:
    tracker = SettleTracker(settle=10.0, empty_grace=30.0)
    for number in range(100):
        tracker.observe(f"f{number}.csv", seen(f"f{number}.csv", ino=number), float(number))
    entries = len(tracker._due)
    for _ in range(1000):  # reloads that change something else of the feed
        tracker.retime(10.0, 30.0)
    assert len(tracker._due) == entries


def test_reloads_that_change_the_times_keep_one_heap_entry_per_settling_file() -> None:
    tracker = SettleTracker(settle=10.0, empty_grace=30.0)
    for number in range(100):
        tracker.observe(f"f{number}.csv", seen(f"f{number}.csv", ino=number), 0.0)
    for step in range(50):
        tracker.retime(10.0 + step % 2, 30.0)
    assert len(tracker._due) == len(tracker) == 100
    assert sorted(tracker.due(11.0)) == sorted(tracker.names())  # the last reload's 11 s: each named once
    assert tracker.due(100.0) == []


def test_a_file_already_named_due_is_not_named_again_when_a_reload_retimes_another() -> None:
    tracker = SettleTracker(settle=10.0, empty_grace=300.0)
    tracker.observe("users.csv", seen("users.csv", ino=1), 0.0)
    tracker.observe("empty.csv", seen("empty.csv", size=0, ino=2), 0.0)
    assert tracker.due(10.0) == ["users.csv"]  # its look is on its way
    tracker.retime(10.0, 20.0)  # only the empty file's wait changes
    assert tracker.due(20.0) == ["empty.csv"]
