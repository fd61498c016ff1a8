"""``sisdaemon check``: a monitoring probe in the Nagios/Icinga plugin style (one line, perfdata, exit 0-3).

It reads what the daemon leaves for readers (the state and history files, the state lock, the heartbeat file, the
failed/ folders) and the config file on disk (drift.py), and writes nothing, so it runs as any user who may read
the state (the package's ``sisdaemon-ops`` group). :func:`gather` does the reading; :func:`judge` is pure: the
facts and the thresholds in, the verdict out.

Exit codes (the Monitoring Plugins guidelines): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisdaemon.config import ConfigFile, Settings, state_file_of
from sisdaemon.config.durations import format_duration
from sisdaemon.drift import Drift
from sisdaemon.freshness import judge as judge_freshness
from sisdaemon.freshness import newest
from sisdaemon.heartbeat import Beat, heartbeat_path, read_heartbeat
from sisdaemon.monitor import paused_feeds
from sisdaemon.state import History, State, StateError, StateStore, history_path, is_locked, state_lock_path
from sisdaemon.status import config_drift, drop_queue

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Thresholds:
    """``stuck_warning`` / ``stuck_critical``: seconds a file may stay claimed and not filed; ``heartbeat``: seconds
    without a turn of the daemon's loop after which it counts as stuck; ``failed_since``: files filed in failed/
    at or after this time (seconds since the epoch) make a WARNING (None: counted, not judged)."""

    stuck_warning: float = 4 * 3600
    stuck_critical: float = 24 * 3600
    heartbeat: float = 120.0
    failed_since: float | None = None


@dataclass
class FeedFacts:
    """What was read of one feed. Times in seconds since the epoch."""

    name: str
    last_file_at: float | None = None
    last_success_at: float | None = None
    claimed_at: list[float] = field(default_factory=list)
    failed_files: int = 0  # in failed/, filed at or after ``failed_since`` (all when it is None)
    expect_file_every: float | None = None
    expect_success_every: float | None = None
    #: the inode change time of the oldest file the feed would take that still waits in drop/ (renamed or written
    #: into drop/ then: an mtime kept by ``rsync -t`` says nothing of its arrival); None when none waits
    oldest_waiting_at: float | None = None


@dataclass
class Facts:
    """What :func:`gather` read. ``unreadable``: why the state could not be read (UNKNOWN); ``damaged``: why it is
    damaged (CRITICAL: the daemon cannot run on it); ``drift``: the config file on disk against what the daemon
    runs (a start that would fail: CRITICAL; a changed file or keys waiting for a restart: WARNING)."""

    running: bool = False
    beat: Beat | None = None
    fault: dict[str, Any] | None = None
    held: dict[str, str] = field(default_factory=dict)
    paused: dict[str, Any] = field(default_factory=dict)
    feeds: list[FeedFacts] = field(default_factory=list)
    unreadable: str | None = None
    damaged: list[str] = field(default_factory=list)
    drift: Drift | None = None  # the config file on disk against what the daemon runs (drift.py)
    state_known: bool = True  # False: a config that does not load no longer tells where the state is


@dataclass(frozen=True)
class Verdict:
    """The probe's answer: ``code`` (0-3), the problems (most severe first) and the perfdata."""

    code: int
    problems: tuple[str, ...]
    perfdata: tuple[str, ...]
    summary_when_ok: str = ""

    def line(self) -> str:
        """``SISDAEMON CRITICAL - daemon not running; ... | in_flight=0 ...``."""
        text = "; ".join(self.problems) if self.problems else self.summary_when_ok
        return f"SISDAEMON {LABELS[self.code]} - {text} | {' '.join(self.perfdata)}"


