"""The shrink guard, duplicate skipping and ``sisdaemon diff`` against the sandbox, with real daemon processes
(``sisdaemon run --once`` and a running ``sisdaemon run``) and real folders."""

from __future__ import annotations

import io
import json
import os
import pwd
import subprocess
import sys
import zipfile
from collections.abc import Callable
from typing import Any

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, DaemonProcess, Spool, creates, wait_for

USERS = "user_id,login_id,first_name,last_name,email,status\n"
ME = pwd.getpwuid(os.getuid()).pw_name


def users(*ids: int, changed: frozenset[int] = frozenset()) -> bytes:
    rows = "".join(
        f"U{i},login{i},{'Renamed' if i in changed else 'First'},Last,u{i}@example.edu,active\n" for i in ids
    )
    return (USERS + rows).encode()


def zipped(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sisdaemon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        env={**os.environ, TOKEN_ENV: TOKEN},
    )


def run_once(spool: Spool) -> int:
    result = sisdaemon("run", "--once", "-c", str(spool.write_config()))
    return result.returncode


def newest(spool: Spool, folder: str) -> dict[str, Any]:
    paths = sorted((spool.root / folder).glob("*.result.json"))
    data: dict[str, Any] = json.loads(paths[-1].read_text())
    return data


def statuses(sandbox: Sandbox) -> dict[str, str]:
    return {key: item.status for key, item in sandbox.world.items["Pseudonym"].items()}


