"""Which ready file is claimed first, which waits, and which is superseded (pure: no I/O, no clock).

Canvas runs the imports of one account one at a time, in the order they were created, while inside one import it
runs the CSVs in its own importer order (docs/canvas-api.md §5; ``lib/sis/csv/import_refactored.rb`` IMPORTERS:
accounts, terms, courses, sections, users, enrollments, …). Separate files therefore reach Canvas in the order the
daemon sends them, and an enrollments file sent before its users file gives "User not found" warnings. So ready
files are claimed (and, one upload per account at a time, sent) in Canvas's importer order by the SIS type their
header names (:data:`sisdaemon.sis_csv.IMPORTERS`), then oldest first (docs/design.md "A dropped file's life"):

- **rank**: a file's place in that order: its type's index in IMPORTERS; a zip's is its earliest CSV member's; a
  file whose type is not known (not read yet, no header Canvas knows, not UTF-8) ranks after every known type;
- **hold**: the first ready file waits while a file of an earlier type in the same feed is still settling (its
  first line already names its type), and, on a ``supersede`` feed, while a newer file of the same types is
  settling; a file of unknown type never holds another. A hold lasts at most ``settle_seconds`` from its start;
- **supersede** (``supersede: true``, full-snapshot feeds): of several ready files with the same types (a CSV's
  type; a zip's set of member types), only the newest (mtime, then name) is imported; the older ones are filed in
  done/ unsent, outcome ``superseded``;
- **pending imports**: at most ``max_pending_imports`` files of the account are claimed and not yet finished in
  Canvas (claimed, being sent, queued or running); the smallest value among the feeds applies, since every feed
  of a daemon shares its one Canvas account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sisdaemon.sis_csv import IMPORTERS

#: The rank of a file whose SIS type is not known: after every known type.
UNKNOWN_RANK = len(IMPORTERS)
#: ``max_pending_imports``' default: imports of the account queued or running in Canvas at once.
DEFAULT_MAX_PENDING = 2


@dataclass(frozen=True)
class Kind:
    """What a file holds: the SIS types (Canvas's importer names, e.g. ``"user"``) its header names (a CSV: one; a
    zip: one per known CSV member). Never empty: a file of unknown type has no Kind (None)."""

    types: frozenset[str]

    @property
    def rank(self) -> int:
        """The file's place in Canvas's importer order: its earliest type's index in IMPORTERS."""
        return min((IMPORTERS.index(name) for name in self.types if name in IMPORTERS), default=UNKNOWN_RANK)

    def shown(self) -> str:
        """The types in Canvas's order, for the journal: ``"user+enrollment"``."""
        known = sorted(self.types, key=lambda name: IMPORTERS.index(name) if name in IMPORTERS else UNKNOWN_RANK)
        return "+".join(known)


def kind_of(types: Iterable[str]) -> Kind | None:
    """The Kind of a file whose header(s) name ``types`` (types not in IMPORTERS are left out); None when none is
    known."""
    known = frozenset(name for name in types if name in IMPORTERS)
    return Kind(known) if known else None


def rank(kind: Kind | None) -> int:
    """A file's place in the claim order (:attr:`Kind.rank`; :data:`UNKNOWN_RANK` for an unknown type)."""
    return kind.rank if kind is not None else UNKNOWN_RANK


def holder(ready: Kind | None, settling: Iterable[Kind], *, supersede: bool) -> Kind | None:
    """What holds the first ready file (of kind ``ready``) back: the earliest-ranked of the ``settling`` files'
    kinds (their first lines are in; unknown kinds are left out by the caller) that ranks before it, else, when
    ``supersede``, a settling kind equal to its own (a newer snapshot is on its way); None when it may go."""
    earlier = [kind for kind in settling if kind.rank < rank(ready)]
    if earlier:
        return min(earlier, key=lambda kind: (kind.rank, kind.shown()))
    if supersede and ready is not None and ready in settling:
        return ready
    return None


def hold_ends(since: float, settle_seconds: float) -> float:
    """When a hold that began at ``since`` (seconds since the epoch) ends whatever still settles: a file that
    stopped changing settles within ``settle_seconds`` of its last look, and the hold began after that look."""
    return since + settle_seconds


@dataclass(frozen=True)
class Waiting:
    """A ready file as :func:`supersede_plan` sees it: its name, mtime (ns) and kind."""

    name: str
    mtime_ns: int
    kind: Kind | None


def supersede_plan(ready: Iterable[Waiting]) -> dict[str, Waiting]:
    """For a ``supersede`` feed: each ready file that a newer ready file of the same kind replaces, by name -> that
    newest file (the newest by mtime, then name, of its kind). Files of unknown kind are never superseded.
    O(n) in the ready files given."""
    ready = list(ready)
    newest: dict[Kind, Waiting] = {}
    for item in ready:
        if item.kind is None:
            continue
        best = newest.get(item.kind)
        if best is None or (item.mtime_ns, item.name) > (best.mtime_ns, best.name):
            newest[item.kind] = item
    return {
        item.name: newest[item.kind] for item in ready if item.kind is not None and newest[item.kind].name != item.name
    }


def account_limit(limits: Iterable[int]) -> int:
    """The account's ``max_pending_imports``: the smallest of its feeds' values (``limits``), or
    :data:`DEFAULT_MAX_PENDING` when there is none."""
    return min(limits, default=DEFAULT_MAX_PENDING)


def pending_imports(states: Iterable[str]) -> int:
    """How many of the account's jobs (their ``state`` values, :class:`~sisdaemon.jobs.JobState`) count against
    ``max_pending_imports``: every job not yet finishing (claimed, being sent, queued or running in Canvas)."""
    return sum(1 for state in states if state != "finishing")


def account_has_room(states: Iterable[str], limits: Iterable[int]) -> bool:
    """Whether another file of the account may be claimed under ``max_pending_imports``."""
    return pending_imports(states) < account_limit(limits)


#: Job states (:class:`~sisdaemon.jobs.JobState` values) whose import is being sent, queued or running in Canvas.
IN_CANVAS = frozenset({"submitting", "submitted"})


def in_canvas(states: Iterable[str]) -> int:
    """How many of the account's jobs (their ``state`` values) are being sent, queued or running in Canvas."""
    return sum(1 for state in states if state in IN_CANVAS)


def may_send(states: Iterable[str], limits: Iterable[int]) -> bool:
    """Whether a claimed file of the account may be sent now: fewer than ``max_pending_imports`` of its jobs are
    in Canvas (:func:`in_canvas`). The claim's own limit (:func:`account_has_room`) keeps this true for the intake's
    files; it holds back files claimed past the limit by ``sisdaemon retry``, so that a retry of many failed files
    queues no more in Canvas than the limit either."""
    return in_canvas(states) < account_limit(limits)


def superseded_record(newer: Waiting, size: int, mtime: str | None) -> Mapping[str, object]:
    """The sidecar's ``superseded_by`` for a file replaced by ``newer`` (still in drop/ then): its name, size
    (bytes), mtime (ISO 8601 UTC) and types."""
    return {
        "file": newer.name,
        "size": size,
        "mtime": mtime,
        "types": sorted(newer.kind.types) if newer.kind is not None else [],
    }


def ordered(ready: Sequence[Waiting]) -> list[Waiting]:
    """``ready`` in claim order: rank, then oldest mtime, then name (for tests and status; the tracker keeps its
    heap in the same order)."""
    return sorted(ready, key=lambda item: (rank(item.kind), item.mtime_ns, item.name))
