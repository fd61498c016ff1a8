"""Pre-flight in a real daemon against the sandbox: a file Canvas would fail goes to failed/ unsent
(``reason_code: preflight``, the problems in its sidecar); warnings ride along with a file that is sent."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Callable

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonThread, Spool, creates, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"


def test_a_file_canvas_would_fail_is_filed_in_failed_without_an_upload(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["preflight"] = "reject"
    spool.drop_file("export.csv", USERS.decode().replace(",", ";").encode())
    spool.drop_file("users.csv", USERS + b"u2,user2,Bo,Two,b@example.edu,on_leave\n")
    assert run_daemon(once=True).join() == 1
    [failed] = spool.sidecars("failed")
    assert failed["outcome"] == "rejected" and failed["reason_code"] == "preflight"
    assert "separated by semicolons" in failed["reason"] and "export.csv, line 1" in failed["reason"]
    assert "canvas" not in failed
    [problem] = failed["preflight"]["problems"]
    assert (problem["code"], problem["line"], problem["fatal"]) == ("delimiter", 1, True)
    [post] = creates(sandbox)  # only users.csv was sent
    [done] = spool.sidecars("done")
    assert post.attachment_filename == f"{done['job_id']}_users.csv"
    assert done["preflight"]["fatal"] is False and done["preflight"]["rows"] == {"user": 2}
    [warning] = done["preflight"]["problems"]
    assert (warning["code"], warning["line"], warning["column"]) == ("unknown_status", 3, "status")


def test_with_preflight_warn_a_bad_zip_is_sent_all_the_same_with_the_findings(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["preflight"] = "warn"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", USERS)
        archive.writestr("grades.csv", b"student,grade\nu1,A\n")
    spool.drop_file("feed.zip", buffer.getvalue())
    assert run_daemon(once=True).join() == 1  # Canvas fails grades.csv: failed_with_messages
    [failed] = spool.sidecars("failed")
    assert failed["reason_code"] == "canvas_errors" and len(creates(sandbox)) == 1
    assert failed["preflight"]["mode"] == "warn" and failed["preflight"]["fatal"] is True
    assert [p["file"] for p in failed["preflight"]["problems"]] == ["feed.zip: grades.csv"]


def test_with_preflight_off_nothing_is_checked(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["preflight"] = "off"
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    [done] = spool.sidecars("done")
    assert "preflight" not in done


def test_a_daemon_that_stops_during_a_long_check_leaves_no_check_or_hook_thread_running(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["preflight"] = "reject"
    spool.feed["hooks"] = {"on_finished": ["/bin/true"], "on_failed": ["/bin/true"]}
    rows = "".join(f"u{number},user{number},Ada,One,a{number}@example.edu,active\n" for number in range(2_000_000))
    spool.drop_file("users.csv", USERS + rows.encode())  # about 100 MB: seconds of checking
    daemon = run_daemon()
    wait_for(lambda: named("check-"), what="the pre-flight check to start")
    assert daemon.stop() == 0
    # Straight after the daemon's thread ended, not after a grace period: nothing of it goes on.
    assert named("check-", "sisdaemon-hook", "zip-") == []
    assert spool.filed("done") == [] and spool.filed("failed") == []  # checked again after a restart


def named(*prefixes: str) -> list[str]:
    """The names of the live threads that start with one of ``prefixes``."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefixes) and thread.is_alive()]
