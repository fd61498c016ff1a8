"""Drop-folder detection: what a name in a drop folder is, full scans, and watches whose events carry names.

The watch (inotify, or polling on NFS/CIFS) records the names its events are about and sets the loop's wake-up; the
intake then looks at those names only (one ``lstat`` each), so detection works per changed file, not per waiting
file. A full scan (:func:`scan`) runs at start-up, on its own timer (``rescan_seconds``), and after the kernel's
event queue overflowed (events were lost). Reads (the daemon's own opens), names never taken, and the daemon's own
renames out of the folder (:meth:`DropWatcher.expect_departure`) wake nothing. Settling itself is settle.py.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
from watchdog.observers.polling import PollingObserver

from sisdaemon.file_options import is_params_name
from sisdaemon.jobs import Fingerprint
from sisdaemon.settle import Observation, ReadyFile, SettleTracker

__all__ = [
    "IGNORED_SUFFIXES",
    "NEVER_TAKEN",
    "DropWatcher",
    "Observation",
    "ReadyFile",
    "SettleTracker",
    "is_candidate_name",
    "look",
    "observation_of",
    "scan",
    "skip_reason",
]

#: Seconds watchdog holds an inotify IN_MOVED_FROM to pair it with its IN_MOVED_TO (watchdog's own default: 0.5).
#: Its reader waits that long on such an event at the head of its queue, paired or not, and every event behind it
#: waits too: each claim's rename out of the drop folder (an IN_MOVED_FROM never paired, work/ is not watched) held
#: the next dropped file's event up to half a second (issue 9). Pairing changes nothing here: a rename within the
#: folder reads the same as a delete of its old name and a create of its new one (:class:`_WakeHandler`).
MOVE_PAIRING_SECONDS = 0.01

#: Names never taken (docs/design.md "Folders, names and what is taken"): upload temp names of rsync, WinSCP, editors.
IGNORED_SUFFIXES = (".part", ".filepart", ".tmp", "~")


#: What each reason a name is never taken (:func:`skip_reason`, ``"folder"``) means to the sysadmin who finds it
#: left in drop/ (``status``, the journal's ``file_never_taken``). ``"params_file"`` is not among them: a params file
#: is read with its data file (params_files.py says an orphan on its own).
NEVER_TAKEN = {
    "dot_name": "a dot-name (an upload's temporary name): taken once renamed to a name the patterns match",
    "temp_name": "an upload's temporary name (.part, .filepart, .tmp, ~): taken once renamed without it",
    "no_pattern_matches": "no pattern of the feed matches it",
    "folder": "a sub-folder: only files in drop/ itself are taken",
}


def skip_reason(name: str, patterns: Iterable[str]) -> str | None:
    """Why a drop-folder entry's name is never taken, or None when it may be: ``"dot_name"`` (hidden, as SFTP
    clients' and rsync's temp names are), ``"temp_name"`` (an upload temp suffix of :data:`IGNORED_SUFFIXES`) or
    ``"params_file"`` (``<file>.params.yaml``: read with its data file, whatever the patterns) or
    ``"no_pattern_matches"`` (none of the feed's ``patterns`` matches, case-insensitive)."""
    lowered = name.lower()
    if name.startswith("."):
        return "dot_name"
    if lowered.endswith(IGNORED_SUFFIXES):
        return "temp_name"
    if is_params_name(name):
        return "params_file"  # read with its data file, never taken on its own (params_files.py)
    if not any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns):
        return "no_pattern_matches"
    return None


def is_candidate_name(name: str, patterns: Iterable[str]) -> bool:
    """Whether a drop-folder entry's name may be taken: matches a pattern (case-insensitive) and is no temp name."""
    return skip_reason(name, patterns) is None


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


def observation_of(name: str, result: os.stat_result) -> Observation:
    """What an ``lstat`` result says of the drop-folder entry ``name``."""
    kind = _kind(result.st_mode)
    return Observation(
        name, Fingerprint(result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns), kind == "file", kind
    )


