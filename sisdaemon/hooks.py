"""Hooks: a feed's ``on_finished`` and ``on_failed`` commands, run after a file is filed, off the daemon's threads.

Each hook is an argv list run without a shell, with the sidecar's path appended as its last argument, in a new
session (so that a timeout kills what it started), from ``/``, with stdin from /dev/null and an environment built
from an allow-list (:data:`PASSED_ENVIRONMENT`) plus ``SISDAEMON_*`` variables: never the token, its variable or
``$CREDENTIALS_DIRECTORY`` (docs/design.md promise 4). Its output (stdout and stderr together) goes to the journal,
at most :data:`OUTPUT_LIMIT` bytes of it, redacted. A hook that fails, hangs past ``timeout_seconds`` or cannot be
started is logged, counted, and changes nothing for the file: filing is over before a hook is queued.

Hooks run one at a time in one worker thread with a bounded queue (:data:`QUEUE_LIMIT`): a hook that hangs delays
only later hooks, by at most its timeout, and a full queue drops the newest hook with an error line rather than
hold up the daemon. The idle worker blocks on its queue (it costs nothing between hooks); a stop ends it with a
sentinel. Hooks still queued at a stop are not run (the journal says which).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from sisdaemon.config import FeedSettings
from sisdaemon.redaction import bounded, holds_secret, redact

log = structlog.get_logger("sisdaemon")

#: Bytes of a hook's output kept for the journal; the rest is read and dropped.
OUTPUT_LIMIT = 4096
#: Hooks waiting to run at most; more are dropped (and said).
QUEUE_LIMIT = 64
#: Variables of the daemon's environment a hook gets (when set); nothing else is passed.
PASSED_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

#: Put on the queue by :meth:`Hooks.stop`: the worker ends when it takes it.
_STOP = object()


@dataclass(frozen=True)
class HookRun:
    """One hook to run: ``hook`` is ``on_finished`` or ``on_failed``; ``argv`` ends with the sidecar's path."""

    feed: str
    hook: str
    argv: tuple[str, ...]
    timeout: float
    environment: Mapping[str, str]
    job_id: str


def hook_environment(
    base: Mapping[str, str], *, feed: str, job_id: str, outcome: str, folder: str, sidecar: Path
) -> dict[str, str]:
    """The environment of a hook (pure): the allowed variables of ``base`` that hold no secret the process has
    read, and ``SISDAEMON_FEED``, ``SISDAEMON_JOB_ID``, ``SISDAEMON_OUTCOME``, ``SISDAEMON_FOLDER`` (``done`` or
    ``failed``) and ``SISDAEMON_SIDECAR``."""
    environment = {
        name: base[name] for name in PASSED_ENVIRONMENT if name in base and not holds_secret(base[name].encode())
    }
    environment.setdefault("PATH", DEFAULT_PATH)
    environment.update(
        SISDAEMON_FEED=feed,
        SISDAEMON_JOB_ID=job_id,
        SISDAEMON_OUTCOME=outcome,
        SISDAEMON_FOLDER=folder,
        SISDAEMON_SIDECAR=str(sidecar),
    )
    return environment


def plan_hook(
    feed: FeedSettings, *, job_id: str, outcome: str, folder: str, sidecar: Path, base: Mapping[str, str]
) -> HookRun | None:
    """The hook to run for a file of ``feed`` filed in ``folder`` (pure), or None when the feed sets none."""
    hook = "on_finished" if folder == "done" else "on_failed"
    argv = getattr(feed.hooks, hook)
    if not argv:
        return None
    environment = hook_environment(base, feed=feed.name, job_id=job_id, outcome=outcome, folder=folder, sidecar=sidecar)
    return HookRun(feed.name, hook, (*argv, str(sidecar)), feed.hooks.timeout_seconds, environment, job_id)


