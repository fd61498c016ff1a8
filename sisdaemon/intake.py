"""The intake: scan each drop folder, settle what is there, and claim ready files into the work folder.

A claim is persisted in the ledger before the rename out of drop/ (docs/design.md "Crash protocol"), and only when
the feed has room and Canvas accepts the token, so a backlog stays in drop/ where an operator can see it.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from sisdaemon import jobs, spool
from sisdaemon.config import FeedSettings
from sisdaemon.gate import Gate
from sisdaemon.jobs import Fingerprint, Job
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions, bound
from sisdaemon.observer import QUIET, Observer
from sisdaemon.watcher import DropWatcher, ReadyFile, SettleTracker, scan
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")

#: Seconds between a wake-up event and the scan it triggers (events come in bursts while a file is written).
DEBOUNCE = 0.2


@dataclass
class FeedScan:
    """One feed's detection: its settle tracker, its folder watch, and when it is next scanned (seconds since the
    epoch)."""

    tracker: SettleTracker
    watcher: DropWatcher
    next_rescan: float = 0.0
    next_scan: float = 0.0
    backlog: bool = False  # the last scan left ready files unclaimed (feed full, Canvas down)
    # name -> (its fingerprint, when to try again): files whose rename out of drop/ failed (immutable, EPERM)
    unmovable: dict[str, tuple[Fingerprint, float]] = field(default_factory=dict)
    next_settle: float | None = None  # when the next tracked file settles
    # name -> why it is not taken (dot_name, temp_name, no_pattern_matches, folder), as the last scan found; each is
    # logged at debug once, when first skipped
    skipped: dict[str, str] = field(default_factory=dict)


class Intake:
    """Detection and claiming for every feed.

    ``feeds``: feed name -> its current settings (the daemon's table, updated in place on reload). ``wake``: the
    loop's wake-up event, set by folder events. ``only``: feed name -> names to take (``sisdaemon submit``), which
    were written whole before their rename and are taken without settling. ``on_claimed(job, now)``: called after
    each claim of a regular, non-empty file (the flight checks it in work/). ``on_event``: called with ("claimed",
    job) for ``submit --wait``. ``conditions`` logs lasting conditions (a writer holding a file open, an unreadable
    file, a missing drop folder) when they start and end, not at every scan. ``observer`` hears each new file seen.
    """

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        gate: Gate,
        writer_check: WriterCheck,
        wake: threading.Event,
        *,
        on_claimed: Callable[[Job, float], None],
        on_event: Callable[[str, Job], None] | None = None,
        only: dict[str, set[str]] | None = None,
        conditions: Conditions | None = None,
        observer: Observer = QUIET,
    ) -> None:
        self.observer = observer
        self.feeds = feeds
        self.conditions = conditions or Conditions()
        self.ledger = ledger
        self.gate = gate
        self.writer_check = writer_check
        self.wake = wake
        self.on_claimed = on_claimed
        self.on_event = on_event
        self.only = only
        self.scans: dict[str, FeedScan] = {}
        for feed in feeds.values():
            self.add_feed(feed)

    def add_feed(self, feed: FeedSettings) -> None:
        """Start detecting for ``feed`` (its watch starts at the first scan)."""
        self.scans[feed.name] = FeedScan(
            SettleTracker(feed.settle_seconds, feed.empty_grace_seconds),
            DropWatcher(feed.drop_dir, self.wake, mode=feed.watch, poll_seconds=min(feed.rescan_seconds, 5)),
        )

    def remove_feed(self, name: str) -> None:
        """Stop detecting for feed ``name`` (a feed removed from the config with nothing in flight)."""
        feed_scan = self.scans.pop(name, None)
        if feed_scan is not None:
            feed_scan.watcher.stop()

    def update_feed(self, feed: FeedSettings) -> None:
        """Settle ``feed``'s files with its current settle and grace times (a reload)."""
        tracker = self.scans[feed.name].tracker
        tracker.settle, tracker.empty_grace = feed.settle_seconds, feed.empty_grace_seconds

    def stop(self) -> None:
        """Stop every folder watch (joins their threads)."""
        for feed_scan in self.scans.values():
            feed_scan.watcher.stop()

    def waiting(self, name: str) -> int:
        """How many files feed ``name``'s drop folder holds that the daemon tracks and has not claimed yet."""
        feed_scan = self.scans.get(name)
        return len(feed_scan.tracker) if feed_scan is not None else 0

    def idle(self) -> bool:
        """Nothing left to take: every drop folder is empty of candidates (for ``submit``: every named file
        taken). A paused feed's files are not for taking, nor files the daemon cannot read (``run --once`` leaves
        them and finishes)."""
        if self.only is not None:
            return not any(self.only.values())
        unreadable = {(feed, name) for feed, name in self.unreadable()}
        return all(
            self.ledger.paused(feed) is not None
            or all((feed, name) in unreadable for name in feed_scan.tracker.names())
            for feed, feed_scan in self.scans.items()
        )

    def unreadable(self) -> list[tuple[str, str]]:
        """(feed, name) of the dropped files the daemon cannot read (said once in the journal; ``run --once``
        reports them and finishes the rest instead of waiting on them)."""
        return [(key[1], key[2]) for key in self.conditions.active() if key[0] == "unreadable"]

    def due_times(self) -> list[float]:
        """When each feed next needs a scan (seconds since the epoch), for the loop's sleep."""
        times = []
        for feed_scan in self.scans.values():
            times.append(feed_scan.next_rescan)
            if feed_scan.next_scan:
                times.append(feed_scan.next_scan)
            if feed_scan.next_settle is not None:
                times.append(feed_scan.next_settle + 0.01)
        return times

    def scan_due(self, now: float, woke: bool) -> None:
        """Scan each drop folder when due: a wake-up (debounced), the periodic rescan, a file due to settle, or
        ready files left over that may now be claimed."""
        for name, feed_scan in self.scans.items():
            feed = self.feeds[name]
            if woke and not feed_scan.next_scan:
                feed_scan.next_scan = now + DEBOUNCE
            due = (
                now >= feed_scan.next_rescan
                or (feed_scan.next_scan and now >= feed_scan.next_scan)
                or (feed_scan.next_settle is not None and now >= feed_scan.next_settle)
                or (feed_scan.backlog and self.may_claim(feed, now))
            )
            if not due:
                continue
            feed_scan.next_scan = 0.0
            if now >= feed_scan.next_rescan:
                feed_scan.next_rescan = now + feed.rescan_seconds
            self._scan(feed, feed_scan, now)

    def may_claim(self, feed: FeedSettings, now: float) -> bool:
        """Whether ``feed`` has room for another job, is neither held nor paused, and Canvas may be called."""
        return (
            self.ledger.jobs_of(feed.name) < feed.max_in_flight
            and not self.ledger.blocked(feed.name)
            and self.ledger.write_fault is None  # a claim is recorded before its rename: no claim without a disk
            and self.gate.is_open(now)
        )

    def _scan(self, feed: FeedSettings, feed_scan: FeedScan, now: float) -> None:
        conditions = self.conditions
        if not feed_scan.watcher.ensure_watching():
            conditions.start(
                ("drop_dir_missing", feed.name),
                "drop_dir_missing",
                level="error",
                feed=feed.name,
                path=str(feed.drop_dir),
            )
            return
        conditions.end(("drop_dir_missing", feed.name), "drop_dir_back", feed=feed.name, path=str(feed.drop_dir))
        skipped: dict[str, str] = {}
        try:
            observations = scan(feed.drop_dir, feed.patterns, skipped=skipped)
        except OSError as error:
            conditions.start(("scan_failed", feed.name), "scan_failed", level="error", feed=feed.name, error=str(error))
            return
        conditions.end(("scan_failed", feed.name), "scan_recovered", feed=feed.name)
        for name, reason in skipped.items():
            if feed_scan.skipped.get(name) != reason:
                log.debug("file_skipped", feed=feed.name, file=jobs.display_name(name), reason=reason)
        feed_scan.skipped = skipped
        for key in conditions.active():  # a file held open or unreadable left the folder: its condition ended
            gone = key[0] in ("open_writer", "unreadable", "unmovable") and key[1] == feed.name
            if gone and key[2] not in observations:
                feed_scan.unmovable.pop(key[2], None)
                shown = jobs.display_name(key[2])
                conditions.end(key, "file_condition_ended", feed=feed.name, file=shown, condition=key[0])
        wanted = self.only.get(feed.name) if self.only is not None else None
        if self.only is not None:
            observations = {name: seen for name, seen in observations.items() if wanted and name in wanted}
        for name, seen in observations.items():
            if not feed_scan.tracker.tracked(name):
                self.observer.file_seen(feed.name)
                log.debug(
                    "file_seen",
                    feed=feed.name,
                    file=jobs.display_name(name),
                    size=seen.fingerprint.size,
                    kind=seen.kind,
                    settle_seconds=feed.settle_seconds,
                )
        ready = feed_scan.tracker.update(observations, now)
        feed_scan.next_settle = feed_scan.tracker.next_due(now)
        if wanted:
            # Files handed over by `sisdaemon submit` were written completely before their rename: no settle wait.
            ready = [
                ReadyFile(seen.name, seen.fingerprint, seen.regular, seen.kind, now) for seen in observations.values()
            ]
        feed_scan.backlog = bool(ready)
        if ready and not self.gate.verified(now):
            return  # not verified lately, Canvas refuses us or is down: every file stays in drop/ for now
        for index, item in enumerate(ready):
            if not self.may_claim(feed, now):
                break
            self._claim(feed, feed_scan, item, now)
            feed_scan.backlog = index + 1 < len(ready)

    def _claim(self, feed: FeedSettings, feed_scan: FeedScan, item: ReadyFile, now: float) -> None:
        source = feed.drop_dir / item.name
        unmovable = feed_scan.unmovable.get(item.name)
        if unmovable is not None and unmovable[0] == item.fingerprint and now < unmovable[1]:
            return  # its rename failed lately and it has not changed: no state write and no line per scan
        if item.regular:
            try:
                fd = spool.open_for_reading(source)
            except PermissionError:
                self.conditions.start(
                    ("unreadable", feed.name, item.name),
                    "file_unreadable",
                    level="error",
                    feed=feed.name,
                    file=jobs.display_name(item.name),
                    hint="left in the drop folder; taken once the daemon can read it",
                )
                return
            except OSError:
                return  # gone or replaced since the scan; the next scan sees it
            try:
                writing = self.writer_check(fd)
            finally:
                os.close(fd)
            shown = jobs.display_name(item.name)
            log.debug("writer_check", feed=feed.name, file=shown, writing=writing)
            self.conditions.end(("unreadable", feed.name, item.name), "file_readable", feed=feed.name, file=shown)
            if writing:
                # Settling is a promise, not a proof: a writer that stalled longer than settle_seconds still has
                # the file open. It settles again from now.
                self.conditions.start(
                    ("open_writer", feed.name, item.name),
                    "file_still_open_for_writing",
                    level="info",
                    feed=feed.name,
                    file=shown,
                    hint="an uploader holds it open; it is taken once closed and settled",
                )
                feed_scan.tracker.forget(item.name)
                return
            self.conditions.end(("open_writer", feed.name, item.name), "file_writer_closed", feed=feed.name, file=shown)
        job = jobs.claim(secrets.token_hex(5), feed.name, item.name, item.fingerprint, seen_at=item.seen_at, now=now)
        with bound(job):
            try:
                self.ledger.put(job)
            except OSError:
                self.ledger.discard(job.job_id)  # never recorded: the file stays in drop/; the loop says why
                return
            target = feed.work_dir / job.work_name
            key = ("unmovable", feed.name, item.name)
            try:
                spool.move_durably(source, target)
            except OSError as error:
                self.ledger.forget(job.job_id)
                if not isinstance(error, FileNotFoundError):  # gone since the scan: nothing to say
                    # Immutable, append-only, a folder that forbids it: tried again once a minute (or when the
                    # file changes), said once while it lasts.
                    feed_scan.unmovable[item.name] = (item.fingerprint, now + max(feed.rescan_seconds, 60.0))
                    self.conditions.start(
                        key,
                        "claim_failed",
                        level="error",
                        error=str(error),
                        hint="the file stays in the drop folder; it is tried again every minute",
                    )
                return
            feed_scan.unmovable.pop(item.name, None)
            self.conditions.end(key, "claim_recovered")
            feed_scan.tracker.forget(item.name)
            if self.only is not None and item.name in self.only.get(feed.name, set()):
                self.only[feed.name].discard(item.name)
            log.info("file_claimed", size=item.fingerprint.size, kind=item.kind)
            if self.on_event:
                self.on_event("claimed", job)
            if not item.regular:
                job = jobs.reject(job, "not_regular_file", f"not a regular file ({item.kind}); moved as it is", now=now)
                self.ledger.put(job)
                return
            if item.fingerprint.size == 0:
                job = jobs.reject(job, "empty_file", "the file stayed empty (0 bytes) for the grace period", now=now)
                self.ledger.put(job)
                return
            self.on_claimed(job, now)