def look(
    drop_dir: Path, name: str, patterns: Iterable[str], lstat: Callable[[str], os.stat_result] = os.lstat
) -> tuple[Observation | None, str | None]:
    """One name in ``drop_dir`` now: ``(observation, None)`` for a candidate, ``(None, reason)`` for an entry never
    taken (:func:`skip_reason`'s reasons, or ``"folder"``), ``(None, None)`` when there is no such entry. One
    ``lstat`` (through ``lstat``), none for a name never taken; symlinks are not followed. Raises OSError other than
    FileNotFoundError."""
    reason = skip_reason(name, patterns)
    if reason is not None:
        return None, reason
    try:
        result = lstat(os.path.join(drop_dir, name))
    except FileNotFoundError:
        return None, None
    seen = observation_of(name, result)
    if seen.kind == "directory":
        return None, "folder"
    return seen, None


def scan(
    drop_dir: Path,
    patterns: Iterable[str],
    lstat: Callable[[str], os.stat_result] = os.lstat,
    skipped: dict[str, str] | None = None,
) -> dict[str, Observation]:
    """The candidates now in ``drop_dir`` by name (sub-folders and ignored names left out; symlinks not followed):
    every entry listed, and each candidate looked at (:func:`look`).

    ``skipped``, when given, is filled with the names left out and why (:func:`skip_reason`'s reasons, or
    ``"folder"`` for a sub-folder). Raises FileNotFoundError if the folder is gone. A name that vanishes mid-scan is
    skipped.
    """
    found: dict[str, Observation] = {}
    patterns = tuple(patterns)
    with os.scandir(drop_dir) as entries:
        for entry in entries:
            seen, reason = look(drop_dir, entry.name, patterns, lstat)
            if seen is not None:
                found[entry.name] = seen
            elif reason is not None and skipped is not None:
                skipped[entry.name] = reason
    return found


#: The events a watch asks for. Opens and reads (the daemon's own writer check and uploads) are left out: they change
#: nothing. A create, a write, a close after writing, a change of mode or owner, a rename in or out, a delete do.
_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


