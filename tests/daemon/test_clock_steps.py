"""Wall-clock steps while the daemon runs (NTP, `date -s`): a real daemon in a thread, its wall clock injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sisdaemon.clock import DaemonClock
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonThread, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,status\n"


class SteppingWall:
    """time.time, plus an offset the test changes."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return time.time() + self.offset

    def step(self, seconds: float) -> None:
        with self.lock:
            self.offset += seconds


def test_a_step_back_of_the_wall_clock_does_not_stop_claiming_or_polling(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    wall = SteppingWall()
    daemon = run_daemon(clock=DaemonClock(wall))
    sandbox.stick_next("created")  # the first import waits in Canvas's queue while the clock steps
    spool.drop_file("first.csv", USERS + b"u1,l1,A,B,active\n")
    wait_for(lambda: sandbox.imports(), what="the first import")
    wait_for(lambda: any(job.import_id for job in daemon.daemon.ledger.jobs()), what="the import polled")
    wall.step(-3600)
    sandbox.unstick(sandbox.imports()[0]["id"])
    wait_for(lambda: len(spool.filed("done")) == 1, what="the first file, polled after the step back")
    spool.drop_file("second.csv", USERS + b"u2,l2,A,B,active\n")
    wait_for(lambda: len(spool.filed("done")) == 2, what="the second file after the step back")
    second = next(car for car in spool.sidecars("done") if car["file"]["name"] == "second.csv")
    finished = datetime.fromisoformat(second["timeline"]["finished_at"].replace("Z", "+00:00")).timestamp()
    assert abs(finished - wall()) < 600  # shown on the stepped wall clock, as the journal shows it
    daemon.stop()


def test_a_step_forward_of_the_wall_clock_does_not_shorten_settling(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["settle_seconds"] = 3.0
    wall = SteppingWall()
    daemon = run_daemon(clock=DaemonClock(wall))
    wait_for(lambda: daemon.daemon.iterations > 1, what="the start-up scan")
    spool.drop_file("users.csv", USERS + b"u1,l1,A,B,active\n")
    dropped = time.monotonic()
    wait_for(lambda: daemon.daemon.intake.scans["nightly"].tracker, what="the file to be seen")
    wall.step(3600)
    wait_for(lambda: daemon.daemon.ledger.jobs() or spool.filed("done"), what="the claim")
    assert time.monotonic() - dropped >= 3.0  # it settled for settle_seconds of real time
    wait_for(lambda: len(spool.filed("done")) == 1, what="the import")
    daemon.stop()
