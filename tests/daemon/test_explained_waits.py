"""Every wait explains itself, against a real daemon process, real folders and the sandbox's faults: the journal says
when a wait starts and ends (never a line per retry or per loop turn), ``status`` says why and until when, and
``submit --wait`` prints where its import stands in Canvas's queue."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from sisdaemon import jobs
from sisdaemon.jobs import Fingerprint
from sisdaemon.ledger import Ledger
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, OTHER_TOKEN, TOKEN, TOKEN_ENV, DaemonProcess, Spool, wait_for
from tests.daemon.test_operator_commands import USERS, event, sisdaemon, started, state

OTHERS = b"user_id,login_id,first_name,last_name,email,status\nu2,user2,Bea,Two,b@example.edu,active\n"


def said(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """The journal's lines named ``name`` at info level or above (what a journal at the default level shows)."""
    return [line for line in daemon.events() if line.get("event") == name and line.get("level") != "debug"]


def status_report(spool: Spool) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    return report


def import_by_someone_else(sandbox: Sandbox) -> int:
    """An import another Canvas user sent (over HTTP, as an admin's script would), for the account's queue."""
    response = requests.post(
        f"{sandbox.url}/api/v1/accounts/1/sis_imports",
        headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
        data={"import_type": "instructure_csv"},
        files={"attachment": ("theirs.csv", OTHERS)},
        timeout=10,
    )
    response.raise_for_status()
    import_id: int = response.json()["id"]
    return import_id


# --- submit --wait: where the import stands -------------------------------------------------------------------------


