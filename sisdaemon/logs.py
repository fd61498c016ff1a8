"""Logging: structlog configured once (one JSON object a line for journald, or the console renderer), secrets
redacted from every line, and the per-job context bound to every line a step writes."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

from sisdaemon import jobs
from sisdaemon.jobs import Job

_SECRETS: set[str] = set()  # every token read, redacted from every log line as a last guard


def remember_secret(secret: str) -> None:
    """Add ``secret`` (a token just read) to what :func:`configure_logging`'s output never shows."""
    _SECRETS.add(secret)


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace any known secret found in a value (the token must never be logged)."""
    if not _SECRETS:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            for secret in _SECRETS:
                if len(secret) >= 8 and secret in value:  # a real token; a toy one would mangle every line
                    value = value.replace(secret, "[redacted]")
            event[key] = value
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
