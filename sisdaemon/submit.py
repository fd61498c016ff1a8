"""``sisdaemon submit FILE``: one file now, whether or not a daemon is running.

The file is always handed over through the feed's drop folder, so it is in the spool (and covered by its promises)
before anything is sent: copied under a dot-name (never taken), fsynced, then renamed to
``sisdaemon-submit-<stamp>-<random>_<name>``, a name no upstream file has. If a daemon holds the state lock, it
takes the file; ``submit`` waits for the result in the feed's history. Otherwise ``submit`` takes the locks and
runs the job itself, taking only that file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from sisdaemon.config import FeedSettings, Settings
from sisdaemon.daemon import EXIT_GAVE_UP, Daemon
from sisdaemon.jobs import Job
from sisdaemon.state import (
    History,
    LockHeld,
    StateError,
    StateStore,
    fsync_dir,
    history_path,
    is_locked,
    state_lock_path,
)
from sisdaemon.status import waiting_in_drop
from sisdaemon.watcher import is_candidate_name

EXIT_OK = 0
EXIT_FAILED = 1


def hand_over(source: Path, feed: FeedSettings) -> str:
    """Copy ``source`` into the feed's drop folder under a unique name; returns that name. Raises OSError."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"sisdaemon-submit-{stamp}-{secrets.token_hex(4)}_{source.name}"
    temp = feed.drop_dir / f".{name}.tmp"
    with open(source, "rb") as reader, open(temp, "xb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    os.rename(temp, feed.drop_dir / name)
    fsync_dir(feed.drop_dir)
    return name


def _print_event(event: str, job: Job) -> None:
    if event == "filed":
        print(f"{job.name}: {job.outcome} -> {job.folder}/{job.work_name}", flush=True)
    elif event == "submitted":
        print(f"{job.name}: import {job.import_id} {job.workflow_state}", flush=True)
    elif event == "progress":
        print(f"{job.name}: import {job.import_id} {job.workflow_state} {job.progress}", flush=True)


def submit(
    settings: Settings, config_path: Path, file: Path, *, feed_name: str | None, wait: bool, max_wait: float
) -> int:
    """Submit ``file`` through feed ``feed_name`` (default: the first). Returns the exit code: 0 done/, 1 failed/,
    3 gave up waiting, 2 bad arguments."""
    feeds = {feed.name: feed for feed in settings.feeds}
    feed = feeds.get(feed_name) if feed_name else settings.feeds[0]
    if feed is None:
        print(f"sisdaemon submit: no feed named {feed_name!r} (feeds: {', '.join(feeds)})")
        return 2
    if not file.is_file():
        print(f"sisdaemon submit: {file} is not a readable regular file")
        return 2
    if not is_candidate_name(file.name, feed.patterns):
        print(
            f"sisdaemon submit: {file.name} matches none of feed {feed.name}'s patterns "
            f"({', '.join(feed.patterns)}) or is a temporary name; the daemon would never take it"
        )
        return 2
    name = hand_over(file, feed)
    print(f"{file.name}: handed to feed {feed.name} as {name}", flush=True)
    if not is_locked(state_lock_path(settings.state_file)):
        daemon = Daemon(
            settings,
            config_path=config_path,
            once=True,
            max_wait=max_wait,
            only={feed.name: {name}},
            on_event=_print_event if wait else None,
        )
        try:
            daemon.run()
        except LockHeld:
            pass  # a daemon started meanwhile: it takes the file
        else:
            result = _result(settings, feed, name, quiet=wait)
            if result is None:
                print(f"{name}: not finished; it stays queued in {feed.drop_dir} for the next daemon run", flush=True)
                return EXIT_GAVE_UP
            return result
    if not wait:
        return EXIT_OK
    return _wait_for(settings, feed, name, max_wait)


def _result(settings: Settings, feed: FeedSettings, name: str, *, quiet: bool = False) -> int | None:
    """0 or 1 once the feed's history has ``name``'s record (printed unless ``quiet``), else None."""
    try:
        history = History(history_path(settings.state_file, feed.name))
    except StateError:
        return None
    for record in reversed(history.records):
        if record.get("file") == name:
            if not quiet:
                print(
                    f"{name}: {record.get('outcome')} -> {record.get('folder')}/{record.get('work_name')}", flush=True
                )
            return EXIT_OK if record.get("folder") == "done" else EXIT_FAILED
    return None


def _wait_for(settings: Settings, feed: FeedSettings, name: str, max_wait: float) -> int:
    """Wait for the running daemon to file ``name``, printing its import's progress."""
    deadline = time.monotonic() + max_wait
    pause = threading.Event()
    last = None
    print(
        f"{name}: queued in {feed.drop_dir} ({waiting_in_drop(feed)} file(s) waiting; the oldest go first)", flush=True
    )
    while time.monotonic() < deadline:
        result = _result(settings, feed, name)
        if result is not None:
            return result
        try:
            state = StateStore(settings.state_file).load()
        except StateError:
            state = None
        for job in state.jobs.values() if state else []:
            if job.name == name:
                seen = (job.state, job.import_id, job.workflow_state, job.progress)
                if seen != last:
                    last = seen
                    print(
                        f"{name}: {job.state}, import {job.import_id} {job.workflow_state or ''} "
                        f"{job.progress if job.progress is not None else ''}".rstrip(),
                        flush=True,
                    )
        pause.wait(0.5)
    print(f"{name}: not finished after {max_wait:.0f} s; it stays in the daemon's hands")
    return EXIT_GAVE_UP
