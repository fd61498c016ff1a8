"""The daemon: the loop that composes the parts, with signals, config reloads and systemd notify.

The parts (docs/design.md "The parts"): the ledger (ledger.py) is the only writer of the state and history files;
the gate (gate.py) stands in front of Canvas; the intake (intake.py) scans, settles and claims; the flight (flight.py)
takes each claimed job through Canvas, with uploads in the upload worker (upload.py); recovery (recovery.py)
reconciles the state with the folders at start. This module builds them, passes each what it needs, and turns the
loop: wake-ups, scans, job steps, watchdog pings, signals and reloads.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import control, spool
from sisdaemon.canvas import CanvasClient, CanvasError, FaultKind
from sisdaemon.clock import DaemonClock
from sisdaemon.config import (
    CanvasSettings,
    ConfigError,
    ConfigFile,
    FeedSettings,
    LogSettings,
    Settings,
    TokenError,
    check_runtime,
    read_config_file,
    read_token,
    settings_from,
)
from sisdaemon.drift import RunningConfig
from sisdaemon.flight import Flight
from sisdaemon.gate import Gate
from sisdaemon.hooks import Hooks, plan_hook
from sisdaemon.intake import Intake
from sisdaemon.jobs import Job, iso
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions, remember_secret
from sisdaemon.monitor import Monitor
from sisdaemon.notify import sd_notify
from sisdaemon.operations import Operations
from sisdaemon.recovery import recover
from sisdaemon.reload import plan_reload
from sisdaemon.state import (
    account_lock_path,
    account_uuid_lock_path,
    locks,
    owned_by_state,
    remove_stale_temp_files,
    state_lock_path,
)
from sisdaemon.upload import Uploader
from sisdaemon.watcher import DropWatcher
from sisdaemon.worker import FlightWorker
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")

EXIT_OK = 0
EXIT_FAILED_FILES = 1
EXIT_GAVE_UP = 3


def token_source(canvas: CanvasSettings) -> Callable[[], str]:
    """The client's token provider: reads the token afresh (:func:`~sisdaemon.config.read_token`), adds it to the
    secrets no log line shows, and turns a token that cannot be read at run time (a file missing mid-rotation,
    empty, unreadable) into a credential fault, so files wait and the daemon picks the token up when it appears.

    The provider raises CanvasError (kind CREDENTIAL) naming the config key and the file or variable.
    """

    def read() -> str:
        try:
            token = read_token(canvas)
        except TokenError as error:
            raise CanvasError(FaultKind.CREDENTIAL, str(error)) from None
        remember_secret(token)
        return token

    return read


class Daemon:
    """One daemon for one config: :meth:`run` until stopped (or, with ``once``, until the drop folders are empty
    and every job is filed).

    ``config_path``: re-read on SIGHUP or when it changes; ``config_file``: the file as it was read for
    ``settings`` (its sha256 is what the daemon says it runs; default: read again here). ``max_wait``: seconds
    ``once`` waits at most. ``only``: feed name -> names to take (``sisdaemon submit``). ``clock``: the daemon's
    clock (:class:`~sisdaemon.clock.DaemonClock`: monotonic, so a wall-clock step changes no duration; tests inject
    one with a stepping wall).
    ``on_event``: called with ("claimed" | "submitted" | "filed", job), for ``submit --wait``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        config_file: ConfigFile | None = None,
        once: bool = False,
        max_wait: float = 3600.0,
        only: dict[str, set[str]] | None = None,
        clock: DaemonClock | None = None,
        on_event: Callable[[str, Job], None] | None = None,
        reconfigure_logging: Callable[[LogSettings], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.reconfigure_logging = reconfigure_logging
        self.once = once
        self.max_wait = max_wait
        self.clock = clock = clock or DaemonClock()
        self.stop_event = threading.Event()
        self.wake = threading.Event()  # the loop's: folder events, a verified token, a stop
        self.iterations = 0  # loop turns, for tests that check the loop never spins
        self.ready = threading.Event()  # set once the state lock is held and the state loaded (systemd's READY=1)
        if config_file is None and config_path is not None:
            try:
                config_file = read_config_file(config_path)
            except ConfigError:
                config_file = None
        self._config_stamp = config_file.stamp if config_file is not None else self._stat_config()
        #: feed name -> its current settings; shared with the intake and the flight, updated in place on reload.
        self.feeds: dict[str, FeedSettings] = {feed.name: feed for feed in settings.feeds}
        # The metrics and health (monitor.py): its metrics are every part's observer.
        self.monitor = Monitor(settings, self.feeds, clock)
        observer = self.monitor.metrics
        self._on_event = on_event
        on_event = self._event
        canvas = settings.canvas
        self.client = CanvasClient(
            canvas.base_url,
            canvas.account_id,
            token_source(canvas),
            timeout=canvas.timeout_seconds,
            upload_timeout=canvas.upload_timeout_seconds,
            verify=canvas.requests_verify,
            wait=self.stop_event.wait,
            observer=observer,
        )
        self.ledger = Ledger(settings.state_file)
        self.flight_wake = threading.Event()  # the flight worker's: a claim, an upload that ended, a reload
        self.conditions = conditions = Conditions()
        self.gate = Gate(
            self.client,
            self.ledger,
            settings.polling,
            notify=sd_notify,
            on_verification_wanted=self.flight_wake.set,
            conditions=conditions,
            to_wall=clock.to_wall,
            observer=observer,
        )
        self.writer_check = WriterCheck(
            conditions=conditions, report=lambda text: self.ledger.set_warning("writer_check", text)
        )
        self.flight = Flight(
            self.feeds,
            self.ledger,
            self.gate,
            self.client,
            Uploader(self.client, self.flight_wake, clock, observer),
            self.writer_check,
            settings.polling,
            base_url=canvas.base_url,
            to_wall=clock.to_wall,
            on_event=on_event,
            conditions=conditions,
            stopping=self.stop_event,
        )
        self.intake = Intake(
            self.feeds,
            self.ledger,
            self.gate,
            self.writer_check,
            self.wake,
            on_claimed=self._claimed,
            on_event=on_event,
            only=only,
            conditions=conditions,
            observer=observer,
            wake_flight=self.flight_wake.set,
        )

        self.worker = FlightWorker(
            self.flight, self.ledger, self.gate, wake=self.flight_wake, loop_wake=self.wake, clock=clock
        )
        # Operator commands (pause, resume, retry, abort) reach the running daemon as requests in the control folder
        # (control.py), applied in the loop's thread; a request written there wakes the loop, as a dropped file does.
        self.operations = Operations(self.feeds, self.ledger, on_claimed=self._claimed, on_changed=self._wake_all)
        self.control_watch = DropWatcher(control.control_dir(settings.state_file), self.wake)
        self.monitor.attach(ledger=self.ledger, gate=self.gate, intake=self.intake, worker=self.worker)
        self.hooks = Hooks(on_ran=observer.hook_ran)  # feeds' on_finished and on_failed, off the loop's threads
        #: What this daemon runs (drift.py), kept in the heartbeat file for `status` and `check`; None without a file.
        self.running_config: RunningConfig | None = None
        if config_path is not None and config_file is not None:
            self._ran(RunningConfig(os.path.abspath(config_path), config_file.sha256, clock()))

    def _wake_all(self) -> None:
        """An operator changed something both threads should see now (a resume, an abort)."""
        self.flight_wake.set()
        self.wake.set()

    def _event(self, name: str, job: Job) -> None:
        """A job was claimed, submitted or filed: tell the metrics, queue a filed file's hook, then tell the
        caller's ``on_event``."""
        self.monitor.metrics.job_event(name, job.feed, str(job.outcome) if job.outcome else None, job.folder)
        feed = self.feeds.get(job.feed)
        if name == "filed" and feed is not None and job.folder is not None:
            folder = feed.done_dir if job.folder == "done" else feed.failed_dir
            run = plan_hook(
                feed,
                job_id=job.job_id,
                outcome=str(job.outcome),
                folder=job.folder,
                sidecar=folder / spool.sidecar_name(job.work_name),
                base=os.environ,
            )
            if run is not None:
                self.hooks.submit(run)
        if self._on_event is not None:
            self._on_event(name, job)

    def _claimed(self, job: Job, now: float) -> None:
        """A file was claimed (the loop's thread): check it in work/, and wake the flight worker for it."""
        self.flight.check_in_work(job, now)
        self.flight_wake.set()

    # --- signals -------------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to stop at its next turn (a warm stop: the state is always safe to stop at). Only sets
        events, so a signal handler may call it; the stopper thread (:meth:`_stopper`) cancels the Canvas call in
        progress, so that a stop takes effect within a second or two whatever Canvas is doing."""
        self.stop_event.set()
        self.wake.set()
        self.flight_wake.set()

    def _stopper(self) -> None:
        """Thread: once a stop is requested, end the Canvas calls in progress (a slow answer, a long upload)."""
        self.stop_event.wait()
        self.client.cancel()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: warm stop; a second one exits at once. SIGHUP: re-read the config (clears holds)."""

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

    # --- start and stop ------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Take the state lock, resolve the account and take its locks, recover, and loop. Returns the exit code
        (see cli.py). Raises LockHeld (another daemon has the state or the account), StateError (a damaged state
        or history file) or OSError (a lock that cannot be made)."""
        threading.Thread(target=self._stopper, name="sisdaemon-stopper", daemon=True).start()
        with locks(state_lock_path(self.settings.state_file)), self.monitor.serving():
            state_file = self.settings.state_file
            for leftover in remove_stale_temp_files(state_file.parent, owned=owned_by_state(state_file)):
                log.info("stale_temp_file_removed", path=str(leftover), reason="an atomic write was interrupted")
            self.ledger.load(self.feeds)
            self.ledger.clear_warnings()
            released = self.ledger.release_holds()
            if released:  # a restart is a sysadmin's way to say "try again"
                log.info("feeds_released", feeds=released, reason="daemon started")
            for name, pause in sorted(self.ledger.state.paused.items()):  # a pause outlasts a restart: say so
                log.warning("feed_still_paused", feed=name, **pause, hint=f"sisdaemon resume {name} to take files")
            control.control_dir(state_file).mkdir(mode=0o700, exist_ok=True)
            control.remove_old_answers(state_file)
            # Ready as a service from here: looking the account up waits for Canvas if it is down at boot.
            self.ready.set()
            sd_notify("READY=1\nSTATUS=looking up the Canvas account")
            account = self._resolve_account()
            if account is None:
                return EXIT_GAVE_UP if self.once else EXIT_OK
            account_id = int(account["id"])
            self.ledger.set_account_id(account_id)
            # One daemon per account: by host and id, and by the account's uuid, which no host alias changes.
            lock_paths = [account_lock_path(self.settings.lock_dir, self.settings.canvas.host, account_id)]
            if account.get("uuid"):
                lock_paths.append(account_uuid_lock_path(self.settings.lock_dir, str(account["uuid"])))
            with locks(*lock_paths):
                try:
                    recover(self.ledger, self.feeds, self.settings, now=self.clock())
                    sd_notify("STATUS=watching drop folders")
                    log.info(
                        "daemon_started",
                        account_id=account_id,
                        feeds=list(self.feeds),
                        jobs=len(self.ledger.jobs()),
                        once=self.once,
                        **self._config_fields(),
                    )
                    self.worker.start()
                    self.hooks.start()
                    return self._loop()
                finally:
                    sd_notify("STOPPING=1")
                    self.stop_event.set()
                    self.client.cancel()
                    if not self.worker.stop():
                        log.error("flight_worker_did_not_stop", hint="a Canvas call did not end when cancelled")
                    self.ledger.flush()  # what the worker's last turn left for a write (Ledger.put_later)
                    self.intake.stop()
                    self.control_watch.stop()
                    if not self.hooks.stop():
                        log.error("hooks_did_not_stop", hint="a hook's output reader or a bug holds its worker")
                    self.client.close()
                    log.info("daemon_stopped", jobs_in_flight=len(self.ledger.jobs()))

    def _resolve_account(self) -> dict[str, Any] | None:
        """The configured account as Canvas shows it, asked until Canvas answers (with ``once``: until
        ``max_wait``). None when stopped or given up."""
        ref = self.settings.canvas.account_id
        deadline = self.clock() + self.max_wait
        key = ("account_not_resolved",)
        while not self.stop_event.is_set():
            try:
                account: dict[str, Any] = self.gate.call(self.clock(), self.client.resolve_account)
                self.conditions.end(key, "account_resolved", account=ref)
                return account
            except CanvasError as error:  # said when it starts and while it lasts; the gate journals each fault
                self.conditions.start(
                    key, "account_not_resolved", level="error", account=ref, error=str(error), kind=str(error.kind)
                )
            if self.once and self.clock() >= deadline:
                return None
            self.monitor.turned(self.clock())  # the loop waits for Canvas: it is not stuck
            if "WATCHDOG_USEC" in os.environ:
                sd_notify("WATCHDOG=1")  # alive, waiting for Canvas
            self.stop_event.wait(max(self.gate.health.retry_at - self.clock(), 0.05))
        return None

    # --- the loop ------------------------------------------------------------------------------------------------

    def _loop(self) -> int:
        started = self.clock()
        woke = False
        while not self.stop_event.is_set():
            self.iterations += 1
            now = self.clock()
            self._guarded(self._check_config, now)
            self._guarded(self._check_state_disk)
            self._guarded(self._take_requests, now)
            self._guarded(self.intake.scan_due, now, woke)
            self._guarded(self.monitor.turned, now)
            self._ping_watchdog()
            if self.once and self._idle():
                return self._once_result()
            if self.once and self.clock() - started > self.max_wait:
                log.error(
                    "gave_up",
                    waited_seconds=round(self.clock() - started),
                    jobs=len(self.ledger.jobs()),
                    fault=self.gate.health.as_dict(),
                    held=dict(self.ledger.state.held),
                )
                return EXIT_GAVE_UP
            woke = self.wake.wait(self._sleep_time(self.clock()))
            self.wake.clear()
        log.info("daemon_stopping", reason="stop requested (SIGTERM or SIGINT)", jobs_in_flight=len(self.ledger.jobs()))
        return EXIT_FAILED_FILES if self.once and self.flight.failed_files else EXIT_OK

    def _once_result(self) -> int:
        """``run --once``'s exit code once idle: 1 when a file went to failed/, 3 when a file it cannot read was left in
        drop/ (named in the journal; it never waits on one), else 0."""
        left = self.intake.unreadable()
        if left:
            log.error("files_left_unreadable", files=[f"{feed}/{name}" for feed, name in left], hint="fix their mode")
            return EXIT_GAVE_UP
        return EXIT_FAILED_FILES if self.flight.failed_files else EXIT_OK

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one of the loop's steps so that no error takes the daemon down: a file-system error (a full or
        failing disk) is logged once while it lasts, a bug with its traceback; the loop goes on either way."""
        try:
            step(*args)
        except OSError as error:
            message = f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
            self.conditions.start(("loop_step_failed", step.__name__), "filesystem_error", level="error", error=message)
        except Exception as error:
            log.exception("loop_step_failed", step=step.__name__, error=f"{type(error).__name__}: {error}")
        else:
            self.conditions.end(("loop_step_failed", step.__name__), "filesystem_recovered", step=step.__name__)

    def _take_requests(self, now: float) -> None:
        """Apply the operators' requests waiting in the control folder (control.py), oldest first, and answer each."""
        self.control_watch.ensure_watching()
        for path, request in control.pending(self.settings.state_file):
            if request is None:
                result = {"ok": False, "message": f"{path.name}: not a request this sisdaemon understands"}
            else:
                result = self.operations.apply(request, now)
            control.answer(path, result)

    def _check_state_disk(self) -> None:
        """While the state or a history cannot be written (a full or failing disk), no file is claimed: try the
        write again at each turn, and say when the fault starts and ends (journal and systemd STATUS)."""
        if self.ledger.write_fault is not None:
            self.ledger.try_save()
        fault = self.ledger.write_fault
        if fault is not None:
            if self.conditions.start(
                ("state_write_failed",),
                "state_write_failed",
                level="error",
                error=fault,
                hint="no file is claimed until the state folder can be written again; imports in flight go on",
            ):
                sd_notify(f"STATUS=cannot write the state: {fault}")
        elif self.conditions.end(("state_write_failed",), "state_write_recovered"):
            sd_notify("STATUS=watching drop folders")

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 while both threads turn: the loop (this call) and the flight worker, whose turns are bounded
        by the deadline of one Canvas call (or of an upload's answer, which runs in its own thread)."""
        if "WATCHDOG_USEC" not in os.environ:
            return
        stale_after = 3 * self.settings.canvas.timeout_seconds + 60
        if self.worker.alive() and time.monotonic() - self.worker.heartbeat < stale_after:
            sd_notify("WATCHDOG=1")
        else:
            self.conditions.start(
                ("flight_worker_stuck",),
                "flight_worker_stuck",
                level="error",
                hint="no Canvas step finished for too long; systemd's watchdog will restart us",
            )

    def _idle(self) -> bool:
        """Nothing in flight and nothing left in the drop folders (or, for `submit`, every named file taken)."""
        if self.ledger.jobs() or self.gate.uploading is not None or self.flight.uploader.pending():
            return False
        if not self.hooks.idle():  # `run --once` runs its files' hooks before it exits
            return False
        return self.intake.idle()

    def _sleep_time(self, now: float) -> float:
        """Seconds until the loop has something due: a scan, a settle deadline, the end of a backoff (files wait for
        it). Jobs are the flight worker's; the loop is woken by folder events, a verified token and a stop."""
        times = [self.gate.health.retry_at] if self.gate.health.kind else []
        times += self.intake.due_times()
        soonest = min(times) if times else now + 1
        return min(max(soonest - now, 0.01), 1.0 if self.once else 5.0)

    # --- reloads -------------------------------------------------------------------------------------------------

    def _stat_config(self) -> tuple[int, int] | None:
        if self.config_path is None:
            return None
        try:
            result = os.stat(self.config_path)
        except OSError:
            return None
        return (result.st_mtime_ns, result.st_size)

    def _ran(self, config: RunningConfig) -> None:
        """The daemon runs ``config`` from now on: kept for the heartbeat file (monitor.py)."""
        self.running_config = config
        self.monitor.record_config(config)

    def _config_fields(self) -> dict[str, Any]:
        """The journal's fields naming the config this daemon runs: ``config_file``, ``config_sha256``."""
        running = self.running_config
        return {} if running is None else {"config_file": running.path, "config_sha256": running.sha256}

    def _reload_failed(self, file: ConfigFile | None, **fields: Any) -> None:
        """A changed config that cannot be applied: said once for this change of the file (its stamp), at error,
        with the sha256 the daemon runs and the one on disk; the daemon keeps the version it runs."""
        running = self.running_config
        ran = f" loaded at {iso(running.loaded_at)} (sha256 {running.sha256[:12]})" if running else ""
        log.error(
            "config_reload_failed",
            **fields,
            **self._config_fields(),
            file_sha256=file.sha256 if file is not None else None,
            hint=f"still running on the previous configuration{ran}; the next start would fail until the file is "
            "fixed (sisdaemon check-config -c FILE names each problem)",
        )

    def _check_config(self, now: float) -> None:
        """A changed config (its mtime or size, or SIGHUP) clears the holds of configuration faults and applies
        what can change safely while running (reload.py); it says what waits for a restart, and which file (its
        sha256) the daemon runs from now on. A config that does not load, or whose new feeds' folders do not pass
        the start-up checks, changes nothing: said once for this change (``config_reload_failed``)."""
        if self.config_path is None:
            return
        stamp = self._stat_config()
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        file: ConfigFile | None = None
        try:
            file = read_config_file(self.config_path)
            self._config_stamp = file.stamp  # taken before the read: a write during it is seen at the next look
            settings = settings_from(file)
        except ConfigError as error:  # a bad edit: keep running on the old settings
            self._reload_failed(file, error=str(error))
            return
        except Exception as error:
            self._reload_failed(file, error=f"{type(error).__name__}: {error}")
            return
        plan = plan_reload(self.settings, self.feeds, settings, busy_feeds={job.feed for job in self.ledger.jobs()})
        if plan.added and (problems := check_runtime(settings, token=False)):
            self._reload_failed(file, problems=problems)
            return
        for name in plan.removed:
            self.intake.remove_feed(name)
        for name in plan.added:
            self.ledger.add_feed(name)
            self.monitor.metrics.add_feed(name)
        for name in list(self.feeds):
            if name not in plan.feeds:
                del self.feeds[name]
        self.feeds.update(plan.feeds)
        for name in plan.added:
            self.intake.add_feed(self.feeds[name])
        for name in self.feeds:
            self.intake.update_feed(self.feeds[name])
        if "polling" in plan.changed:
            self.gate.policy = self.flight.policy = self.flight.filer.policy = settings.polling
        if "log" in plan.changed and self.reconfigure_logging is not None:
            self.reconfigure_logging(settings.log)
        self.settings = self.settings.model_copy(update={"polling": settings.polling, "log": settings.log})
        self._ran(RunningConfig(os.path.abspath(self.config_path), file.sha256, now, plan.pending))
        log.info(
            "config_reloaded",
            **self._config_fields(),
            applied=list(plan.changed),
            feeds_added=list(plan.added),
            feeds_removed=list(plan.removed),
            unchanged_until_restart=list(plan.pending),
        )
        if plan.pending:
            log.warning("config_change_needs_restart", keys=list(plan.pending), hint="restart to apply these")
        released = self.ledger.release_holds()
        if released:
            log.info("feeds_released", feeds=released, reason="configuration changed")
        self.gate.retry_now(now)
        self.ledger.save()
        self.flight_wake.set()
