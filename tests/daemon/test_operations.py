"""What a sysadmin does: check-config, submit, token files, held feeds, timeouts, throttling, poll mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, DaemonProcess, DaemonThread, Spool, creates, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"


def sisdaemon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        env={**os.environ, TOKEN_ENV: TOKEN, **(env or {})},
    )


def test_check_config_accepts_a_good_config(spool: Spool) -> None:
    result = sisdaemon("check-config", "-c", str(spool.write_config()))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_names_every_problem_with_its_key_and_exits_78(spool: Spool) -> None:
    spool.canvas["base_url"] = "http://canvas.example.edu"
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA"}
    spool.feed["colour"] = "blue"
    result = sisdaemon("check-config", "-c", str(spool.write_config()))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3 and all(line.startswith(str(spool.config)) for line in lines)
    text = result.stderr
    assert "canvas.base_url" in text and "feeds[0].colour" in text and "change_threshold" in text


def test_check_config_refuses_a_hook_whose_program_is_missing_or_not_executable_naming_the_key(
    spool: Spool, tmp_path: Path
) -> None:
    not_executable = tmp_path / "notify.sh"
    not_executable.write_text("#!/bin/sh\n")
    spool.feed["hooks"] = {"on_finished": ["/bin/nonexistent-hook"], "on_failed": [str(not_executable), "--all"]}
    result = sisdaemon("check-config", "-c", str(spool.write_config()))
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"{spool.config}: feeds[0].hooks.on_finished: /bin/nonexistent-hook does not exist",
        f"{spool.config}: feeds[0].hooks.on_failed: {not_executable} is not executable by this user",
    ]
    not_executable.chmod(0o755)
    spool.feed["hooks"]["on_finished"] = ["/bin/true"]
    assert sisdaemon("check-config", "-c", str(spool.write_config())).returncode == 0


def test_run_refuses_a_missing_folder_and_a_missing_token_with_exit_78(spool: Spool) -> None:
    spool.failed.rmdir()
    result = sisdaemon("run", "--once", "-c", str(spool.write_config()), env={TOKEN_ENV: ""})
    assert result.returncode == 78
    assert "feeds[0].failed_dir" in result.stderr and "canvas.token_env" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_submit_without_a_daemon_runs_the_job_itself(spool: Spool, sandbox: Sandbox, tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_bytes(USERS)
    result = sisdaemon("submit", "-c", str(spool.write_config()), str(source), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported" in result.stdout
    assert source.read_bytes() == USERS  # the user's own file is left where it was
    [filed] = spool.filed("done")
    assert filed.name.endswith("_users.csv") and "sisdaemon-submit-" in filed.name
    assert len(creates(sandbox)) == 1
    [sidecar] = spool.sidecars("done")
    assert sidecar["file"]["name"] == "users.csv" and sidecar["file"]["handed_over_as"].startswith("sisdaemon-")


def test_submit_hands_the_file_to_a_running_daemon_and_waits_for_it(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    daemon = run_daemon()
    wait_for(lambda: daemon.daemon.ready.is_set(), what="the daemon to start")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"course_id,randomness\nx,y\n")
    result = sisdaemon("submit", "-c", str(spool.config), str(bad), "--wait")
    assert result.returncode == 1, result.stdout + result.stderr  # it ended in failed/
    assert "failed" in result.stdout
    daemon.stop()
    assert len(spool.filed("failed")) == 1 and len(creates(sandbox)) == 1


def test_submit_without_wait_through_a_running_daemon_still_waits_for_the_result_and_exits_by_it(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    spool.feed["preflight"] = "reject"
    daemon = run_daemon()
    wait_for(lambda: daemon.daemon.ready.is_set(), what="the daemon to start")
    good, bad = tmp_path / "users.csv", tmp_path / "bad.csv"
    good.write_bytes(USERS)
    bad.write_bytes(b"course_id,randomness\nx,y\n")  # pre-flight refuses it: never sent

    imported = sisdaemon("submit", "-c", str(spool.config), str(good))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert len(spool.filed("done")) == 1  # filed before submit returned
    rejected = sisdaemon("submit", "-c", str(spool.config), str(bad))
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "rejected -> failed/" in rejected.stdout
    # Without --wait, no progress lines: what was handed over, then the result.
    assert len(rejected.stdout.splitlines()) == 2, rejected.stdout
    daemon.stop()
    assert len(spool.filed("failed")) == 1 and len(creates(sandbox)) == 1


def test_a_token_file_is_read_again_after_canvas_refuses_it(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    token_file = spool.root / "canvas-token"
    token_file.write_text("stale-token\n")
    spool.canvas.update({"token_env": None, "token_file": str(token_file)})
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: daemon.daemon.gate.health.kind is not None, what="the credential fault")
    assert (spool.drop / "users.csv").exists()
    token_file.write_text(TOKEN + "\n")  # the sysadmin rotates the credential
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported with the new token")
    daemon.stop()


def test_an_unknown_term_holds_the_feed_until_the_config_changes(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:NOPE", "change_threshold": 10}
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: daemon.daemon.ledger.state.held.get("nightly"), what="the feed to be held")
    assert spool.filed("failed") == [] and sandbox.imports() == []
    state = json.loads(spool.state_file.read_text())
    assert "nightly" in state["held"] and state["jobs"][0]["state"] == "claimed"
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 10}
    spool.write_config()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported after the config was fixed")
    daemon.stop()
    assert len(sandbox.imports()) == 1


def test_an_import_queued_too_long_is_aborted_and_filed_as_timed_out(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.polling["queued_timeout_seconds"] = 1.0
    sandbox.stick_next("created")
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 1
    [sidecar] = spool.sidecars("failed")
    assert sidecar["outcome"] == "aborted" and sidecar["reason_code"] == "timed_out"
    assert sandbox.imports()[0]["workflow_state"] == "aborted"


@pytest.mark.parametrize("style", ["429", "403"])
def test_under_canvas_throttling_every_file_still_ends_in_done(
    spool: Spool, tmp_path: Path, style: str, run_daemon: Callable[..., DaemonThread]
) -> None:
    with Sandbox(token=TOKEN, account_id=1, fast=True, throttle=style) as throttled:
        spool.url = throttled.url
        for index in range(4):
            spool.drop_file(f"users{index}.csv", USERS)
        assert run_daemon(once=True).join() == 0
        assert len(spool.filed("done")) == 4 and spool.filed("failed") == []
        assert len([item for item in throttled.imports() if item["workflow_state"] == "imported"]) == 4


def test_poll_mode_for_network_filesystems_sees_new_files(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed.update({"watch": "poll", "rescan_seconds": 1.0})
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file found by polling")
    daemon.stop()


def test_check_config_passes_on_the_example_config_pointed_at_real_folders(tmp_path: Path) -> None:
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.example.yaml").read_text())
    example["state_file"] = str(tmp_path / "state" / "state.json")
    example["lock_dir"] = str(tmp_path / "locks")
    for key in ("drop_dir", "done_dir", "failed_dir"):
        example["feeds"][0][key] = str(tmp_path / key)
        (tmp_path / key).mkdir()
    (tmp_path / "state").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(example))
    result = sisdaemon("check-config", "-c", str(config), env={"CANVAS_TOKEN": "x"})
    assert result.returncode == 0, result.stderr
    # The default work folder, beside drop_dir, is made by `run`; check-config only says so.
    assert not (tmp_path / "work-nightly").exists()
    assert f"feeds[0].work_dir: {tmp_path / 'work-nightly'} does not exist; `sisdaemon run` creates it" in result.stdout


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_check_config_changes_nothing_on_the_machine_and_run_still_makes_the_missing_work_folder(
    spool: Spool,
) -> None:
    spool.work.rmdir()
    config = spool.write_config()
    before = tree(spool.root)

    result = sisdaemon("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert tree(spool.root) == before  # no work folder, no lock folder, no probe left behind
    assert result.stdout.splitlines()[1:] == [
        f"{config}: feeds[0].work_dir: {spool.work} does not exist; `sisdaemon run` creates it (mode 0750)"
    ]

    assert sisdaemon("run", "--once", "-c", str(config)).returncode == 0
    assert spool.work.is_dir() and oct(spool.work.stat().st_mode & 0o777) == "0o750"


def test_a_restart_releases_a_feed_held_by_a_configuration_fault(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    sandbox.faults.add(route="create", status=400, count=1, body='{"message":"Invalid diffing_drop_status"}')
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True, max_wait=3).join() == 3
    assert "nightly" in json.loads(spool.state_file.read_text())["held"]
    assert run_daemon(once=True).join() == 0  # the sysadmin restarts it: the hold is tried again
    assert len(spool.filed("done")) == 1 and len(sandbox.imports()) == 1


def test_a_file_in_work_that_no_job_records_is_reported_and_left_alone(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    orphan = spool.work / "20261129T000000Z_abcdef0123_orphan.csv"
    orphan.write_bytes(USERS)
    assert run_daemon(once=True).join() == 0
    assert orphan.exists() and sandbox.imports() == []
    result = sisdaemon("status", "-c", str(spool.config), "--json")
    assert json.loads(result.stdout)["daemon"]["orphans_in_work"] == [{"feed": "nightly", "path": str(orphan)}]
    assert "orphan" in sisdaemon("status", "-c", str(spool.config)).stdout


def test_submit_refuses_a_name_the_daemon_would_never_take(spool: Spool, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    result = sisdaemon("submit", "-c", str(spool.write_config()), str(notes), "--wait")
    assert result.returncode == 2 and "patterns" in result.stdout
    assert list(spool.drop.iterdir()) == []


def test_submit_refuses_a_manifest_feed_as_no_manifest_can_list_the_file(spool: Spool, tmp_path: Path) -> None:
    # Found by a new sysadmin: through a running daemon it waited in drop/ for ever (a manifest lists dropped names,
    # never the hand-over name); with none it went alone, past the manifest.
    spool.feed["manifest"] = "*.done"
    users = tmp_path / "users.csv"
    users.write_bytes(USERS)
    result = sisdaemon("submit", "-c", str(spool.write_config()), str(users), "--wait")
    assert result.returncode == 2 and "manifest (*.done)" in result.stdout and str(spool.drop) in result.stdout
    assert list(spool.drop.iterdir()) == []


def test_systemd_hears_ready_and_stopping_on_its_notify_socket(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    address = str(spool.root / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(DEADLINE)
        process = daemon_process(env={"NOTIFY_SOCKET": address})
        messages = [listener.recv(4096).decode()]
        while "STATUS=watching drop folders" not in messages[-1]:
            messages.append(listener.recv(4096).decode())
        assert "READY=1" in messages[0]
        assert process.terminate() == 0
        while "STOPPING=1" not in messages[-1]:
            messages.append(listener.recv(4096).decode())
    events = [event["event"] for event in process.events()]
    assert "daemon_stopping" in events and "daemon_stopped" in events


def test_status_counts_the_files_waiting_in_drop(spool: Spool) -> None:
    for index in range(3):
        spool.drop_file(f"users{index}.csv", USERS)
    (spool.drop / ".partial.csv.tmp").write_bytes(b"x")
    report = json.loads(sisdaemon("status", "-c", str(spool.write_config()), "--json").stdout)
    assert report["feeds"][0]["waiting"] == 3


def test_a_missing_failed_folder_is_said_once_and_the_file_waits_in_work(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.failed.rmdir()  # taken away after start-up checks, e.g. by a clean-up job
    daemon = run_daemon()
    spool.drop_file("bad.csv", b"course_id,randomness\nx,y\n")

    def last_error() -> str | None:
        jobs = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)["jobs"]
        return jobs[0]["last_error"] if jobs else None

    error = wait_for(last_error, what="the error in status")
    assert str(spool.failed) in error and daemon.thread.is_alive()
    spool.failed.mkdir()
    wait_for(lambda: len(spool.filed("failed")) == 1, what="the file filed once the folder is back")
    daemon.stop()
    assert len(sandbox.imports()) == 1


def test_an_option_canvas_did_not_apply_aborts_the_import_and_holds_the_feed(
    spool: Spool, tmp_path: Path, run_daemon: Callable[..., DaemonThread]
) -> None:
    with Sandbox(token=TOKEN, account_id=1, fast=True, ignore_options={"skip_deletes"}) as older_canvas:
        spool.url = older_canvas.url
        spool.feed["import"] = {"skip_deletes": True}
        older_canvas.stick_next("created")  # queued, so the abort lands before it runs
        daemon = run_daemon()
        spool.drop_file("users.csv", USERS)
        wait_for(lambda: daemon.daemon.ledger.state.held.get("nightly"), what="the feed held")
        assert "skip_deletes" in daemon.daemon.ledger.state.held["nightly"]
        wait_for(
            lambda: [item["workflow_state"] for item in older_canvas.imports()] == ["aborted"],
            what="the import aborted",
        )
        assert spool.filed("failed") == [] and len(list(spool.work.iterdir())) == 1  # the file waits
        spool.feed["import"] = {}  # the sysadmin drops the option this Canvas does not know
        spool.write_config()
        wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported after the config changed")
        daemon.stop()
        assert [item["workflow_state"] for item in older_canvas.imports()] == ["aborted", "imported"]