def gather(settings: Settings, thresholds: Thresholds, config_file: ConfigFile | None = None) -> Facts:
    """Read the state, histories, lock, heartbeat and failed/ folders (never writing), and with ``config_file``
    (the file ``settings`` were read from) compare it with what the daemon runs. A file that cannot be read for
    want of permission makes ``unreadable``; a damaged one ``damaged``."""
    facts = Facts()
    state = _gather_daemon(facts, settings.state_file)
    if facts.unreadable:
        return facts
    jobs = list(state.jobs.values()) if state else []
    for feed in settings.feeds:
        item = FeedFacts(
            feed.name,
            claimed_at=[job.claimed_at for job in jobs if job.feed == feed.name],
            expect_file_every=feed.expect_file_every,
            expect_success_every=feed.expect_success_every,
        )
        try:
            history = History(history_path(settings.state_file, feed.name))
            item.last_file_at, item.last_success_at = history.last_file_at, history.last_success_at
        except StateError as error:
            facts.damaged.append(str(error))
        except OSError as error:
            facts.unreadable = f"cannot read {error.filename}: {error.strerror or error}"
        item.oldest_waiting_at = oldest_waiting(feed.drop_dir, feed.patterns)
        try:
            item.failed_files = files_in_failed(feed.failed_dir, thresholds.failed_since)
        except OSError as error:
            facts.unreadable = f"cannot read {feed.failed_dir}: {error.strerror or error}"
        facts.feeds.append(item)
    if config_file is not None:
        _gather_drift(facts, config_file, (), settings.state_file)
    return facts


def gather_unloadable(config_file: ConfigFile, problems: Sequence[str]) -> Facts:
    """The facts for a config file on disk that does not load (``problems``: the loader's): its drift, and the
    daemon's state when the file still tells where it is (config.state_file_of); no feed is known."""
    facts = Facts()
    state_file = state_file_of(config_file)
    if state_file is not None:
        _gather_daemon(facts, state_file)
    else:
        facts.state_known = False
    _gather_drift(facts, config_file, problems, state_file)
    return facts


def _gather_daemon(facts: Facts, state_file: Path) -> State | None:
    """Read the lock, the heartbeat and the state into ``facts``; returns the state (None when damaged or not
    readable)."""
    try:
        facts.running = is_locked(state_lock_path(state_file))
        facts.beat = read_heartbeat(heartbeat_path(state_file))
        state = StateStore(state_file).load()
    except StateError as error:
        facts.damaged.append(str(error))
        return None
    except OSError as error:
        facts.unreadable = f"cannot read the state: {error.filename or state_file}: {error.strerror or error}"
        return None
    facts.fault, facts.held, facts.paused = state.fault, dict(state.held), dict(paused_feeds(state))
    return state


def _gather_drift(facts: Facts, config_file: ConfigFile, problems: Sequence[str], state_file: Path | None) -> None:
    try:
        facts.drift = config_drift(config_file, problems, state_file)
    except OSError as error:
        facts.unreadable = f"cannot read {error.filename}: {error.strerror or error}"


def oldest_waiting(folder: Path, patterns: Sequence[str]) -> float | None:
    """The arrival (inode change time, seconds since the epoch) of the oldest file in drop folder ``folder`` the
    daemon would take (status.drop_queue), or None when there is none or it cannot be read (said by the daemon)."""
    queue = drop_queue(folder, patterns)
    return None if queue is None else queue[1]


def files_in_failed(folder: Path, since: float | None) -> int:
    """How many files wait in ``folder`` (failed/): each sidecar whose file is still beside it, filed (the sidecar
    written) at or after ``since`` when given. Raises OSError."""
    count = 0
    with os.scandir(folder) as entries:
        names = {entry.name: entry for entry in entries}
    for name, entry in names.items():
        if not name.endswith(".result.json") or name.startswith("."):
            continue
        if name.removesuffix(".result.json") not in names:
            continue  # moved away or sent again: no longer waiting
        if since is None or entry.stat(follow_symlinks=False).st_mtime >= since:
            count += 1
    return count


