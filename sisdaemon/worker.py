"""The flight worker: the thread that talks to Canvas, so that no call to Canvas ever blocks the loop.

The loop's thread scans, settles and claims, pings systemd's watchdog and obeys signals; this thread takes every
claimed job through its steps (flight.py) one at a time, applies finished uploads, and checks the token when the loop
asks (gate.py). Each of its calls has a deadline for the whole call (canvas.py), and a stop cancels the call in
progress, so it ends within a second or two whatever Canvas is doing. Steps stay sequential, as the crash protocol
was built for: the one-upload-per-account rule and the ledger's order of writes are unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from sisdaemon.canvas import CanvasError
from sisdaemon.flight import Flight
from sisdaemon.gate import Gate
from sisdaemon.ledger import Ledger
from sisdaemon.logs import bound

log = structlog.get_logger("sisdaemon")


class FlightWorker:
    """Runs ``flight``'s steps in a thread of its own.

    ``wake``: set to make it look at its jobs now (a claim, an upload that ended, a reload). ``loop_wake``: the
    loop's event, set after the token was verified and when a job was filed (its feed has room), so that waiting
    files are claimed at once. ``clock``: the
    daemon's clock. ``heartbeat`` is the monotonic time of its last turn: a loop that sees it stale stops pinging
    systemd's watchdog.
    """

    def __init__(
        self,
        flight: Flight,
        ledger: Ledger,
        gate: Gate,
        *,
        wake: threading.Event,
        loop_wake: threading.Event,
        clock: Callable[[], float],
    ) -> None:
        self.flight = flight
        self.ledger = ledger
        self.gate = gate
        self.wake = wake
        self.loop_wake = loop_wake
        self.clock = clock
        self.heartbeat = time.monotonic()
        self.turns = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        self._thread = threading.Thread(target=self._run, name="sisdaemon-flight", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds; returns whether it stopped. The caller
        cancels the Canvas call in progress first (``CanvasClient.cancel``) so that this is quick; a set's zip being
        built is given up, and a pre-flight check stopped and waited for (``Flight.stop``)."""
        self._stop.set()
        self.flight.stop()
        self.wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.turns += 1
            self.heartbeat = time.monotonic()
            try:
                self._turn()
            except Exception as error:  # a bug: say it with its traceback, keep the daemon going
                log.exception("flight_turn_failed", error=f"{type(error).__name__}: {error}")
            if self._stop.is_set():
                break
            self.wake.wait(self._sleep_time(self.clock()))
            self.wake.clear()

    def _turn(self) -> None:
        try:
            self._steps()
        finally:
            self.ledger.flush()  # the turn's changes that waited for a write (Ledger.put_later): one write

    def _steps(self) -> None:
        now = self.clock()
        try:
            self.flight.collect_uploads(now)
        except OSError as error:  # the state disk: the ledger says so and the loop reports it
            log.debug("collect_uploads_deferred", error=str(error))
        if self.gate.verification_wanted.is_set() and self.gate.is_open(now):
            try:
                if self.gate.ready(now):
                    self.loop_wake.set()  # files wait in drop/ for exactly this
            except CanvasError:
                pass  # recorded by the gate
        jobs = self.ledger.flight_jobs()  # never one whose claim the loop is still making
        for job in jobs:
            if self._stop.is_set():
                return
            current = self.ledger.job(job.job_id)
            if current is not None:
                with bound(current):
                    self.flight.step(current, self.clock())
            self.heartbeat = time.monotonic()
        self.flight.after_turn()
        if any(self.ledger.job(job.job_id) is None for job in jobs):
            self.loop_wake.set()  # a job was filed: its feed has room for a file waiting in drop/

    def _sleep_time(self, now: float) -> float:
        """Seconds until a job is due or the gate's backoff ends; at most 5 s."""
        times = self.flight.due_times(now)
        if self.gate.health.kind is not None:
            times.append(self.gate.health.retry_at)
        if self.gate.verification_wanted.is_set():
            times.append(self.gate.health.retry_at if self.gate.health.kind is not None else now)
        soonest = min(times) if times else now + 5.0
        return min(max(soonest - now, 0.01), 5.0)
