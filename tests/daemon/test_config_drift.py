"""Config drift on a real daemon process and real files: the daemon journals which file (its sha256) it runs and
says a broken edit once; ``status`` and ``check`` tell the file on disk from the one it runs (drift.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, DaemonProcess, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,status\nu1,l1,Ada,Lovelace,active\n"


def sisdaemon(spool: Spool, *args: str) -> subprocess.CompletedProcess[str]:
    """A read-only command as an operator runs it: without the token in its environment."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SISDAEMON_TEST")}
    command = [sys.executable, "-m", "sisdaemon", args[0], "-c", str(spool.config), *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE, env=environment)


def status(spool: Spool) -> tuple[int, dict[str, Any]]:
    result = sisdaemon(spool, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit(spool: Spool, change: Callable[[dict[str, Any]], None]) -> None:
    config = yaml.safe_load(spool.config.read_text())
    change(config)
    spool.config.write_text(yaml.safe_dump(config))


def said(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in daemon.events() if line.get("event") == event]


def test_a_broken_edit_is_said_once_and_status_and_check_name_each_problem_while_the_daemon_runs_the_old_file(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process()
    loaded = sha256(spool.config)
    [started] = wait_for(lambda: said(daemon, "daemon_started"), what="the daemon to start")
    assert started["config_sha256"] == loaded and started["config_file"] == str(spool.config)
    code, report = status(spool)
    assert code == 0 and report["daemon"]["config"]["running_sha256"] == loaded
    assert report["daemon"]["config"]["config_changed"] is False

    def break_it(config: dict[str, Any]) -> None:
        config["feeds"][0]["colour"] = "blue"
        config["feeds"][0]["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA"}

    edit(spool, break_it)
    broken = sha256(spool.config)
    [failed] = wait_for(lambda: said(daemon, "config_reload_failed"), what="the broken edit said")
    assert failed["config_sha256"] == loaded and failed["file_sha256"] == broken
    assert "feeds[0].colour" in failed["error"] and "still running on the previous configuration" in failed["hint"]
    # It runs on the version it loaded: a file is still imported, many loop turns later, and the edit was said once.
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: spool.all_filed(1), what="the file imported on the old configuration")
    assert len(said(daemon, "config_reload_failed")) == 1

    result = sisdaemon(spool, "status", "--json")
    assert result.returncode == 78
    assert f"{spool.config}: feeds[0].colour: unknown key" in result.stderr
    report = json.loads(result.stdout)
    config = report["daemon"]["config"]
    assert report["daemon"]["running"] and report["feeds"] is None
    assert config["config_changed"] and config["running_sha256"] == loaded and config["file_sha256"] == broken
    assert any(line.startswith("feeds[0].colour: unknown key") for line in config["config_would_fail_at_start"])
    assert any("change_threshold" in line for line in config["config_would_fail_at_start"])
    text = sisdaemon(spool, "status")
    lines = text.stdout.splitlines()
    assert "problem: config_would_fail_at_start: feeds[0].colour: unknown key" in "\n".join(lines)
    assert any(line.startswith("warning: config_changed: ") and "fix it first" in line for line in lines)
    probe = sisdaemon(spool, "check")
    assert probe.returncode == 2 and probe.stdout.startswith("SISDAEMON CRITICAL - config would fail at start (")
    assert "feeds[0].colour" in probe.stdout
    assert all(TOKEN not in output for output in (result.stdout, result.stderr, text.stdout, probe.stdout))

    # Fixed: the daemon loads it by itself and says which file it runs now; nothing is left to say.
    edit(spool, lambda config: [config["feeds"][0].pop(key) for key in ("colour", "import")])
    fixed = sha256(spool.config)
    wait_for(lambda: any(line["config_sha256"] == fixed for line in said(daemon, "config_reloaded")), what="reload")
    code, report = status(spool)
    assert code == 0 and report["daemon"]["config"]["config_changed"] is False and report["daemon"]["warnings"] == []
    assert sisdaemon(spool, "check").returncode == 0
    assert daemon.terminate() == 0


def test_an_edit_the_daemon_cannot_see_is_config_changed_until_a_reload(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process()
    wait_for(lambda: said(daemon, "daemon_started"), what="the daemon to start")
    wait_for(lambda: sisdaemon(spool, "check").returncode == 0, what="the probe to say OK")
    # The same size and mtime (a copy made with `cp -p`, a tool that keeps times): the daemon's stat sees nothing.
    before = spool.config.stat()
    text = spool.config.read_text()
    assert "settle_seconds: 1.0" in text
    temp = spool.root / ".config.yaml.new"
    temp.write_text(text.replace("settle_seconds: 1.0", "settle_seconds: 1.5"))
    os.utime(temp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(temp, spool.config)
    edited = sha256(spool.config)

    code, report = status(spool)
    assert code == 0 and report["daemon"]["config"]["config_changed"] is True
    [warning] = [line for line in report["daemon"]["warnings"] if line.startswith("config_changed: ")]
    assert "systemctl reload sisdaemon@config" in warning and f"sisdaemon check-config -c {spool.config}" in warning
    probe = sisdaemon(spool, "check")
    assert probe.returncode == 1 and "config changed on disk since the daemon loaded it" in probe.stdout

    daemon.process.send_signal(signal.SIGHUP)  # what `systemctl reload` does
    wait_for(lambda: any(line["config_sha256"] == edited for line in said(daemon, "config_reloaded")), what="reload")
    code, report = status(spool)
    assert code == 0 and not report["daemon"]["config"]["config_changed"]
    assert sisdaemon(spool, "check").returncode == 0
    assert daemon.terminate() == 0


def test_keys_a_reload_cannot_apply_are_said_until_a_restart(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process()
    wait_for(lambda: said(daemon, "daemon_started"), what="the daemon to start")
    edit(spool, lambda config: config.update(lock_dir=str(spool.root / "other-locks")))
    wait_for(lambda: said(daemon, "config_reloaded"), what="the reload")
    code, report = status(spool)
    assert code == 0 and report["daemon"]["config"]["config_needs_restart"] == ["lock_dir"]
    assert any(line.startswith("config_needs_restart: lock_dir ") for line in report["daemon"]["warnings"])
    probe = sisdaemon(spool, "check")
    assert probe.returncode == 1 and "config keys wait for a restart: lock_dir" in probe.stdout
    assert daemon.terminate() == 0
