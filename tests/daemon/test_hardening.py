"""Hardening against hostile edges, with real daemon processes against the sandbox (issue: no hang, no crash, no
leak). Each test here failed before the fix it names."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import TOKEN, DaemonProcess, DaemonThread, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,status\nu1,l1,Ada,Lovelace,active\n"


def status_json(spool: Spool) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "status", "-c", str(spool.config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_token_file_missing_at_a_reread_is_a_credential_fault_not_a_crash(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    token_file = spool.root / "canvas-token"
    token_file.write_text("stale-token\n")
    spool.canvas.update({"token_env": None, "token_file": str(token_file)})
    daemon = daemon_process()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: "canvas_credential_fault" in daemon.output(), what="the refused token")
    token_file.unlink()  # mid-rotation: the old file is gone, the new one not there yet
    wait_for(lambda: "does not exist" in daemon.output(), what="the missing token file in the journal")
    assert daemon.process.poll() is None, daemon.output()
    fault = status_json(spool)["feeds"][0]
    assert "canvas.token_file" in (fault["last_error"] or ""), fault
    token_file.write_text(TOKEN + "\n")
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once the token is back")
    assert daemon.terminate() == 0


def test_a_daemon_started_without_its_token_file_waits_for_it_instead_of_exiting(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    token_file = spool.root / "canvas-token"
    spool.canvas.update({"token_env": None, "token_file": str(token_file)})
    daemon = daemon_process()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: "canvas_credential_fault" in daemon.output(), what="the missing token as a credential fault")
    assert daemon.process.poll() is None, daemon.output()
    token_file.write_text(TOKEN + "\n")
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once the token appears")
    assert daemon.terminate() == 0


def test_a_file_held_open_by_its_writer_is_logged_when_it_starts_and_ends_not_at_every_scan(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process()
    path = spool.drop / "users.csv"
    with open(path, "wb") as writer:  # a stalled SFTP session: the file is whole in size but still open
        writer.write(USERS)
        writer.flush()

        def count(name: str) -> int:
            return sum(1 for event in daemon.events() if event.get("event") == name)

        # Several checks of the open file (or, as before the fix, a second line about it).
        wait_for(
            lambda: count("writer_check") >= 4 or count("file_still_open_for_writing") >= 2,
            what="several writer checks of the open file",
        )
        assert count("file_still_open_for_writing") == 1
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once its writer closed it")
    closed = [event for event in daemon.events() if event.get("event") == "file_writer_closed"]
    assert len(closed) == 1 and closed[0]["file"] == "users.csv"
    assert daemon.terminate() == 0


@pytest.fixture
def tiny_state_disk(spool: Spool) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for the state folder (root only): a real full disk, not a simulated one."""
    folder = spool.root / "statefs"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill ``folder``'s filesystem to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_state_disk_stops_claiming_without_a_crash_and_the_daemon_goes_on_when_space_returns(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], tiny_state_disk: Path
) -> None:
    spool.state_folder = tiny_state_disk.name
    daemon = daemon_process()
    wait_for(lambda: "daemon_started" in daemon.output(), what="the daemon to start")
    filler = fill(tiny_state_disk)
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: "state_write_failed" in daemon.output(), what="the full disk in the journal")
    assert daemon.process.poll() is None, daemon.output()
    assert (spool.drop / "users.csv").exists() and sandbox.imports() == []
    report = status_json(spool)
    assert any("bytes free" in problem for problem in report["daemon"]["problems"]), report
    filler.unlink()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once space returned")
    assert "state_write_recovered" in daemon.output()
    assert len(sandbox.imports()) == 1
    assert daemon.terminate() == 0