def judge(facts: Facts, thresholds: Thresholds, now: float) -> Verdict:
    """The verdict (pure). CRITICAL: the daemon is not running or its loop is stuck, a credential or configuration
    fault stands, a feed is held, a file is claimed (or waits in drop/) for more than ``stuck_critical``, the state
    is damaged, or the config file on disk would fail at start. WARNING: Canvas is failing or throttling, a feed is
    paused or stale, a file is claimed (or waits in drop/) for more than ``stuck_warning``, files were filed in
    failed/ since ``failed_since``, the config file changed since the daemon loaded it, or keys of it wait for a
    restart. UNKNOWN: the state cannot be read."""
    if facts.unreadable:
        return Verdict(UNKNOWN, (facts.unreadable,), ())
    problems: list[tuple[int, str]] = []
    problems += [(CRITICAL, f"state damaged: {text}") for text in facts.damaged]
    beat_age = now - facts.beat.turned_at if facts.beat else None
    if not facts.state_known:
        pass  # whether a daemon runs cannot be told; the config's problems say why
    elif not facts.running:
        problems.append((CRITICAL, "daemon not running (the state lock is free)"))
    elif beat_age is None:
        problems.append((WARNING, "daemon running, but it writes no heartbeat (an older sisdaemon?)"))
    elif beat_age > thresholds.heartbeat:
        problems.append((CRITICAL, f"daemon loop stuck: no turn for {format_duration(beat_age)}"))
    fault = facts.fault or {}
    kind = fault.get("kind")
    if kind in ("credential", "configuration"):
        problems.append((CRITICAL, f"{kind} fault: {fault.get('message', '')}"))
    elif kind:
        problems.append((WARNING, f"Canvas {kind} fault: {fault.get('message', '')}"))
    problems += [(CRITICAL, f"feed {name} held: {reason}") for name, reason in sorted(facts.held.items())]
    for name, pause in sorted(facts.paused.items()):
        reason = pause.get("reason") if isinstance(pause, dict) else None
        problems.append((WARNING, f"feed {name} paused" + (f": {reason}" if reason else "")))
    oldest = min((at for feed in facts.feeds for at in feed.claimed_at), default=None)
    oldest_age = max(now - oldest, 0.0) if oldest is not None else 0.0
    stuck = [feed.name for feed in facts.feeds if any(now - at > thresholds.stuck_warning for at in feed.claimed_at)]
    if stuck:
        level = CRITICAL if oldest_age > thresholds.stuck_critical else WARNING
        problems.append((level, f"import stuck for {format_duration(oldest_age)} (feeds {', '.join(stuck)})"))
    waiting = [
        (now - feed.oldest_waiting_at, feed.name)
        for feed in facts.feeds
        if feed.oldest_waiting_at is not None and now - feed.oldest_waiting_at > thresholds.stuck_warning
    ]
    if waiting:  # a backlog, a paused feed, or files nothing will take (a manifest that never came)
        age = max(waited for waited, _ in waiting)
        level = CRITICAL if age > thresholds.stuck_critical else WARNING
        names = ", ".join(sorted(name for _, name in waiting))
        problems.append((level, f"files waiting in drop/ for {format_duration(age)} (feeds {names}): see status"))
    stale = 0
    for feed in facts.feeds:
        for verdict in judge_freshness(
            feed.name,
            now=now,
            started_at=facts.beat.started_at if facts.beat else None,
            last_file_at=newest(feed.last_file_at, *feed.claimed_at),
            last_success_at=feed.last_success_at,
            expect_file_every=feed.expect_file_every,
            expect_success_every=feed.expect_success_every,
        ):
            if verdict.stale:
                stale += 1
                problems.append((WARNING, verdict.sentence()))
    if facts.drift is not None:
        problems += [(CRITICAL if item.critical else WARNING, item.text) for item in facts.drift.probe_problems()]
    failed = sum(feed.failed_files for feed in facts.feeds)
    if thresholds.failed_since is not None and failed:
        problems.append((WARNING, f"{failed} file(s) in failed/ since {_iso(thresholds.failed_since)}"))
    problems.sort(key=lambda problem: -problem[0])
    code = max((level for level, _ in problems), default=OK)
    perfdata = (
        f"in_flight={sum(len(feed.claimed_at) for feed in facts.feeds)}",
        f"oldest_in_flight={oldest_age:.0f}s;{thresholds.stuck_warning:.0f};{thresholds.stuck_critical:.0f};0",
        f"held={len(facts.held)}",
        f"paused={len(facts.paused)}",
        f"stale={stale}",
        f"failed={failed}",
        f"heartbeat_age={beat_age:.0f}s;;{thresholds.heartbeat:.0f};0" if beat_age is not None else "heartbeat_age=U",
    )
    summary = f"{len(facts.feeds)} feed(s) fresh, daemon running, {perfdata[0].split('=')[1]} in flight"
    return Verdict(code, tuple(text for _, text in problems), perfdata, summary)


def check(
    settings: Settings, thresholds: Thresholds, now: float | None = None, config_file: ConfigFile | None = None
) -> Verdict:
    """:func:`gather`, then :func:`judge` at ``now`` (default: the wall clock, as the files' times are)."""
    return judge(gather(settings, thresholds, config_file), thresholds, time.time() if now is None else now)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
