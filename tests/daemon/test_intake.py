"""The intake alone: real folders, a real ledger and a gate in front of the sandbox over loopback; time passed in."""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time

from sisdaemon.canvas import CanvasClient
from sisdaemon.config import load_config
from sisdaemon.gate import Gate
from sisdaemon.intake import Intake
from sisdaemon.jobs import Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.writers import WriterCheck
from tests.daemon.conftest import TOKEN, Spool, wait_for

HEADER = b"user_id,login_id,first_name,last_name,status\n"


def build(spool: Spool, **feed: object) -> tuple[Intake, Ledger, list[Job], Gate]:
    spool.feed.update(feed)
    settings = load_config(spool.write_config())
    feeds = {item.name: item for item in settings.feeds}
    ledger = Ledger(settings.state_file)
    ledger.load(feeds)
    client = CanvasClient(settings.canvas.base_url, "1", lambda: TOKEN, timeout=10)
    gate = Gate(client, ledger, settings.polling, notify=lambda line: None)
    claimed: list[Job] = []
    intake = Intake(
        feeds, ledger, gate, WriterCheck(), threading.Event(), on_claimed=lambda job, now: claimed.append(job)
    )
    return intake, ledger, claimed, gate


def scan_as_the_loop_does(intake: Intake, gate: Gate, now: float) -> None:
    """One scan; when it asked for the token to be checked (the flight worker's job in the daemon), check it and
    scan again, as the daemon's loop does once the worker wakes it."""
    intake.scan_due(now, woke=False)
    if gate.verification_wanted.is_set():
        assert gate.ready(now)
        intake.scan_due(now, woke=True)


def test_a_file_is_claimed_into_work_only_once_it_has_settled(spool: Spool) -> None:
    intake, ledger, claimed, gate = build(spool, settle_seconds=5)
    spool.drop_file("users.csv", HEADER + b"u1,l1,A,B,active\n")
    now = time.time()
    try:
        intake.scan_due(now, woke=False)
        assert ledger.jobs() == [] and (spool.drop / "users.csv").exists()
        scan_as_the_loop_does(intake, gate, now + 5.1)  # the settle deadline makes the scan due
        (job,) = ledger.jobs()
        assert job.state is JobState.CLAIMED and job.name == "users.csv"
        assert (spool.work / job.work_name).exists() and not (spool.drop / "users.csv").exists()
        assert claimed == [job]
        assert intake.idle()
    finally:
        intake.stop()


def test_a_full_feed_leaves_the_backlog_in_the_drop_folder(spool: Spool) -> None:
    intake, ledger, _, gate = build(spool, settle_seconds=1, max_in_flight=1)
    for index in range(3):
        spool.drop_file(f"users{index}.csv", HEADER + f"u{index},l{index},A,B,active\n".encode())
    now = time.time()
    try:
        intake.scan_due(now, woke=False)
        scan_as_the_loop_does(intake, gate, now + 1.1)
        assert len(ledger.jobs()) == 1
        assert len(list(spool.drop.iterdir())) == 2
        assert not intake.idle()
    finally:
        intake.stop()


def test_an_empty_file_is_claimed_and_refused_after_its_grace(spool: Spool) -> None:
    intake, ledger, claimed, gate = build(spool, settle_seconds=1, empty_grace_seconds=3)
    spool.drop_file("users.csv", b"")
    now = time.time()
    try:
        intake.scan_due(now, woke=False)
        scan_as_the_loop_does(intake, gate, now + 1.1)
        assert ledger.jobs() == []  # still in its grace period
        scan_as_the_loop_does(intake, gate, now + 3.1)
        (job,) = ledger.jobs()
        assert job.state is JobState.FINISHING and job.reason_code == "empty_file"
        assert claimed == []  # nothing to check in work/: it is refused
    finally:
        intake.stop()


