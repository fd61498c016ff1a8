"""SIGHUP on a real daemon process: what can change safely applies at once, the rest is named for a restart."""

from __future__ import annotations

import signal
from collections.abc import Callable

import yaml

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,status\nu1,l1,Ada,Lovelace,active\n"


def test_sighup_adds_a_feed_and_applies_the_log_level_and_names_what_needs_a_restart(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process()
    wait_for(lambda: "daemon_started" in daemon.output(), what="the daemon to start")
    config = yaml.safe_load(spool.config.read_text())
    config["log"]["level"] = "info"
    config["feeds"][0]["max_in_flight"] = 2
    config["lock_dir"] = str(spool.root / "other-locks")  # only at a restart
    grades = {key: spool.root / "grades" / key for key in ("drop", "work", "done", "failed")}
    for folder in grades.values():
        folder.mkdir(parents=True)
    config["feeds"].append(
        {
            "name": "grades",
            "drop_dir": str(grades["drop"]),
            "work_dir": str(grades["work"]),
            "done_dir": str(grades["done"]),
            "failed_dir": str(grades["failed"]),
            "settle_seconds": 1.0,
            "rescan_seconds": 2.0,
        }
    )
    spool.config.write_text(yaml.safe_dump(config))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "config_reloaded" in daemon.output(), what="the reload")
    (reloaded,) = [event for event in daemon.events() if event.get("event") == "config_reloaded"]
    assert reloaded["feeds_added"] == ["grades"] and "log" in reloaded["applied"]
    assert reloaded["unchanged_until_restart"] == ["lock_dir"]
    seen_before = sum(1 for event in daemon.events() if event.get("event") == "file_seen")
    (grades["drop"] / "grades.csv").write_bytes(USERS)
    wait_for(lambda: len(list(grades["done"].glob("*.result.json"))) == 1, what="the new feed's file imported")
    seen_after = sum(1 for event in daemon.events() if event.get("event") == "file_seen")
    assert seen_after == seen_before  # debug lines stopped once the level went to info
    assert daemon.terminate() == 0


def test_sighup_that_lowers_the_settle_and_grace_times_applies_them_to_the_files_already_settling(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 600.0, "empty_grace_seconds": 600.0})
    daemon = daemon_process()
    wait_for(lambda: "daemon_started" in daemon.output(), what="the daemon to start")
    spool.drop_file("users.csv", USERS)
    spool.drop_file("empty.csv", b"")  # an upload that never wrote a byte
    wait_for(lambda: len(seen_files(daemon)) == 2, what="both files seen, settling for 600 s")
    spool.feed.update({"settle_seconds": 0.5, "empty_grace_seconds": 1.0})
    spool.write_config()
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "config_reloaded" in daemon.output(), what="the reload")
    # Both were seen under the old times; without the reload reaching them they would wait 600 s (the deadline is 60).
    wait_for(lambda: len(spool.filed("done")) == 1, what="the settling file imported at its new settle time")
    wait_for(lambda: len(spool.filed("failed")) == 1, what="the empty file refused at its new grace")
    assert [sidecar["reason_code"] for sidecar in spool.sidecars("failed")] == ["empty_file"]
    assert sorted(seen_files(daemon)) == ["empty.csv", "users.csv"]  # each seen once: not found anew
    assert daemon.terminate() == 0


def seen_files(daemon: DaemonProcess) -> list[str]:
    """The names of the files the daemon's journal says it saw in drop/, one per sighting."""
    return [str(event["file"]) for event in daemon.events() if event.get("event") == "file_seen"]
