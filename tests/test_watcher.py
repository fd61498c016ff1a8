"""Settling and what is taken from a drop folder: the pure tracker, and scans of real temp folders."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from sisdaemon.jobs import Fingerprint
from sisdaemon.settle import Observation, ReadyFile, SettleTracker
from sisdaemon.watcher import MOVE_PAIRING_SECONDS, DropWatcher, is_candidate_name, look, scan

PATTERNS = ("*.csv", "*.zip")


def seen(name: str, size: int = 10, mtime: int = 1, ino: int = 1) -> Observation:
    return Observation(name, Fingerprint(ino, size, mtime, 0), True, "file")


def settled(tracker: SettleTracker, files: dict[str, Observation], now: float) -> list[ReadyFile]:
    """A full scan's look at ``files``, then the ready files in the order they are taken."""
    tracker.update(files, now)
    return tracker.ready()


def test_ignored_names_are_never_candidates() -> None:
    for name in (
        ".users.csv.AbC123",
        "users.csv.part",
        "users.csv.filepart",
        "users.csv.tmp",
        "users.csv~",
        "notes.txt",
        ".hidden.csv",
    ):
        assert not is_candidate_name(name, PATTERNS), name
    for name in ("users.csv", "USERS.CSV", "Batch.Zip"):
        assert is_candidate_name(name, PATTERNS), name


def test_a_file_is_ready_only_after_its_fingerprint_held_for_the_settle_time() -> None:
    tracker = SettleTracker(settle=2.0, empty_grace=10.0)
    assert settled(tracker, {"a.csv": seen("a.csv", 10)}, 100.0) == []
    assert settled(tracker, {"a.csv": seen("a.csv", 20)}, 101.0) == []  # grew: starts again
    assert settled(tracker, {"a.csv": seen("a.csv", 20)}, 102.5) == []
    ready = settled(tracker, {"a.csv": seen("a.csv", 20)}, 103.0)
    assert [item.name for item in ready] == ["a.csv"] and ready[0].seen_at == 100.0


def test_an_old_mtime_proves_nothing() -> None:
    tracker = SettleTracker(settle=5.0, empty_grace=10.0)
    copied = seen("rsynced.csv", 10, mtime=1)  # `rsync -a` keeps an mtime from years ago
    assert settled(tracker, {"rsynced.csv": copied}, 1000.0) == []
    assert settled(tracker, {"rsynced.csv": copied}, 1004.0) == []
    assert len(settled(tracker, {"rsynced.csv": copied}, 1005.0)) == 1


def test_an_empty_file_waits_for_its_grace_period() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    empty = seen("e.csv", 0)
    tracker.update({"e.csv": empty}, 0.0)
    assert tracker.next_due(0.0) == 30.0
    assert settled(tracker, {"e.csv": empty}, 29.0) == []
    assert len(settled(tracker, {"e.csv": empty}, 30.0)) == 1


def test_ready_files_come_oldest_first_and_vanished_ones_are_forgotten() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    files = {"b.csv": seen("b.csv", mtime=5, ino=2), "a.csv": seen("a.csv", mtime=9, ino=3)}
    tracker.update(files, 0.0)
    assert tracker.next_due(0.5) == 1.0
    assert [item.name for item in settled(tracker, files, 1.0)] == ["b.csv", "a.csv"]
    assert tracker.next_due(1.0) is None  # ready files wait for room, not for the clock
    tracker.update({}, 2.0)
    assert len(tracker) == 0 and tracker.next_due(2.0) is None and tracker.first_ready() is None


def test_one_look_per_changed_file_and_one_more_when_its_wait_ends() -> None:
    tracker = SettleTracker(settle=2.0, empty_grace=30.0)
    for number in range(1000):  # a backlog: waiting files are never looked at again by the tracker's own work
        tracker.observe(f"old{number:04d}.csv", seen(f"old{number:04d}.csv", mtime=number, ino=number), 0.0)
    assert sorted(tracker.due(2.0)) == sorted(tracker.names())  # their waits ended: each needs one more look
    for name in list(tracker.names()):
        tracker.observe(name, seen(name, mtime=int(name[3:7]), ino=int(name[3:7])), 2.0)
    assert tracker.due(2.0) == [] and tracker.next_due(2.0) is None  # each was named once
    tracker.observe("new.csv", seen("new.csv", mtime=5000, ino=5000), 10.0)
    assert tracker.next_due(10.0) == 12.0
    assert tracker.due(11.9) == [] and tracker.due(12.0) == ["new.csv"]
    tracker.observe("new.csv", seen("new.csv", size=99, mtime=5001, ino=5000), 12.0)  # it changed: waits again
    first = tracker.first_ready()
    assert first is not None and first.name == "old0000.csv"
    assert tracker.due(13.9) == [] and tracker.due(14.0) == ["new.csv"]


