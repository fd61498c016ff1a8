"""Taking the ready files of a grouped feed (``collect_seconds`` or ``manifest``) as sets: the intake's part for
sets, run in the loop's thread from intake.py (docs/design.md "Sets of files"; the decisions are sets.py's, the
renames bundle.py's).

A set is claimed as one job: recorded with every member before the first rename out of drop/ (crash protocol),
then each member renamed into work/; the flight builds the zip. Files that are not set material (a zip, an empty
file, a FIFO, a lone CSV) are handed back to the intake to be taken one by one, as without sets.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from sisdaemon import bundle, jobs, sets, spool
from sisdaemon.config import FeedSettings
from sisdaemon.jobs import Fingerprint, Job, JobState
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions, bound
from sisdaemon.settle import ReadyFile, SettleTracker
from sisdaemon.watcher import DropWatcher, is_candidate_name, observation_of
from sisdaemon.writers import WriterCheck

log = structlog.get_logger("sisdaemon")

#: How many waiting names the journal's ``files_await_manifest`` line shows.
NAMES_SHOWN = 10


@dataclass
class FeedSets:
    """One grouped feed's memory between turns: when each ready file was first found ready (name -> (its fingerprint
    then, seconds since the epoch): a file that changed since is ready anew), each manifest read (name -> (its
    fingerprint, its names or why it cannot be used)), and when to decide again."""

    ready_at: dict[str, tuple[Fingerprint, float]] = field(default_factory=dict)
    manifests: dict[str, tuple[Fingerprint, tuple[str, ...] | str]] = field(default_factory=dict)
    wake_at: float | None = None


class SetIntake:
    """Claims sets for the intake. ``take_alone(feed, ready_file, now)``: the intake's one-file claim;
    ``on_claimed(job, now)`` and ``on_event("claimed", job)`` as the intake's. ``lstat``: every look at a dropped
    file goes through it."""

    def __init__(
        self,
        ledger: Ledger,
        conditions: Conditions,
        writer_check: WriterCheck,
        *,
        take_alone: Callable[[FeedSettings, ReadyFile, float], None],
        on_claimed: Callable[[Job, float], None],
        on_event: Callable[[str, Job], None] | None = None,
        lstat: Callable[[str], os.stat_result] = os.lstat,
    ) -> None:
        self.ledger = ledger
        self.conditions = conditions
        self.writer_check = writer_check
        self.take_alone = take_alone
        self.on_claimed = on_claimed
        self.on_event = on_event
        self.lstat = lstat
        self.feeds: dict[str, FeedSets] = {}

    def due(self, name: str, now: float) -> bool:
        """Whether feed ``name`` has a set decision due (a collect window or a manifest's timeout ends)."""
        memory = self.feeds.get(name)
        return memory is not None and memory.wake_at is not None and now >= memory.wake_at

    def due_times(self) -> list[float]:
        """When each grouped feed next decides (seconds since the epoch), for the loop's sleep."""
        return [memory.wake_at for memory in self.feeds.values() if memory.wake_at is not None]

    def take(
        self,
        feed: FeedSettings,
        tracker: SettleTracker,
        watcher: DropWatcher,
        now: float,
        may_claim: Callable[[], bool],
    ) -> bool:
        """Take what ``feed``'s ready files make now: sets and files to take alone, while ``may_claim()`` (the feed
        has room, Canvas may be called). Returns whether ready files were left for want of room (a backlog)."""
        memory = self.feeds.setdefault(feed.name, FeedSets())
        memory.wake_at = None
        if feed.manifest is None:
            # The first files only, oldest first: a decision costs the same whatever the backlog (promise 6), and a
            # set holds at most sets.MAX_SET_FILES anyway.
            ready = tracker.first_ready_several(sets.LOOKAHEAD)
            for item in ready:
                self._note_ready(memory, item, now)
            if len(memory.ready_at) > 2 * len(tracker) + 64:  # files gone from drop/ without being taken
                memory.ready_at = {name: seen for name, seen in memory.ready_at.items() if tracker.tracked(name)}
            return self._collect(feed, tracker, watcher, ready, tracker.settling(), now, may_claim)
        # In claim order (Canvas's, then oldest); a manifest feed's drop folder holds a set or a few, not a backlog.
        ready = tracker.ready()
        names = {item.name for item in ready}
        memory.ready_at = {name: seen for name, seen in memory.ready_at.items() if name in names}
        for item in ready:
            self._note_ready(memory, item, now)
        settling = [name for name in tracker.names() if name not in names]
        return self._by_manifest(feed, tracker, watcher, ready, settling, now, may_claim)

    @staticmethod
    def _note_ready(memory: FeedSets, item: ReadyFile, now: float) -> None:
        """Remember when ``item`` was first found ready (again, when it changed since)."""
        known = memory.ready_at.get(item.name)
        if known is None or known[0] != item.fingerprint:
            memory.ready_at[item.name] = (item.fingerprint, now)

    def _collect(
        self,
        feed: FeedSettings,
        tracker: SettleTracker,
        watcher: DropWatcher,
        ready: Sequence[ReadyFile],
        settling: bool,
        now: float,
        may_claim: Callable[[], bool],
    ) -> bool:
        memory = self.feeds[feed.name]
        candidates = [
            sets.Candidate(item.name, memory.ready_at[item.name][1], item.regular and item.fingerprint.size > 0)
            for item in ready
        ]
        decided = sets.collect(
            candidates,
            settling=settling,
            now=now,
            collect_seconds=feed.collect_seconds,
            collect_max_seconds=feed.collect_max_seconds,
        )
        by_name = {item.name: item for item in ready}
        memory.wake_at = decided.wake_at
        for name in decided.alone:
            if not may_claim():
                return True
            self.take_alone(feed, by_name[name], now)
        if decided.take:
            if not may_claim():
                return True
            self._claim_set(feed, tracker, watcher, [by_name[name] for name in decided.take], now)
        return False

    def _by_manifest(
        self,
        feed: FeedSettings,
        tracker: SettleTracker,
        watcher: DropWatcher,
        ready: Sequence[ReadyFile],
        settling: Sequence[str],
        now: float,
        may_claim: Callable[[], bool],
    ) -> bool:
        memory = self.feeds[feed.name]
        backlog = False
        for item in [item for item in ready if not item.regular]:  # refused as not_regular_file, one by one
            if not may_claim():
                return True
            self.take_alone(feed, item, now)
        ready = [item for item in ready if item.regular]
        by_name = {item.name: item for item in ready}
        manifests = [item for item in ready if sets.is_manifest(feed, item.name)]
        others = {item.name for item in ready if not sets.is_manifest(feed, item.name)}
        memory.manifests = {name: read for name, read in memory.manifests.items() if name in by_name}
        listed_by: dict[str, tuple[str, ...]] = {}
        for manifest in manifests:
            listed = self._read_manifest(feed, manifest)
            if isinstance(listed, str):
                if not may_claim():
                    return True
                self._claim_set(feed, tracker, watcher, [manifest], now, manifest=manifest.name, invalid=listed)
                continue
            listed_by[manifest.name] = listed
            decided = sets.manifest_set(
                listed,
                ready=others,
                settling=set(settling),
                manifest_ready_at=memory.ready_at[manifest.name][1],
                now=now,
                timeout=feed.manifest_timeout_seconds,
            )
            if decided.action == "wait":
                assert decided.wake_at is not None
                memory.wake_at = min(memory.wake_at or decided.wake_at, decided.wake_at)
                continue
            if not may_claim():
                backlog = True
                continue
            members = [by_name[name] for name in decided.present] + [manifest]
            refused = decided if decided.action == "refuse" else None
            if self._claim_set(feed, tracker, watcher, members, now, manifest=manifest.name, refused=refused):
                others -= set(decided.present)
        self._say_unlisted(feed, sets.unlisted(sorted(others), listed_by))
        return backlog

    def _read_manifest(self, feed: FeedSettings, item: ReadyFile) -> tuple[str, ...] | str:
        """The names manifest ``item`` lists, or why it cannot be used (read once per content)."""
        memory = self.feeds[feed.name]
        known = memory.manifests.get(item.name)
        if known is not None and known[0] == item.fingerprint:
            return known[1]
        try:
            fd = spool.open_for_reading(feed.drop_dir / item.name)
            try:
                data = os.pread(fd, sets.MANIFEST_MAX_BYTES + 1, 0)
            finally:
                os.close(fd)
            listed: tuple[str, ...] | str = sets.parse_manifest(
                data, takes=lambda name: is_candidate_name(name, feed.patterns) and not sets.is_manifest(feed, name)
            )
        except sets.ManifestError as error:
            listed = f"the manifest {jobs.display_name(item.name)} cannot be used: {error}"
        except OSError as error:
            return f"the manifest could not be read: {error.strerror or error}"
        memory.manifests[item.name] = (item.fingerprint, listed)
        return listed

    def _say_unlisted(self, feed: FeedSettings, waiting: list[str]) -> None:
        """Files no manifest lists wait for theirs: said once when the wait starts (and again if the names change),
        once when it ends."""
        key = ("files_await_manifest", feed.name)
        if not waiting:
            self.conditions.end(key, "files_manifest_arrived", feed=feed.name)
            return
        shown = [jobs.display_name(name) for name in waiting[:NAMES_SHOWN]]
        self.conditions.start(
            key,
            "files_await_manifest",
            level="info",
            feed=feed.name,
            files=shown,
            count=len(waiting),
            manifest=feed.manifest,
            hint="no manifest lists them yet; they are taken with the set of the manifest that lists them",
        )

    def _unchanged(self, feed: FeedSettings, tracker: SettleTracker, item: ReadyFile, now: float) -> bool:
        """Whether ``item`` is still as it settled and no writer holds it open (else it settles again)."""
        try:
            current = observation_of(item.name, self.lstat(str(feed.drop_dir / item.name)))
        except OSError:
            current = None
        if current is None or current.fingerprint != item.fingerprint:
            tracker.observe(item.name, current, now)
            return False
        try:
            fd = spool.open_for_reading(feed.drop_dir / item.name)
        except OSError:
            tracker.forget(item.name)  # found again by an event or the next full scan
            return False
        try:
            writing = self.writer_check(fd)
        finally:
            os.close(fd)
        if writing:
            log.info("file_still_open_for_writing", feed=feed.name, file=jobs.display_name(item.name))
            tracker.forget(item.name)
            return False
        return True

    def _claim_set(
        self,
        feed: FeedSettings,
        tracker: SettleTracker,
        watcher: DropWatcher,
        items: Sequence[ReadyFile],
        now: float,
        *,
        manifest: str | None = None,
        refused: sets.Listed | None = None,
        invalid: str | None = None,
    ) -> bool:
        """Claim ``items`` as one set job (``manifest``: the member that is its manifest; ``refused``: a manifest's
        set refused whole; ``invalid``: why a manifest claimed alone cannot be used). Returns whether it was
        claimed."""
        if not all(self._unchanged(feed, tracker, item, now) for item in items):
            return False
        members = [sets.Member(item.name, item.fingerprint, item.seen_at) for item in items]
        job = sets.claim_set(secrets.token_hex(5), feed.name, members, manifest=manifest, now=now)
        if invalid is not None:
            job = jobs.reject(job, "manifest_invalid", invalid, now=now)
        elif refused is not None:
            reason = sets.incomplete_reason(str(manifest), refused, feed.manifest_timeout_seconds)
            job = sets.refuse_incomplete(job, refused, reason, now=now)
        memory = self.feeds[feed.name]
        with bound(job), self.ledger.claiming(job.job_id):
            try:
                self.ledger.put(job)  # every member, and a refusal, recorded before the first rename out of drop/
            except OSError:
                self.ledger.discard(job.job_id)  # the files stay in drop/; the loop says why
                return False
            taken = bundle.take_members(
                job,
                feed.drop_dir,
                feed.work_dir,
                before_rename=watcher.expect_departure,
                rename_failed=watcher.departure_failed,
            )
            for item in items:
                tracker.forget(item.name)  # taken, or found again by the next full scan
                memory.ready_at.pop(item.name, None)
            if not sets.members_of(taken):
                self.ledger.forget(job.job_id)
                return False
            if taken.state is JobState.CLAIMED and not sets.members_of(taken, sets.CSV):
                reason = "every file of the set was gone before it was taken"
                taken = jobs.reject(taken, "manifest_incomplete", reason, now=now)
            if taken != job:
                self.ledger.put(taken)
            names = [jobs.display_name(str(member["name"])) for member in sets.members_of(taken)]
            log.info("set_claimed", files=names, manifest=manifest, size=taken.size)
            if taken.state is JobState.FINISHING:
                log.error("set_refused", reason_code=taken.reason_code, reason=taken.reason)
            if self.on_event:
                self.on_event("claimed", taken)
            if taken.state is JobState.CLAIMED:
                self.on_claimed(taken, now)
        return True
