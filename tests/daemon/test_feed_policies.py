"""Feed policies (issue 10) on real folders, a real daemon process and the sandbox: files claimed in Canvas's
importer order, ``max_pending_imports`` keeping a backlog in drop/, and ``supersede`` importing only the newest
snapshot."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

from sisdaemon.jobs import TERMINAL_STATES
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, creates, wait_for
from tests.daemon.test_explained_waits import said, status_report
from tests.daemon.test_operator_commands import sisdaemon, started

COURSES = b"course_id,short_name,long_name,status\nc1,C1,Course One,active\n"
SECTIONS = b"section_id,course_id,name,status\ns1,c1,Section One,active\n"
USERS = (
    b"user_id,login_id,first_name,last_name,email,status\n"
    b"u1,user1,Ada,One,a@example.edu,active\n"
    b"u2,user2,Bo,Two,b@example.edu,active\n"
)
ENROLLMENTS = b"course_id,section_id,user_id,role,status\nc1,s1,u1,student,active\nc1,s1,u2,teacher,active\n"
USER_NOT_FOUND = "User not found"


def pause(seconds: float) -> None:
    """The gap between two uploads: the scenario itself (files landing a second apart), not a wait for a result."""
    threading.Event().wait(seconds)


def warnings_of(sandbox: Sandbox) -> dict[str, list[str]]:
    """Each import's attachment name (``<job id>_<file>``, the job id cut off) -> its processing warnings' texts."""
    found = {}
    for item in sandbox.imports():
        [attachment] = item.get("csv_attachments") or [{"display_name": "?"}]
        name = str(attachment.get("display_name", "?")).split("_", 1)[-1]
        found[name] = [str(pair[1]) for pair in item.get("processing_warnings") or []]
    return found


def sent_order(sandbox: Sandbox) -> list[str]:
    """The dropped names in the order their uploads reached Canvas."""
    return [str(request.attachment_filename).split("_", 1)[1] for request in creates(sandbox)]


# --- Canvas's order ----------------------------------------------------------------------------------------------


def test_a_control_run_shows_the_sandbox_warns_when_enrollments_go_before_their_users(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    """Without the order (users only dropped after the enrollments were imported), Canvas warns: the check the
    ordered test makes can fail."""
    daemon = started(daemon_process())
    for name, data in (("courses.csv", COURSES), ("sections.csv", SECTIONS), ("enrollments.csv", ENROLLMENTS)):
        spool.drop_file(name, data)
    wait_for(lambda: len(spool.filed("done")) == 3, what="three files imported")
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: len(spool.filed("done")) == 4, what="users imported")
    daemon.terminate()
    warnings = warnings_of(sandbox)
    assert any(USER_NOT_FOUND in text for text in warnings["enrollments.csv"]), warnings
    assert sent_order(sandbox)[-1] == "users.csv"


def test_four_files_dropped_out_of_order_are_imported_in_canvas_order_without_user_not_found(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # Settling (5 s) outlasts the gaps (1 s): enrollments.csv settles while users.csv, dropped last, still settles,
    # so the order has to hold it back. The pre-flight check runs as in production, one file at a time.
    spool.feed.update({"settle_seconds": 5.0, "preflight": "reject"})
    daemon = started(daemon_process())
    for index, (name, data) in enumerate(
        (("enrollments.csv", ENROLLMENTS), ("sections.csv", SECTIONS), ("courses.csv", COURSES), ("users.csv", USERS))
    ):
        if index:
            pause(1.0)
        spool.drop_file(name, data)
    wait_for(lambda: len(spool.filed("done")) == 4, what="four files imported")
    daemon.terminate()
    assert sent_order(sandbox) == ["courses.csv", "sections.csv", "users.csv", "enrollments.csv"]
    imports = sandbox.imports()
    assert len(imports) == 4 and [item["id"] for item in imports] == sorted(item["id"] for item in imports)
    warnings = warnings_of(sandbox)
    assert not [text for texts in warnings.values() for text in texts if USER_NOT_FOUND in text], warnings
    assert all(sidecar["outcome"] == "imported" for sidecar in spool.sidecars("done"))
    held = said(daemon, "claim_held_for_order")
    assert held and held[0]["file"] == "enrollments.csv", held  # the file that settled first waited
    assert said(daemon, "claim_hold_over")


# --- max_pending_imports ---------------------------------------------------------------------------------------


def test_max_pending_imports_keeps_the_backlog_in_drop_and_status_says_why(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"max_pending_imports": 2, "max_in_flight": 10})
    sandbox.faults.add(route="create", stick="created", count=None)  # every import waits in Canvas's queue
    most = [0]
    sampling = threading.Event()

    def sample() -> None:  # what Canvas holds of the account, every few milliseconds
        while not sampling.is_set():
            pending = [item for item in sandbox.imports() if item["workflow_state"] not in TERMINAL_STATES]
            most[0] = max(most[0], len(pending))
            sampling.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        daemon = started(daemon_process())
        names = [f"users_{index:02d}.csv" for index in range(10)]
        for index, name in enumerate(names):
            spool.drop_file(name, USERS.replace(b"u1", f"u1{index}".encode()))
        wait_for(lambda: len(sandbox.imports()) == 2, what="two imports queued in Canvas")
        wait = said(daemon, "claims_wait_for_pending_imports") or wait_for(
            lambda: said(daemon, "claims_wait_for_pending_imports"), what="the journal's wait"
        )
        assert wait[0]["pending"] == 2 and wait[0]["max_pending_imports"] == 2
        [feed] = status_report(spool)["feeds"]
        assert feed["waiting"] == 8 and len(spool.filed("drop")) == 8
        assert feed["waits_for"]["reason"] == "max_pending_imports", feed
        assert "max_pending_imports 2" in feed["waits_for"]["text"]
        assert len(sandbox.imports()) == 2  # still: the daemon decided to wait, the rest stay in drop/

        def release() -> bool:  # let Canvas run whatever it holds queued, until every file is filed
            for item in sandbox.imports():
                if item["workflow_state"] == "created":
                    sandbox.unstick(item["id"])
            return len(spool.filed("done")) == 10

        wait_for(release, what="all ten imported")
        wait_for(lambda: said(daemon, "pending_imports_below_limit"), what="the wait's end in the journal")
        daemon.terminate()
    finally:
        sampling.set()
        sampler.join()
    assert most[0] == 2, f"Canvas held {most[0]} imports of the account at once"
    assert len(sandbox.imports()) == 10 and len([r for r in creates(sandbox) if r.import_id is not None]) == 10
    assert sent_order(sandbox) == names  # one type: oldest first


def test_a_retry_of_many_failed_files_queues_no_more_in_canvas_than_max_pending_imports(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # `sisdaemon retry --all-failed` claims every failed file at once, past the claim limit: they wait in work/ and
    # are sent one at a time as Canvas ends each (a sysadmin's retry of a weekend's failures must not flood the queue).
    spool.feed.update({"max_pending_imports": 1, "max_in_flight": 10})
    for index in range(3):
        sandbox.finish_next_as("failed")
        spool.drop_file(f"users_{index}.csv", USERS.replace(b"u1", f"u1{index}".encode()))
    assert sisdaemon("run", "--once", "-c", str(spool.config)).returncode == 1
    assert len(spool.filed("failed")) == 3
    sandbox.faults.add(route="create", stick="created", count=None)  # every import now waits in Canvas's queue
    daemon = started(daemon_process())
    result = sisdaemon("retry", "-c", str(spool.config), "--all-failed")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: len(sandbox.imports()) == 4, what="the first retried file queued in Canvas")

    def report_waits() -> list[str]:
        return [str((job.get("waits_for") or {}).get("reason")) for job in status_report(spool)["jobs"]]

    waits = wait_for(lambda: (w := report_waits()).count("max_pending_imports") == 2 and w, what="status's waits")
    assert sorted(waits) == ["max_pending_imports", "max_pending_imports", "queued_in_canvas"]
    most = 0

    def release() -> bool:  # let Canvas run what it holds queued, one at a time, until all three are filed again
        nonlocal most
        queued = [item for item in sandbox.imports() if item["workflow_state"] not in TERMINAL_STATES]
        most = max(most, len(queued))
        for item in queued:
            sandbox.unstick(item["id"])
        return len(spool.filed("done")) == 3

    wait_for(release, what="the three retried files imported")
    assert most == 1 and len(creates(sandbox)) == 6
    assert daemon.terminate() == 0


# --- supersede -------------------------------------------------------------------------------------------------


def snapshots(spool: Spool, count: int, name: str = "users_{:02d}.csv") -> list[tuple[str, bytes]]:
    """``count`` full snapshots of one SIS type in drop/, the newest last by mtime (a weekend of nightly files)."""
    dropped = []
    for index in range(count):
        data = USERS.replace(b"Ada", f"Ada{index}".encode())
        path = spool.drop_file(name.format(index), data)
        os.utime(path, ns=(1_700_000_000_000_000_000 + index * 86_400 * 10**9,) * 2)
        dropped.append((path.name, data))
    return dropped


def test_forty_waiting_snapshots_become_one_import_and_39_superseded_files_in_done(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"supersede": True})
    dropped = snapshots(spool, 40)
    newest, newest_data = dropped[-1]
    spool.drop_file("courses.csv", COURSES)  # another type: imported beside them, never superseded
    daemon = started(daemon_process())
    wait_for(lambda: len(spool.filed("done")) == 41, what="every file filed")
    daemon.terminate()
    assert sorted(sent_order(sandbox)) == ["courses.csv", newest]
    assert len(sandbox.imports()) == 2 and not spool.filed("failed") and not spool.filed("drop")
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert sidecars[newest]["outcome"] == "imported" and "superseded_by" not in sidecars[newest]
    superseded = [sidecar for sidecar in sidecars.values() if sidecar["outcome"] == "superseded"]
    assert sorted(sidecar["file"]["name"] for sidecar in superseded) == [name for name, _ in dropped[:-1]]
    for sidecar in superseded:
        assert sidecar["reason_code"] == "superseded" and "canvas" not in sidecar
        assert sidecar["superseded_by"]["file"] == newest
        assert sidecar["superseded_by"]["size"] == len(newest_data) and sidecar["superseded_by"]["types"] == ["user"]
        data = dict(dropped)[sidecar["file"]["name"]]
        assert sidecar["file"]["sha256"] == hashlib.sha256(data).hexdigest() and sidecar["file"]["size"] == len(data)
    for path in spool.filed("done"):  # every file whole in done/
        original = dict(dropped).get(path.name.split("_", 2)[2])
        assert original is None or path.read_bytes() == original
    lines = said(daemon, "file_superseded")
    assert len(lines) == 39 and {line["superseded_by"] for line in lines} == {newest}


def test_a_newer_snapshot_still_settling_holds_the_older_one_back_for_supersede(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"supersede": True, "settle_seconds": 4.0})
    daemon = started(daemon_process())
    spool.drop_file("users_mon.csv", USERS)
    pause(1.0)
    spool.drop_file("users_tue.csv", USERS.replace(b"Ada", b"Adeline"))
    wait_for(lambda: len(spool.filed("done")) == 2, what="both filed")
    daemon.terminate()
    assert sent_order(sandbox) == ["users_tue.csv"]
    outcomes: dict[str, Any] = {sidecar["file"]["name"]: sidecar["outcome"] for sidecar in spool.sidecars("done")}
    assert outcomes == {"users_mon.csv": "superseded", "users_tue.csv": "imported"}