def test_ready_files_are_taken_oldest_first_and_a_change_sends_one_back_to_settling() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    files = {name: seen(name, mtime=mtime, ino=mtime) for name, mtime in (("c.csv", 3), ("a.csv", 1), ("b.csv", 2))}
    tracker.update(files, 0.0)
    tracker.update(files, 1.0)
    first = tracker.first_ready()
    assert first is not None and first.name == "a.csv"
    tracker.forget("a.csv")  # claimed
    tracker.observe("b.csv", seen("b.csv", size=11, mtime=2, ino=2), 1.5)  # written to after it settled
    first = tracker.first_ready()
    assert first is not None and first.name == "c.csv"
    tracker.observe("c.csv", None, 1.6)  # gone
    assert tracker.first_ready() is None and list(tracker.names()) == ["b.csv"]
    tracker.observe("b.csv", seen("b.csv", size=11, mtime=2, ino=2), 2.5)
    first = tracker.first_ready()
    assert first is not None and first.name == "b.csv" and first.seen_at == 0.0  # first seen at the first scan


def test_a_file_that_keeps_changing_does_not_grow_the_trackers_heaps_without_bound() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    for step in range(10_000):
        tracker.observe("growing.csv", seen("growing.csv", size=step + 1), float(step) / 100)
    assert len(tracker._due) + len(tracker._ready) <= 2 * len(tracker) + 65


def test_a_scan_sees_regular_files_and_special_files_but_not_folders_or_temp_names(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user_id,login_id,status\n")
    (tmp_path / ".users.csv.XyZ").write_text("partial")
    (tmp_path / "big.zip.filepart").write_text("partial")
    (tmp_path / "sub.csv").mkdir()
    os.symlink("/etc/passwd", tmp_path / "link.csv")
    os.mkfifo(tmp_path / "pipe.csv")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.csv"))
        found = scan(tmp_path, PATTERNS)
    assert {name: item.kind for name, item in found.items()} == {
        "users.csv": "file",
        "link.csv": "symlink",
        "pipe.csv": "fifo",
        "sock.csv": "socket",
    }
    assert found["users.csv"].regular and not found["link.csv"].regular
    assert look(tmp_path, "users.csv", PATTERNS)[0] == found["users.csv"]
    assert look(tmp_path, "sub.csv", PATTERNS) == (None, "folder")
    assert look(tmp_path, "gone.csv", PATTERNS) == (None, None)
    assert look(tmp_path, ".users.csv.XyZ", PATTERNS) == (None, "dot_name")


def test_a_name_renamed_or_created_in_is_an_arrival_looked_at_at_once_and_a_write_is_not(tmp_path: Path) -> None:
    wake = threading.Event()
    watcher = DropWatcher(tmp_path, wake, wanted=lambda name: is_candidate_name(name, PATTERNS))
    (tmp_path / "users.csv").write_bytes(b"user_id\n")
    try:
        assert watcher.ensure_watching()
        # watchdog's pairing of renames, which held every event behind a claim's rename out for 0.5 s, is short
        assert InotifyMoveEventGrouper.delay == MOVE_PAIRING_SECONDS
        watcher.take_changes()
        with open(tmp_path / "users.csv", "ab") as handle:  # a write in place: news, but no arrival
            handle.write(b"u1\n")
        _wait(watcher.pending)
        assert not watcher.arrived()
        assert watcher.take_changes() == ({"users.csv"}, False) and not watcher.arrived()
        (tmp_path / ".later.csv.tmp").write_bytes(b"user_id\n")
        os.rename(tmp_path / ".later.csv.tmp", tmp_path / "later.csv")  # a careful uploader's rename in
        _wait(lambda: "later.csv" in watcher._changes.names)
        assert watcher.arrived()
        names, _ = watcher.take_changes()
        assert "later.csv" in names and not watcher.arrived()
    finally:
        watcher.stop()


def _wait(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for the watch's event"
        time.sleep(0.01)
