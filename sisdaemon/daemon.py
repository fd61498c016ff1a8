"""The loop that ties detection, the job core, the spool and Canvas together; signals; systemd notify.

Only this loop changes a job. Each change is persisted to the state file before the step it announces is taken
(DESIGN.md "Crash protocol"): before the rename out of drop/, before the POST, before the final move. Uploads run
in a worker thread (one POST per account at a time), so a long upload never holds up the polling of other imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import jobs, spool
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind, unapplied_options
from sisdaemon.config import FeedSettings, Settings, load_config, read_token
from sisdaemon.jobs import AbortReason, Job, JobState, Policy
from sisdaemon.state import (
    History,
    State,
    StateStore,
    account_lock_path,
    history_path,
    known_import_ids,
    locks,
    state_lock_path,
)
from sisdaemon.watcher import DropWatcher, ReadyFile, SettleTracker, scan

log = structlog.get_logger("sisdaemon")

EXIT_OK = 0
EXIT_FAILED_FILES = 1
EXIT_GAVE_UP = 3
#: Seconds between a wake-up event and the scan it triggers (events come in bursts while a file is written).
DEBOUNCE = 0.2


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
class UploadResult:
    """What the upload worker reports: ``kind`` is "created", "error" or "changed"."""

    job_id: str
    kind: str
    sis_import: dict[str, Any] | None = None
    error: CanvasError | None = None
    changed_after: bool = False
    sha256: str | None = None
    fingerprint: jobs.Fingerprint | None = None
    ended_at: float = 0.0


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


class Daemon:
    """One daemon for one config: ``run()`` until stopped (or, with ``once``, until the drop folders are empty
    and every job is filed). ``clock`` returns seconds since the epoch; tests may inject one.

    ``only``: feed name -> set of names; when given, only those names are taken (``sisdaemon submit``), and they
    are trusted as complete (no settle wait).
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
        self.failed_files = 0
        self.done_files = 0
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

    # --- life cycle --------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: warm stop (state is always safe to stop at); a second one exits at once. SIGHUP: re-read
        the config (clears holds)."""

        def stop(signum: int, frame: object) -> None:
            if self.stop_event.is_set():
                os._exit(128 + signum)
            self.request_stop()

        def hup(signum: int, frame: object) -> None:
            self._config_stamp = None
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def run(self) -> int:
        """Take the locks, recover, and loop. Returns the exit code (see cli.py). Raises LockHeld."""
        account_id = self._resolve_account()
        if account_id is None:
            return EXIT_GAVE_UP
        lock_paths = [
            state_lock_path(self.settings.state_file),
            account_lock_path(self.settings.lock_dir, self.settings.canvas.host, account_id),
        ]
        with locks(*lock_paths):
            self.state = self.store.load()
            self.state.account_id = account_id
            for feed in self.settings.feeds:
                self.feeds[feed.name] = FeedRuntime(
                    feed,
                    SettleTracker(feed.settle_seconds, feed.empty_grace_seconds),
                    DropWatcher(feed.drop_dir, self.wake, mode=feed.watch, poll_seconds=min(feed.rescan_seconds, 5)),
                    History(history_path(self.settings.state_file, feed.name)),
                )
            try:
                self.recover()
                sd_notify("READY=1\nSTATUS=watching drop folders")
                log.info(
                    "daemon_started",
                    account_id=account_id,
                    feeds=[f.name for f in self.settings.feeds],
                    jobs=len(self.state.jobs),
                    once=self.once,
                )
                return self._loop()
            finally:
                sd_notify("STOPPING=1")
                for runtime in self.feeds.values():
                    runtime.watcher.stop()
                self.client.close()

    def _resolve_account(self) -> int | None:
        ref = self.settings.canvas.account_id
        if ref.isdigit():
            return int(ref)
        deadline = self.clock() + self.max_wait
        delay = self.policy.interval
        while not self.stop_event.is_set():
            try:
                return self.client.resolve_account()
            except CanvasError as error:
                log.error("account_not_resolved", account=ref, error=str(error), kind=str(error.kind))
            if self.once and self.clock() >= deadline:
                return None
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.policy.max_interval)
        return None

    def _loop(self) -> int:
        started = self.clock()
        woke = False
        while not self.stop_event.is_set():
            self.iterations += 1
            now = self.clock()
            self._check_config(now)
            self._drain_results(now)
            self._scan_feeds(now, woke)
            for job in sorted(self.state.jobs.values(), key=lambda item: item.claimed_at):
                if self.stop_event.is_set():
                    break
                if job.job_id in self.state.jobs:
                    with self._bound(job):
                        self._step(self.state.jobs[job.job_id], self.clock())
            if "WATCHDOG_USEC" in os.environ:
                sd_notify("WATCHDOG=1")
            if self.once and self._idle():
                return EXIT_FAILED_FILES if self.failed_files else EXIT_OK
            if self.once and self.clock() - started > self.max_wait:
                log.error(
                    "gave_up",
                    waited_seconds=round(self.clock() - started),
                    jobs=len(self.state.jobs),
                    fault=self.health.as_dict(),
                    held=self.state.held,
                )
                return EXIT_GAVE_UP
            woke = self.wake.wait(self._sleep_time(self.clock()))
            self.wake.clear()
        return EXIT_FAILED_FILES if self.once and self.failed_files else EXIT_OK

    def _idle(self) -> bool:
        """Nothing in flight and nothing left in the drop folders (or, for `submit`, every named file taken)."""
        if self.state.jobs or self.uploading is not None or not self.results.empty():
            return False
        if self.only is not None:
            return not any(self.only.values())
        return all(len(runtime.tracker) == 0 for runtime in self.feeds.values())

    def _sleep_time(self, now: float) -> float:
        """Seconds until something is due: a scan, a settle deadline, a job's next action, the end of a backoff.
        Work that waits on something else (an upload in progress, a closed gate, a full feed) never makes the
        loop spin: it is woken by that thing instead."""
        times = [self.health.retry_at] if self.health.kind else []
        for runtime in self.feeds.values():
            times.append(runtime.next_rescan)
            if runtime.next_scan:
                times.append(runtime.next_scan)
            if runtime.next_settle is not None:
                times.append(runtime.next_settle + 0.01)
        sending = self.uploading is not None or any(j.state is JobState.SUBMITTING for j in self.state.jobs.values())
        for job in self.state.jobs.values():
            if job.job_id == self.uploading:
                continue  # its worker wakes the loop when the upload ends
            if job.state is JobState.CLAIMED:
                if job.stable_since is not None:
                    times.append(now + min(self.feeds[job.feed].settings.settle_seconds / 4, 1.0))
                    continue
                if sending or job.feed in self.state.held:
                    continue
            when = job.next_action_at
            if self.health.kind is not None and job.state is not JobState.FINISHING:
                when = max(when, self.health.retry_at)
            times.append(when)
        soonest = min(times) if times else now + 1
        return min(max(soonest - now, 0.01), 1.0 if self.once else 5.0)

    @contextlib.contextmanager
    def _bound(self, job: Job) -> Iterator[None]:
        values: dict[str, Any] = {"feed": job.feed, "job_id": job.job_id, "file": job.name}
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

    # --- config changes ------------------------------------------------------------------------------------------

    def _stat_config(self) -> tuple[int, int] | None:
        if self.config_path is None:
            return None
        try:
            result = os.stat(self.config_path)
        except OSError:
            return None
        return (result.st_mtime_ns, result.st_size)

    def _check_config(self, now: float) -> None:
        """A changed config (or SIGHUP) clears the holds of configuration faults and applies new import options."""
        if self.config_path is None:
            return
        stamp = self._stat_config()
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            settings = load_config(self.config_path)
        except Exception as error:  # a bad edit: keep running on the old settings
            log.error("config_reload_failed", error=str(error))
            return
        new_feeds = {feed.name: feed for feed in settings.feeds}
        for name, runtime in self.feeds.items():
            if name in new_feeds:  # new import options apply at once; other changes need a restart
                runtime.settings = runtime.settings.model_copy(update={"import_": new_feeds[name].import_})
        if self.state.held:
            log.info("feeds_released", feeds=sorted(self.state.held), reason="configuration changed")
            self.state.held.clear()
        if self.health.kind in (FaultKind.CONFIGURATION, FaultKind.CREDENTIAL):
            self.health.retry_at = now
        self._save()

    # --- Canvas calls and health --------------------------------------------------------------------------------

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
        if error.kind in (FaultKind.CREDENTIAL, FaultKind.CONFIGURATION):
            delay = max(self.policy.max_interval, self.policy.interval)
            if error.kind is FaultKind.CREDENTIAL:
                self.client.forget_token()
        else:
            delay = min(self.policy.interval * 2 ** min(health.count, 20), self.policy.max_interval)
            delay *= random.uniform(0.5, 1.0)
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

    # --- start-up recovery ------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Reconcile the state file with the folders after a stop or a crash (a named code path, as rq does).

        claimed: finish an interrupted rename out of drop/. submitting: the POST's answer is unknown; look for the
        import. finishing: finish writing the sidecar and the move. Jobs of feeds no longer configured are kept and
        reported.
        """
        now = self.clock()
        for job in list(self.state.jobs.values()):
            runtime = self.feeds.get(job.feed)
            with self._bound(job):
                if runtime is None:
                    log.error("job_of_unknown_feed", hint="restore the feed in the config to finish this job")
                    continue
                feed = runtime.settings
                work = feed.work_dir / job.work_name
                if job.state is JobState.CLAIMED and not os.path.lexists(work):
                    source = feed.drop_dir / job.name
                    try:
                        same = os.lstat(source).st_ino == job.fingerprint.ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        spool.move_durably(source, work)
                        log.info("claim_completed", reason="recovery")
                    else:
                        log.error("claimed_file_missing", path=str(work))
                        del self.state.jobs[job.job_id]
                        continue
                if job.state is JobState.SUBMITTING and not job.outcome_unknown:
                    job = jobs.post_unknown(job, "stopped while the POST was in the air", now=now)
                    log.warning("post_outcome_unknown", reason="recovery")
                self.state.jobs[job.job_id] = job
                if job.import_id is not None:
                    runtime.history.note_import(job.import_id)
        self._save()

    # --- detection and claiming -------------------------------------------------------------------------------------

    def _scan_feeds(self, now: float, woke: bool) -> None:
        """Scan each drop folder when due: a wake-up (debounced), the periodic rescan, a file due to settle, or
        ready files left over that may now be claimed."""
        for runtime in self.feeds.values():
            if woke and not runtime.next_scan:
                runtime.next_scan = now + DEBOUNCE
            due = (
                now >= runtime.next_rescan
                or (runtime.next_scan and now >= runtime.next_scan)
                or (runtime.next_settle is not None and now >= runtime.next_settle)
                or (runtime.backlog and self._may_claim(runtime, now))
            )
            if not due:
                continue
            runtime.next_scan = 0.0
            if now >= runtime.next_rescan:
                runtime.next_rescan = now + runtime.settings.rescan_seconds
            self._scan_feed(runtime, now)

    def _scan_feed(self, runtime: FeedRuntime, now: float) -> None:
        feed = runtime.settings
        if not runtime.watcher.ensure_watching():
            if not runtime.missing_logged:
                log.error("drop_dir_missing", feed=feed.name, path=str(feed.drop_dir))
                runtime.missing_logged = True
            return
        runtime.missing_logged = False
        try:
            observations = scan(feed.drop_dir, feed.patterns)
        except OSError as error:
            log.error("scan_failed", feed=feed.name, error=str(error))
            return
        wanted = (self.only or {}).get(feed.name) if self.only is not None else None
        if self.only is not None:
            observations = {name: seen for name, seen in observations.items() if wanted and name in wanted}
        ready = runtime.tracker.update(observations, now)
        runtime.next_settle = runtime.tracker.next_due(now)
        if wanted:
            # Files handed over by `sisdaemon submit` were written completely before their rename: no settle wait.
            ready = [
                ReadyFile(seen.name, seen.fingerprint, seen.regular, seen.kind, now) for seen in observations.values()
            ]
        runtime.backlog = bool(ready)
        if ready and not self._canvas_ready(now):
            return  # Canvas refuses us or is down: every file stays in drop/
        for index, item in enumerate(ready):
            if not self._may_claim(runtime, now):
                break
            self._claim(runtime, item, now)
            runtime.backlog = index + 1 < len(ready)

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

    def _may_claim(self, runtime: FeedRuntime, now: float) -> bool:
        feed = runtime.settings
        in_flight = sum(1 for job in self.state.jobs.values() if job.feed == feed.name)
        return in_flight < feed.max_in_flight and feed.name not in self.state.held and self._gate_open(now)

    def _claim(self, runtime: FeedRuntime, item: ReadyFile, now: float) -> None:
        feed = runtime.settings
        source = feed.drop_dir / item.name
        if item.regular:
            try:
                fd = spool.open_for_reading(source)
            except PermissionError:
                if item.name not in runtime.unreadable:
                    runtime.unreadable.add(item.name)
                    log.error(
                        "file_unreadable",
                        feed=feed.name,
                        file=item.name,
                        hint="left in the drop folder; taken once the daemon can read it",
                    )
                return
            except OSError:
                return  # gone or replaced since the scan; the next scan sees it
            os.close(fd)
            runtime.unreadable.discard(item.name)
        job = jobs.claim(secrets.token_hex(5), feed.name, item.name, item.fingerprint, seen_at=item.seen_at, now=now)
        with self._bound(job):
            self._put(job)
            target = feed.work_dir / job.work_name
            try:
                spool.move_durably(source, target)
            except OSError as error:
                del self.state.jobs[job.job_id]
                self._save()
                if not isinstance(error, FileNotFoundError):  # gone since the scan: nothing to say
                    log.error("claim_failed", error=str(error), hint="the file stays in the drop folder")
                return
            runtime.tracker.forget(item.name)
            if self.only is not None and item.name in self.only.get(feed.name, set()):
                self.only[feed.name].discard(item.name)
            log.info("file_claimed", size=item.fingerprint.size, kind=item.kind)
            self._emit("claimed", job)
            if not item.regular:
                job = jobs.reject(job, "not_regular_file", f"not a regular file ({item.kind}); moved as it is", now=now)
                self._put(job)
                return
            if item.fingerprint.size == 0:
                job = jobs.reject(job, "empty_file", "the file stayed empty (0 bytes) for the grace period", now=now)
                self._put(job)
                return
            self._check_in_work(job, now)

    def _check_in_work(self, job: Job, now: float) -> None:
        """fstat the claimed file: a change since it settled means a writer is still at it; settle again."""
        feed = self.feeds[job.feed].settings
        try:
            fd = spool.open_for_reading(feed.work_dir / job.work_name)
        except OSError as error:
            log.error("work_file_unreadable", error=str(error))
            return
        try:
            current = spool.fingerprint_of(os.fstat(fd))
        finally:
            os.close(fd)
        updated = jobs.observe_in_work(job, current, now, feed.settle_seconds)
        if updated != job:
            if updated.stable_since is not None and job.stable_since is None:
                log.warning("file_changed_after_claim", size=current.size)
            self._put(updated)

    # --- one job's step -------------------------------------------------------------------------------------------

    def _step(self, job: Job, now: float) -> None:
        """One step of one job. A fault never escapes: Canvas faults wait out their backoff; a file-system error
        or a bug is logged and the job is tried again later, so one bad job never stops the others."""
        try:
            if job.state is JobState.FINISHING:
                if job.next_action_at <= now:
                    self._finish_step(job, now)
                return
            if job.next_action_at > now or not self._gate_open(now):
                if job.state is JobState.CLAIMED and job.stable_since is not None:
                    self._check_in_work(job, now)
                return
            if job.state is JobState.CLAIMED:
                self._claimed_step(job, now)
            elif job.state is JobState.SUBMITTING:
                self._submitting_step(job, now)
            elif job.state is JobState.SUBMITTED:
                self._submitted_step(job, now)
        except CanvasError as error:
            self._retry_later(job.job_id, str(error), max(self.health.retry_at, now + self.policy.interval))
        except Exception as error:  # an OSError (disk full, a folder gone) or a bug: keep the job, try later
            log.exception("job_step_failed", error=f"{type(error).__name__}: {error}")
            self._retry_later(job.job_id, f"{type(error).__name__}: {error}", now + self.policy.max_interval)

    def _retry_later(self, job_id: str, error: str, when: float) -> None:
        current = self.state.jobs.get(job_id)
        if current is not None:
            self.state.jobs[job_id] = dataclasses.replace(current, last_error=error, next_action_at=when)

    def _claimed_step(self, job: Job, now: float) -> None:
        if job.stable_since is not None:
            self._check_in_work(job, now)
            return
        if self.uploading is not None or job.feed in self.state.held:
            return
        if any(other.state is JobState.SUBMITTING for other in self.state.jobs.values()):
            return  # one POST of unknown outcome per account at a time
        if not self._canvas_ready(now):  # a cheap GET: a refused token never costs a large upload
            return
        feed = self.feeds[job.feed].settings
        options = feed.import_.set_options()
        tag = None
        if "diff_row_count_threshold" not in options and self.state.tags_echoed is not False:
            tag = jobs.TAG_BASE + secrets.randbits(30)
        if not job.zip_members:
            job = dataclasses.replace(job, zip_members=spool.zip_csv_members(feed.work_dir / job.work_name))
        job = jobs.begin_attempt(job, tag=tag, intent_at=self.client.server_now_iso(), now=now)
        self._put(job)  # the intent is recorded before the POST
        fields = list(feed.import_.form_fields())
        if tag is not None:
            fields.append(("diff_row_count_threshold", str(tag)))
        self.uploading = job.job_id
        log.info("upload_started", attempt=job.attempts, size=job.size)
        worker = threading.Thread(target=self._upload, args=(job, fields), name=f"upload-{job.job_id}", daemon=True)
        worker.start()

    def _upload(self, job: Job, fields: list[tuple[str, str]]) -> None:
        """Worker thread: check the file, hash it, POST it, check it again. Reports through ``self.results``."""
        feed = self.feeds[job.feed].settings
        result = UploadResult(job.job_id, "error")
        try:
            fd = spool.open_for_reading(feed.work_dir / job.work_name)
        except OSError as error:
            result.error = CanvasError(FaultKind.TRANSIENT, f"cannot open the claimed file: {error.strerror}")
            self.results.put(result)
            self.wake.set()
            return
        try:
            before = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            if before != job.fingerprint:
                result.kind, result.fingerprint = "changed", before
                return
            result.sha256 = spool.sha256_of_fd(fd)
            filename = spool.upload_filename(job.job_id, job.name, spool.sniff_extension(fd))
            try:
                result.sis_import = self.client.create_sis_import(fd, filename, fields)
                result.kind = "created"
            except CanvasError as error:
                result.error = error
            after = spool.fingerprint_of(os.fstat(fd)).without_ctime()
            result.changed_after = after != before
            result.fingerprint = after
        finally:
            os.close(fd)
            result.ended_at = self.clock()
            self.results.put(result)
            self.wake.set()

    def _drain_results(self, now: float) -> None:
        while True:
            try:
                result = self.results.get_nowait()
            except queue.Empty:
                return
            self.uploading = None
            job = self.state.jobs.get(result.job_id)
            if job is None:
                continue
            with self._bound(job):
                self._apply_upload(job, result, now)

    def _apply_upload(self, job: Job, result: UploadResult, now: float) -> None:
        if result.sha256:
            job = dataclasses.replace(job, sha256=result.sha256)
        if result.kind == "changed":
            assert result.fingerprint is not None
            job = jobs.post_refused(job, "file changed before upload", retry_at=now)
            job = jobs.observe_in_work(job, result.fingerprint, now, self.feeds[job.feed].settings.settle_seconds)
            log.warning("file_changed_before_upload")
            self._put(job)
            return
        if result.kind == "created" and result.sis_import is not None:
            self._ok()
            job = jobs.upload_ended(job, now=result.ended_at)
            self._adopt(job, result.sis_import, now, how="created")
            job = self.state.jobs[job.job_id]
            if result.changed_after and job.state is JobState.SUBMITTED:
                log.warning("file_changed_during_upload", hint="aborting the import; the file settles again")
                self._put(jobs.request_abort(job, AbortReason.FILE_CHANGED, now=now))
            return
        error = result.error
        assert error is not None
        self._fault(error, now)
        if error.created_nothing:
            job = jobs.post_refused(job, str(error), retry_at=max(self.health.retry_at, now))
            log.warning("post_refused", error=str(error), kind=str(error.kind), status=error.status)
            if error.kind is FaultKind.CONFIGURATION:
                self._hold(job.feed, str(error))
        else:
            job = jobs.post_unknown(job, str(error), now=result.ended_at)
            log.warning(
                "post_outcome_unknown",
                error=str(error),
                status=error.status,
                hint="looking for the import before sending again",
            )
        self._put(job)

    def _adopt(self, job: Job, sis_import: dict[str, Any], now: float, *, how: str, provisional: bool = False) -> None:
        """The import is ours: record it (state and ledger), check Canvas applied every option."""
        if provisional:
            job = jobs.adopt_provisionally(job, sis_import, now=now, interval=self.policy.interval)
        else:
            job = jobs.post_created(job, sis_import, now=now, interval=self.policy.interval)
        if job.tag is not None and how == "created":
            echoed = sis_import.get("diff_row_count_threshold") == job.tag
            if self.state.tags_echoed is not echoed:
                self.state.tags_echoed = echoed
                log.info("canvas_tag_support", echoes_tags=echoed)
        runtime = self.feeds[job.feed]
        runtime.history.note_import(job.import_id or 0)
        self._put(job)
        runtime.history.save()
        with structlog.contextvars.bound_contextvars(import_id=job.import_id):
            log.info("import_submitted", how=how, workflow_state=job.workflow_state, provisional=provisional)
            self._emit("submitted", job)
            options = dict(runtime.settings.import_.set_options())
            if job.tag is not None and self.state.tags_echoed:
                options["diff_row_count_threshold"] = job.tag
            missing = unapplied_options(options, sis_import)
            if missing:
                reason = f"Canvas did not apply option(s) {', '.join(missing)}"
                self._hold(job.feed, reason)
                self._put(jobs.request_abort(job, AbortReason.OPTION_NOT_APPLIED, now=now))

    def _submitting_step(self, job: Job, now: float) -> None:
        if self.uploading == job.job_id:
            return
        if not job.outcome_unknown:
            self._put(jobs.post_unknown(job, "no upload running", now=now))
            return
        since = jobs.parse_time(job.first_intent_at or job.intent_at)
        since_iso = jobs.iso((since or now) - self.policy.clock_skew)
        me = self._call(self.client.get_self)
        self.own_user_id = me.get("id")
        listing = list(self._call(lambda: list(self.client.list_sis_imports(since_iso))))
        known = known_import_ids([rt.history for rt in self.feeds.values()], self.state)
        candidates = jobs.own_candidates(listing, own_user_id=self.own_user_id, known_ids=known)
        decision = jobs.decide_lost_import(
            job,
            candidates,
            server_now=self.client.server_now(),
            now=now,
            policy=self.policy,
            tags_echoed=self.state.tags_echoed is not False,
        )
        self._abort_late(job, decision.late_originals)
        if decision.action in ("adopt", "adopt_provisionally") and decision.sis_import is not None:
            log.info("lost_import_found", import_id=decision.sis_import.get("id"), reason=decision.reason)
            self._adopt(
                job, dict(decision.sis_import), now, how="found", provisional=decision.action == "adopt_provisionally"
            )
            return
        if decision.action == "resend":
            log.warning("post_resend", reason=decision.reason, attempt=job.attempts + 1)
            self._put(jobs.resend(job, now=now))
            return
        if decision.action == "ambiguous":
            log.error("lost_import_ambiguous", reason=decision.reason, hint="the file is held; see `sisdaemon status`")
        self._put(
            jobs.after_listing(
                job, decision, now=now, interval=min(max(self.policy.interval, 1.0), self.policy.max_interval)
            )
        )

    def _abort_late(self, job: Job, late: tuple[Any, ...]) -> None:
        """Abort earlier attempts of ``job`` that turned up after it was sent again, while they are still queued."""
        history = self.feeds[job.feed].history
        for item in late:
            if item.get("workflow_state") in ("created", "initializing"):
                result = self._call(self.client.abort_sis_import, int(item["id"]))
                log.warning(
                    "late_original_aborted",
                    late_import_id=item.get("id"),
                    workflow_state=(result or {}).get("workflow_state"),
                )
            else:
                log.error(
                    "late_original_running",
                    late_import_id=item.get("id"),
                    workflow_state=item.get("workflow_state"),
                    hint="an earlier attempt of this file was imported too; check it in Canvas",
                )
            history.note_import(int(item["id"]))
            history.save()

    def _submitted_step(self, job: Job, now: float) -> None:
        assert job.import_id is not None
        if job.abort_reason is not None and job.workflow_state not in jobs.TERMINAL_STATES:
            result = self._call(self.client.abort_sis_import, job.import_id)
            log.warning(
                "import_abort_requested",
                reason=str(job.abort_reason),
                answered=(result or {}).get("workflow_state", "404"),
            )
        sis_import = self._call(self.client.get_sis_import, job.import_id)
        previous = job.workflow_state
        job, decision = jobs.on_poll(job, sis_import, now=now, server_now=self.client.server_now(), policy=self.policy)
        if job.workflow_state != previous:
            log.info("import_progress", workflow_state=job.workflow_state, progress=job.progress)
        if decision.action == "finish":
            job = jobs.finish(job, now=now, policy=self.policy)
            log.info("import_finished", workflow_state=job.workflow_state, outcome=str(job.outcome))
            self._put(job)
            self._finish_step(job, now)
            return
        if decision.action == "abort":
            job = dataclasses.replace(job, next_action_at=now)
            log.warning("import_timed_out", reason=decision.reason)
        elif decision.action in ("resend", "release"):
            settle = job.abort_reason is AbortReason.FILE_CHANGED
            log.warning("import_will_not_apply", reason=decision.reason)
            job = jobs.back_to_claimed(job, decision.reason, now=now, settle_again=settle)
        self._put(job)

    # --- finishing -------------------------------------------------------------------------------------------------

    def _finish_step(self, job: Job, now: float) -> None:
        runtime = self.feeds[job.feed]
        feed = runtime.settings
        folder = feed.done_dir if job.folder == "done" else feed.failed_dir
        if job.errors_csv is None and job.errors_csv_deadline is not None and job.import_id is not None:
            if not self._fetch_errors_csv(job, folder, now):
                return
            job = self.state.jobs[job.job_id]
        source = feed.work_dir / job.work_name
        target = folder / job.work_name
        if os.path.lexists(source):
            spool.write_sidecar(
                folder,
                job.work_name,
                spool.build_sidecar(job, base_url=self.settings.canvas.base_url, account_id=self.state.account_id),
            )
            spool.move_durably(source, target)
        elif not os.path.lexists(target):
            log.error("finished_file_missing", path=str(source))
        record = {
            "job_id": job.job_id,
            "file": job.name,
            "work_name": job.work_name,
            "import_id": job.import_id,
            "outcome": str(job.outcome),
            "folder": job.folder,
            "finished_at": job.finished_at,
            "sha256": job.sha256,
            "size": job.size,
            "reason_code": job.reason_code,
        }
        counts = ((job.sis_import or {}).get("data") or {}).get("counts")
        runtime.history.add(record, counts, success=job.folder == "done")
        runtime.history.save()
        del self.state.jobs[job.job_id]
        self._save()
        if job.folder == "done":
            self.done_files += 1
        else:
            self.failed_files += 1
        log.info(
            "file_filed", folder=job.folder, outcome=str(job.outcome), reason_code=job.reason_code, path=str(target)
        )
        self._emit("filed", job)

    def _fetch_errors_csv(self, job: Job, folder: Path, now: float) -> bool:
        """Download the errors CSV beside the sidecar, waiting a bounded time for Canvas to write it.

        Returns True when finishing can go on (saved, or given up), False to come back later.
        """
        assert job.import_id is not None
        attachment = (job.sis_import or {}).get("errors_attachment") or {}
        url = attachment.get("url")
        if url:
            name = spool.errors_csv_name(job.work_name)
            try:
                self._call(self.client.download, url, folder / name)
            except CanvasError as error:
                if job.errors_csv_deadline is not None and now < job.errors_csv_deadline:
                    self.state.jobs[job.job_id] = dataclasses.replace(job, next_action_at=now + self.policy.interval)
                    return False
                log.warning("errors_csv_not_saved", error=str(error))
                self._put(
                    dataclasses.replace(
                        job, errors_csv_deadline=None, notes=(*job.notes, f"errors CSV not saved: {error}")
                    )
                )
                return True
            self._put(dataclasses.replace(job, errors_csv=name))
            log.info("errors_csv_saved", name=name)
            return True
        if job.errors_csv_deadline is not None and now < job.errors_csv_deadline:
            if job.next_action_at > now:
                return False
            try:
                sis_import = self._call(self.client.get_sis_import, job.import_id)
            except CanvasError:
                return False
            interval = min(max(self.policy.interval, 0.2), 5.0)
            self.state.jobs[job.job_id] = dataclasses.replace(job, sis_import=sis_import, next_action_at=now + interval)
            return bool(sis_import.get("errors_attachment")) and self._fetch_errors_csv(
                self.state.jobs[job.job_id], folder, now
            )
        log.warning("errors_csv_not_written", waited_seconds=self.policy.errors_csv_wait)
        self._put(
            dataclasses.replace(job, errors_csv_deadline=None, notes=(*job.notes, "Canvas wrote no errors CSV in time"))
        )
        return True
