"""The claim line-up: the intake's side of the claim order, ``supersede`` and ``max_pending_imports``, with their
lines in the journal (the decisions themselves are order.py's, pure).

- Each feed's settle tracker learns a file's SIS types from its header (headers.py), once per fingerprint, and hands
  ready files out in Canvas's importer order (settle.py).
- :meth:`Lineup.may_go`: the first ready file waits, at most ``settle_seconds``, while a file of an earlier type (or,
  on a ``supersede`` feed, a newer one of the same types) still settles; said once in the journal
  (``claim_held_for_order``) and when it ends (``claim_hold_over``).
- :meth:`Lineup.superseded`: on a ``supersede`` feed, the ready files a newer ready file of the same types replaces.
- :meth:`Lineup.account_has_room`: ``max_pending_imports``; :meth:`Lineup.after_claims` says in the journal when
  files start and stop waiting for it (``claims_wait_for_pending_imports`` / ``pending_imports_below_limit``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path

from sisdaemon import headers, jobs, order
from sisdaemon.config import FeedSettings
from sisdaemon.ledger import Ledger
from sisdaemon.logs import Conditions
from sisdaemon.order import Kind
from sisdaemon.settle import Classify, Observation, ReadyFile, SettleTracker

#: The journal's condition (and event) of a ready file held back for the claim order.
ORDER_HOLD = "claim_held_for_order"
#: The journal's condition (and event) of ready files that wait for the account's pending imports.
PENDING_WAIT = "claims_wait_for_pending_imports"
#: At most this many jobs of a feed in the state while older snapshots are superseded: the rest are superseded once
#: these are filed (the state holds only claimed and in-flight jobs, whatever the backlog).
SUPERSEDE_BATCH = 16


def classifier(drop_dir: Path) -> Classify:
    """The settle tracker's ``classify`` for a feed whose drop folder is ``drop_dir``: the file's SIS types from its
    header (headers.py)."""

    def classify(seen: Observation, settled: bool) -> Kind | None:
        return headers.kind_of_file(drop_dir / seen.name, settled=settled)

    return classify


def _iso_ns(mtime_ns: int) -> str:
    return dt.datetime.fromtimestamp(mtime_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Lineup:
    """The claim order's holds, the supersede decision and the account's pending imports, for every feed.

    ``feeds``: feed name -> current settings (the daemon's table, changed in place on reload: ``supersede`` and
    ``max_pending_imports`` apply at once). ``ledger``: read for the account's jobs. ``conditions``: the daemon's
    lasting conditions. ``to_wall``: the daemon's clock as wall time, for the times the journal shows.
    """

    def __init__(
        self,
        feeds: Mapping[str, FeedSettings],
        ledger: Ledger,
        conditions: Conditions,
        *,
        to_wall: Callable[[float | None], float | None] = lambda moment: moment,
    ) -> None:
        self.feeds = feeds
        self.ledger = ledger
        self.conditions = conditions
        self.to_wall = to_wall
        #: feed -> (the name of its first ready file held back, when that hold ends: seconds since the epoch)
        self._holds: dict[str, tuple[str, float]] = {}

    # --- Canvas's order ----------------------------------------------------------------------------------------

    def may_go(self, feed: FeedSettings, tracker: SettleTracker, item: ReadyFile, now: float) -> bool:
        """Whether ``item``, the first ready file of ``feed``, may be claimed now: not while a file that must go
        before it still settles (order.holder), for at most ``settle_seconds`` from when that hold began."""
        behind = order.holder(item.holds, tracker.settling_kinds(), supersede=feed.supersede)
        if behind is not None:
            held = self._holds.get(feed.name)
            if held is None or held[0] != item.name:
                self.end_hold(feed.name)
                held = (item.name, order.hold_ends(now, feed.settle_seconds))
                self._holds[feed.name] = held
            if now < held[1]:
                self.conditions.start(
                    (ORDER_HOLD, feed.name, item.name),
                    ORDER_HOLD,
                    level="info",
                    feed=feed.name,
                    file=jobs.display_name(item.name),
                    types=item.holds.shown() if item.holds is not None else None,
                    behind=behind.shown(),
                    until=jobs.iso(self.to_wall(held[1])),
                    hint="a file that goes before it in Canvas's order (or a newer snapshot) is still settling",
                )
                return False
        self.end_hold(feed.name)
        return True

    def end_hold(self, feed: str) -> None:
        """``feed``'s held file is taken, gone or free to go: its hold ends (said if it was said)."""
        held = self._holds.pop(feed, None)
        if held is not None:
            self.conditions.end(
                (ORDER_HOLD, feed, held[0]), "claim_hold_over", feed=feed, file=jobs.display_name(held[0])
            )

    def due_times(self, now: float) -> list[float]:
        """When each hold still to come ends (seconds since the epoch), for the loop's sleep; a hold whose end has
        passed waits for the feed's next claim (when it has room), not for the clock."""
        return [until for _, until in self._holds.values() if until > now]

    # --- supersede ---------------------------------------------------------------------------------------------

    def superseded(self, feed: FeedSettings, tracker: SettleTracker) -> list[tuple[ReadyFile, Mapping[str, object]]]:
        """On a ``supersede`` feed, the ready files a newer ready file of the same SIS types replaces, each with the
        sidecar's ``superseded_by`` (order.superseded_record), oldest first; empty otherwise."""
        if not feed.supersede:
            return []
        ready = tracker.ready()
        if len(ready) < 2:
            return []
        plan = order.supersede_plan(order.Waiting(item.name, item.fingerprint.mtime_ns, item.holds) for item in ready)
        sizes = {item.name: item.fingerprint.size for item in ready}
        found: list[tuple[ReadyFile, Mapping[str, object]]] = []
        for item in sorted(ready, key=lambda item: (item.fingerprint.mtime_ns, item.name)):
            newer = plan.get(item.name)
            if newer is not None:
                record = dict(order.superseded_record(newer, sizes[newer.name], _iso_ns(newer.mtime_ns)))
                record["file"] = jobs.display_name(newer.name)
                found.append((item, record))
        return found

    # --- max_pending_imports -----------------------------------------------------------------------------------

    def limit(self) -> int:
        """The account's ``max_pending_imports``: the smallest among the feeds (they share the daemon's account)."""
        return order.account_limit(feed.max_pending_imports for feed in self.feeds.values())

    def pending(self) -> int:
        """The account's jobs that count against ``max_pending_imports`` (claimed, being sent, queued or running)."""
        return order.pending_imports(str(job.state) for job in self.ledger.jobs())

    def account_has_room(self) -> bool:
        """Whether another file of the account may be claimed under ``max_pending_imports``."""
        return self.pending() < self.limit()

    def after_claims(self, feed: str, *, waiting: bool) -> None:
        """``feed``'s claims for this turn are done, ``waiting``: ready files are left in drop/. Says in the journal
        when they start waiting for the account's pending imports, and when that wait ends."""
        key = (PENDING_WAIT, feed)
        if waiting and not self.account_has_room():
            self.conditions.start(
                key,
                PENDING_WAIT,
                level="info",
                feed=feed,
                pending=self.pending(),
                max_pending_imports=self.limit(),
                hint="the files wait in drop/ (visible, cancellable) until an import of this account ends in Canvas",
            )
        else:
            self.conditions.end(key, "pending_imports_below_limit", feed=feed)
