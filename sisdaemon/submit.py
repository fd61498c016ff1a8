"""``sisdaemon submit FILE``: one file now, whether or not a daemon is running.

The file is always handed over through the feed's drop folder, so it is in the spool (and covered by its promises)
before anything is sent: copied under a dot-name (never taken), fsynced, then renamed to
``sisdaemon-submit-<stamp>-<random>_<name>``, a name no upstream file has. If a daemon holds the state lock, it
takes the file; ``submit`` waits for the result in the feed's history (printing where it stands with ``--wait``)
and exits by it, as when it runs the job itself. Otherwise ``submit`` takes the locks and
runs the job itself, taking only that file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sisdaemon.config import FeedSettings, Settings
from sisdaemon.daemon import EXIT_GAVE_UP, Daemon
from sisdaemon.jobs import Job, iso
from sisdaemon.state import (
    History,
    LockHeld,
    State,
    StateError,
    StateStore,
    fsync_dir,
    history_path,
    is_locked,
    state_lock_path,
)
from sisdaemon.status import waiting_in_drop
from sisdaemon.waits import feed_wait, job_wait
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


def where_it_stands(job: Mapping[str, Any], wait: Mapping[str, Any] | None = None) -> str:
    """One line on where a job stands (its stored form, :meth:`~sisdaemon.jobs.Job.to_dict`): its state, its
    import's ``workflow_state`` and ``progress``, the import it is queued behind in Canvas, and why it waits
    (``wait``: :func:`sisdaemon.waits.job_wait`'s answer; its ``until`` is shown only where it does not move at each
    retry). The same job gives the same line, so printing on change prints one line per change, not per poll."""
    import_id, state = job.get("import_id"), job.get("state")
    if import_id is None:
        line = str(state)
    elif job.get("workflow_state") == "created":
        behind = job.get("queued_behind")
        line = f"import {import_id} created, queued in Canvas" + (f" behind import {behind}" if behind else "")
    else:
        progress = job.get("progress")
        line = f"import {import_id} {job.get('workflow_state')}"
        line += f", progress {progress}%" if progress is not None else ""
    if wait is not None and wait.get("reason") not in ("queued_in_canvas", "importing"):
        until = wait.get("until") if wait.get("reason") not in ("canvas_fault", "retry_later") else None
        line += f" — waits: {wait.get('text')}" + (f" (until {iso(until)})" if until else "")
    return line


def _print_event(event: str, job: Job) -> None:
    if event == "filed":
        print(f"{job.name}: {job.outcome} -> {job.folder}/{job.work_name}", flush=True)
    elif event in ("submitted", "progress"):
        print(f"{job.name}: {where_it_stands(job.to_dict())}", flush=True)


def submit(
    settings: Settings, config_path: Path, file: Path, *, feed_name: str | None, wait: bool, max_wait: float
) -> int:
    """Submit ``file`` through feed ``feed_name`` (default: the first). Returns the exit code: 0 done/, 1 failed/,
    3 gave up waiting, 2 bad arguments (a manifest feed included: it takes only what a manifest lists)."""
    feeds = {feed.name: feed for feed in settings.feeds}
    feed = feeds.get(feed_name) if feed_name else settings.feeds[0]
    if feed is None:
        print(f"sisdaemon submit: no feed named {feed_name!r} (feeds: {', '.join(feeds)})")
        return 2
    if not file.is_file():
        print(f"sisdaemon submit: {file} is not a readable regular file")
        return 2
    if feed.manifest is not None:  # no manifest can list the hand-over name: it would wait in drop/ for ever
        print(
            f"sisdaemon submit: feed {feed.name} takes files only as a set its manifest ({feed.manifest}) lists; "
            f"drop the files and their manifest into {feed.drop_dir} instead"
        )
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
    return _wait_for(settings, feed, name, max_wait, progress=wait)


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


def _wait_for(settings: Settings, feed: FeedSettings, name: str, max_wait: float, *, progress: bool) -> int:
    """Wait for the running daemon to file ``name`` and return its exit code (0 done/, 1 failed/, 3 not filed within
    ``max_wait``), as when ``submit`` runs the job itself. ``progress`` (``--wait``): print where it stands each time
    that changes (read from the state file: why it waits, its import's state and progress, the import it is queued
    behind); otherwise only its result."""
    deadline = time.monotonic() + max_wait
    pause = threading.Event()
    last = None
    if progress:
        print(
            f"{name}: queued in {feed.drop_dir} ({waiting_in_drop(feed)} file(s) waiting; the oldest go first)",
            flush=True,
        )
    while time.monotonic() < deadline:
        result = _result(settings, feed, name)
        if result is not None:
            return result
        if not progress:
            pause.wait(0.5)
            continue
        try:
            state = StateStore(settings.state_file).load()
        except StateError:
            state = None
        line = _stands_in(state, settings, feed, name) if state is not None else None
        if line is not None and line != last:
            last = line
            print(f"{name}: {line}", flush=True)
        pause.wait(0.5)
    print(f"{name}: not finished after {max_wait:.0f} s; it stays in the daemon's hands")
    return EXIT_GAVE_UP


def _stands_in(state: State, settings: Settings, feed: FeedSettings, name: str) -> str | None:
    """Where ``name`` stands by the daemon's state: its job's line, or why its feed takes no file (None when
    neither says anything yet)."""
    data = state.to_dict()
    jobs = data["jobs"]
    fault, held, paused = data.get("fault"), data.get("held") or {}, data.get("paused") or {}
    job = next((item for item in jobs if item["name"] == name), None)
    if job is None:
        in_flight = sum(1 for item in jobs if item["feed"] == feed.name)
        wait = feed_wait(
            waiting=1,
            paused=paused.get(feed.name),
            held=held.get(feed.name),
            fault=fault,
            in_flight=in_flight,
            max_in_flight=feed.max_in_flight,
        )
        return f"in drop/ — waits: {wait['text']}" if wait is not None else None
    ahead = next((item for item in jobs if item["state"] == "submitting" and item is not job), None)
    wait = job_wait(
        job,
        paused=paused.get(feed.name),
        held=held.get(feed.name),
        fault=fault,
        first_in_line=ahead,
        resend_after_seconds=settings.polling.resend_after_seconds,
        settle_seconds=feed.settle_seconds,
        now=time.time(),
    )
    return where_it_stands(job, wait)