class _Changes:
    """What a watch's events said since the intake last asked (shared by the observer's thread and the loop's):
    the names they were about, whether a full scan is needed (events were lost, or the folder itself went), and the
    names the daemon is moving out itself, whose departure is no news."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: set[str] = set()
        self.full = False
        self.arrived = False  # one of the names arrived (created or renamed in): worth a look at once
        self.expected: dict[str, int] = {}


class _WakeHandler(FileSystemEventHandler):
    """Records each event's names in ``changes`` and sets ``wake``, unless the event is no news: a name never taken
    (``wanted`` says no), the drop folder's own "modified", or the departure of a file the daemon is moving out. A
    name that arrives (created, or the new name of a rename) marks ``changes.arrived``.
    ``wanted`` None: a wake-up for any event, nothing recorded (the control folder's watch)."""

    def __init__(
        self, folder: str, wake: threading.Event, changes: _Changes, wanted: Callable[[str], bool] | None
    ) -> None:
        self._folder = folder
        self._wake = wake
        self._changes = changes
        self._wanted = wanted

    def on_any_event(self, event: FileSystemEvent) -> None:
        if self._wanted is None:
            self._wake.set()
            return
        news = False
        departing = event.event_type in ("deleted", "moved")
        with self._changes.lock:
            for index, path in enumerate((event.src_path, event.dest_path)):
                path = os.fsdecode(path)
                if not path:
                    continue
                if path == self._folder:  # the folder itself was deleted or moved: look at everything again
                    if event.event_type in ("deleted", "moved"):
                        self._changes.full = news = True
                    continue
                folder, name = os.path.split(path)
                if folder != self._folder or not self._wanted(name):
                    continue
                if index == 0 and departing and self._changes.expected.get(name):
                    self._changes.expected[name] -= 1  # the daemon's own rename out of the folder
                    if not self._changes.expected[name]:
                        del self._changes.expected[name]
                    continue
                self._changes.names.add(name)
                if event.event_type == "created" or (index == 1 and event.event_type == "moved"):
                    self._changes.arrived = True
                news = True
        if news:
            self._wake.set()


class _OverflowAlarm(logging.Handler):
    """watchdog deals with the kernel's event-queue overflow (IN_Q_OVERFLOW: events were lost) itself and says so
    only in its log, at warning ("Inotify queue overflowed; filesystem events were lost", watchdog/observers/
    inotify_c.py). All watches share one inotify descriptor (``InotifyFD.get_instance``), so every watch then needs a
    full scan."""

    LOGGER = "watchdog.observers.inotify_c"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.watchers: weakref.WeakSet[DropWatcher] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        if "queue overflow" in record.getMessage().lower():
            for watcher in list(self.watchers):
                watcher.overflowed()

    @classmethod
    def install(cls) -> _OverflowAlarm:
        """The one alarm, on watchdog's inotify logger, at warning whatever level "watchdog" is given (logs.py)."""
        logger = logging.getLogger(cls.LOGGER)
        for handler in logger.handlers:
            if isinstance(handler, cls):
                return handler
        alarm = cls()
        logger.addHandler(alarm)
        logger.setLevel(logging.WARNING)
        return alarm


class DropWatcher:
    """Watches one folder: events (inotify) or polling (NFS/CIFS) record names and set ``wake``.

    ``wanted(name)``: whether events about ``name`` matter (the intake passes the feed's candidate names); None for
    a watch that only wakes (any event, nothing recorded). :meth:`take_changes` hands the names over;
    :meth:`ensure_watching` re-creates the watch when the folder was deleted and made again (its inode changed).
    """

    def __init__(
        self,
        drop_dir: Path,
        wake: threading.Event,
        *,
        mode: str = "events",
        poll_seconds: float = 5.0,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.drop_dir = drop_dir
        self._wake = wake
        self._mode = mode
        self._poll_seconds = poll_seconds
        self._wanted = wanted
        self._changes = _Changes()
        self._observer: BaseObserver | None = None
        self._watched_ino: int | None = None
        _OverflowAlarm.install().watchers.add(self)

    def _new_observer(self) -> BaseObserver:
        if self._mode == "poll":
            return PollingObserver(timeout=self._poll_seconds)
        # watchdog's setting of its move pairing (a class attribute, read when a watch is made): see the constant.
        InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS
        return Observer()

    def ensure_watching(self) -> bool:
        """Start (or restart) the observer if needed. Returns False when the drop folder is missing. A new watch
        asks for a full scan (events before it were not seen)."""
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
        handler = _WakeHandler(os.fspath(self.drop_dir), self._wake, self._changes, self._wanted)
        observer.schedule(handler, str(self.drop_dir), recursive=False, event_filter=_EVENTS)
        observer.start()
        self._observer = observer
        self._watched_ino = ino
        with self._changes.lock:
            self._changes.full = True
        return True

    def pending(self) -> bool:
        """Whether events brought news since the last :meth:`take_changes`."""
        with self._changes.lock:
            return bool(self._changes.names) or self._changes.full

    def arrived(self) -> bool:
        """Whether a name among those pending arrived (created, or renamed in): a renamed-in file is whole, and a
        first look at a new one costs one ``lstat``, so the intake looks at once rather than after its debounce."""
        with self._changes.lock:
            return self._changes.arrived

    def take_changes(self) -> tuple[set[str], bool]:
        """The names events were about since the last call, and whether a full scan is needed (the kernel's queue
        overflowed, the folder went, or the watch is new); both are reset."""
        with self._changes.lock:
            names, full = self._changes.names, self._changes.full
            self._changes.names, self._changes.full = set(), False
            self._changes.arrived = False
            if full:
                self._changes.expected.clear()  # a full scan follows: a departure's event, if ever, is one more look
        return names, full

    def expect_departure(self, name: str) -> None:
        """The daemon is about to move ``name`` out of the folder: its event is no news (no wake-up)."""
        with self._changes.lock:
            self._changes.expected[name] = self._changes.expected.get(name, 0) + 1

    def departure_failed(self, name: str) -> None:
        """The move announced by :meth:`expect_departure` did not happen: a later departure of ``name`` is news."""
        with self._changes.lock:
            count = self._changes.expected.pop(name, 0) - 1
            if count > 0:
                self._changes.expected[name] = count

    def overflowed(self) -> None:
        """Events were lost (any thread): the next look is a full scan, and the loop wakes for it."""
        with self._changes.lock:
            self._changes.full = True
        self._wake.set()

    def stop(self) -> None:
        """Stop and join the observer (safe to call twice)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
