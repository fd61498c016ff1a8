"""The daemon's shared runtime: its state, the health gate in front of Canvas, and small persistence helpers.

:class:`Runtime` holds what every part of the loop uses: the settings, the state (persisted with :meth:`_put`
before each step it prepares), the Canvas client behind a health gate (a fault closes the gate for a backoff;
:meth:`_call` records faults and recoveries), feed holds, and the per-job log context. The in-flight steps
(flight.py) and the loop with detection (daemon.py) build on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sisdaemon import jobs, spool
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.config import FeedSettings, Settings, read_token
from sisdaemon.jobs import Job, Policy
from sisdaemon.state import History, State, StateStore
from sisdaemon.watcher import DropWatcher, SettleTracker

if TYPE_CHECKING:
    from sisdaemon.flight import UploadResult

log = structlog.get_logger("sisdaemon")


def sd_notify(message: str) -> None:
    """Send a message to systemd's notify socket (``$NOTIFY_SOCKET``), if there is one.

    The protocol is one datagram (sd_notify(3)); it is small enough not to need libsystemd.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


@dataclass
class Health:
    """The last fault of talking to Canvas, and when the next call may be made (seconds since the epoch)."""

    kind: FaultKind | None = None
    message: str = ""
    since: float | None = None
    count: int = 0
    retry_at: float = 0.0

    def as_dict(self) -> dict[str, Any] | None:
        if self.kind is None:
            return None
        return {"kind": str(self.kind), "message": self.message, "since": self.since, "count": self.count}


@dataclass
class FeedRuntime:
    settings: FeedSettings
    tracker: SettleTracker
    watcher: DropWatcher
    history: History
    next_rescan: float = 0.0
    next_scan: float = 0.0
    unreadable: set[str] = field(default_factory=set)
    missing_logged: bool = False
    backlog: bool = False  # the last scan left ready files unclaimed (feed full, Canvas down)
    next_settle: float | None = None  # when the next tracked file settles (seconds since the epoch)


