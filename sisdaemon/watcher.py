"""Drop-folder detection: watchdog events as wake-ups, a scan at start-up, a periodic rescan, and settling.

Events never carry decisions: any event in a drop folder only wakes the daemon for a (debounced) scan, and the scan
is the one source of truth. A file is ready when its inode, size, mtime and ctime have not changed for
``settle_seconds`` on the daemon's own clock (an ``rsync -a`` copy keeps an old mtime, so mtime alone proves
nothing; docs/design.md "A dropped file's life").
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from sisdaemon.jobs import Fingerprint

#: Names never taken (docs/design.md "Folders, names and what is taken"): upload temp names of rsync, WinSCP, editors.
IGNORED_SUFFIXES = (".part", ".filepart", ".tmp", "~")


def skip_reason(name: str, patterns: Iterable[str]) -> str | None:
    """Why a drop-folder entry's name is never taken, or None when it may be: ``"dot_name"`` (hidden, as SFTP
    clients' and rsync's temp names are), ``"temp_name"`` (an upload temp suffix of :data:`IGNORED_SUFFIXES`) or
    ``"no_pattern_matches"`` (none of the feed's ``patterns`` matches, case-insensitive)."""
    lowered = name.lower()
    if name.startswith("."):
        return "dot_name"
    if lowered.endswith(IGNORED_SUFFIXES):
        return "temp_name"
    if not any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns):
        return "no_pattern_matches"
    return None


def is_candidate_name(name: str, patterns: Iterable[str]) -> bool:
    """Whether a drop-folder entry's name may be taken: matches a pattern (case-insensitive) and is no temp name."""
    return skip_reason(name, patterns) is None


@dataclass(frozen=True)
class Observation:
    """One scan's view of a candidate: its fingerprint, whether it is a regular file, and its file type."""

    name: str
    fingerprint: Fingerprint
    regular: bool
    kind: str  # "file", "symlink", "fifo", "socket", "device", "directory"


@dataclass(frozen=True)
class ReadyFile:
    """A file that settled: ``seen_at`` is when the daemon first saw it (seconds since the epoch)."""

    name: str
    fingerprint: Fingerprint
    regular: bool
    kind: str
    seen_at: float


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    return "device"


def scan(
    drop_dir: Path,
    patterns: Iterable[str],
    lstat: Callable[[str], os.stat_result] = os.lstat,
    skipped: dict[str, str] | None = None,
) -> dict[str, Observation]:
    """The candidates now in ``drop_dir`` by name (sub-folders and ignored names left out; symlinks not followed).

    ``skipped``, when given, is filled with the names left out and why (:func:`skip_reason`'s reasons, or
    ``"folder"`` for a sub-folder). Raises FileNotFoundError if the folder is gone. A name that vanishes mid-scan is
    skipped.
    """
    found: dict[str, Observation] = {}
    patterns = tuple(patterns)
    with os.scandir(drop_dir) as entries:
        for entry in entries:
            reason = skip_reason(entry.name, patterns)
            if reason is not None:
                if skipped is not None:
                    skipped[entry.name] = reason
                continue
            try:
                result = lstat(entry.path)
            except FileNotFoundError:
                continue
            kind = _kind(result.st_mode)
            if kind == "directory":
                if skipped is not None:
                    skipped[entry.name] = "folder"
                continue
            found[entry.name] = Observation(
                entry.name,
                Fingerprint(result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns),
                kind == "file",
                kind,
            )
    return found


class SettleTracker:
    """Decides, scan after scan, which candidates have settled (pure: no I/O, ``now`` is passed in).

    ``settle``: seconds a fingerprint must stay unchanged. ``empty_grace``: seconds a 0-byte file must stay
    unchanged before it is handed on (to be refused as ``empty_file``): uploads often create the file first.
    Memory: one small record per candidate in the drop folder.
    """

    def __init__(self, settle: float, empty_grace: float) -> None:
        self.settle = settle
        self.empty_grace = empty_grace
        # name -> (fingerprint, stable since, seen at, seconds it must stay stable)
        self._since: dict[str, tuple[Fingerprint, float, float, float]] = {}

    def update(self, observations: Mapping[str, Observation], now: float) -> list[ReadyFile]:
        """Record a scan; return the settled candidates, oldest mtime first (then by name)."""
        for name in list(self._since):
            if name not in observations:
                del self._since[name]
        ready = []
        for name, seen in observations.items():
            previous = self._since.get(name)
            if previous is None or previous[0] != seen.fingerprint:
                seen_at = previous[2] if previous else now
                wait = self.settle
                if seen.regular and seen.fingerprint.size == 0:
                    wait = max(self.settle, self.empty_grace)
                self._since[name] = (seen.fingerprint, now, seen_at, wait)
                continue
            _, stable_since, seen_at, wait = previous
            if now - stable_since >= wait:
                ready.append(ReadyFile(name, seen.fingerprint, seen.regular, seen.kind, seen_at))
        ready.sort(key=lambda item: (item.fingerprint.mtime_ns, item.name))
        return ready

    def names(self) -> list[str]:
        """The names tracked now (seen, not yet taken)."""
        return list(self._since)

    def next_due(self, now: float) -> float | None:
        """The earliest time after ``now`` (seconds since the epoch) a tracked candidate becomes ready, or None.

        Candidates already ready are left out: they wait for room in the feed, not for the clock.
        """
        times = [since + wait for _, since, _, wait in self._since.values() if since + wait > now]
        return min(times) if times else None

    def tracked(self, name: str) -> bool:
        """Whether ``name`` is being settled (seen in an earlier scan, still there)."""
        return name in self._since

    def forget(self, name: str) -> None:
        self._since.pop(name, None)

    def __len__(self) -> int:
        return len(self._since)


class _WakeHandler(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._wake.set()


class DropWatcher:
    """Watches one drop folder: events (inotify) or polling (NFS/CIFS) only set ``wake``.

    :meth:`ensure_watching` re-creates the watch when the folder was deleted and made again (its inode changed),
    and is called by every rescan.
    """

    def __init__(
        self, drop_dir: Path, wake: threading.Event, *, mode: str = "events", poll_seconds: float = 5.0
    ) -> None:
        self.drop_dir = drop_dir
        self._wake = wake
        self._mode = mode
        self._poll_seconds = poll_seconds
        self._observer: BaseObserver | None = None
        self._watched_ino: int | None = None

    def _new_observer(self) -> BaseObserver:
        if self._mode == "poll":
            return PollingObserver(timeout=self._poll_seconds)
        return Observer()

    def ensure_watching(self) -> bool:
        """Start (or restart) the observer if needed. Returns False when the drop folder is missing."""
        try:
            ino = os.stat(self.drop_dir).st_ino
        except FileNotFoundError:
            return False
        if self._observer is not None and ino == self._watched_ino and self._observer.is_alive():
            return True
        self.stop()
        observer = self._new_observer()
        observer.name = f"sisdaemon-watch-{self.drop_dir.name}"
        observer.daemon = True
        observer.schedule(_WakeHandler(self._wake), str(self.drop_dir), recursive=False)
        observer.start()
        self._observer = observer
        self._watched_ino = ino
        return True

    def stop(self) -> None:
        """Stop and join the observer (safe to call twice)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