class Hooks:
    """Runs hooks in a worker thread of its own. ``on_ran(feed, hook, result)``: told each hook's result
    (``ok``, ``failed``, ``timed_out``, ``not_started`` or ``dropped``), for the metrics."""

    def __init__(self, *, on_ran: Callable[[str, str, str], None] = lambda feed, hook, result: None) -> None:
        self.on_ran = on_ran
        self._queue: queue.Queue[HookRun | object] = queue.Queue(QUEUE_LIMIT + 1)  # + 1: room for the stop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker thread (once)."""
        self._thread = threading.Thread(target=self._work, name="sisdaemon-hooks", daemon=True)
        self._thread.start()

    def submit(self, run: HookRun) -> None:
        """Queue ``run``; never blocks (a full queue, :data:`QUEUE_LIMIT` hooks waiting, drops it, said at error)."""
        try:
            if self._queue.qsize() >= QUEUE_LIMIT:  # the last place is the stop's
                raise queue.Full
            self._queue.put_nowait(run)
        except queue.Full:
            log.error("hook_dropped", feed=run.feed, job_id=run.job_id, hook=run.hook, reason="too many hooks waiting")
            self.on_ran(run.feed, run.hook, "dropped")

    def idle(self) -> bool:
        """Whether no hook waits or runs."""
        with self._queue.mutex:
            return self._queue.unfinished_tasks == 0

    def stop(self, timeout: float = 3.0) -> bool:
        """Stop: kill the hook that runs (its process group), end the worker (a sentinel on its queue), join it for
        up to ``timeout`` seconds in all, and say which queued hooks are not run. Returns whether the worker ended
        (True when it never started)."""
        ends_at = time.monotonic() + timeout
        self._stop.set()
        with self._lock:
            running = self._running
        if running is not None:
            _kill_group(running)
        with contextlib.suppress(queue.Full):  # still full at the deadline: a stuck worker; said by the caller
            self._queue.put(_STOP, timeout=max(ends_at - time.monotonic(), 0.0))
        if self._thread is not None:
            self._thread.join(max(ends_at - time.monotonic(), 0.0))
        while True:
            try:
                run = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(run, HookRun):
                log.warning("hook_not_run", feed=run.feed, job_id=run.job_id, hook=run.hook, reason="sisdaemon stopped")
            self._queue.task_done()
        return self._thread is None or not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            run = self._queue.get()  # blocks while idle (no wake-ups): stop() ends it with _STOP
            if not isinstance(run, HookRun):
                self._queue.task_done()
                return
            try:
                if not self._stop.is_set():
                    self.on_ran(run.feed, run.hook, self._run(run))
                else:
                    log.warning("hook_not_run", feed=run.feed, job_id=run.job_id, hook=run.hook, reason="stopping")
            except Exception as error:  # a bug: say it, keep the worker going
                log.exception("hook_failed", feed=run.feed, hook=run.hook, error=f"{type(error).__name__}: {error}")
            finally:
                self._queue.task_done()

    def _run(self, run: HookRun) -> str:
        fields = {"feed": run.feed, "job_id": run.job_id, "hook": run.hook, "command": run.argv[0]}
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                run.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(run.environment),
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
        except OSError as error:
            log.error("hook_not_started", **fields, error=error.strerror or str(error))
            return "not_started"
        with self._lock:
            self._running = process
        output = _Output(process)
        try:
            timed_out = not self._wait(process, run.timeout)
        finally:
            with self._lock:
                self._running = None
        if timed_out:
            _kill_group(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        shown = output.text(wait=1.0)
        seconds = round(time.monotonic() - started, 3)
        if timed_out:
            log.error("hook_timed_out", **fields, timeout_seconds=run.timeout, output=shown)
            return "timed_out"
        if self._stop.is_set() and process.returncode and process.returncode < 0:
            log.warning("hook_stopped", **fields, reason="sisdaemon stopped", output=shown)
            return "failed"
        if process.returncode != 0:
            log.error("hook_failed", **fields, exit_code=process.returncode, seconds=seconds, output=shown)
            return "failed"
        log.info("hook_finished", **fields, seconds=seconds, output=shown)
        return "ok"

    def _wait(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        """Wait for ``process`` up to ``timeout`` seconds (less when stopped); returns whether it ended."""
        ends_at = time.monotonic() + timeout
        while True:
            remaining = ends_at - time.monotonic()
            if remaining <= 0:
                return process.poll() is not None
            try:
                process.wait(min(remaining, 0.2))
                return True
            except subprocess.TimeoutExpired:
                if self._stop.is_set():
                    _kill_group(process)


class _Output:
    """Reads a hook's output in a thread, keeping the first :data:`OUTPUT_LIMIT` bytes."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.kept = bytearray()
        self.dropped = 0
        self._pipe = process.stdout
        self._thread = threading.Thread(target=self._read, name="sisdaemon-hook-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._pipe is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self._pipe.fileno(), 65536):
                room = OUTPUT_LIMIT - len(self.kept)
                self.kept += chunk[:room]
                self.dropped += max(len(chunk) - room, 0)

    def text(self, wait: float) -> str:
        """What was kept, decoded and redacted; a child the hook left behind that holds the pipe open is not
        waited for longer than ``wait`` seconds."""
        self._thread.join(wait)
        if not self._thread.is_alive() and self._pipe is not None:
            self._pipe.close()
        text = redact(bytes(self.kept).decode("utf-8", "replace")).strip()
        if self.dropped:
            text += f" … ({self.dropped} more bytes not shown)"
        return bounded(text, OUTPUT_LIMIT + 64)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the hook's session (its process group: it and what it started)."""
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
