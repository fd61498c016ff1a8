"""A dropped file's whole life against the sandbox over loopback: drop/ -> work/ -> Canvas -> done/ or failed/."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, DaemonThread, Spool, creates, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
USERS_WITH_WARNING = USERS + b"u2,,Bo,Two,b@example.edu,active\n"
BAD_HEADERS = b"course_id,randomness,smelly\ntest_1,TC 101,Test Course 101\n"


def test_run_once_files_a_good_file_in_done_with_its_sidecar(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    [filed] = spool.filed("done")
    assert filed.name.endswith("_users.csv") and filed.read_bytes() == USERS
    [sidecar] = spool.sidecars("done")
    assert sidecar["outcome"] == "imported" and sidecar["schema"] == 1
    assert sidecar["file"]["name"] == "users.csv" and sidecar["file"]["size"] == len(USERS)
    assert sidecar["canvas"]["counts"]["users"] == 1
    assert sidecar["canvas"]["workflow_state"] == "imported"
    assert all(sidecar["timeline"][key] for key in ("seen_at", "claimed_at", "submitted_at", "finished_at"))
    [post] = creates(sandbox)
    assert post.attachment_filename == f"{sidecar['job_id']}_users.csv"
    assert post.form.get("import_type") == "instructure_csv"
    assert not list(spool.drop.iterdir()) and not list(spool.work.iterdir())


def test_warnings_and_errors_come_back_with_the_errors_csv(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.drop_file("users.csv", USERS_WITH_WARNING)
    spool.drop_file("bad.csv", BAD_HEADERS)
    assert run_daemon(once=True).join() == 1
    [done] = spool.sidecars("done")
    assert done["outcome"] == "imported_with_messages"
    assert any("login_id" in message for _, message in done["canvas"]["processing_warnings"])
    assert done["canvas"]["errors_csv"] and (spool.done / done["canvas"]["errors_csv"]).exists()
    [failed] = spool.sidecars("failed")
    assert failed["outcome"] == "failed_with_messages" and failed["reason_code"] == "canvas_errors"
    assert "Couldn't find Canvas CSV import headers" in json.dumps(failed["canvas"]["processing_errors"])
    errors_csv = (spool.failed / failed["canvas"]["errors_csv"]).read_text()
    assert errors_csv.startswith("sis_import_id,file,message,row")


def test_a_zip_of_several_files_is_sent_as_a_zip(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/users.csv", USERS)
        archive.writestr("export/accounts.csv", b"account_id,parent_account_id,name,status\nA1,,Arts,active\n")
    spool.drop_file("nightly.ZIP", buffer.getvalue())
    assert run_daemon(once=True).join() == 0
    [sidecar] = spool.sidecars("done")
    assert sidecar["canvas"]["counts"]["users"] == 1 and sidecar["canvas"]["counts"]["accounts"] == 1
    [post] = creates(sandbox)
    assert post.attachment_filename.endswith("_nightly.zip")


def test_only_the_feed_s_options_are_sent_each_as_its_own_field(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 10}
    spool.drop_file("users.csv", USERS)
    assert run_daemon(once=True).join() == 0
    [post] = creates(sandbox)
    assert post.form["batch_mode"] == "true" and post.form["change_threshold"] == "10"
    assert post.form["batch_mode_term_id"] == "sis_term_id:2026FA"
    assert "skip_deletes" not in post.form and "diffing_data_set_identifier" not in post.form
    assert int(post.form["diff_row_count_threshold"]) >= 1_000_000_000  # the attempt tag


def test_two_files_of_one_name_in_flight_at_once_are_both_filed(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    wait_for(lambda: not (spool.drop / "users.csv").exists(), what="the first users.csv to be claimed")
    spool.drop_file("users.csv", USERS_WITH_WARNING)
    wait_for(lambda: len(spool.filed("done")) == 2, what="both files filed")
    daemon.stop()
    contents = sorted(path.read_bytes() for path in spool.filed("done"))
    assert contents == sorted([USERS, USERS_WITH_WARNING])
    assert len(creates(sandbox)) == 2


def test_status_json_lists_feeds_and_in_flight_jobs(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    def status() -> dict[str, object]:
        result = subprocess.run(
            [sys.executable, "-m", "sisdaemon", "status", "-c", str(spool.config), "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=DEADLINE,
        )
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    spool.write_config()
    idle = status()
    assert idle["jobs"] == [] and idle["feeds"][0]["name"] == "nightly"  # type: ignore[index]
    assert set(idle["feeds"][0]) == {
        "name",
        "state",
        "held",
        "last_error",
        "last_file_at",  # type: ignore[index]
        "last_success_at",
        "waiting",
        "paused",
        "drop_dir_problem",
        "waits_for",
        "last_finished",
        "freshness",
        "never_taken",
    }
    sandbox.stick_next("created")  # the import waits in Canvas's queue until unstuck
    daemon = run_daemon()
    spool.drop_file("users.csv", USERS)
    busy = wait_for(lambda: (report := status())["jobs"] and report, what="a job in status")
    [job] = busy["jobs"]
    assert set(job) == {
        "job_id",
        "feed",
        "file",
        "state",
        "import_id",
        "workflow_state",
        "progress",
        "queued_behind",  # {"import_id", "seen_at"} while Canvas has its import queued, else null
        "last_error",
        "waits_for",
        "members",  # a set's members (sets.py); empty for a single file
    }
    assert job["file"] == "users.csv" and job["members"] == []  # one file, not a set
    assert job["state"] == "submitted" or job["state"] == "claimed" or job["state"] == "submitting"
    wait_for(lambda: sandbox.imports(), what="the import")
    sandbox.unstick(sandbox.imports()[0]["id"])
    wait_for(lambda: len(spool.filed("done")) == 1, what="the file filed")
    daemon.stop()
    assert status()["feeds"][0]["last_success_at"]  # type: ignore[index]


def test_the_errors_csv_download_sends_the_token_only_to_canvas_s_own_host(
    spool: Spool, sandbox: Sandbox, run_daemon: Callable[..., DaemonThread]
) -> None:
    spool.url = sandbox.url.replace("127.0.0.1", "localhost")  # the file store answers on another host name
    spool.drop_file("users.csv", USERS_WITH_WARNING)
    assert run_daemon(once=True).join() == 0
    [sidecar] = spool.sidecars("done")
    assert (spool.done / sidecar["canvas"]["errors_csv"]).read_text().startswith("sis_import_id,file,message,row")
    downloads = [request for request in sandbox.requests if request.route == "file_download"]
    assert downloads and all(request.user_id is None for request in downloads)
    api_calls = [request for request in sandbox.requests if request.route == "show"]
    assert api_calls and all(request.user_id == 1 for request in api_calls)
