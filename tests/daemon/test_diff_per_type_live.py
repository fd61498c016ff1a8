"""The trial report's scenario (item 2) on a batch-mode feed against the sandbox: users imported, then courses, then
a shrunk users file. ``sisdaemon diff`` and the sidecars of a real daemon compare each SIS type with the feed's last
imported file that held it (the shrink guard's baseline), never a file of users with a file of courses."""

from __future__ import annotations

import json
from collections.abc import Callable

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, creates, wait_for
from tests.daemon.test_guard_live import courses, run_once, sisdaemon, users

BATCH = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 50}
FIRST_COURSES = "first file with course rows in this feed: nothing to compare with"


def test_a_shrunk_users_file_is_compared_with_the_last_users_file_not_the_courses_imported_since(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed["import"] = BATCH
    spool.drop_file("busers.csv", users(*range(1, 11)))
    assert run_once(spool) == 0
    [busers] = spool.sidecars("done")
    assert busers["diff"]["not_compared"] == {"user": "first file with user rows in this feed: nothing to compare with"}
    assert busers["diff"]["types"] == {} and "canvas_would" not in busers["diff"]

    spool.drop_file("bcourses.csv", courses(1, 2))
    assert run_once(spool) == 0
    bcourses = next(s for s in spool.sidecars("done") if s["file"]["name"].endswith("bcourses.csv"))
    # Courses are new to this feed: said as such; the users of busers.csv are not "removed" by a file of courses.
    assert bcourses["diff"]["types"] == {} and bcourses["diff"]["not_compared"] == {"course": FIRST_COURSES}
    assert "canvas_would" not in bcourses["diff"]
    users_done = next(path.name for path in spool.filed("done") if path.name.endswith("busers.csv"))

    shrunk = spool.root / "busers2.csv"
    shrunk.write_bytes(users(1, 2))
    text = sisdaemon("diff", "-c", str(spool.config), "--feed", "nightly", str(shrunk))
    assert text.returncode == 0, text.stderr
    assert f"with {spool.done / users_done}" in text.stdout.splitlines()[0]
    assert "user: 10 -> 2 rows (key user_id): 0 added, 8 removed, 0 changed" in text.stdout
    assert "course" not in text.stdout  # busers2.csv holds no courses: not compared, nothing said about them
    as_json = sisdaemon("diff", "-c", str(spool.config), str(shrunk), "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    summary = report["summary"]
    assert summary["types"]["user"]["against"] == users_done  # its name in done/, as the history records it
    assert report["comparison"]["types"]["user"]["against"] == str(spool.done / users_done)
    assert [item["types"] for item in summary["against"]] == [["user"]]
    assert summary["against"][0]["import_id"] == busers["canvas"]["import_id"]
    assert list(summary["types"]) == ["user"] and "not_compared" not in summary

    # --against keeps comparing with the one file given, on the types both hold: none here.
    courses_done = next(path for path in spool.filed("done") if path.name.endswith("bcourses.csv"))
    against = sisdaemon("diff", "--against", str(courses_done), str(shrunk))
    assert against.returncode == 0, against.stderr
    assert "course: not compared: only in the earlier file" in against.stdout
    assert "user: not compared: not in the earlier file" in against.stdout
    assert "Canvas would" not in against.stdout

    daemon = daemon_process()
    spool.drop_file("busers2.csv", shrunk.read_bytes())
    [held] = wait_for(lambda: spool.sidecars("failed"), what="the shrink guard to hold busers2.csv")
    assert held["reason_code"] == "shrink_guard" and "user rows fell from 10 to 2" in held["reason"]
    [fell] = held["shrink_guard"]["shrunk"]
    user = held["diff"]["types"]["user"]
    # The guard and the diff name the same earlier file for the type.
    assert fell["file"] == user["against"] == users_done == held["diff"]["against"][0]["file"]
    assert (user["before"], user["after"], user["removed"]) == (10, 2, 8)
    assert list(held["diff"]["types"]) == ["user"]
    assert f"diff since {users_done}: user 10 -> 2 rows" in held["reason"]
    assert len(creates(sandbox)) == 2  # held, never sent
    assert daemon.terminate() == 0
