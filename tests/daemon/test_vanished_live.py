"""An import that Canvas loses (a test instance refreshed from production, a database restored from before it):
a real daemon process against the sandbox, which forgets the import while the file waits in Canvas's queue
(vanished.py, docs/design.md "Errors")."""

from __future__ import annotations

from collections.abc import Callable

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, creates, wait_for
from tests.daemon.test_operator_commands import ME, USERS, event, sisdaemon, started, state


def submitted_then_forgotten(spool: Spool, sandbox: Sandbox, daemon: DaemonProcess) -> int:
    """Drop a file, wait until its import is recorded while Canvas queues it, then make Canvas forget it."""
    spool.drop_file("users.csv", USERS)
    [created] = wait_for(lambda: sandbox.imports(), what="the import to be created")
    wait_for(lambda: any(job.get("import_id") for job in state(spool)["jobs"]), what="the import id recorded")
    sandbox.forget_import(int(created["id"]))
    return int(created["id"])


def test_a_lost_import_goes_to_failed_as_unknown_after_its_grace_and_is_never_sent_again(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.polling["import_not_found_seconds"] = 1.0
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    import_id = submitted_then_forgotten(spool, sandbox, daemon)
    said = event(daemon, "import_not_found")
    assert said["level"] == "error" and "1 s" in said["hint"]
    wait_for(lambda: spool.sidecars("failed"), what="the file in failed/")
    [sidecar] = spool.sidecars("failed")
    assert sidecar["outcome"] == "unknown" and sidecar["reason_code"] == "import_not_found"
    assert f"import {import_id}" in sidecar["reason"] and "sisdaemon retry" in sidecar["reason"]
    assert event(daemon, "import_not_found_given_up")["waited_seconds"] >= 1
    assert state(spool)["jobs"] == [] and not list(spool.work.iterdir())
    assert len(creates(sandbox)) == 1  # given up, never sent again on its own
    assert daemon.terminate() == 0


def test_an_operators_abort_of_a_lost_import_files_it_at_once(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # With the default grace (an hour) the file would wait; an abort cannot reach Canvas (404), so it files it now.
    sandbox.stick_next("created")
    daemon = started(daemon_process())
    import_id = submitted_then_forgotten(spool, sandbox, daemon)
    event(daemon, "import_not_found")
    result = sisdaemon("abort", "-c", str(spool.config), str(import_id), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    [sidecar] = spool.sidecars("failed")
    assert sidecar["outcome"] == "unknown" and sidecar["reason_code"] == "import_not_found"
    assert any(ME in note for note in sidecar["notes"])
    assert state(spool)["jobs"] == []
    assert daemon.terminate() == 0
