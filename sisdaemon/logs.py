"""Logging: structlog configured once (one JSON object a line for journald, or the console renderer), secrets
redacted from every line, and the per-job context bound to every line a step writes.

Under systemd, when the stream written to is the journal (``$JOURNAL_STREAM`` names its device and inode), each
line starts with its syslog priority, ``<3>`` to ``<7>`` (sd-daemon(3)), so ``journalctl -p err`` finds errors.
JSON is written as UTF-8 (``élèves.csv``, not ``\\u00e9``) wherever the stream's encoding is UTF-8.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

from sisdaemon import jobs, redaction
from sisdaemon.jobs import Job

log = structlog.get_logger("sisdaemon")

#: A lasting condition's name: its kind first, then what it is about (feed, file, job id).
ConditionKey = tuple[str, ...]


def remember_secret(secret: str) -> None:
    """Add ``secret`` (a token just read) to what no log line and no error text ever shows (one list for both:
    :func:`sisdaemon.redaction.remember_secret`)."""
    redaction.remember_secret(secret)


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every remembered secret and any ``Bearer`` credential from every text value
    (:func:`sisdaemon.redaction.redact`), as a last guard: the token must never be logged."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redaction.redact(value)
    return event


#: syslog priorities (sd-daemon(3), syslog(3)) of structlog's level names.
PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def is_journal(stream: Any) -> bool:
    """Whether ``stream`` (a file object) is connected to the journal: ``$JOURNAL_STREAM`` (``"DEV:INODE"``, set by
    systemd for a service's stdout or stderr, systemd.exec(5)) names the device and inode it ``fstat``s to. A value
    inherited for another stream (a command started from a service's shell) does not match."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation (a StringIO) is an OSError
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def journal_prefix(stream: Any, level: str) -> str:
    """``"<N>"``, the syslog priority of ``level`` (``"error"``, ``"warning"``, ``"info"``, ``"debug"``), when
    ``stream`` is the journal; ``""`` otherwise (a terminal, a file, a pipe, tests)."""
    return f"<{PRIORITIES.get(level, 6)}>" if is_journal(stream) else ""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_text(match: re.Match[str]) -> str:
    """A lone surrogate as JSON text: ``\\xNN`` for a byte that was not UTF-8 (Python keeps those as U+DC80 to
    U+DCFF), as :func:`jobs.display_name` shows them; ``\\uNNNN`` for anything else."""
    code = ord(match.group())
    return f"\\\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\\\u{code:04x}"


def dumps_utf8(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` writing non-ASCII text as itself (UTF-8 once encoded), never as ``\\u`` escapes, and still
    valid JSON when a value holds a lone surrogate (a file name whose bytes are not UTF-8), which is written as the
    text ``\\xNN``. ``kwargs`` go to ``json.dumps`` (structlog passes ``default``)."""
    return _SURROGATE.sub(_surrogate_text, json.dumps(obj, ensure_ascii=False, **kwargs))


def _writes_utf8(stream: Any) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"  # a StringIO has none: it holds text
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _with_priority(renderer: Any) -> Any:
    """Wrap a structlog renderer: every line of its output starts with the event's syslog priority."""

    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        prefix = f"<{PRIORITIES.get(str(event.get('level', method)), 6)}>"
        text: str = renderer(logger, method, event)
        return "\n".join(prefix + line for line in text.split("\n"))

    return render


def configure_logging(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """One event a line on ``stream`` (default stdout): JSON (for journald) or the console renderer.

    ``fmt``: ``"json"`` or ``"console"``; ``level``: the lowest level written (``"debug"`` … ``"error"``). JSON
    is UTF-8 when ``stream``'s encoding is (ASCII escapes otherwise, so a line can always be written). When
    ``stream`` is the journal (:func:`is_journal`), each line starts with ``<N>``, its syslog priority."""
    stream = stream or sys.stdout
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=dumps_utf8 if _writes_utf8(stream) else json.dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=bool(getattr(stream, "isatty", lambda: False)()))
    )
    if is_journal(stream):
        renderer = _with_priority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # JSON needs the traceback as a string; the console renderer formats it itself.
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # watchdog logs through the standard library; only its errors matter here. watchdog 7 logs one "error" when an
    # observer is stopped while its thread waits on inotify (a harmless race on every stop): drop that one.
    logging.getLogger("watchdog").setLevel(logging.ERROR)
    logging.getLogger("watchdog.observers.inotify").addFilter(
        lambda record: "called when the thread is inactive" not in record.getMessage()
    )


def bound(job: Job) -> AbstractContextManager[None]:
    """Bind ``feed``, ``job_id``, ``file`` and, once known, ``import_id`` to every log line in the block."""
    values: dict[str, Any] = {"feed": job.feed, "job_id": job.job_id, "file": jobs.display_name(job.name)}
    if job.import_id is not None:
        values["import_id"] = job.import_id
    return structlog.contextvars.bound_contextvars(**values)


class Conditions:
    """Log lines for conditions that last (a file held open by its writer, a missing folder, a failing disk): one
    line when a condition starts, a reminder at most every ``remind_seconds`` while it lasts, and one when it ends,
    never a line per scan.

    ``clock`` is monotonic seconds (tests may inject one). Keys are tuples: the condition's kind, then what it is about.
    """

    def __init__(self, remind_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.remind_seconds = remind_seconds
        self.clock = clock
        self._active: dict[ConditionKey, tuple[float, float]] = {}  # key -> (since, last said); under _lock
        self._lock = threading.Lock()  # the loop, the flight worker and the monitor share one Conditions

    def __contains__(self, key: ConditionKey) -> bool:
        with self._lock:
            return key in self._active

    def start(self, key: ConditionKey, event: str, *, level: str = "warning", **fields: Any) -> bool:
        """The condition ``key`` holds now: log ``event`` if it is new or a reminder is due. Returns True when a
        line was written."""
        now = self.clock()
        with self._lock:
            since, said = self._active.get(key, (now, float("-inf")))
            if now - said < self.remind_seconds:
                self._active[key] = (since, said)
                return False
            self._active[key] = (since, now)
        reminder = said != float("-inf")
        extra = {"reminder": True, "for_seconds": round(now - since)} if reminder else {}
        getattr(log, level)(event, **fields, **extra)
        return True

    def end(self, key: ConditionKey, event: str, **fields: Any) -> bool:
        """The condition ``key`` no longer holds: log ``event`` (info) if it was active. Returns True when a line
        was written."""
        with self._lock:
            started = self._active.pop(key, None)
        if started is None:
            return False
        log.info(event, **fields, after_seconds=round(self.clock() - started[0]))
        return True

    def active(self) -> list[ConditionKey]:
        """The conditions that hold now."""
        with self._lock:
            return list(self._active)
