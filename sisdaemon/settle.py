"""Settling (pure: no I/O, ``now`` is passed in): which dropped files have held still long enough to be taken.

A file is ready when its inode, size, mtime and ctime have not changed for ``settle_seconds`` on the daemon's own
clock (an ``rsync -a`` copy keeps an old mtime, so mtime alone proves nothing; docs/design.md "A dropped file's
life"). The tracker does work per file looked at, never per file waiting: a look at one name costs O(log n), the
names whose settle time has come are taken from a heap, and the ready files come out in claim order from another
(Canvas's importer order by the SIS type the file holds, then oldest first: order.py), so draining a backlog of n
files costs O(n log n) in all, not a sort of every waiting file per claim. A file's kind (its SIS types) is asked of
the injected ``classify`` once per fingerprint: when a look finds a new one, and once more when it becomes ready if
its first line was not in yet; the kinds of the files still settling are counted, for the claim order's holds.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sisdaemon.jobs import Fingerprint
from sisdaemon.order import Kind, rank

__all__ = ["Observation", "ReadyFile", "SettleTracker"]


@dataclass(frozen=True)
class Observation:
    """One look at a candidate: its fingerprint, whether it is a regular file, and its file type."""

    name: str
    fingerprint: Fingerprint
    regular: bool
    kind: str  # "file", "symlink", "fifo", "socket", "device", "directory"


@dataclass(frozen=True)
class ReadyFile:
    """A file that settled: ``seen_at`` is when the daemon first saw it (seconds since the epoch); ``holds``: the SIS
    types it holds (None: not known)."""

    name: str
    fingerprint: Fingerprint
    regular: bool
    kind: str
    seen_at: float
    holds: Kind | None = None


@dataclass
class _Record:
    seen: Observation
    since: float  # the fingerprint has held since then
    seen_at: float  # first seen
    wait: float  # seconds it must hold
    version: int  # heap entries of an older version are stale
    ready: bool = False
    holds: Kind | None = None  # the SIS types it holds, when known
    held_until: float | None = None  # kept from being ready before then (hold): a reload keeps that


#: ``classify(seen, settled)``: the SIS types of a file as it is now (None: not known); ``settled`` says whether it
#: has settled (a first line without a line break is then the whole header).
Classify = Callable[[Observation, bool], Kind | None]


def _unknown(seen: Observation, settled: bool) -> Kind | None:
    return None


class SettleTracker:
    """Decides, look after look, which candidates have settled.

    ``settle``: seconds a fingerprint must stay unchanged. ``empty_grace``: seconds a 0-byte file must stay unchanged
    before it is handed on (to be refused as ``empty_file``): uploads often create the file first. A file becomes
    ready at a look at or after the end of its wait that finds the fingerprint the wait began with; :meth:`due`
    names the files that need that look. ``classify`` tells a regular, non-empty file's SIS types (the claim
    order's; default: never known, so files come out oldest first). Memory: one small record per candidate in the
    drop folder, plus heap entries (rebuilt when stale ones outnumber the records).
    """

    def __init__(self, settle: float, empty_grace: float, classify: Classify = _unknown) -> None:
        self.settle = settle
        self.empty_grace = empty_grace
        self.classify = classify
        self._records: dict[str, _Record] = {}
        self._due: list[tuple[float, int, str]] = []  # (when its wait ends, version, name) of settling files
        self._ready: list[tuple[int, int, str, int]] = []  # (rank, mtime in ns, name, version) of ready files
        self._settling: Counter[Kind] = Counter()  # the known kinds of the files still settling
        self._versions = itertools.count()
        self._ready_count = 0  # records that are ready (the rest are settling)

    def observe(self, name: str, seen: Observation | None, now: float) -> None:
        """Record a fresh look at ``name``: ``seen`` is what it is now, or None when it is gone (or no candidate)."""
        record = self._records.get(name)
        if seen is None:
            self._drop(name)
            return
        if record is None or record.seen.fingerprint != seen.fingerprint:
            wait = self._wait_for(seen)
            version = next(self._versions)
            seen_at = record.seen_at if record is not None else now
            self._drop(name)
            holds = self.classify(seen, False) if seen.regular and seen.fingerprint.size else None
            self._records[name] = _Record(seen, now, seen_at, wait, version, holds=holds)
            if holds is not None:
                self._settling[holds] += 1
            heapq.heappush(self._due, (now + wait, version, name))
            self._compact()
            return
        if not record.ready and record.since + record.wait <= now:  # the very sum its due entry was keyed by
            self._uncount(record)
            record.ready = True
            if record.holds is None and seen.regular and seen.fingerprint.size:
                record.holds = self.classify(seen, True)  # a first line without a line break is whole now
            self._ready_count += 1
            heapq.heappush(self._ready, (rank(record.holds), seen.fingerprint.mtime_ns, name, record.version))

    def update(self, observations: Mapping[str, Observation], now: float) -> None:
        """Record a full scan: ``observations`` holds every candidate now; the names it lacks are forgotten."""
        for name in [name for name in self._records if name not in observations]:
            self._drop(name)
        for name, seen in observations.items():
            self.observe(name, seen, now)

    def due(self, now: float) -> list[str]:
        """The settling names whose wait has ended by ``now``: each needs one more look (:meth:`observe`) to become
        ready. Each is named once per wait."""
        names = []
        while self._due and self._due[0][0] <= now:
            _, version, name = heapq.heappop(self._due)
            record = self._records.get(name)
            if record is not None and record.version == version and not record.ready:
                names.append(name)
        return names

    def next_due(self, now: float) -> float | None:
        """When the next settling file's wait ends (seconds since the epoch), or None; ready files are left out: they
        wait for room in the feed, not for the clock."""
        while self._due:
            when, version, name = self._due[0]
            record = self._records.get(name)
            if record is not None and record.version == version and not record.ready:
                return when
            heapq.heappop(self._due)
        return None

    def first_ready(self) -> ReadyFile | None:
        """The ready file to take first: in Canvas's importer order by its SIS types (unknown last), then oldest
        mtime, then name; None when none is ready."""
        while self._ready:
            _, _, name, version = self._ready[0]
            record = self._records.get(name)
            if record is not None and record.version == version and record.ready:
                return _ready_file(name, record)
            heapq.heappop(self._ready)
        return None

    def first_ready_several(self, limit: int) -> list[ReadyFile]:
        """The first ``limit`` ready files in :meth:`first_ready`'s order (Canvas's, then oldest mtime, then name),
        without taking them: O(limit log n), whatever the backlog (a grouped feed decides on these, sets.py)."""
        found: list[ReadyFile] = []
        entries: list[tuple[int, int, str, int]] = []
        while self._ready and len(found) < limit:
            entry = heapq.heappop(self._ready)
            _, _, name, version = entry
            record = self._records.get(name)
            if record is not None and record.version == version and record.ready:  # else stale: dropped for good
                entries.append(entry)
                found.append(_ready_file(name, record))
        for entry in entries:
            heapq.heappush(self._ready, entry)
        return found

    def settling(self) -> bool:
        """Whether a tracked file is still settling (seen, not ready yet). O(1)."""
        return len(self._records) > self._ready_count

    def ready(self) -> list[ReadyFile]:
        """Every ready file in the order :meth:`first_ready` takes them. O(n log n): for tests, status and the
        supersede decision, not per claim."""
        found = [_ready_file(name, record) for name, record in self._records.items() if record.ready]
        found.sort(key=lambda item: (rank(item.holds), item.fingerprint.mtime_ns, item.name))
        return found

    def settling_kinds(self) -> list[Kind]:
        """The distinct known kinds (SIS types) of the files still settling (few: one per type or set of types)."""
        return [kind for kind, count in self._settling.items() if count > 0]

    def names(self) -> Iterable[str]:
        """The names tracked now (seen, not yet taken)."""
        return self._records.keys()

    def tracked(self, name: str) -> bool:
        """Whether ``name`` is being settled or is ready (seen, still there)."""
        return name in self._records

    def hold(self, name: str, until: float) -> None:
        """Keep ``name`` from being ready before ``until`` (seconds since the epoch), as if its settle wait ended
        then: something beside it (its params file) is still being written. A look at or after ``until`` that finds
        it unchanged makes it ready again (:meth:`due` names it then)."""
        record = self._records.get(name)
        if record is None:
            return
        if record.ready:  # settling again: it counts among the settling files
            self._ready_count -= 1
            if record.holds is not None:
                self._settling[record.holds] += 1
        record.ready = False
        record.version = next(self._versions)
        record.wait = max(record.wait, until - record.since)
        record.held_until = max(record.held_until or until, until)
        heapq.heappush(self._due, (record.since + record.wait, record.version, name))

    def retime(self, settle: float, empty_grace: float) -> None:
        """Settle with new ``settle`` and ``empty_grace`` times (seconds; a reload), the files already settling
        included, not only those seen from now on.

        Each settling file's wait is worked out again from its kind, as :meth:`observe` does for a new one (a regular
        0-byte file: the longer of the two; any other: ``settle``), still counted from when its fingerprint began to
        hold, and never ends before a :meth:`hold` on it does. A file whose wait changed gets a new version (its old
        heap entry goes stale) and is due at its new end: at once when that has passed, so the caller asks
        :meth:`next_due` again. Ready files stay ready: they held still for the wait that applied then. O(n) in the
        files tracked, once per reload (the due heap is rebuilt with ``heapify``); nothing is added per look.
        """
        self.settle, self.empty_grace = settle, empty_grace
        retimed: list[tuple[float, int, str]] = []
        for name, record in self._records.items():
            if record.ready:
                continue
            wait = self._wait_for(record.seen)
            if record.held_until is not None:
                wait = max(wait, record.held_until - record.since)
            if wait != record.wait:
                record.wait = wait
                record.version = next(self._versions)
                retimed.append((record.since + wait, record.version, name))
        if retimed:  # the entries still current (a file already named keeps none), then the new ones: O(n)
            self._due = [entry for entry in self._due if self._current(entry)] + retimed
            heapq.heapify(self._due)

    def forget(self, name: str) -> None:
        """Stop tracking ``name`` (taken, or to be found again by a later look)."""
        self._drop(name)

    def _current(self, entry: tuple[float, int, str]) -> bool:
        """Whether a due heap entry still stands for a settling file (not stale: not changed, retimed or taken)."""
        _, version, name = entry
        record = self._records.get(name)
        return record is not None and record.version == version and not record.ready

    def _wait_for(self, seen: Observation) -> float:
        """Seconds ``seen`` must hold still: a regular 0-byte file waits out the grace too (uploads create the file
        first), any other the settle time."""
        if seen.regular and seen.fingerprint.size == 0:
            return max(self.settle, self.empty_grace)
        return self.settle

    def _uncount(self, record: _Record) -> None:
        """A settling record of a known kind stops settling (ready, changed or gone): it no longer counts."""
        if not record.ready and record.holds is not None:
            self._settling[record.holds] -= 1
            if self._settling[record.holds] <= 0:
                del self._settling[record.holds]

    def _drop(self, name: str) -> None:
        record = self._records.pop(name, None)
        if record is not None:
            self._uncount(record)
            self._ready_count -= record.ready

    def __len__(self) -> int:
        return len(self._records)

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the records (a file that keeps changing, files taken)."""
        if len(self._due) + len(self._ready) > 2 * len(self._records) + 64:
            self._due = [(r.since + r.wait, r.version, n) for n, r in self._records.items() if not r.ready]
            self._ready = [
                (rank(r.holds), r.seen.fingerprint.mtime_ns, n, r.version) for n, r in self._records.items() if r.ready
            ]
            heapq.heapify(self._due)
            heapq.heapify(self._ready)


def _ready_file(name: str, record: _Record) -> ReadyFile:
    seen = record.seen
    return ReadyFile(name, seen.fingerprint, seen.regular, seen.kind, record.seen_at, record.holds)