class CountedLstat:
    """``os.lstat``, counted: what detection costs, in looks at dropped files."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: str) -> os.stat_result:
        self.calls += 1
        return os.lstat(path)


def drain(intake: Intake, ledger: Ledger, gate: Gate, spool: Spool, start: float) -> float:
    """Run the loop's part until the drop folder is empty: a turn every 0.3 s of the intake's time, each job done at
    once (forgotten, as filing would), which gives the feed room as the flight worker's wake-up does."""
    now = start
    deadline = time.monotonic() + 60
    while any(spool.drop.iterdir()) or ledger.jobs():
        assert time.monotonic() < deadline, "the burst was not drained"
        now += 0.3
        scan_as_the_loop_does(intake, gate, now)
        for job in ledger.jobs():
            ledger.forget(job.job_id)
    return now


def test_a_burst_of_files_costs_looks_in_proportion_to_its_size_not_to_the_files_waiting(spool: Spool) -> None:
    counted = CountedLstat()
    intake, ledger, claimed, gate = build(spool, settle_seconds=1, max_in_flight=4, rescan_seconds=3600)
    intake.lstat = counted
    now = time.time()
    looks_per_file = {}
    try:
        intake.scan_due(now, woke=False)  # the start-up scan of an empty folder; the watch starts
        for size in (40, 160):
            counted.calls = 0
            for number in range(size):
                spool.drop_file(f"users-{size}-{number:04d}.csv", HEADER + b"u1,l1,A,B,active\n")
            wait_for(lambda: intake.scans["nightly"].watcher.pending(), what="the burst's events")
            now = drain(intake, ledger, gate, spool, now)
            looks_per_file[size] = counted.calls / size
        feed_scan = intake.scans["nightly"]
        assert len(claimed) == 200
        assert feed_scan.scans == 1  # the start-up scan only: every later look was at a name an event brought
        # About three looks per file (its event, the end of its wait, the claim), however many wait beside it; a
        # full scan per claim would cost looks in proportion to the files waiting (40 and 160 here).
        assert looks_per_file[40] <= 6 and looks_per_file[160] <= 6, looks_per_file
    finally:
        intake.stop()


def test_the_claims_own_rename_out_of_the_drop_folder_is_no_news(spool: Spool) -> None:
    intake, _, claimed, gate = build(spool, settle_seconds=1)
    spool.drop_file("users.csv", HEADER + b"u1,l1,A,B,active\n")
    now = time.time()
    try:
        intake.scan_due(now, woke=False)
        scan_as_the_loop_does(intake, gate, now + 1.1)
        assert [job.name for job in claimed] == ["users.csv"]
        watcher = intake.scans["nightly"].watcher
        watcher.take_changes()
        spool.drop_file("later.csv", HEADER)  # events come in order: the rename's, if any, came before this one's
        wait_for(watcher.pending, what="the new file's event")
        names, full = watcher.take_changes()
        assert names == {"later.csv"} and not full
    finally:
        intake.stop()


def test_lost_events_make_the_next_look_a_full_scan(spool: Spool) -> None:
    intake, *_ = build(spool, settle_seconds=1, rescan_seconds=3600)
    now = time.time()
    try:
        intake.scan_due(now, woke=False)
        feed_scan = intake.scans["nightly"]
        assert feed_scan.scans == 1
        intake.scan_due(now + 1, woke=True)
        assert feed_scan.scans == 1  # nothing happened: no scan
        # What watchdog logs when the kernel's inotify queue overflowed (watchdog/observers/inotify_c.py).
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert feed_scan.watcher.pending() and intake.wake.is_set()
        intake.scan_due(now + 2, woke=True)  # the debounce
        intake.scan_due(now + 2.3, woke=True)
        assert feed_scan.scans == 2
    finally:
        intake.stop()


def test_watchdog_still_says_so_when_the_kernels_event_queue_overflows() -> None:
    import watchdog.observers.inotify_c

    source = inspect.getsource(watchdog.observers.inotify_c)
    assert 'logger.warning("Inotify queue overflowed; filesystem events were lost")' in source