def test_a_file_canvas_refuses_as_too_large_goes_to_failed_and_the_feed_goes_on(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    sandbox.faults.add(
        route="create",
        status=413,
        count=1,
        body=b'{"message": "Request Entity Too Large"}',
        content_type="application/json",
    )
    daemon = daemon_process()
    spool.drop_file("big.csv", USERS)
    wait_for(lambda: len(spool.filed("failed")) == 1, what="the refused file in failed/")
    (sidecar,) = spool.sidecars("failed")
    assert sidecar["outcome"] == "rejected" and sidecar["reason_code"] == "too_large"
    assert "413" in sidecar["reason"] and "Request Entity Too Large" in sidecar["reason"]
    spool.drop_file("next.csv", USERS.replace(b"u1", b"u2"))
    wait_for(lambda: len(spool.filed("done")) == 1, what="the next file of the feed imported")
    assert "canvas_configuration_fault" not in daemon.output() and "feed_held" not in daemon.output()
    assert daemon.terminate() == 0


def write_in_place_with_a_stall(path: Path, first: bytes) -> Any:
    """An in-place uploader (plain sftp put) that wrote ``first`` and stalled, its handle still open."""
    writer = open(path, "wb")  # noqa: SIM115 - the test closes it
    writer.write(first)
    writer.flush()
    return writer


def test_without_the_writer_check_a_file_changed_after_canvas_ran_its_import_goes_to_failed_as_changed_during_import(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    whole = USERS + b"".join(f"u{n},l{n},A,B,active\n".encode() for n in range(2, 400))
    daemon = run_daemon()
    daemon.daemon.writer_check.probe = lambda fd: None  # NFS, or no CAP_LEASE: the daemon cannot tell
    sandbox.stick_next("importing")  # Canvas runs the partial upload and is still at it when the writer goes on
    writer = write_in_place_with_a_stall(spool.drop / "users.csv", whole[:3000])
    try:
        wait_for(lambda: sandbox.imports(), what="the partial upload's import")
        writer.write(whole[3000:])  # the stalled client goes on, through its open handle, into the claimed file
    finally:
        writer.close()
    sandbox.unstick(sandbox.imports()[0]["id"])
    wait_for(lambda: spool.filed("failed"), what="the file in failed/")
    (sidecar,) = spool.sidecars("failed")
    assert sidecar["reason_code"] == "changed_during_import"
    assert sidecar["outcome"] in ("imported", "imported_with_messages")  # what Canvas made of the part it got
    assert "partial" in sidecar["reason"] and spool.filed("done") == []
    assert len(sandbox.imports()) == 1  # not sent again behind the operator's back
    warnings = status_json(spool)["daemon"]["warnings"]
    assert any("cannot tell whether an uploader still writes" in warning for warning in warnings), warnings
    daemon.stop()


def test_without_the_writer_check_a_file_changed_while_its_import_is_queued_is_aborted_and_sent_again_whole(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    whole = USERS + b"".join(f"u{n},l{n},A,B,active\n".encode() for n in range(2, 400))
    daemon = run_daemon()
    daemon.daemon.writer_check.probe = lambda fd: None
    sandbox.stick_next("created")  # the partial upload's import waits in Canvas's queue
    writer = write_in_place_with_a_stall(spool.drop / "users.csv", whole[:3000])
    try:
        wait_for(lambda: sandbox.imports(), what="the partial upload's import")
        writer.write(whole[3000:])
    finally:
        writer.close()
    wait_for(lambda: sandbox.imports()[0]["workflow_state"] == "aborted", what="the queued import aborted")
    wait_for(lambda: spool.filed("done"), what="the whole file imported")
    (sidecar,) = spool.sidecars("done")
    assert sidecar["file"]["size"] == len(whole) and len(sandbox.imports()) == 2
    daemon.stop()


def test_an_upload_given_up_in_initializing_that_canvas_runs_later_is_aborted_not_imported_twice(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    # The first POST's import stays `initializing` (Canvas still storing the upload) and its answer never comes;
    # the daemon gives it up after initializing_dead_seconds and sends the file again. Then Canvas runs the first.
    spool.canvas["upload_timeout_seconds"] = 2
    spool.polling.update({"initializing_dead_seconds": 3, "resend_after_seconds": 1, "clock_skew_seconds": 60})
    sandbox.faults.add(route="create", stick="initializing", count=1)
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: len(sandbox.imports()) == 1, what="the first upload, stuck initializing")
    sandbox.stick_next("created")  # the resend waits in Canvas's queue
    wait_for(lambda: len(sandbox.imports()) == 2, what="the file sent again after the first was given up")
    first, resend = sorted(item["id"] for item in sandbox.imports())
    sandbox.stick(first, "created")  # Canvas finishes storing the first upload: it is queued with its old tag
    wait_for(lambda: sandbox.get_import(first)["workflow_state"] == "aborted", what="the late original aborted")
    sandbox.unstick(resend)
    wait_for(lambda: spool.filed("done"), what="the file imported by its resend")
    imported = [item for item in sandbox.imports() if item["workflow_state"].startswith("imported")]
    assert [item["id"] for item in imported] == [resend]
    daemon.stop()


def test_an_import_id_that_canvas_gave_to_another_file_never_files_this_one(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # Found by a new sysadmin: the sandbox restarted (forgetting its imports) while a file was in flight, then gave
    # the same import id to the next file; the first was filed in done/ as "imported" by the second's verdict.
    sandbox.stick_next("created")
    daemon = daemon_process()
    spool.drop_file("big.csv", USERS)
    wait_for(lambda: "import_submitted" in daemon.output(), what="the first file's import")
    port = int(sandbox.url.rsplit(":", 1)[1])
    sandbox.stop()
    with Sandbox(token=TOKEN, account_id=1, fast=True, port=port) as reset:
        wait_for(lambda: "import_not_found" in daemon.output(), what="the missing import said in the journal")
        spool.drop_file("small.csv", USERS.replace(b"u1", b"u2"))
        wait_for(lambda: "import_not_this_file" in daemon.output(), what="the reused import id refused")
        wait_for(lambda: [p.name for p in spool.filed("done") if p.name.endswith("small.csv")], what="small.csv filed")
        assert not [p for p in spool.filed("done") if p.name.endswith("big.csv")]
        assert [p for p in spool.work.iterdir() if p.name.endswith("big.csv")]  # it waits in work/
        assert len(reset.imports()) == 1
    assert daemon.terminate() == 0
