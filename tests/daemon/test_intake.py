"""The intake alone: real folders, a real ledger and a gate in front of the sandbox over loopback; time passed in."""

from __future__ import annotations

import threading
import time

from sisdaemon.canvas import CanvasClient
from sisdaemon.config import load_config
from sisdaemon.gate import Gate
from sisdaemon.intake import Intake
from sisdaemon.jobs import Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.writers import WriterCheck
from tests.daemon.conftest import TOKEN, Spool

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