class Runtime:
    """State, health and plumbing shared by the in-flight steps and the loop. ``clock`` returns seconds since the
    epoch (tests may inject one). ``only``: feed name -> names to take (``sisdaemon submit``), trusted as complete.
    ``on_event``: called with ("claimed" | "submitted" | "filed", job), for ``submit --wait``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        once: bool = False,
        max_wait: float = 3600.0,
        only: dict[str, set[str]] | None = None,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[str, Job], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.once = once
        self.max_wait = max_wait
        self.only = only
        self.clock = clock
        self.on_event = on_event
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.store = StateStore(settings.state_file)
        self.state = State()
        self.health = Health()
        self.feeds: dict[str, FeedRuntime] = {}
        self.results: queue.Queue[UploadResult] = queue.Queue()
        self.uploading: str | None = None
        self.own_user_id: int | None = None
        self._verified_at = float("-inf")
        self.iterations = 0  # loop turns, for tests that check the loop never spins
        # Whether a writer holds a file open (None: cannot tell, as on NFS); replaceable to play such a filesystem.
        self.writer_open: Callable[[int], bool | None] = self._writer_open
        self._lease_warned = False
        self.failed_files = 0
        self._config_stamp = self._stat_config()
        polling = settings.polling
        self.policy = Policy(
            interval=polling.interval_seconds,
            max_interval=polling.max_interval_seconds,
            queued_timeout=polling.queued_timeout_seconds,
            running_timeout=polling.running_timeout_seconds,
            resend_after=polling.resend_after_seconds,
            clock_skew=polling.clock_skew_seconds,
            initializing_dead=polling.initializing_dead_seconds,
            errors_csv_wait=polling.errors_csv_wait_seconds,
        )
        canvas = settings.canvas
        self.client = CanvasClient(
            canvas.base_url,
            canvas.account_id,
            lambda: read_token(canvas),
            timeout=canvas.timeout_seconds,
            upload_timeout=canvas.upload_timeout_seconds,
            verify=canvas.requests_verify,
            wait=self.stop_event.wait,
        )

    def _stat_config(self) -> tuple[int, int] | None:
        if self.config_path is None:
            return None
        try:
            result = os.stat(self.config_path)
        except OSError:
            return None
        return (result.st_mtime_ns, result.st_size)

    @contextlib.contextmanager
    def _bound(self, job: Job) -> Iterator[None]:
        values: dict[str, Any] = {"feed": job.feed, "job_id": job.job_id, "file": jobs.display_name(job.name)}
        if job.import_id is not None:
            values["import_id"] = job.import_id
        with structlog.contextvars.bound_contextvars(**values):
            yield

    def _save(self) -> None:
        self.store.save(self.state)

    def _put(self, job: Job) -> None:
        """Persist a changed job (the state file is written before the step it prepares)."""
        self.state.jobs[job.job_id] = job
        self._save()

    def _emit(self, name: str, job: Job) -> None:
        if self.on_event:
            self.on_event(name, job)

    def _writer_open(self, fd: int) -> bool | None:
        """:func:`spool.writer_open`, warning once when leases cannot tell (the check then does nothing)."""
        writing = spool.writer_open(fd)
        if writing is None and not self._lease_warned:
            self._lease_warned = True
            log.warning(
                "open_writer_check_unavailable",
                hint="cannot take a read lease on uploaded files (not their owner without CAP_LEASE, or NFS): "
                "settle_seconds alone decides when a file is whole; grant CAP_LEASE (see the systemd unit)",
            )
        return writing

    def _retry_later(self, job_id: str, error: str, when: float) -> None:
        """Put a job off until ``when`` with its error recorded for ``status`` (saved when the error is new)."""
        current = self.state.jobs.get(job_id)
        if current is not None:
            self.state.jobs[job_id] = dataclasses.replace(current, last_error=error, next_action_at=when)
            if current.last_error != error:
                with contextlib.suppress(OSError):  # the state folder itself may be the one that is full
                    self._save()

    def _gate_open(self, now: float) -> bool:
        return self.health.kind is None or now >= self.health.retry_at

    def _fault(self, error: CanvasError, now: float) -> None:
        """Record a fault of talking to Canvas and schedule the next try (backoff with jitter, capped)."""
        health = self.health
        new = health.kind is not error.kind or health.message != str(error)
        health.count = health.count + 1 if not new or health.kind is not None else 1
        if health.kind is None:
            health.since = now
        health.kind = error.kind
        health.message = str(error)
        if error.kind is FaultKind.CREDENTIAL:
            self.client.forget_token()  # the token file may be replaced before the next try
        delay = jobs.retry_delay(error.kind, health.count, self.policy, jitter=random.random())
        health.retry_at = now + delay
        event = {
            FaultKind.CREDENTIAL: "canvas_credential_fault",
            FaultKind.CONFIGURATION: "canvas_configuration_fault",
            FaultKind.THROTTLED: "canvas_throttled",
        }.get(error.kind, "canvas_unavailable")
        level = log.error if error.kind in (FaultKind.CREDENTIAL, FaultKind.CONFIGURATION) else log.warning
        level(event, error=str(error), retry_in_seconds=round(delay, 2), attempt=health.count)
        if new:
            sd_notify(f"STATUS=Canvas fault ({error.kind}): {error}")
            self.state.fault = health.as_dict()
            self._save()

    def _ok(self) -> None:
        if self.health.kind is not None:
            log.info("canvas_recovered", after_faults=self.health.count, fault=self.health.message)
            sd_notify("STATUS=watching drop folders")
        self.health = Health()
        if self.state.fault is not None:
            self.state.fault = None
            self._save()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call Canvas through the health gate. Raises CanvasError (recorded first)."""
        try:
            result = fn(*args)
        except CanvasError as error:
            if error.kind is not FaultKind.NOT_FOUND:
                self._fault(error, self.clock())
            raise
        self._ok()
        return result

    def _hold(self, feed: str, reason: str) -> None:
        if self.state.held.get(feed) != reason:
            self.state.held[feed] = reason
            log.error(
                "feed_held",
                feed=feed,
                reason=reason,
                hint="fix the configuration; the feed resumes when the config file changes or on SIGHUP",
            )
            self._save()

    def _canvas_ready(self, now: float) -> bool:
        """Whether files may be claimed: Canvas answered our token recently (one cheap GET, at most every
        ``interval`` seconds while there is work), and no fault is waiting out its backoff."""
        if not self._gate_open(now):
            return False
        if self.health.kind is None and now - self._verified_at < max(self.policy.max_interval, 1.0):
            return True
        try:
            me = self._call(self.client.check_access)
        except CanvasError:
            return False
        self.own_user_id = me.get("id")
        self._verified_at = now
        return True

    def _check_in_work(self, job: Job, now: float) -> None:
        """fstat the claimed file: a change since it settled, or a writer holding it open, means the writer is still
        at it; it settles again."""
        feed = self.feeds[job.feed].settings
        try:
            fd = spool.open_for_reading(feed.work_dir / job.work_name)
        except OSError as error:
            log.error("work_file_unreadable", error=str(error))
            return
        try:
            current = spool.fingerprint_of(os.fstat(fd))
            writing = self.writer_open(fd)
        finally:
            os.close(fd)
        updated = jobs.observe_in_work(job, current, now, feed.settle_seconds)
        if writing and updated.stable_since is None and job.stable_since is not None:
            updated = dataclasses.replace(updated, stable_since=now)  # settled in size, but still being written
        if updated != job:
            if updated.stable_since is not None and job.stable_since is None:
                log.warning("file_changed_after_claim", size=current.size)
            self._put(updated)