def test_a_shrinking_series_is_held_by_the_guard_until_released_and_the_sandbox_shows_what_it_deletes(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.feed["import"] = {"diffing_data_set_identifier": "campus-users"}
    # preflight stays off (conftest): the guard counts rows all the same.
    spool.drop_file("users.csv", users(*range(1, 11)))
    assert run_once(spool) == 0
    first = newest(spool, "done")
    assert first["shrink_guard"]["note"].startswith("no baseline")
    assert first["shrink_guard"]["rows"] == {"user": 10}
    assert first["shrink_guard"]["canvas"]["diffing_threshold_exceeded"] is False
    assert first["diff"]["not_compared"] == {"user": "first file with user rows in this feed: nothing to compare with"}

    spool.drop_file("users.csv", users(*range(1, 10)))  # one row fewer: 10% is within the default 20%
    assert run_once(spool) == 0
    second = newest(spool, "done")
    assert second["shrink_guard"]["shrunk"] == [] and second["shrink_guard"]["baseline"] == {"user": 10}
    assert second["diff"]["types"]["user"]["removed"] == 1
    assert second["diff"]["canvas_would"] == {"user": {"rows": 1, "status": "deleted", "examples": ["U10"]}}
    assert second["shrink_guard"]["canvas"]["diffed_against_import_id"] == first["canvas"]["import_id"]
    assert statuses(sandbox)["U10"] == "deleted"  # what the diff said, Canvas (the sandbox) did

    spool.drop_file("users.csv", USERS.encode())  # header only: every user would go
    assert run_once(spool) == 1
    [held] = spool.sidecars("failed")
    assert held["outcome"] == "rejected" and held["reason_code"] == "shrink_guard"
    assert "user rows fell from 9 to 0 (100% > 20%)" in held["reason"]
    assert "removed e.g. U1, U2, U3" in held["reason"] and "retry --force" in held["reason"]
    [shrunk] = held["shrink_guard"]["shrunk"]
    assert (shrunk["before"], shrunk["after"], shrunk["import_id"]) == (9, 0, second["canvas"]["import_id"])
    assert held["diff"]["canvas_would"]["user"]["rows"] == 9
    assert "canvas" not in held or held["canvas"] is None
    assert len(creates(sandbox)) == 2  # never sent
    assert all(status == "active" for key, status in statuses(sandbox).items() if key != "U10")

    [name] = [path.name for path in spool.filed("failed")]
    released = sisdaemon("retry", "--force", "-c", str(spool.config), name)
    assert released.returncode == 0, released.stdout + released.stderr
    assert "shrink_guard_release_requested" in released.stderr
    sent = newest(spool, "done")
    assert sent["retry_of"]["force"] is True and sent["retry_of"]["reason_code"] == "shrink_guard"
    assert sent["shrink_guard"]["released_by"]["by"] == ME
    assert sent["shrink_guard"]["shrunk"][0]["after"] == 0
    # The deletions the guard held back are what the sandbox now shows, as the diff predicted.
    deleted = sorted(key for key, status in statuses(sandbox).items() if status == "deleted")
    assert len(deleted) == 10 and len(creates(sandbox)) == 3
    assert sent["diff"]["canvas_would"]["user"]["rows"] == 9


def test_a_released_file_is_sent_by_a_running_daemon_and_the_guard_holds_the_next_one_again(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["import"] = {"diffing_data_set_identifier": "campus-users"}
    spool.feed["shrink_guard_percent"] = 50
    daemon = daemon_process()
    spool.drop_file("users.csv", users(1, 2, 3, 4))
    wait_for(lambda: spool.sidecars("done"), what="the first file imported")
    spool.drop_file("users.csv", users(1))  # 75% fewer
    [held] = wait_for(lambda: spool.sidecars("failed"), what="the guard to hold the file")
    assert held["reason_code"] == "shrink_guard" and held["shrink_guard"]["percent"] == 50
    [name] = [path.name for path in spool.filed("failed")]
    result = sisdaemon("retry", "--force", "-c", str(spool.config), name, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported -> done/" in result.stdout
    assert statuses(sandbox) == {"U1": "active", "U2": "deleted", "U3": "deleted", "U4": "deleted"}
    released = [e for e in daemon.events() if e.get("event") == "shrink_guard_released"]
    assert released and released[0]["by"] == ME
    spool.drop_file("users.csv", (USERS + "").encode())  # from 1 to 0: held again, the release was for one file
    wait_for(lambda: len(spool.filed("failed")) == 1, what="the next shrinking file held")
    assert len(creates(sandbox)) == 2
    assert daemon.terminate() == 0


def test_a_file_whose_content_was_imported_within_the_window_is_skipped_into_done(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.feed["skip_duplicates_hours"] = 1
    spool.feed["preflight"] = "reject"
    spool.drop_file("users.csv", users(1, 2))
    assert run_once(spool) == 0
    [first] = spool.sidecars("done")
    spool.drop_file("users-again.csv", users(1, 2))
    assert run_once(spool) == 0
    assert len(creates(sandbox)) == 1  # not sent
    skipped = next(s for s in spool.sidecars("done") if s["job_id"] != first["job_id"])
    assert skipped["outcome"] == "duplicate_skipped" and skipped["reason_code"] == "duplicate"
    assert skipped["duplicate_of"]["import_id"] == first["canvas"]["import_id"]
    assert skipped["file"]["sha256"] == first["file"]["sha256"] and "canvas" not in skipped
    spool.drop_file("users.csv", users(1, 2, 3))  # other content: sent
    assert run_once(spool) == 0
    assert len(creates(sandbox)) == 2


def test_diff_shows_rows_added_removed_and_changed_since_the_last_import_for_a_csv_and_a_zip(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.feed["import"] = {"diffing_data_set_identifier": "campus-users", "diffing_user_remove_status": "suspended"}
    spool.drop_file("users.csv", users(1, 2, 3))
    assert run_once(spool) == 0
    [done] = spool.sidecars("done")
    changed = spool.root / "users-tonight.csv"
    changed.write_bytes(users(1, 2, 4, changed=frozenset({2})))

    result = sisdaemon("diff", "-c", str(spool.config), str(changed), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    user = report["comparison"]["types"]["user"]
    assert (user["before"], user["after"], user["added"], user["removed"], user["changed"]) == (3, 3, 1, 1, 1)
    assert user["examples"] == {"added": ["U4"], "removed": ["U3"], "changed": ["U2"]}
    assert report["summary"]["against"][0]["import_id"] == done["canvas"]["import_id"]
    assert report["summary"]["canvas_would"]["user"] == {"rows": 1, "status": "suspended", "examples": ["U3"]}

    archive = spool.root / "tonight.zip"
    archive.write_bytes(zipped(**{"users.csv": changed.read_bytes(), "__MACOSX/._users.csv": b"junk"}))
    text = sisdaemon("diff", "-c", str(spool.config), str(archive))
    assert text.returncode == 0, text.stderr
    assert "user: 3 -> 3 rows (key user_id): 1 added, 1 removed, 1 changed" in text.stdout
    assert "removed: U3" in text.stdout and "Canvas would set 1 user row(s) to suspended" in text.stdout
    assert len(creates(sandbox)) == 1  # diff sends nothing


def test_diff_with_nothing_to_compare_with_exits_3(spool: Spool) -> None:
    changed = spool.root / "users.csv"
    changed.write_bytes(users(1))
    result = sisdaemon("diff", "-c", str(spool.write_config()), str(changed))
    assert result.returncode == 3 and "imported no file yet" in result.stderr


COURSES = "course_id,short_name,long_name,account_id,term_id,status\n"


def courses(*ids: int) -> bytes:
    return (COURSES + "".join(f"C{i},C{i},Course {i},,2026FA,active\n" for i in ids)).encode()


def test_with_the_guard_off_canvas_change_threshold_abort_is_the_verdict_in_the_sidecar(
    spool: Spool, sandbox: Sandbox
) -> None:
    spool.feed["shrink_guard_percent"] = 0
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 10}
    spool.drop_file("courses.csv", courses(0, 1, 2, 3))
    assert run_once(spool) == 0
    spool.drop_file("courses.csv", courses(0))  # three of four courses would go
    assert run_once(spool) == 1
    [failed] = spool.sidecars("failed")
    assert failed["outcome"] == "aborted" and failed["reason_code"] == "change_threshold"
    assert failed["shrink_guard"]["note"].startswith("the shrink guard is off")
    verdict = failed["shrink_guard"]["canvas"]
    assert verdict["change_threshold"] == 10
    assert verdict["change_threshold_exceeded"] == "3 courses would be deleted and exceeds the set threshold of 10%"
    assert failed["diff"]["canvas_would"]["course"]["rows"] == 3
    assert len(creates(sandbox)) == 2  # the guard was off: Canvas's own guard stopped it
