"""What a changed config (SIGHUP, or the file changed) applies while running, and what waits for a restart (pure).

Applied at once: the log level and format; ``polling``; each feed's settling (``settle_seconds`` and
``empty_grace_seconds``, to the files already settling in drop/ too: intake.py, SettleTracker.retime), rescan,
patterns, ``max_in_flight``, ``max_pending_imports`` (files already claimed stay claimed and are sent only while
the account has room), ``supersede``, import options (``allow_params`` and ``term_from_name``: for files claimed from
then on), freshness windows and hooks; new feeds; removed feeds with nothing in flight. Only at a restart:
``canvas`` (the account and its locks), ``state_file``, ``lock_dir``, ``metrics`` (its address), a feed's folders
and ``watch`` mode, and the removal of a feed that still has files in flight (its jobs finish first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sisdaemon.config import FeedSettings, Settings

#: A feed's keys that change where files are, or how the folder is watched: applied only at a restart.
FEED_RESTART_KEYS = ("drop_dir", "work_dir", "done_dir", "failed_dir", "watch")
#: Top-level keys applied only at a restart.
RESTART_KEYS = ("canvas", "state_file", "lock_dir", "metrics")


@dataclass(frozen=True)
class ReloadPlan:
    """What to change now. ``feeds``: the feed table to run with (name -> settings); ``added`` and ``removed``: feed
    names; ``changed``: dotted keys applied now; ``pending``: dotted keys that wait for a restart."""

    feeds: dict[str, FeedSettings]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    pending: tuple[str, ...] = field(default=())


def plan_reload(
    running: Settings, current: dict[str, FeedSettings], new: Settings, busy_feeds: Iterable[str]
) -> ReloadPlan:
    """Compare the settings the daemon started with (``running``) and its current feed table (``current``) with
    ``new``; ``busy_feeds``: feeds with files in flight. Returns the plan (nothing is changed here)."""
    busy = set(busy_feeds)
    changed: list[str] = []
    pending = [key for key in RESTART_KEYS if getattr(running, key) != getattr(new, key)]
    if running.polling != new.polling:
        changed.append("polling")
    if running.log != new.log:
        changed.append("log")
    wanted = {feed.name: feed for feed in new.feeds}
    feeds: dict[str, FeedSettings] = {}
    added: list[str] = []
    removed: list[str] = []
    for name, feed in current.items():
        if name not in wanted:
            if name in busy:
                feeds[name] = feed
                pending.append(f"feeds[{name}] (removed; files in flight)")
            else:
                removed.append(name)
            continue
        target = wanted[name]
        moved = [key for key in FEED_RESTART_KEYS if getattr(feed, key) != getattr(target, key)]
        pending += [f"feeds[{name}].{key}" for key in moved]
        # Everything else of the feed applies now; the folders and watch mode stay as they run.
        live = target.model_copy(update={key: getattr(feed, key) for key in FEED_RESTART_KEYS})
        if live != feed:
            changed.append(f"feeds[{name}]")
        feeds[name] = live
    for name, feed in wanted.items():
        if name not in current:
            feeds[name] = feed
            added.append(name)
    return ReloadPlan(feeds, tuple(added), tuple(removed), tuple(changed), tuple(pending))
