"""The monitor: what the daemon shows to those who watch it: the metrics server, ``/healthz``, and the loop's pulse.

The daemon builds one :class:`Monitor` and calls :meth:`Monitor.turned` at each turn of its loop. The monitor reads
the other parts (the ledger, the gate, the intake, the flight worker) only when asked, from the metrics server's
thread: a scrape never waits on the loop, and the loop never waits on a scrape.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from sisdaemon.config import FeedSettings, Settings
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

    def attach(self, *, ledger: Ledger, gate: Gate, intake: Intake, worker: FlightWorker) -> None:
        """Give the monitor the parts it reads."""
        self._ledger, self._gate, self._intake, self._worker = ledger, gate, intake, worker

    # --- start, stop, turns -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the metrics when configured. An address that cannot be bound is said at error and the daemon runs
        on without metrics (a monitoring fault never stops imports)."""
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
        """The loop turned (its thread)."""
        self.last_turn = time.monotonic()

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
        oldest = min((job.claimed_at for job in jobs), default=None)
        return Snapshot(
            feeds=tuple(feeds),
            oldest_in_flight_seconds=max(now - oldest, 0.0) if oldest is not None else 0.0,
            faults=frozenset(faults),
            started_at=self.started_at,
            healthy=healthy,
        )
