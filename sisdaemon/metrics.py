"""Prometheus metrics: counters fed by the parts (an :class:`~sisdaemon.observer.Observer`), gauges read at scrape time.

Each daemon has its own ``CollectorRegistry`` (never prometheus_client's global one), so that tests and several
daemons in one process keep theirs apart. Names follow Prometheus's conventions (``sisdaemon_`` prefix, ``_total``
for counters, ``_seconds`` and ``_bytes`` units); labels are bounded sets (feed names, templated Canvas routes,
status classes, fault kinds, outcomes): never a file name, an id or a token. docs/operations.md lists them all.

The gauges are computed when scraped from a :class:`Snapshot` the daemon builds (monitor.py), so that no part keeps
a gauge up to date and a scrape always sees the ledger as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sisdaemon import __version__

#: Buckets (seconds) of Canvas's API calls: fast reads to a slow answer near the default 60 s deadline.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets (seconds) of uploads: a small CSV to a large zip near the default 1800 s deadline.
UPLOAD_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0)
#: Canvas's fault kinds (answers.FaultKind's values) and the daemon's own, each shown as a gauge even when 0.
FAULT_KINDS = ("transient", "throttled", "credential", "configuration", "state_write")


@dataclass(frozen=True)
class FeedSnapshot:
    """One feed as a scrape sees it. Times are seconds since the epoch (None: never)."""

    name: str
    in_flight: int = 0
    waiting: int = 0
    last_file_at: float | None = None
    last_success_at: float | None = None
    held: bool = False
    paused: bool = False
    stale_file: bool = False
    stale_success: bool = False


@dataclass(frozen=True)
class Snapshot:
    """The daemon as a scrape sees it: its feeds, the age of its oldest in-flight job (seconds, 0 with none), the
    current faults by kind, when it started (seconds since the epoch) and whether it is healthy (``/healthz``)."""

    feeds: tuple[FeedSnapshot, ...] = ()
    oldest_in_flight_seconds: float = 0.0
    faults: frozenset[str] = field(default_factory=frozenset)
    started_at: float = 0.0
    healthy: bool = True


def status_class(status: int | None) -> str:
    """``"2xx"`` ... ``"5xx"`` for an HTTP status; ``"none"`` when no answer came."""
    return f"{status // 100}xx" if status is not None and 100 <= status < 600 else "none"


class Metrics:
    """The daemon's metrics in their own registry (:attr:`registry`); an :class:`~sisdaemon.observer.Observer`.

    ``snapshot``: returns the current :class:`Snapshot`, called at each scrape (from the metrics server's thread;
    it must only read). ``feeds``: the configured feed names, whose counters start at 0 so that ``rate()`` and
    ``increase()`` see the first file.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], feeds: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.files_seen = Counter(
            "sisdaemon_files_seen", "Files that appeared in a drop folder.", ["feed"], registry=registry
        )
        self.files_claimed = Counter(
            "sisdaemon_files_claimed", "Files claimed from drop/ into the work folder.", ["feed"], registry=registry
        )
        self.files_submitted = Counter(
            "sisdaemon_files_submitted", "Files Canvas accepted as an SIS import.", ["feed"], registry=registry
        )
        self.files_filed = Counter(
            "sisdaemon_files_filed",
            "Files filed in done/ or failed/, by outcome (Canvas's workflow_state, rejected, duplicate_skipped or "
            "superseded).",
            ["feed", "outcome", "folder"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "sisdaemon_upload_bytes", "Bytes of files sent to Canvas (every upload).", ["feed"], registry=registry
        )
        self.upload_seconds = Histogram(
            "sisdaemon_upload_duration_seconds",
            "How long an upload (one POST with the file) took, by result: created, error, changed.",
            ["feed", "result"],
            buckets=UPLOAD_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "sisdaemon_canvas_requests",
            "HTTP exchanges with Canvas, by templated route and status class (none: no answer).",
            ["method", "route", "status_class"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "sisdaemon_canvas_request_duration_seconds",
            "How long an HTTP exchange with Canvas took, its answer read whole.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.throttle_waits = Counter(
            "sisdaemon_canvas_throttle_waits",
            "Waits for Canvas's rate limit: rate_limit_low (slowing down) or throttled (refused).",
            ["reason"],
            registry=registry,
        )
        self.throttle_seconds = Counter(
            "sisdaemon_canvas_throttle_wait_seconds",
            "Seconds spent waiting for Canvas's rate limit.",
            ["reason"],
            registry=registry,
        )
        self.faults = Counter(
            "sisdaemon_canvas_faults", "Calls to Canvas that failed, by fault kind.", ["kind"], registry=registry
        )
        self.hooks = Counter(
            "sisdaemon_hook_runs",
            "Hooks run after a file was filed, by hook and result: ok, failed, timed_out, not_started, dropped.",
            ["feed", "hook", "result"],
            registry=registry,
        )
        for name in feeds:
            self.add_feed(name)
        registry.register(_Gauges(snapshot))

    def add_feed(self, name: str) -> None:
        """Start feed ``name``'s counters at 0 (a feed of the config, or one added by a reload)."""
        for counter in (self.files_seen, self.files_claimed, self.files_submitted, self.upload_bytes):
            counter.labels(feed=name)

    # --- the observer ---------------------------------------------------------------------------------------

    def file_seen(self, feed: str) -> None:
        self.files_seen.labels(feed=feed).inc()

    def job_event(self, event: str, feed: str, outcome: str | None, folder: str | None) -> None:
        if event == "claimed":
            self.files_claimed.labels(feed=feed).inc()
        elif event == "submitted":
            self.files_submitted.labels(feed=feed).inc()
        elif event == "filed":
            self.files_filed.labels(feed=feed, outcome=outcome or "unknown", folder=folder or "unknown").inc()

    def upload_ended(self, feed: str, size_bytes: int, seconds: float, result: str) -> None:
        if result != "changed":  # a file that changed before it was sent was not sent
            self.upload_bytes.labels(feed=feed).inc(size_bytes)
        self.upload_seconds.labels(feed=feed, result=result).observe(seconds)

    def canvas_request(self, method: str, route: str, status: int | None, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status_class=status_class(status)).inc()
        self.request_seconds.labels(method=method, route=route).observe(seconds)

    def throttle_wait(self, reason: str, seconds: float) -> None:
        self.throttle_waits.labels(reason=reason).inc()
        self.throttle_seconds.labels(reason=reason).inc(seconds)

    def canvas_fault(self, kind: str) -> None:
        self.faults.labels(kind=kind).inc()

    def hook_ran(self, feed: str, hook: str, result: str) -> None:
        self.hooks.labels(feed=feed, hook=hook, result=result).inc()


class _Gauges(Collector):
    """The gauges, computed from a fresh :class:`Snapshot` at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.snapshot()))

    def _families(self, snapshot: Snapshot) -> Iterator[Metric]:
        def per_feed(name: str, documentation: str, value: Callable[[FeedSnapshot], float | None]) -> Metric:
            family = GaugeMetricFamily(name, documentation, labels=["feed"])
            for feed in snapshot.feeds:
                if (number := value(feed)) is not None:
                    family.add_metric([feed.name], number)
            return family

        info = GaugeMetricFamily("sisdaemon_build_info", "The running sisdaemon's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "sisdaemon_start_time_seconds", "When the daemon started (seconds since the epoch).", snapshot.started_at
        )
        yield GaugeMetricFamily(
            "sisdaemon_healthy", "1 while the loop turns and no credential fault stands (/healthz).", snapshot.healthy
        )
        yield per_feed("sisdaemon_jobs_in_flight", "Files claimed and not yet filed.", lambda feed: feed.in_flight)
        yield per_feed("sisdaemon_files_waiting", "Files in drop/ not yet claimed.", lambda feed: feed.waiting)
        yield GaugeMetricFamily(
            "sisdaemon_oldest_in_flight_age_seconds",
            "Age of the oldest claimed, not yet filed file (0 with none).",
            snapshot.oldest_in_flight_seconds,
        )
        yield per_feed(
            "sisdaemon_feed_last_file_timestamp_seconds",
            "When the feed's last file was filed, done or failed (seconds since the epoch).",
            lambda feed: feed.last_file_at,
        )
        yield per_feed(
            "sisdaemon_feed_last_success_timestamp_seconds",
            "When the feed's last file was filed in done/ (seconds since the epoch).",
            lambda feed: feed.last_success_at,
        )
        yield per_feed("sisdaemon_feed_held", "1 while a configuration fault holds the feed.", lambda f: f.held)
        yield per_feed("sisdaemon_feed_paused", "1 while an operator has paused the feed.", lambda f: f.paused)
        stale = GaugeMetricFamily(
            "sisdaemon_feed_stale",
            "1 while the feed is past its expect_file_every (expectation=file) or expect_success_every (success).",
            labels=["feed", "expectation"],
        )
        for feed in snapshot.feeds:
            stale.add_metric([feed.name, "file"], feed.stale_file)
            stale.add_metric([feed.name, "success"], feed.stale_success)
        yield stale
        faults = GaugeMetricFamily("sisdaemon_fault", "1 while a fault of this kind stands.", labels=["kind"])
        for kind in FAULT_KINDS:
            faults.add_metric([kind], kind in snapshot.faults)
        yield faults
