"""Logging: structlog configured once (one JSON object a line for journald, or the console renderer), secrets
redacted from every line, and the per-job context bound to every line a step writes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

from sisdaemon import canvas, jobs
from sisdaemon.jobs import Job

log = structlog.get_logger("sisdaemon")

#: A lasting condition's name: its kind first, then what it is about (feed, file, job id).
ConditionKey = tuple[str, ...]


def remember_secret(secret: str) -> None:
    """Add ``secret`` (a token just read) to what no log line and no error text ever shows (one list for both:
    :func:`sisdaemon.canvas.remember_secret`)."""
    canvas.remember_secret(secret)


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every remembered secret and any ``Bearer`` credential from every text value
    (:func:`sisdaemon.canvas.redact`), as a last guard: the token must never be logged."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = canvas.redact(value)
    return event


def configure_logging(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """One event a line on ``stream`` (default stdout): JSON (for journald) or the console renderer."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
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
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
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
        self._active: dict[ConditionKey, tuple[float, float]] = {}  # key -> (since, last said)

    def __contains__(self, key: ConditionKey) -> bool:
        return key in self._active

    def start(self, key: ConditionKey, event: str, *, level: str = "warning", **fields: Any) -> bool:
        """The condition ``key`` holds now: log ``event`` if it is new or a reminder is due. Returns True when a
        line was written."""
        now = self.clock()
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
        started = self._active.pop(key, None)
        if started is None:
            return False
        log.info(event, **fields, after_seconds=round(self.clock() - started[0]))
        return True

    def active(self) -> list[ConditionKey]:
        """The conditions that hold now."""
        return list(self._active)
