"""Faults of the system never fail a file; lost POST answers give exactly one import (docs/design.md crash protocol)."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import TOKEN, DaemonProcess, DaemonThread, Spool, creates, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"


@pytest.mark.parametrize(
    "fault",
    [
        {"route": "create", "status": 503, "count": 3},
        {"route": "create", "status": 500, "count": 2, "when": "before"},
        {
            "route": "create",
            "status": 429,
            "count": 3,
            "body": "429 Too Many Requests (Rate Limit Exceeded)\n",
            "content_type": "text/plain; charset=utf-8",
        },
        {
            "route": "create",
            "status": 403,
            "count": 3,
            "body": "403 Forbidden (Rate Limit Exceeded)\n",
            "content_type": "text/plain; charset=utf-8",
        },
        {"route": "show", "status": 502, "count": 3, "html": True},
        {"route": "users_self", "status": 503, "count": 2},
        {
            "route": "any",
            "status": 429,
            "count": 4,
            "body": "429 Too Many Requests (Rate Limit Exceeded)\n",
            "content_type": "text/plain; charset=utf-8",
        },
    ],
    ids=["create-503", "create-500", "create-429", "create-403-throttle", "show-502-html", "self-503", "any-429"],
)
def test_5xx_and_throttling_never_send_a_file_to_failed(
    spool: Spool, sandbox: Sandbox, fault: dict[str, object], run_daemon: Callable[..., DaemonThread]
) -> None:
    sandbox.faults.add(**fault)
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    assert len(spool.filed("done")) == 1 and spool.filed("failed") == []
    assert len([item for item in sandbox.imports() if item["workflow_state"] != "aborted"]) == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"route": "create", "reset": "after"},
        {"route": "create", "status": 502, "when": "after"},
        {"route": "create", "status": 504, "when": "after", "html": True},
        {"route": "create", "delay": 4.0, "when": "after"},
    ],
    ids=["reset-after-body", "502-after-body", "504-html-after-body", "timeout"],
)
def test_a_post_whose_answer_is_lost_gives_exactly_one_import(
    spool: Spool, sandbox: Sandbox, fault: dict[str, object], run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.canvas["upload_timeout_seconds"] = 2
    sandbox.faults.add(**fault)
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    assert len(sandbox.imports()) == 1
    assert len(creates(sandbox)) == 1
    [sidecar] = spool.sidecars("done")
    assert sidecar["canvas"]["import_id"] == sandbox.imports()[0]["id"]


def test_a_reset_before_anything_was_recorded_is_sent_again_after_the_resend_delay(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.polling["resend_after_seconds"] = 1.5
    sandbox.faults.add(route="create", reset="before")
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    assert len(sandbox.imports()) == 1
    assert len(creates(sandbox)) == 2
    [sidecar] = spool.sidecars("done")
    assert sidecar["attempts"] == 2


def test_a_refused_token_leaves_every_file_where_it_is_and_says_so(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.drop_file("users.csv", USERS)
    spool.drop_file("more.csv", USERS)
    process = daemon_process("--once", "--max-wait", "4", env={"SISDAEMON_TEST_TOKEN": "not-the-token"})
    assert process.wait() == 3
    assert sorted(path.name for path in spool.drop.iterdir()) == ["more.csv", "users.csv"]
    assert not list(spool.work.iterdir()) and not list(spool.failed.iterdir())
    assert sandbox.imports() == []
    events = [event for event in process.events() if event.get("event") == "canvas_credential_fault"]
    assert events and "Invalid access token" in events[0]["error"]
    state = json.loads(spool.state_file.read_text())
    assert state["fault"]["kind"] == "credential"


def test_a_user_without_permission_is_a_credential_fault_not_a_failed_file(
    spool: Spool, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.drop_file("users.csv", USERS)
    process = daemon_process("--once", "--max-wait", "3", env={"SISDAEMON_TEST_TOKEN": "unauthorized-token"})
    assert process.wait() == 3
    assert (spool.drop / "users.csv").exists() and not list(spool.failed.iterdir())


def test_the_token_appears_nowhere_after_a_run_through_every_error_path(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.polling["resend_after_seconds"] = 1.0
    sandbox.faults.add(route="users_self", status=401, count=1)
    sandbox.faults.add(route="create", status=503, count=1)
    sandbox.faults.add(
        route="create",
        status=429,
        count=1,
        body="429 Too Many Requests (Rate Limit Exceeded)\n",
        content_type="text/plain",
    )
    sandbox.faults.add(route="create", reset="after", count=1)
    sandbox.faults.add(route="show", status=302, count=1, headers={"Location": "https://login.example/"})
    sandbox.faults.add(route="show", html=True, status=200, count=1)
    sandbox.faults.add(route="index", status=500, count=1)
    spool.drop_file("users.csv", USERS + b"u2,,Bo,Two,b@example.edu,active\n")
    spool.drop_file("bad.csv", b"course_id,randomness\nx,y\n")
    spool.drop_file("empty.csv", b"")
    process = daemon_process("--once", "--max-wait", "50")
    assert process.wait() == 1
    assert len(spool.filed("done")) == 1 and len(spool.filed("failed")) == 2
    everything = [process.log, *spool.root.rglob("*")]
    for path in everything:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token found in {path}"
    assert "verifier=" not in "".join(path.read_text() for path in spool.root.rglob("*.result.json"))


@pytest.mark.parametrize("kind", ["csv", "zip"])
def test_on_a_canvas_that_echoes_no_tag_a_lost_answer_is_found_by_its_attachments(
    spool: Spool, tmp_path: Path, kind: str, run_daemon: Callable[..., DaemonThread]
) -> None:
    with Sandbox(token=TOKEN, account_id=1, fast=True, echo_diff_row_count_threshold=False) as old_canvas:
        spool.url = old_canvas.url
        spool.drop_file("first.csv", USERS)
        assert run_daemon(once=True).join() == 0  # learns that this Canvas echoes no tag
        old_canvas.faults.add(route="create", reset="after")
        if kind == "zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("nightly/users.csv", USERS)
            spool.drop_file("nightly.zip", buffer.getvalue())
        else:
            spool.drop_file("users.csv", USERS)
        assert run_daemon(once=True).join() == 0
        assert len(old_canvas.imports()) == 2 and len(creates(old_canvas)) == 2
        assert len(spool.filed("done")) == 2


def test_the_loop_sleeps_while_canvas_refuses_the_token(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    sandbox.faults.add(route="users_self", status=401, count=10_000)  # the token is revoked after start-up
    spool.drop_file("users.csv", USERS)
    daemon = run_daemon()
    wait_for(lambda: daemon.daemon.gate.health.kind is not None, what="the credential fault")
    assert daemon.daemon.iterations > 0  # the fault is met in the main loop, not while starting
    before = daemon.daemon.iterations
    pause = threading.Event()
    pause.wait(3.0)  # a window to count loop turns in, not a wait for a condition
    turns = daemon.daemon.iterations - before
    daemon.stop()
    assert turns < 100, f"the loop turned {turns} times in 3 s while Canvas refused the token"
