"""The loop that ties detection, the job core, the spool and Canvas together; signals; systemd notify.

Only this loop changes a job. Each change is persisted to the state file before the step it announces is taken
(docs/design.md "Crash protocol"): before the rename out of drop/, before the POST, before the final move. Uploads run
in a worker thread (one POST per account at a time), so a long upload never holds up the polling of other imports.
"""

from __future__ import annotations

import os
import secrets
import signal
from typing import Any

import structlog

from sisdaemon import jobs, spool
from sisdaemon.canvas import CanvasError, FaultKind
from sisdaemon.config import Settings, load_config
from sisdaemon.flight import InFlight
from sisdaemon.jobs import JobState
from sisdaemon.runtime import FeedRuntime, sd_notify
from sisdaemon.state import (
    History,
    account_lock_path,
    account_uuid_lock_path,
    history_path,
    locks,
    state_lock_path,
)
from sisdaemon.status import orphans_in_work
from sisdaemon.watcher import DropWatcher, ReadyFile, SettleTracker, scan

log = structlog.get_logger("sisdaemon")

EXIT_OK = 0
EXIT_FAILED_FILES = 1
EXIT_GAVE_UP = 3
#: Seconds between a wake-up event and the scan it triggers (events come in bursts while a file is written).
DEBOUNCE = 0.2


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The dotted keys that differ between two configs and apply only after a restart: everything but a feed's
    ``import`` options (pure)."""
    keys = [key for key in type(old).model_fields if key != "feeds" and getattr(old, key) != getattr(new, key)]
    old_feeds = {feed.name: feed for feed in old.feeds}
    new_feeds = {feed.name: feed for feed in new.feeds}
    for name in sorted(old_feeds.keys() | new_feeds.keys()):
        before, after = old_feeds.get(name), new_feeds.get(name)
        if before is None or after is None or before.model_copy(update={"import_": after.import_}) != after:
            keys.append(f"feeds[{name}]")
    return keys


class Daemon(InFlight):
    """One daemon for one config: ``run()`` until stopped (or, with ``once``, until the drop folders are empty
    and every job is filed). Detection, claiming, recovery, the loop, signals and config reloads live here.
    """

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
        """Take the state lock, resolve the account and take its locks, recover, and loop. Returns the exit code
        (see cli.py). Raises LockHeld (another daemon has the state or the account), StateError (a damaged state
        or history file) or OSError (a lock that cannot be made)."""
        with locks(state_lock_path(self.settings.state_file)):
            self.state = self.store.load()
            for feed in self.settings.feeds:
                self.feeds[feed.name] = FeedRuntime(
                    feed,
                    SettleTracker(feed.settle_seconds, feed.empty_grace_seconds),
                    DropWatcher(feed.drop_dir, self.wake, mode=feed.watch, poll_seconds=min(feed.rescan_seconds, 5)),
                    History(history_path(self.settings.state_file, feed.name)),
                )
            if self.state.held:  # a restart is a sysadmin's way to say "try again"
                log.info("feeds_released", feeds=sorted(self.state.held), reason="daemon started")
                self.state.held.clear()
            # Ready as a service from here: looking the account up waits for Canvas if it is down at boot.
            sd_notify("READY=1\nSTATUS=looking up the Canvas account")
            account = self._resolve_account()
            if account is None:
                return EXIT_GAVE_UP if self.once else EXIT_OK
            account_id = int(account["id"])
            self.state.account_id = account_id
            # One daemon per account: by host and id, and by the account's uuid, which no host alias changes.
            lock_paths = [account_lock_path(self.settings.lock_dir, self.settings.canvas.host, account_id)]
            if account.get("uuid"):
                lock_paths.append(account_uuid_lock_path(self.settings.lock_dir, str(account["uuid"])))
            with locks(*lock_paths):
                try:
                    self.recover()
                    sd_notify("STATUS=watching drop folders")
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
                    log.info("daemon_stopped", jobs_in_flight=len(self.state.jobs))

    def _resolve_account(self) -> dict[str, Any] | None:
        """The configured account as Canvas shows it, asked until Canvas answers (with ``once``: until
        ``max_wait``). None when stopped or given up."""
        ref = self.settings.canvas.account_id
        deadline = self.clock() + self.max_wait
        while not self.stop_event.is_set():
            try:
                account: dict[str, Any] = self._call(self.client.resolve_account)
                return account
            except CanvasError as error:
                log.error("account_not_resolved", account=ref, error=str(error), kind=str(error.kind))
            if self.once and self.clock() >= deadline:
                return None
            if "WATCHDOG_USEC" in os.environ:
                sd_notify("WATCHDOG=1")  # alive, waiting for Canvas
            self.stop_event.wait(max(self.health.retry_at - self.clock(), 0.05))
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
        log.info("daemon_stopping", reason="stop requested (SIGTERM or SIGINT)", jobs_in_flight=len(self.state.jobs))
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
        applied = []
        for name, runtime in self.feeds.items():
            if name in new_feeds and new_feeds[name].import_ != runtime.settings.import_:
                runtime.settings = runtime.settings.model_copy(update={"import_": new_feeds[name].import_})
                applied.append(f"feeds[{name}].import")
        pending = restart_needed(self.settings, settings)
        log.info("config_reloaded", applied=applied, unchanged_until_restart=pending)
        if pending:
            log.warning(
                "config_change_needs_restart",
                keys=pending,
                hint="only feeds' import options apply while running; restart to apply the rest",
            )
        if self.state.held:
            log.info("feeds_released", feeds=sorted(self.state.held), reason="configuration changed")
            self.state.held.clear()
        if self.health.kind in (FaultKind.CONFIGURATION, FaultKind.CREDENTIAL):
            self.health.retry_at = now
        self._save()

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
        for orphan in orphans_in_work(self.settings, self.state):
            log.warning(
                "orphan_in_work",
                feed=orphan["feed"],
                path=orphan["path"],
                hint="a file in work/ that no job records (a state file moved aside?): check Canvas for its import "
                "before moving it back to drop/ or to done/",
            )

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
            try:
                writing = self.writer_open(fd)
            finally:
                os.close(fd)
            runtime.unreadable.discard(item.name)
            if writing:
                # Settling is a promise, not a proof: a writer that stalled longer than settle_seconds still has
                # the file open. It settles again from now.
                log.info("file_still_open_for_writing", feed=feed.name, file=jobs.display_name(item.name))
                runtime.tracker.forget(item.name)
                return
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
