"""A real daemon process killed with SIGKILL and started again finishes its jobs with no second import."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sisdaemon import jobs
from sisdaemon.sandbox import Sandbox
from sisdaemon.state import State, StateStore
from tests.daemon.conftest import DaemonProcess, DaemonThread, Spool, creates, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"


def jobs_in_state(spool: Spool) -> list[dict[str, object]]:
    try:
        return json.loads(spool.state_file.read_text())["jobs"]  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return []


@pytest.mark.slow
def test_killed_while_imports_are_in_flight_then_restarted_finishes_them_once(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["max_pending_imports"] = 3  # all three queued in Canvas at once
    for index in range(3):
        sandbox.stick_next("created")  # imports stay queued until unstuck
        spool.drop_file(f"users{index}.csv", USERS)
    first = daemon_process()
    wait_for(lambda: len(sandbox.imports()) == 3, what="three imports created")
    wait_for(
        lambda: all(job.get("import_id") for job in jobs_in_state(spool)) and len(jobs_in_state(spool)) == 3,
        what="three import ids recorded",
    )
    first.kill()
    for item in sandbox.imports():
        sandbox.unstick(item["id"])
    second = daemon_process("--once", "--max-wait", "50")
    assert second.wait() == 0
    assert len(sandbox.imports()) == 3 and len(creates(sandbox)) == 3
    assert len(spool.filed("done")) == 3 and jobs_in_state(spool) == []


@pytest.mark.slow
def test_killed_while_a_post_is_in_the_air_then_restarted_finds_the_import(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.stick_next("initializing")  # the sandbox is still "storing" the upload: the POST does not answer
    spool.drop_file("users.csv", USERS)
    first = daemon_process()
    wait_for(
        lambda: any(item["workflow_state"] == "initializing" for item in sandbox.imports()), what="the POST in the air"
    )
    first.kill()
    sandbox.unstick(sandbox.imports()[0]["id"])
    second = daemon_process("--once", "--max-wait", "50")
    assert second.wait() == 0
    assert len(sandbox.imports()) == 1 and len(creates(sandbox)) == 1
    [sidecar] = spool.sidecars("done")
    assert sidecar["canvas"]["import_id"] == sandbox.imports()[0]["id"]
    assert any(event.get("event") == "lost_import_found" for event in second.events())


def test_a_crash_between_recording_a_claim_and_the_rename_is_completed_at_start(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    path = spool.drop_file("users.csv", USERS)
    result = path.stat()
    job = jobs.claim(
        "feedbeef01",
        "nightly",
        "users.csv",
        jobs.Fingerprint(result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns),
        seen_at=time.time(),
        now=time.time(),
    )
    StateStore(spool.state_file).save(State(jobs={job.job_id: job}))  # recorded, then the process died
    assert run_daemon(once=True).join() == 0
    assert len(creates(sandbox)) == 1
    [sidecar] = spool.sidecars("done")
    assert sidecar["job_id"] == "feedbeef01" and not path.exists()


def spool_fingerprint(path: Path) -> jobs.Fingerprint:
    """The claim fingerprint of ``path`` (inode, size, mtime; no ctime), as the daemon records it."""
    result = os.stat(path)
    return jobs.Fingerprint(result.st_ino, result.st_size, result.st_mtime_ns)


def test_a_crash_after_the_sidecar_but_before_the_move_is_finished_at_start(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    [filed] = spool.filed("done")
    [sidecar_path] = spool.done.glob("*.result.json")
    # Put the world back as it was just before the final rename, with the job still in the state file.
    os.rename(filed, spool.work / filed.name)
    sidecar = json.loads(sidecar_path.read_text())
    job = jobs.Job(
        job_id=sidecar["job_id"],
        feed="nightly",
        name="users.csv",
        work_name=filed.name,
        state=jobs.JobState.FINISHING,
        fingerprint=spool_fingerprint(spool.work / filed.name),  # as claimed: the file is unchanged since
        seen_at=0.0,
        claimed_at=0.0,
        import_id=sidecar["canvas"]["import_id"],
        outcome=jobs.Outcome.IMPORTED,
        folder="done",
        finished_at=time.time(),
        sis_import=sidecar["canvas"]["sis_import"],
    )
    StateStore(spool.state_file).save(State(jobs={job.job_id: job}))
    assert run_daemon(once=True).join() == 0
    assert [path.name for path in spool.filed("done")] == [filed.name] and not list(spool.work.iterdir())
    assert len(creates(sandbox)) == 1


def test_a_second_daemon_on_the_same_state_exits_at_once_naming_the_holder(
    spool: Spool,
    sandbox: Sandbox,
    run_daemon: Callable[..., DaemonThread],
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    first = run_daemon()
    wait_for(lambda: first.daemon.ready.is_set(), what="the first daemon to start")
    second = daemon_process()
    assert second.wait() == 73  # EX_CANTCREAT: the unit does not restart on it
    [event] = [event for event in second.events() if event.get("event") == "already_running"]
    assert event["pid"] and "locked" in event["error"]
    first.stop()


def test_two_daemons_cannot_feed_one_account_under_two_host_names(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    first = run_daemon()
    wait_for(lambda: first.daemon.feeds and first.daemon.iterations, what="the first daemon to start")
    second_root = tmp_path / "second"
    second = Spool(second_root, sandbox.url.replace("127.0.0.1", "localhost"))
    for folder in (second.drop, second.work, second.done, second.failed, second.state_file.parent):
        folder.mkdir(parents=True)
    config = yaml.safe_load(second.write_config().read_text())
    config["lock_dir"] = str(spool.root / "locks")  # the host's shared lock folder
    second.config.write_text(yaml.safe_dump(config))
    process = DaemonProcess(second)
    assert process.wait() == 73
    [event] = [event for event in process.events() if event.get("event") == "already_running"]
    assert "account-" in event["error"]
    first.stop()
