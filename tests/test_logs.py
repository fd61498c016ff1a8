"""logs.Conditions: a lasting condition is said when it starts, reminded at most every few minutes, and said when it
ends; secrets never reach a log line."""

from __future__ import annotations

import io
import json

import structlog
from structlog.testing import capture_logs

from sisdaemon.logs import Conditions, configure_logging, remember_secret


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_condition_is_said_once_then_reminded_then_ended() -> None:
    clock = FakeClock()
    conditions = Conditions(remind_seconds=300, clock=clock)
    with capture_logs() as lines:
        assert conditions.start(("open_writer", "nightly", "a.csv"), "file_still_open_for_writing", file="a.csv")
        clock.now += 10
        assert not conditions.start(("open_writer", "nightly", "a.csv"), "file_still_open_for_writing", file="a.csv")
        clock.now += 300
        assert conditions.start(("open_writer", "nightly", "a.csv"), "file_still_open_for_writing", file="a.csv")
        assert ("open_writer", "nightly", "a.csv") in conditions
        clock.now += 5
        assert conditions.end(("open_writer", "nightly", "a.csv"), "file_writer_closed", file="a.csv")
        assert not conditions.end(("open_writer", "nightly", "a.csv"), "file_writer_closed", file="a.csv")
    assert [line["event"] for line in lines] == [
        "file_still_open_for_writing",
        "file_still_open_for_writing",
        "file_writer_closed",
    ]
    assert "reminder" not in lines[0] and lines[1]["reminder"] is True and lines[1]["for_seconds"] == 310
    assert lines[2]["after_seconds"] == 315 and conditions.active() == []


def test_a_remembered_secret_is_redacted_from_every_log_line() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    try:
        remember_secret("sd-secret-token-0123456789")
        structlog.get_logger("sisdaemon").error("canvas_said", body="Authorization: Bearer sd-secret-token-0123456789")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert "sd-secret-token" not in stream.getvalue() and "[redacted]" in line["body"]
