"""The monitor: what the daemon shows to those who watch it: the metrics server, ``/healthz``, and the loop's pulse.

The daemon builds one :class:`Monitor` and calls :meth:`Monitor.turned` at each turn of its loop. The monitor reads
the other parts (the ledger, the gate, the intake, the flight worker) only when asked, from the metrics server's
thread: a scrape never waits on the loop, and the loop never waits on a scrape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from sisdaemon.config import FeedSettings, Settings
from sisdaemon.drift import RunningConfig
from sisdaemon.freshness import FILE, SUCCESS, Verdict, judge_feed
from sisdaemon.heartbeat import heartbeat_path, touch_heartbeat, write_heartbeat
from sisdaemon.logs import Conditions
from sisdaemon.metrics import FeedSnapshot, Metrics, Snapshot
from sisdaemon.metrics_http import MetricsServer

if TYPE_CHECKING:
    from sisdaemon.gate import Gate
    from sisdaemon.intake import Intake
    from sisdaemon.ledger import Ledger
    from sisdaemon.state import State
    from sisdaemon.worker import FlightWorker

log = structlog.get_logger("sisdaemon")

#: Seconds without a turn of the loop after which it counts as stuck (it turns at least every 5 s).
LOOP_STUCK_SECONDS = 60.0
#: Seconds between two judgements of the feeds' freshness by the loop.
FRESHNESS_EVERY = 1.0
#: Seconds between two renewals of the heartbeat file's mtime (heartbeat.py).
HEARTBEAT_EVERY = 2.0


def paused_feeds(state: State) -> Mapping[str, Any]:
    """Feed name -> why and by whom it is paused (``{"reason", "by", "at"}``), from the state.

    The one place paused feeds enter the monitoring (metrics, ``check``, status's freshness): the state's ``paused``
    map is kept by ``sisdaemon pause`` (issue 12's operator commands); read defensively so that a state without it
    means no feed is paused.
    """
    paused = getattr(state, "paused", None)
    return paused if isinstance(paused, Mapping) else {}


class Monitor:
    """The metrics (always counted; served when ``settings.metrics`` is set) and the daemon's health.

    ``feeds``: the daemon's live feed table. ``clock``: the daemon's clock (seconds since the epoch). The parts it
    reads are given by :meth:`attach` once the daemon has built them (they need :attr:`metrics` as their observer).
    """

    def __init__(self, settings: Settings, feeds: Mapping[str, FeedSettings], clock: Callable[[], float]) -> None:
        self.settings = settings
        self.feeds = feeds
        self.clock = clock
        self.started_at = clock()
        self.metrics = Metrics(self.snapshot, feeds)
        self.server: MetricsServer | None = None
        self.last_turn = time.monotonic()
        self._ledger: Ledger | None = None
        self._gate: Gate | None = None
        self._intake: Intake | None = None
        self._worker: FlightWorker | None = None
        self._worker_stale_after = 3 * settings.canvas.timeout_seconds + 60
        # A stale feed is said once when it starts and once when it ends: no reminders (status and check show it).
        self._stale = Conditions(remind_seconds=float("inf"))
        self._next_freshness = 0.0
        self.heartbeat = heartbeat_path(settings.state_file)
        self._next_beat = 0.0
        self.config: RunningConfig | None = None  # what the daemon runs, kept in the heartbeat file (drift.py)
        self._started = False

    def attach(self, *, ledger: Ledger, gate: Gate, intake: Intake, worker: FlightWorker) -> None:
        """Give the monitor the parts it reads."""
        self._ledger, self._gate, self._intake, self._worker = ledger, gate, intake, worker

    # --- start, stop, turns -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the heartbeat file, and serve the metrics when configured. An address that cannot be bound is said
        at error and the daemon runs on without metrics (a monitoring fault never stops imports)."""
        self._started = True
        self._write_heartbeat()
        if self.settings.metrics is None:
            return
        server = MetricsServer(self.settings.metrics.listen, self.metrics.registry, self.health)
        try:
            server.start()
        except (OSError, ValueError) as error:
            log.error("metrics_not_served", listen=self.settings.metrics.listen, error=str(error))
            return
        self.server = server
        host, port = server.address
        log.info("metrics_served", listen=f"{host}:{port}", paths=["/metrics", "/healthz"])

    def record_config(self, config: RunningConfig) -> None:
        """The daemon runs ``config`` (at start, and after each reload that applied): kept in the heartbeat file
        for ``status`` and ``check`` (rewritten at once once started)."""
        self.config = config
        if self._started:
            self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        """Write the heartbeat file with the pid, the start time and the config; a failure is said, never raised."""
        try:
            write_heartbeat(self.heartbeat, pid=os.getpid(), started_at=self.started_at, config=self.config)
        except OSError as error:
            log.warning("heartbeat_not_written", path=str(self.heartbeat), error=error.strerror or str(error))

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """:meth:`start`, then :meth:`stop` when the block ends, however it ends."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    def turned(self, now: float) -> None:
        """The loop turned (its thread): note its pulse, and say when a feed goes stale or is fresh again."""
        self.last_turn = time.monotonic()
        if self.last_turn >= self._next_beat:
            self._next_beat = self.last_turn + HEARTBEAT_EVERY
            with contextlib.suppress(OSError):  # the heartbeat is a sign for `check`; it never stops the loop
                touch_heartbeat(self.heartbeat)
        if now < self._next_freshness or self._ledger is None:
            return
        self._next_freshness = now + FRESHNESS_EVERY
        judged: set[tuple[str, ...]] = set()
        for verdict in self.freshness(now):
            key: tuple[str, ...] = ("feed_stale", verdict.feed, verdict.expectation)
            judged.add(key)
            if verdict.stale:
                self._stale.start(
                    key,
                    "feed_stale",
                    level="warning",
                    feed=verdict.feed,
                    expectation=verdict.expectation,
                    expected_every_seconds=verdict.every,
                    since=verdict.since,
                    message=verdict.sentence(),
                )
            else:
                self._end_stale(key)
        for active in self._stale.active():
            if active not in judged:  # the window was removed from the config, or the feed
                self._end_stale(active)

    def _end_stale(self, key: tuple[str, ...]) -> None:
        self._stale.end(key, "feed_fresh_again", feed=key[1], expectation=key[2])

    def freshness(self, now: float) -> list[Verdict]:
        """Every feed's freshness verdicts now (freshness.py), from the ledger's histories and jobs."""
        ledger = self._ledger
        if ledger is None:
            return []
        with ledger.lock:
            jobs = ledger.jobs()
            histories = {name: ledger.histories.get(name) for name in self.feeds}
        verdicts = []
        for name, feed in list(self.feeds.items()):
            history = histories.get(name)
            verdicts += judge_feed(
                feed,
                now=now,
                started_at=self.started_at,
                last_file_at=history.last_file_at if history else None,
                last_success_at=history.last_success_at if history else None,
                claimed_at=[job.claimed_at for job in jobs if job.feed == name],
            )
        return verdicts

    # --- what a scrape sees -----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(healthy, why): unhealthy when the loop has not turned for :data:`LOOP_STUCK_SECONDS`, the flight worker
        is not turning (as the systemd watchdog judges it), or a credential fault stands."""
        stuck_for = time.monotonic() - self.last_turn
        if stuck_for > LOOP_STUCK_SECONDS:
            return False, f"the loop has not turned for {stuck_for:.0f} s"
        worker = self._worker
        if worker is not None and worker.alive() and time.monotonic() - worker.heartbeat > self._worker_stale_after:
            return False, "no Canvas step finished for too long (the flight worker is stuck)"
        gate = self._gate
        if gate is not None and gate.health.kind is not None and str(gate.health.kind) == "credential":
            return False, f"credential fault: {gate.health.message}"
        return True, "the loop is turning"

    def snapshot(self) -> Snapshot:
        """The daemon as it is now (:class:`~sisdaemon.metrics.Snapshot`), read from the parts."""
        healthy = self.health()[0]
        ledger = self._ledger
        if ledger is None:
            return Snapshot(started_at=self.started_at, healthy=healthy)
        now = self.clock()
        with ledger.lock:
            jobs = ledger.jobs()
            held = dict(ledger.state.held)
            paused = dict(paused_feeds(ledger.state))
            histories = {name: ledger.histories.get(name) for name in self.feeds}
            write_fault = ledger.write_fault
        faults = set()
        if self._gate is not None and self._gate.health.kind is not None:
            faults.add(str(self._gate.health.kind))
        if write_fault is not None:
            faults.add("state_write")
        feeds = []
        for name in list(self.feeds):
            history = histories.get(name)
            feeds.append(
                FeedSnapshot(
                    name=name,
                    in_flight=sum(1 for job in jobs if job.feed == name),
                    waiting=self._intake.waiting(name) if self._intake is not None else 0,
                    last_file_at=history.last_file_at if history else None,
                    last_success_at=history.last_success_at if history else None,
                    held=name in held,
                    paused=name in paused,
                )
            )
        stale = {(verdict.feed, verdict.expectation) for verdict in self.freshness(now) if verdict.stale}
        feeds = [
            dataclasses.replace(
                feed, stale_file=(feed.name, FILE) in stale, stale_success=(feed.name, SUCCESS) in stale
            )
            for feed in feeds
        ]
        oldest = min((job.claimed_at for job in jobs), default=None)
        return Snapshot(
            feeds=tuple(feeds),
            oldest_in_flight_seconds=max(now - oldest, 0.0) if oldest is not None else 0.0,
            faults=frozenset(faults),
            started_at=self.started_at,
            healthy=healthy,
        )
