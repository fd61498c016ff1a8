"""Feed freshness on a real daemon process: said once in the journal when stale and once when fresh again, and
shown by status and the metrics."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, DaemonProcess, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"


def stale_gauge(base: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sisdaemon_feed_stale" and sample.labels == {"feed": "nightly", "expectation": "file"}:
                return sample.value
    raise AssertionError("no sisdaemon_feed_stale sample for nightly")


def status(spool: Spool) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "status", "-c", str(spool.config), "--json"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, TOKEN_ENV: TOKEN},
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_a_feed_past_its_window_is_said_once_and_again_when_a_file_arrives(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["expect_file_every"] = "3s"
    spool.top["metrics"] = {"listen": "127.0.0.1:0"}
    process = daemon_process()
    served = wait_for(lambda: [e for e in process.events() if e.get("event") == "metrics_served"], what="metrics")
    base = f"http://{served[0]['listen']}"
    assert stale_gauge(base) == 0  # a fresh install: not stale before one window has passed

    [stale] = wait_for(lambda: [e for e in process.events() if e.get("event") == "feed_stale"], what="feed_stale")
    assert stale["level"] == "warning" and stale["feed"] == "nightly" and stale["expectation"] == "file"
    assert "no file since the daemon started" in stale["message"]
    assert stale_gauge(base) == 1
    [feed] = status(spool)["feeds"]  # type: ignore[misc]
    assert feed["freshness"][0]["stale"] is True
    text = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "status", "-c", str(spool.config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    ).stdout
    assert "STALE: feed nightly: no file since the daemon started" in text

    spool.drop_file("users.csv", USERS)
    wait_for(lambda: [e for e in process.events() if e.get("event") == "feed_fresh_again"], what="feed_fresh_again")
    assert process.terminate() == 0
    events = [event["event"] for event in process.events() if event.get("event", "").startswith("feed_")]
    # Once when it went stale, once when a file came; a second window passing after the file says it once more.
    assert events[:2] == ["feed_stale", "feed_fresh_again"]
    assert all(a != b for a, b in itertools.pairwise(events))
