"""The operator's commands against a real daemon process and real folders: pause, resume, retry, abort."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, DaemonProcess, Spool, creates, wait_for
from tests.daemon.test_owner import as_root, shared, throwaway_user, write_config  # noqa: F401 (fixtures)
from tests.daemon.test_owner import sisdaemon as sisdaemon_as

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
BAD = b"course_id,randomness\nx,y\n"
ME = pwd.getpwuid(os.getuid()).pw_name


def sisdaemon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        env={**os.environ, TOKEN_ENV: TOKEN, **(env or {})},
    )


def state(spool: Spool) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(spool.state_file.read_text())
    return data


def started(daemon: DaemonProcess) -> DaemonProcess:
    wait_for(lambda: any(e.get("event") == "daemon_started" for e in daemon.events()), what="the daemon to start")
    return daemon


def event(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: next((e for e in daemon.events() if e.get("event") == name), None), what=f"the journal's {name}"
    )
    return found


# --- pause and resume ----------------------------------------------------------------------------------------------


def test_a_paused_feed_takes_no_file_even_after_a_restart_and_resume_lets_it_go(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = started(daemon_process())
    paused = sisdaemon("pause", "-c", str(spool.config), "nightly", "--reason", "term change")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "feed nightly paused" in paused.stdout
    line = event(daemon, "feed_paused")  # the running daemon applied it and journaled who did it
    assert line["by"] == ME and line["reason"] == "term change" and line["feed"] == "nightly"
    spool.drop_file("users.csv", USERS)
    status = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    [feed] = status["feeds"]
    assert feed["state"] == "paused" and feed["paused"]["by"] == ME and feed["paused"]["reason"] == "term change"
    assert state(spool)["paused"]["nightly"]["by"] == ME
    assert daemon.terminate() == 0
    assert (spool.drop / "users.csv").exists() and creates(sandbox) == []

    again = started(daemon_process())
    assert event(again, "feed_still_paused")["by"] == ME  # the pause outlived the restart, and says so
    text = sisdaemon("status", "-c", str(spool.config)).stdout
    assert "paused by " + ME in text and "term change" in text
    assert (spool.drop / "users.csv").exists() and creates(sandbox) == []

    resumed = sisdaemon("resume", "-c", str(spool.config), "nightly")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert event(again, "feed_resumed")["paused_by"] == ME
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once resumed")
    assert "nightly" not in state(spool)["paused"]
    assert again.terminate() == 0


def test_pause_and_resume_without_a_daemon_write_the_state_and_run_once_leaves_a_paused_feed_alone(
    spool: Spool, sandbox: Sandbox
) -> None:
    paused = sisdaemon("pause", "-c", str(spool.config), "nightly")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "feed_paused" in paused.stderr and ME in paused.stderr  # journaled by the command itself
    pause = state(spool)["paused"]["nightly"]
    assert pause["by"] == ME and pause["reason"] is None and pause["at"].endswith("Z")
    spool.drop_file("users.csv", USERS)
    once = sisdaemon("run", "--once", "-c", str(spool.config), "--max-wait", "30")
    assert once.returncode == 0, once.stdout + once.stderr  # it does not wait on files it may not take
    assert (spool.drop / "users.csv").exists() and creates(sandbox) == []
    assert sisdaemon("resume", "-c", str(spool.config), "nightly").returncode == 0
    assert state(spool)["paused"] == {}
    assert sisdaemon("run", "--once", "-c", str(spool.config)).returncode == 0
    assert len(spool.filed("done")) == 1


def test_pause_of_an_unknown_feed_is_refused_with_exit_2_naming_the_feeds(spool: Spool) -> None:
    result = sisdaemon("pause", "-c", str(spool.config), "nope")
    assert result.returncode == 2
    assert "no feed named 'nope'" in result.stdout and "nightly" in result.stdout


def test_imports_in_flight_go_on_while_their_feed_is_paused(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: sandbox.imports(), what="the import to be created")
    assert sisdaemon("pause", "-c", str(spool.config), "nightly").returncode == 0
    spool.drop_file("more.csv", USERS)
    sandbox.unstick(sandbox.imports()[0]["id"])
    wait_for(lambda: len(spool.filed("done")) == 1, what="the import in flight to finish")
    assert (spool.drop / "more.csv").exists() and len(creates(sandbox)) == 1
    assert daemon.terminate() == 0


# --- retry ---------------------------------------------------------------------------------------------------------


def failed_once(spool: Spool, sandbox: Sandbox) -> str:
    """A file that Canvas failed, filed in failed/ by `run --once`; returns its name there."""
    sandbox.finish_next_as("failed")
    spool.drop_file("users.csv", USERS)
    assert sisdaemon("run", "--once", "-c", str(spool.config)).returncode == 1
    [filed] = spool.filed("failed")
    return filed.name


def test_retry_sends_a_failed_file_again_through_the_running_daemon_and_keeps_the_old_sidecar(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    name = failed_once(spool, sandbox)
    daemon = started(daemon_process())
    result = sisdaemon("retry", "-c", str(spool.config), str(spool.failed / name), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 file(s) claimed to be sent again" in result.stdout and "imported -> done/" in result.stdout
    line = event(daemon, "file_retried")
    assert line["by"] == ME and line["retry_of"] == name and line["old_outcome"] == "failed"
    [done] = spool.filed("done")
    assert done.name.endswith("_users.csv") and done.name != name
    [sidecar] = spool.sidecars("done")
    assert sidecar["retry_of"]["file"] == name and sidecar["retry_of"]["by"] == ME
    assert sidecar["retry_of"]["sidecar"] == f"{name}.result.retried.json"
    old = json.loads((spool.failed / f"{name}.result.retried.json").read_text())
    assert old["outcome"] == "failed"  # the earlier attempt's sidecar, kept beside its errors CSV, renamed
    assert spool.filed("failed") == [] and not (spool.failed / f"{name}.result.json").exists()
    assert len(creates(sandbox)) == 2

    again = sisdaemon("retry", "-c", str(spool.config), name)
    assert again.returncode == 2 and "sent again already" in again.stdout  # nothing twice
    assert len(creates(sandbox)) == 2
    assert daemon.terminate() == 0


def test_retry_all_failed_without_a_daemon_runs_the_jobs_itself(spool: Spool, sandbox: Sandbox) -> None:
    name = failed_once(spool, sandbox)
    (spool.failed / "notes.txt").write_text("an operator's note, not a file that was sent")
    result = sisdaemon("retry", "-c", str(spool.config), "--all-failed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "file_retried" in result.stderr and ME in result.stderr  # journaled by the command itself
    assert len(spool.filed("done")) == 1 and (spool.failed / "notes.txt").exists()
    assert (spool.failed / f"{name}.result.retried.json").exists()
    assert state(spool)["jobs"] == []


def test_retry_refuses_a_file_that_is_not_in_failed_with_exit_2(spool: Spool, sandbox: Sandbox) -> None:
    spool.drop_file("users.csv", USERS)
    result = sisdaemon("retry", "-c", str(spool.config), str(spool.drop / "users.csv"))
    assert result.returncode == 2 and "refused" in result.stdout
    assert (spool.drop / "users.csv").exists() and creates(sandbox) == []


def test_a_retry_killed_between_its_record_and_its_renames_is_finished_at_start(spool: Spool, sandbox: Sandbox) -> None:
    from sisdaemon.config import load_config
    from sisdaemon.ledger import Ledger
    from sisdaemon.operations import Operations

    name = failed_once(spool, sandbox)
    settings = load_config(spool.config)
    ledger = Ledger(settings.state_file)
    ledger.load(["nightly"])
    answer = Operations({"nightly": settings.feeds[0]}, ledger).apply(
        {"action": "retry", "files": [name], "by": ME, "at": "2026-01-01T00:00:00Z"}, 1e9
    )
    [claimed] = answer["claimed"]
    # Put both renames back: what a kill right after the state was written leaves behind.
    os.rename(spool.work / claimed["work_name"], spool.failed / name)
    os.rename(spool.failed / f"{name}.result.retried.json", spool.failed / f"{name}.result.json")
    assert sisdaemon("run", "--once", "-c", str(spool.config)).returncode == 0
    assert len(spool.filed("done")) == 1 and spool.filed("failed") == []
    assert (spool.failed / f"{name}.result.retried.json").exists()
    assert not (spool.failed / f"{name}.result.json").exists()


# --- abort ---------------------------------------------------------------------------------------------------------


def test_abort_of_a_queued_import_files_it_in_failed_as_aborted_by_operator_naming_who(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    spool.drop_file("users.csv", USERS)
    [created] = wait_for(lambda: sandbox.imports(), what="the import to be created")
    wait_for(lambda: any(job.get("import_id") for job in state(spool)["jobs"]), what="the import id recorded")
    result = sisdaemon("abort", "-c", str(spool.config), str(created["id"]), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "aborted_by_operator" in result.stdout
    assert event(daemon, "import_abort_requested_by_operator")["by"] == ME
    [sidecar] = spool.sidecars("failed")
    assert sidecar["outcome"] == "aborted" and sidecar["reason_code"] == "aborted_by_operator"
    assert sidecar["aborted_by"]["by"] == ME and sidecar["aborted_by"]["at"].endswith("Z")
    assert ME in sidecar["reason"]
    assert sandbox.get_import(created["id"])["workflow_state"] == "aborted"
    assert daemon.terminate() == 0


def test_abort_by_job_id_without_a_daemon_runs_the_abort_and_files_it(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: any(job.get("import_id") for job in state(spool)["jobs"]), what="the import id recorded")
    assert daemon.terminate() == 0
    [job] = state(spool)["jobs"]
    result = sisdaemon("abort", "-c", str(spool.config), job["job_id"])
    assert result.returncode == 0, result.stdout + result.stderr
    [sidecar] = spool.sidecars("failed")
    assert sidecar["reason_code"] == "aborted_by_operator" and sidecar["job_id"] == job["job_id"]
    assert state(spool)["jobs"] == []


def test_abort_of_something_not_in_flight_is_refused_with_exit_2(spool: Spool) -> None:
    result = sisdaemon("abort", "-c", str(spool.config), "4711")
    assert result.returncode == 2 and "no job and no import 4711 in flight" in result.stdout


# --- status --------------------------------------------------------------------------------------------------------


def test_status_names_a_missing_drop_folder_as_a_fault_and_exits_3(spool: Spool) -> None:
    spool.drop.rmdir()
    result = sisdaemon("status", "-c", str(spool.config))
    assert result.returncode == 3
    assert f"the drop folder {spool.drop} is missing" in result.stdout and "None waiting" not in result.stdout
    [feed] = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)["feeds"]
    assert feed["state"] == "fault" and feed["waiting"] is None


def test_status_shows_the_last_finished_files_and_why_each_job_and_feed_waits(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["max_in_flight"] = 1
    failed_once(spool, sandbox)
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    spool.drop_file("first.csv", USERS)
    wait_for(lambda: sandbox.imports()[-1]["workflow_state"] == "created" and len(sandbox.imports()) == 2)
    wait_for(lambda: any(job.get("import_id") for job in state(spool)["jobs"]), what="the import id recorded")
    spool.drop_file("second.csv", USERS)
    report = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    [feed] = report["feeds"]
    assert feed["last_finished"][0]["outcome"] == "failed" and feed["last_finished"][0]["folder"] == "failed"
    assert feed["waits_for"]["reason"] == "feed_full"
    [job] = report["jobs"]
    assert job["waits_for"]["reason"] == "queued_in_canvas"
    text = sisdaemon("status", "-c", str(spool.config)).stdout
    assert "waits: " in text and "finished " in text
    assert daemon.terminate() == 0


# --- explained waits ---------------------------------------------------------------------------------------------


@as_root
def test_run_once_reports_a_file_it_cannot_read_and_finishes_the_rest_without_waiting(
    throwaway_user: str,  # noqa: F811 (the fixture)
    shared: Any,  # noqa: F811 (the fixture)
    sandbox: Sandbox,
) -> None:
    config = write_config(shared, sandbox.url)
    subprocess.run(["chown", "-R", f"{throwaway_user}:", str(shared)], check=True)
    (shared / "drop" / "users.csv").write_bytes(USERS)
    os.chown(shared / "drop" / "users.csv", pwd.getpwnam(throwaway_user).pw_uid, -1)
    secret = shared / "drop" / "secret.csv"
    secret.write_bytes(USERS)
    secret.chmod(0o600)  # root's, unreadable to the service's user
    result = sisdaemon_as("run", "--once", "-c", str(config), "--max-wait", "600", user=throwaway_user)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "file_unreadable" in result.stdout and "files_left_unreadable" in result.stdout
    assert secret.exists() and len(list((shared / "done").glob("*_users.csv"))) == 1


def test_status_after_the_daemon_was_killed_with_jobs_in_flight_is_a_problem_and_escapes_control_characters(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    name = "night\n\tly\x1b[31m.csv"  # a newline, a tab and a terminal escape sequence in a file's name
    spool.drop_file(name, USERS)
    wait_for(lambda: any(job.get("import_id") for job in state(spool)["jobs"]), what="the import id recorded")
    daemon.kill()

    result = sisdaemon("status", "-c", str(spool.config))
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "daemon: not running" in lines
    assert any(
        line.startswith("problem: the daemon is not running, but 1 job(s) are claimed or in flight (1 sent")
        for line in lines
    ), result.stdout
    [job_line] = [line for line in lines if "/night" in line]
    assert "nightly/night\\n\\tly\\u001b[31m.csv: " in job_line
    assert "\x1b" not in result.stdout and "\t" not in result.stdout
    report = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    assert report["jobs"][0]["file"] == name  # JSON carries the name itself, escaped by JSON


def test_names_in_drop_that_will_never_be_taken_are_said_once_at_info_and_shown_by_status(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = started(daemon_process())
    (spool.drop / "users.txt").write_bytes(USERS)
    (spool.drop / "users.csv.part").write_bytes(USERS)
    (spool.drop / ".users.csv").write_bytes(USERS)
    (spool.drop / "subdir.csv").mkdir()
    # A params file waits for its data file (said on its own, params_file_orphaned): not a name never taken.
    (spool.drop / "later.csv.params.yaml").write_bytes(b"batch_mode: true\n")
    left = {"users.txt": "no_pattern_matches", "users.csv.part": "temp_name", ".users.csv": "dot_name"}
    left["subdir.csv"] = "folder"

    def said() -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == "file_never_taken"]

    wait_for(lambda: len(said()) == 4, what="each name said once")
    (spool.drop / "later.txt").write_bytes(USERS)
    wait_for(lambda: any(e["file"] == "later.txt" for e in said()), what="a name left later said too")
    # Said once each, at info, across the full scans since; the debug line stays as it was.
    lines = said()
    assert sorted(e["file"] for e in lines) == sorted([*left, "later.txt"])
    assert all(e["level"] == "info" and e["reason"] == left.get(e["file"], "no_pattern_matches") for e in lines)
    assert [e for e in daemon.events() if e.get("event") == "file_skipped" and e["file"] == "users.txt"]

    report = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    [feed] = report["feeds"]
    assert feed["waiting"] == 0 and feed["never_taken"]["count"] == 5
    assert {item["name"]: item["reason"] for item in feed["never_taken"]["names"]} == {
        **left,
        "later.txt": "no_pattern_matches",
    }
    text = sisdaemon("status", "-c", str(spool.config))
    assert text.returncode == 0, text.stdout
    assert "  NEVER TAKEN: 5 name(s) in drop/ the daemon will never take: .users.csv (a dot-name" in text.stdout
    assert "users.txt (no pattern of the feed matches it)" in text.stdout
    assert daemon.terminate() == 0
