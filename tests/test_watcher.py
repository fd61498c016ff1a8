"""Settling and what is taken from a drop folder: the pure tracker, and scans of real temp folders."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sisdaemon.jobs import Fingerprint
from sisdaemon.watcher import Observation, SettleTracker, is_candidate_name, scan

PATTERNS = ("*.csv", "*.zip")


def seen(name: str, size: int = 10, mtime: int = 1, ino: int = 1) -> Observation:
    return Observation(name, Fingerprint(ino, size, mtime, 0), True, "file")


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
    assert tracker.update({"a.csv": seen("a.csv", 10)}, 100.0) == []
    assert tracker.update({"a.csv": seen("a.csv", 20)}, 101.0) == []  # grew: starts again
    assert tracker.update({"a.csv": seen("a.csv", 20)}, 102.5) == []
    ready = tracker.update({"a.csv": seen("a.csv", 20)}, 103.0)
    assert [item.name for item in ready] == ["a.csv"] and ready[0].seen_at == 100.0


def test_an_old_mtime_proves_nothing() -> None:
    tracker = SettleTracker(settle=5.0, empty_grace=10.0)
    copied = seen("rsynced.csv", 10, mtime=1)  # `rsync -a` keeps an mtime from years ago
    assert tracker.update({"rsynced.csv": copied}, 1000.0) == []
    assert tracker.update({"rsynced.csv": copied}, 1004.0) == []
    assert len(tracker.update({"rsynced.csv": copied}, 1005.0)) == 1


def test_an_empty_file_waits_for_its_grace_period() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    empty = seen("e.csv", 0)
    tracker.update({"e.csv": empty}, 0.0)
    assert tracker.next_due(0.0) == 30.0
    assert tracker.update({"e.csv": empty}, 29.0) == []
    assert len(tracker.update({"e.csv": empty}, 30.0)) == 1


def test_ready_files_come_oldest_first_and_vanished_ones_are_forgotten() -> None:
    tracker = SettleTracker(settle=1.0, empty_grace=30.0)
    files = {"b.csv": seen("b.csv", mtime=5, ino=2), "a.csv": seen("a.csv", mtime=9, ino=3)}
    tracker.update(files, 0.0)
    assert tracker.next_due(0.5) == 1.0
    assert [item.name for item in tracker.update(files, 1.0)] == ["b.csv", "a.csv"]
    assert tracker.next_due(1.0) is None  # ready files wait for room, not for the clock
    tracker.update({}, 2.0)
    assert len(tracker) == 0 and tracker.next_due(2.0) is None


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
