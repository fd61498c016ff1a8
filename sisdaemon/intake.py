"""The intake: detect what is in each drop folder, settle it, and claim ready files into the work folder.

Detection works per changed file: the folder's watch names the files its events were about, and only those are
looked at (one ``lstat`` each); a file's settle wait ends with one more look; ready files are claimed oldest first
from a heap. A full scan (every entry listed and looked at) runs at start-up, every ``rescan_seconds``, and after
events were lost. The claim's own rename out of drop/ wakes nothing.

A claim is persisted in the ledger before the rename out of drop/ (docs/design.md "Crash protocol"), and only when
the feed has room and Canvas accepts the token, so a backlog stays in drop/ where an operator can see it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from sisdaemon import jobs, lineup, params_files, sets, spool
from sisdaemon.config import FeedSettings
from sisdaemon.gate import Gate
from sisdaemon.jobs import Fingerprint, Job
from sisdaemon.ledger import Ledger
from sisdaemon.lineup import Lineup
from sisdaemon.logs import Conditions, bound
from sisdaemon.observer import QUIET, Observer
from sisdaemon.params_files import ParamsFiles
from sisdaemon.set_intake import SetIntake
from sisdaemon.watcher import (
    NEVER_TAKEN,
    DropWatcher,
    Observation,
    ReadyFile,
    SettleTracker,
    is_candidate_name,
    look,
    observation_of,
    scan,
)
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")

#: Seconds between a wake-up event and the look it triggers (events come in bursts while a file is written). Not
#: when a name arrived (created, or renamed in whole: DropWatcher.arrived): that is looked at once, and its settle
#: wait starts then (issue 9: a file is taken within 0.3 s of its settle time).
DEBOUNCE = 0.2

#: The conditions that are about one dropped file; they end when the file leaves the drop folder.
_FILE_CONDITIONS = ("open_writer", "unreadable", "unmovable")


@dataclass
class FeedScan:
    """One feed's detection: its settle tracker, its folder watch, when it is next fully scanned and next looked at
    for events (seconds since the epoch), and ``scans``/``looks``: how many full scans and single-name looks it made
    (for tests and the benchmark: detection's cost)."""

    tracker: SettleTracker
    watcher: DropWatcher
    next_rescan: float = 0.0
    next_scan: float = 0.0
    backlog: bool = False  # ready files are left unclaimed (feed full, Canvas down)
    # name -> (its fingerprint, when to try again): files whose rename out of drop/ failed (immutable, EPERM)
    unmovable: dict[str, tuple[Fingerprint, float]] = field(default_factory=dict)
    next_settle: float | None = None  # when the next tracked file settles
    # name -> why it is not taken (dot_name, temp_name, no_pattern_matches, folder), as the last scan found; each is
    # logged at debug once, when first skipped
    skipped: dict[str, str] = field(default_factory=dict)
    # names the last full scan left out, and those said at info (file_never_taken): a name still left out at the next
    # full scan is said once, so an upload's temp name that is renamed between two scans is never said
    left_at_scan: frozenset[str] = frozenset()
    never_taken_said: frozenset[str] = frozenset()
    scans: int = 0
    looks: int = 0


class Intake:
    """Detection and claiming for every feed.

    ``feeds``: feed name -> its current settings (the daemon's table, updated in place on reload). ``wake``: the
    loop's wake-up event, set by folder events. ``only``: feed name -> names to take (``sisdaemon submit``), which
    were written whole before their rename and are taken without settling. ``on_claimed(job, now)``: called after
    each claim of a regular, non-empty file (the flight checks it in work/). ``on_event``: called with ("claimed",
    job) for ``submit --wait``. ``conditions`` logs lasting conditions (a writer holding a file open, an unreadable
    file, a missing drop folder) when they start and end, not at every scan. ``lstat``: every look at a dropped file
    goes through it (tests count them). ``observer`` hears each new file seen. ``wake_flight``: wakes the flight worker
    for a job claimed only to be filed (a superseded file).
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
        lstat: Callable[[str], os.stat_result] = os.lstat,
        wake_flight: Callable[[], None] = lambda: None,
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
        self.lstat = lstat
        self.params = ParamsFiles(lstat)  # params files beside dropped files (params_files.py)
        self.wake_flight = wake_flight
        #: Canvas's order, supersede and max_pending_imports (lineup.py, order.py)
        self.lineup = Lineup(feeds, ledger, self.conditions)
        self.scans: dict[str, FeedScan] = {}
        #: Grouped feeds (collect_seconds, manifest) take their ready files as sets (set_intake.py).
        self.set_intake = SetIntake(
            ledger,
            self.conditions,
            writer_check,
            take_alone=lambda feed, item, now: self._claim(feed, self.scans[feed.name], item, now),
            on_claimed=on_claimed,
            on_event=on_event,
            lstat=lstat,
        )
        self.turned_at = 0.0  # the last scan_due's time: holds that ended before it wait for a claim, not the clock
        for feed in feeds.values():
            self.add_feed(feed)

    def add_feed(self, feed: FeedSettings) -> None:
        """Start detecting for ``feed`` (its watch starts at the first scan)."""
        name = feed.name

        def wanted(entry: str) -> bool:  # the observer's thread: the feed's patterns as they are now (a reload)
            settings = self.feeds.get(name)
            return settings is not None and is_candidate_name(entry, settings.patterns)

        self.scans[name] = FeedScan(
            SettleTracker(feed.settle_seconds, feed.empty_grace_seconds, lineup.classifier(feed.drop_dir)),
            DropWatcher(
                feed.drop_dir, self.wake, mode=feed.watch, poll_seconds=min(feed.rescan_seconds, 5), wanted=wanted
            ),
        )

    def remove_feed(self, name: str) -> None:
        """Stop detecting for feed ``name`` (a feed removed from the config with nothing in flight)."""
        feed_scan = self.scans.pop(name, None)
        self.set_intake.feeds.pop(name, None)
        if feed_scan is not None:
            feed_scan.watcher.stop()

    def update_feed(self, feed: FeedSettings) -> None:
        """Settle ``feed``'s files with its current settle and grace times (a reload): the files already settling in
        its drop folder too (SettleTracker.retime), so a lowered ``settle_seconds`` takes them at their new time (at
        the loop's next turn when that has passed), and a raised one holds them longer."""
        feed_scan = self.scans[feed.name]
        feed_scan.tracker.retime(feed.settle_seconds, feed.empty_grace_seconds)
        feed_scan.next_settle = feed_scan.tracker.next_due(self.turned_at)  # the loop sleeps until then

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
        return all(
            self.ledger.paused(feed) is not None or not feed_scan.tracker for feed, feed_scan in self.scans.items()
        )

    def unreadable(self) -> list[tuple[str, str]]:
        """(feed, name) of the dropped files the daemon cannot read (said once in the journal; ``run --once``
        reports them and finishes the rest instead of waiting on them; they are not tracked while unreadable)."""
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
        return times + self.set_intake.due_times() + self.lineup.due_times(self.turned_at)

    def scan_due(self, now: float, woke: bool = False) -> None:
        """Look at each drop folder when due: names its events brought (debounced), the periodic full scan, a file
        whose settle wait ends, or ready files left over that may now be claimed. ``woke`` is not needed: each
        watch says itself whether its events brought news."""
        self.turned_at = now
        for name, feed_scan in self.scans.items():
            feed = self.feeds[name]
            if feed_scan.watcher.pending():
                soonest = now if feed_scan.watcher.arrived() else now + DEBOUNCE
                feed_scan.next_scan = min(feed_scan.next_scan or soonest, soonest)
            rescan = now >= feed_scan.next_rescan
            events = bool(feed_scan.next_scan) and now >= feed_scan.next_scan
            due = (
                rescan
                or events
                or (feed_scan.next_settle is not None and now >= feed_scan.next_settle)
                or (feed_scan.backlog and self.may_claim(feed, now))
                or self.set_intake.due(name, now)
            )
            if not due:
                continue
            if rescan:
                feed_scan.next_rescan = now + feed.rescan_seconds
            if events:
                feed_scan.next_scan = 0.0
            self._detect(feed, feed_scan, now, rescan=rescan, events=events)

    def may_claim(self, feed: FeedSettings, now: float) -> bool:
        """Whether ``feed`` has room for another job, is neither held nor paused, and Canvas may be called."""
        return (
            self.ledger.jobs_of(feed.name) < feed.max_in_flight
            and self.lineup.account_has_room()  # max_pending_imports: a backlog stays in drop/
            and not self.ledger.blocked(feed.name)
            and self.ledger.write_fault is None  # a claim is recorded before its rename: no claim without a disk
            and self.gate.is_open(now)
        )

    def _detect(self, feed: FeedSettings, feed_scan: FeedScan, now: float, *, rescan: bool, events: bool) -> None:
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
        names: set[str] = set()
        if rescan or events:
            names, lost = feed_scan.watcher.take_changes()  # before the listing: later events stay for next time
            rescan = rescan or lost
        if self.only is not None:
            self._take_named(feed, feed_scan, now)
            return
        if rescan:
            if not self._full_scan(feed, feed_scan, now):
                return
        else:
            self._look(feed, feed_scan, names, now)
        tracker = feed_scan.tracker
        self._look(feed, feed_scan, tracker.due(now), now)  # settle waits that ended: one more look each
        feed_scan.next_settle = tracker.next_due(now)
        self._claim_ready(feed, feed_scan, now)

    def _full_scan(self, feed: FeedSettings, feed_scan: FeedScan, now: float) -> bool:
        """List the drop folder and look at every candidate. False when it cannot be listed (said in the journal)."""
        conditions = self.conditions
        skipped: dict[str, str] = {}
        try:
            observations = scan(feed.drop_dir, feed.patterns, self.lstat, skipped)
        except OSError as error:
            conditions.start(("scan_failed", feed.name), "scan_failed", level="error", feed=feed.name, error=str(error))
            return False
        feed_scan.scans += 1
        conditions.end(("scan_failed", feed.name), "scan_recovered", feed=feed.name)
        for name, reason in skipped.items():
            if feed_scan.skipped.get(name) != reason:
                log.debug("file_skipped", feed=feed.name, file=jobs.display_name(name), reason=reason)
        feed_scan.skipped = skipped
        self._say_never_taken(feed, feed_scan, skipped)
        self.params.scanned(feed, skipped, observations, now)
        for key in conditions.active():  # a file held open or unreadable left the folder: its condition ended
            if key[0] in _FILE_CONDITIONS and key[1] == feed.name and key[2] not in observations:
                self._gone(feed, feed_scan, key[2])
        for seen in observations.values():
            self._seen(feed, feed_scan, seen)
        feed_scan.tracker.update(observations, now)
        return True

    def _say_never_taken(self, feed: FeedSettings, feed_scan: FeedScan, skipped: dict[str, str]) -> None:
        """Say at info, once per name, each name a full scan leaves out that the previous full scan left out too
        (``file_never_taken``): a file upstream left in drop/ that will never be taken. Costs set operations on the
        names the scan listed anyway."""
        left = {name for name in skipped.keys() & feed_scan.left_at_scan if skipped[name] in NEVER_TAKEN}
        for name in sorted(left - feed_scan.never_taken_said):
            reason = skipped[name]
            log.info(
                "file_never_taken",
                feed=feed.name,
                file=jobs.display_name(name),
                reason=reason,
                why=NEVER_TAKEN[reason],
                patterns=list(feed.patterns),
            )
        feed_scan.never_taken_said = frozenset(left | (feed_scan.never_taken_said & skipped.keys()))
        feed_scan.left_at_scan = frozenset(skipped)

    def _look(self, feed: FeedSettings, feed_scan: FeedScan, names: set[str] | list[str], now: float) -> None:
        """Look at each of ``names`` (one ``lstat``) and tell the tracker what it is now."""
        for name in names:
            feed_scan.looks += 1
            try:
                seen, reason = look(feed.drop_dir, name, feed.patterns, self.lstat)
            except OSError:
                continue  # cannot be looked at now (a failing disk): the next full scan tries again
            if reason is not None and feed_scan.skipped.get(name) != reason:
                log.debug("file_skipped", feed=feed.name, file=jobs.display_name(name), reason=reason)
                feed_scan.skipped[name] = reason
            if seen is None:
                if reason is None:
                    feed_scan.skipped.pop(name, None)
                    self._gone(feed, feed_scan, name)
                feed_scan.tracker.observe(name, None, now)
                continue
            feed_scan.skipped.pop(name, None)
            self._seen(feed, feed_scan, seen)
            feed_scan.tracker.observe(name, seen, now)

    def _seen(self, feed: FeedSettings, feed_scan: FeedScan, seen: Observation) -> None:
        if not feed_scan.tracker.tracked(seen.name):
            self.observer.file_seen(feed.name)
            log.debug(
                "file_seen",
                feed=feed.name,
                file=jobs.display_name(seen.name),
                size=seen.fingerprint.size,
                kind=seen.kind,
                settle_seconds=feed.settle_seconds,
            )

    def _gone(self, feed: FeedSettings, feed_scan: FeedScan, name: str) -> None:
        """``name`` left the drop folder: the conditions about it end."""
        feed_scan.unmovable.pop(name, None)
        for kind in _FILE_CONDITIONS:
            key = (kind, feed.name, name)
            if key in self.conditions:
                shown = jobs.display_name(name)
                self.conditions.end(key, "file_condition_ended", feed=feed.name, file=shown, condition=kind)

    def _claim_ready(self, feed: FeedSettings, feed_scan: FeedScan, now: float) -> None:
        """Claim ready files in Canvas's order, then oldest first (lineup.py), while the feed and the account have
        room; on a ``supersede`` feed, first file the older snapshots a newer ready one replaces."""
        tracker = feed_scan.tracker
        if not self.ledger.blocked(feed.name) and self.ledger.write_fault is None:
            superseded = self.lineup.superseded(feed, tracker)
            room = lineup.SUPERSEDE_BATCH - self.ledger.jobs_of(feed.name)  # the state stays small
            for older, newer in superseded[: max(room, 0)]:  # never sent: Canvas need not be up
                self._claim(feed, feed_scan, older, now, superseded_by=newer)
            if len(superseded) > room:
                feed_scan.backlog = True  # the rest once these are filed; none of them is claimed to be sent
                return
        item = tracker.first_ready()
        feed_scan.backlog = item is not None
        if item is None:
            self.lineup.end_hold(feed.name)
        if item is None or not self.gate.verified(now):
            self.lineup.after_claims(feed.name, waiting=item is not None)
            return  # not verified lately, Canvas refuses us or is down: every file stays in drop/ for now
        if sets.grouped(feed):  # sets of related files (set_intake.py)
            feed_scan.backlog = self.set_intake.take(
                feed, tracker, feed_scan.watcher, now, lambda: self.may_claim(feed, now)
            )
            self.lineup.after_claims(feed.name, waiting=feed_scan.backlog)
            return
        while item is not None and self.may_claim(feed, now) and self.lineup.may_go(feed, tracker, item, now):
            self._claim(feed, feed_scan, item, now)
            after = tracker.first_ready()
            if after == item:
                break  # not taken and still first (its claim could not be recorded): tried again at the next turn
            item = after
        feed_scan.backlog = item is not None
        self.lineup.after_claims(feed.name, waiting=item is not None)

    def _take_named(self, feed: FeedSettings, feed_scan: FeedScan, now: float) -> None:
        """``sisdaemon submit``: the named files only, written whole before their rename, taken without settling."""
        ready = []
        for name in sorted(self.only.get(feed.name, set()) if self.only is not None else ()):
            try:
                seen, _ = look(feed.drop_dir, name, feed.patterns, self.lstat)
            except OSError:
                continue
            if seen is not None:
                ready.append(ReadyFile(seen.name, seen.fingerprint, seen.regular, seen.kind, now))
        feed_scan.backlog = bool(ready)
        if ready and not self.gate.verified(now):
            return
        for index, item in enumerate(ready):
            if not self.may_claim(feed, now):
                break
            self._claim(feed, feed_scan, item, now)
            feed_scan.backlog = index + 1 < len(ready)

    def _claim(
        self,
        feed: FeedSettings,
        feed_scan: FeedScan,
        item: ReadyFile,
        now: float,
        superseded_by: Mapping[str, object] | None = None,
    ) -> None:
        source = feed.drop_dir / item.name
        tracker = feed_scan.tracker
        unmovable = feed_scan.unmovable.get(item.name)
        if unmovable is not None and unmovable[0] == item.fingerprint and now < unmovable[1]:
            # Its rename failed lately and it has not changed: no state write and no line per look. Found again by a
            # full scan, or by an event when it changes.
            tracker.forget(item.name)
            return
        try:
            current = observation_of(item.name, self.lstat(str(source)))
        except OSError:
            current = None
        if current is None or current.fingerprint != item.fingerprint:
            tracker.observe(item.name, current, now)  # gone, or changed since it settled: it settles again
            return
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
                tracker.forget(item.name)  # found again when its mode changes (an event) or by the next full scan
                return
            except OSError:
                self._look(feed, feed_scan, [item.name], now)  # gone or replaced since it was looked at
                return
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
                tracker.forget(item.name)
                return
            self.conditions.end(("open_writer", feed.name, item.name), "file_writer_closed", feed=feed.name, file=shown)
        try:
            prepared = self.params.prepare(feed, item.name, now, item.seen_at)  # its params file, read before the claim
        except OSError:
            tracker.forget(item.name)  # its params file cannot be looked at now: found again by the next full scan
            return
        if prepared.hold_until is not None:  # its params file is still being written, or cannot be read
            hold = params_files.hold(feed, feed_scan.tracker, item.name, prepared, self.conditions)
            feed_scan.next_settle = min(hold, feed_scan.next_settle or hold)
            return
        self.conditions.end(("params_unreadable", feed.name, item.name), "file_readable", feed=feed.name)
        job = jobs.claim(
            secrets.token_hex(5),
            feed.name,
            item.name,
            item.fingerprint,
            seen_at=item.seen_at,
            now=now,
            superseded_by=superseded_by,  # recorded with the claim: a crash after the rename still never sends it
        )
        if prepared.file_options is not None:
            job = dataclasses.replace(job, file_options=prepared.file_options)  # recorded with the claim
        with bound(job), self.ledger.claiming(job.job_id):
            try:
                self.ledger.put(job)
            except OSError:
                self.ledger.discard(job.job_id)  # never recorded: the file stays in drop/; the loop says why
                return
            target = feed.work_dir / job.work_name
            key = ("unmovable", feed.name, item.name)
            feed_scan.watcher.expect_departure(item.name)  # the rename's own event wakes nothing
            try:
                spool.move_durably(source, target)
            except OSError as error:
                feed_scan.watcher.departure_failed(item.name)
                self.ledger.forget(job.job_id)
                tracker.forget(item.name)  # gone, or tried again once a minute: found again by the next full scan
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
            self.params.claimed(feed.name, item.name, now)
            try:
                params_files.claim_beside(feed, job)  # after the data file's rename: recovery finishes a cut one
            except OSError as error:
                log.error("params_file_not_moved", error=str(error), hint="moved at filing, or at the next start")
            tracker.forget(item.name)
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
            if prepared.refusal is not None:
                log.error("params_refused", reason=prepared.refusal, hint="nothing was sent; see failed/")
                self.ledger.put(jobs.reject(job, "params_refused", prepared.refusal, now=now))
                return
            if job.superseded_by is not None:
                self.ledger.put(jobs.supersede(job, now=now))
                log.info("file_superseded", superseded_by=job.superseded_by.get("file"))
                self.wake_flight()  # it files the job
                return
            self.on_claimed(job, now)