@pytest.mark.parametrize("with_daemon", [True, False], ids=["to a running daemon", "without a daemon"])
def test_submit_wait_prints_the_import_its_import_is_queued_behind_then_each_change_once(
    with_daemon: bool, spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = started(daemon_process()) if with_daemon else None
    sandbox.stick_next("importing")  # someone else's import runs, and runs: Canvas runs one at a time per account
    theirs = import_by_someone_else(sandbox)
    sandbox.wait_for(theirs, {"importing"})
    source = tmp_path / "users.csv"
    source.write_bytes(USERS)
    printed = tmp_path / "submit.out"
    with open(printed, "wb") as out:
        submit = subprocess.Popen(
            [sys.executable, "-m", "sisdaemon", "submit", "-c", str(spool.write_config()), str(source), "--wait"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env={**os.environ, TOKEN_ENV: TOKEN},
        )
        try:
            wait_for(lambda: f"queued in Canvas behind import {theirs}" in printed.read_text(), what="the queue line")
            if daemon is not None:  # status says it too, beside the job
                [job] = status_report(spool)["jobs"]
                assert job["waits_for"]["reason"] == "queued_in_canvas"
                assert f"behind import {theirs} (as of " in job["waits_for"]["text"]
                assert job["queued_behind"]["import_id"] == theirs  # with when Canvas was asked: seen_at
            sandbox.stick(ours := sandbox.imports()[-1]["id"], "importing")
            sandbox.unstick(theirs)  # theirs ends: Canvas starts ours
            wait_for(lambda: f"import {ours} importing" in printed.read_text(), what="the importing line")
            sandbox.unstick(ours)
            assert submit.wait(timeout=60) == 0
        finally:
            if submit.poll() is None:
                submit.kill()
    lines = [line.split(": ", 1)[1] for line in printed.read_text().splitlines()]
    assert lines[-1].startswith("imported -> done/"), lines
    assert len([line for line in lines if "queued in Canvas behind" in line]) == 1, lines  # not one per poll
    assert all(first != second for first, second in itertools.pairwise(lines)), lines
    if daemon is not None:
        [queued] = said(daemon, "import_queued")
        assert queued["behind_import_id"] == theirs
        assert daemon.terminate() == 0


# --- Canvas faults and throttling: said when they start and end, status until when -----------------------------


@pytest.mark.parametrize(
    ("status", "body", "journaled"),
    [
        (503, None, "canvas_unavailable"),
        (429, "429 Too Many Requests (Rate Limit Exceeded)\n", "canvas_throttled"),
        (403, "403 Forbidden (Rate Limit Exceeded)\n", "canvas_throttled"),
        (401, None, "canvas_credential_fault"),
    ],
    ids=["5xx", "429", "403 rate limit", "credential"],
)
def test_a_canvas_fault_is_said_when_it_starts_and_ends_and_status_says_until_when_it_waits(
    status: int,
    body: str | None,
    journaled: str,
    spool: Spool,
    sandbox: Sandbox,
    daemon_process: Callable[..., DaemonProcess],
) -> None:
    daemon = started(daemon_process())
    text = {"body": body, "content_type": "text/plain; charset=utf-8"} if body else {}
    fault = sandbox.faults.add(route="any", status=status, count=None, **text)
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: fault.used >= 4, what="the daemon retrying several times")
    wait_for(lambda: state(spool)["fault"] is not None and state(spool)["fault"]["count"] >= 3, what="the fault kept")
    recorded = state(spool)["fault"]
    assert isinstance(recorded["retry_at"], float)
    [feed] = status_report(spool)["feeds"]
    assert feed["waits_for"]["reason"] == "canvas_fault" and feed["waits_for"]["until"].endswith("Z")
    shown = sisdaemon("status", "-c", str(spool.config)).stdout
    assert "waits: Canvas calls fail" in shown and "(until 20" in shown
    sandbox.faults.clear()
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file imported once Canvas answers")
    assert daemon.terminate() == 0
    assert len(said(daemon, journaled)) == 1, said(daemon, journaled)  # its start, not a line per retry
    retries = [line for line in daemon.events() if line.get("event") == journaled and line.get("level") == "debug"]
    assert len(retries) >= 2 and all(line["retry_at"] and line["attempt"] >= 2 for line in retries)
    [recovered] = said(daemon, "canvas_recovered")
    assert recovered["after_faults"] >= 3 and recovered["after_seconds"] >= 0


def test_canvas_down_at_start_up_is_said_once_until_the_account_is_resolved(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    fault = sandbox.faults.add(route="account", status=502, count=None)
    daemon = daemon_process()
    wait_for(lambda: fault.used >= 4, what="the daemon asking for the account several times")
    sandbox.faults.clear()
    started(daemon)
    assert daemon.terminate() == 0
    assert len(said(daemon, "account_not_resolved")) == 1
    assert len(said(daemon, "account_resolved")) == 1 and len(said(daemon, "canvas_unavailable")) == 1


# --- one upload per account, behind an upload of unknown outcome --------------------------------------------------


def test_files_behind_a_lost_answer_say_once_what_they_wait_for_and_until_when_and_when_it_ends(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.polling["resend_after_seconds"] = 6.0
    daemon = started(daemon_process())
    sandbox.faults.add(route="create", reset="before")  # the POST's answer is lost; Canvas created nothing
    spool.drop_file("a.csv", USERS)
    lost = event(daemon, "post_outcome_unknown")
    assert lost["resend_no_earlier_than"].endswith("Z")
    spool.drop_file("b.csv", OTHERS)
    waiting = event(daemon, "upload_waits_for_account")
    assert waiting["reason"] == "upload_outcome_unknown" and waiting["behind_job_id"] == lost["job_id"]
    assert waiting["file"] == "b.csv" and waiting["until"].endswith("Z") and waiting["level"] == "warning"
    jobs = {job["file"]: job for job in status_report(spool)["jobs"]}
    assert jobs["a.csv"]["waits_for"]["reason"] == "upload_outcome_unknown" and jobs["a.csv"]["waits_for"]["until"]
    assert jobs["b.csv"]["waits_for"]["reason"] == "one_upload_per_account"
    wait_for(lambda: len(spool.filed("done")) == 2, what="both files imported once the lost answer is resolved")
    assert daemon.terminate() == 0
    assert len(said(daemon, "post_resend")) == 1  # the lost answer's wait ended: nothing was created, sent again
    starts = [line for line in said(daemon, "upload_waits_for_account") if line["file"] == "b.csv"]
    ends = [line for line in said(daemon, "upload_wait_over") if line["job_id"] == waiting["job_id"]]
    # Behind the lost answer, then (perhaps) behind a.csv's second upload: a line each, never one per turn.
    assert [line["reason"] for line in starts][:1] == ["upload_outcome_unknown"] and len(starts) <= 2
    assert len(ends) == len(starts) and ends[0]["reason"] == "upload_outcome_unknown"


# --- a queued import's place: never an import it no longer waits behind -----------------------------------------


def test_status_names_the_import_a_queued_one_waits_behind_with_its_age_and_never_one_seen_for_another_import(
    spool: Spool,
) -> None:
    now = time.time()
    ledger = Ledger(spool.state_file)
    ledger.load(["nightly"])
    claimed = jobs.claim("a0a0a0a0a0", "nightly", "users.csv", Fingerprint(1, 10, 1), seen_at=now, now=now)
    queued = jobs.post_created(
        jobs.begin_attempt(claimed, tag=None, intent_at=None, now=now),
        {"id": 41, "workflow_state": "created", "progress": 0},
        now=now,
        interval=5.0,
    )
    ledger.put(dataclasses.replace(queued, queued_behind=40, queued_behind_at=now - 90))
    # Another job whose queued import 50 (seen behind import 8) turned out not to apply: sent again as import 51.
    other = jobs.claim("b1b1b1b1b1", "nightly", "courses.csv", Fingerprint(2, 10, 1), seen_at=now, now=now)
    attempt = jobs.post_created(
        jobs.begin_attempt(other, tag=None, intent_at=None, now=now),
        {"id": 50, "workflow_state": "created"},
        now=now,
        interval=5.0,
    )
    attempt = dataclasses.replace(attempt, queued_behind=8, queued_behind_at=now - 5)
    again = jobs.back_to_claimed(attempt, "the import's attachments are not this file", now=now, settle_again=False)
    resent = jobs.post_created(
        jobs.begin_attempt(again, tag=None, intent_at=None, now=now),
        {"id": 51, "workflow_state": "created"},
        now=now,
        interval=5.0,
    )
    ledger.put(resent)
    report = status_report(spool)
    shown = {job["import_id"]: job for job in report["jobs"]}
    assert shown[41]["queued_behind"]["import_id"] == 40
    seen = re.fullmatch(
        r"import 41 is queued in Canvas behind import 40 \(as of (\d+) s ago\)", shown[41]["waits_for"]["text"]
    )
    assert seen is not None and 90 <= int(seen[1]) < 90 + DEADLINE
    assert shown[51]["queued_behind"] is None
    assert shown[51]["waits_for"]["text"] == "import 51 is queued in Canvas"  # not behind import 8: 50's place
    text = sisdaemon("status", "-c", str(spool.config)).stdout
    assert "behind import 40 (as of " in text and "behind import 8" not in text
