"""Sets of related files against the sandbox with a real daemon process: files dropped out of order a second apart
go as one import (``collect_seconds``), a manifest's set is taken only whole, and its sidecars name the set and the
shared import (README "Feed policies")."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Callable
from typing import Any

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DaemonProcess, Spool, creates, wait_for
from tests.daemon.test_operator_commands import sisdaemon

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
COURSES = b"course_id,short_name,long_name,account_id,term_id,status\nc1,C 101,Course 101,,,active\n"
SECTIONS = b"section_id,course_id,name,status\ns1,c1,Section 1,active\n"
ENROLLMENTS = b"course_id,user_id,role,section_id,status\nc1,u1,student,s1,active\n"
#: The four files in the wrong order for separate imports: the enrollment before its user.
OUT_OF_ORDER = [
    ("courses.csv", COURSES),
    ("sections.csv", SECTIONS),
    ("enrollments.csv", ENROLLMENTS),
    ("users.csv", USERS),
]
USER_NOT_FOUND = "User not found"


def spaced(spool: Spool, files: list[tuple[str, bytes]], seconds: float = 1.0) -> None:
    """Drop ``files`` one after the other, ``seconds`` apart: an upstream job writing one file after another (the
    spacing is the scenario itself, not a wait for the daemon)."""
    pause = threading.Event()
    for index, (name, data) in enumerate(files):
        if index:
            pause.wait(seconds)
        spool.drop_file(name, data)


def warnings_of(sandbox: Sandbox) -> list[Any]:
    return [pair for item in sandbox.imports() for pair in item.get("processing_warnings") or []]


def finished(sandbox: Sandbox, count: int) -> bool:
    items = sandbox.imports()
    return len(items) >= count and all(item["workflow_state"] not in ("created", "importing") for item in items)


def test_the_four_files_as_separate_imports_in_the_wrong_order_give_user_not_found(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    # The control for the next test: without collect_seconds the sandbox, like Canvas, runs separate imports in
    # arrival order, and the enrollment imported before its user warns.
    spool.feed.update({"settle_seconds": 0.3})
    daemon = daemon_process()
    for count, (name, data) in enumerate(OUT_OF_ORDER, 1):  # each import ends before the next file comes
        spool.drop_file(name, data)
        wait_for(lambda count=count: finished(sandbox, count), what=f"the import of {name}")
    wait_for(lambda: len(spool.filed("done")) == 4, what="four files in done/")
    assert daemon.terminate() == 0
    assert len(creates(sandbox)) == 4
    assert any(USER_NOT_FOUND in str(pair) for pair in warnings_of(sandbox))


def test_four_files_dropped_out_of_order_within_collect_seconds_become_one_import(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 4})
    daemon = daemon_process()
    spaced(spool, OUT_OF_ORDER)
    wait_for(lambda: len(spool.filed("done")) == 5, what="the four files and their zip in done/")
    assert daemon.terminate() == 0

    [post] = creates(sandbox)
    [sis_import] = sandbox.imports()
    assert sis_import["workflow_state"] == "imported", sis_import
    assert warnings_of(sandbox) == []  # no "User not found": Canvas ran users before enrollments
    assert sis_import["data"]["counts"]["enrollments"] == 1 and sis_import["data"]["counts"]["users"] == 1
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert set(sidecars) == {"enrollments.csv", "sections.csv", "courses.csv", "users.csv", "set.zip"}
    set_ids = {sidecar["set"]["id"] for sidecar in sidecars.values()}
    assert set_ids == {sidecars["set.zip"]["job_id"]}
    assert post.attachment_filename == f"{sidecars['set.zip']['job_id']}_set.zip"
    for name, data in OUT_OF_ORDER:
        sidecar = sidecars[name]
        assert sidecar["canvas"]["import_id"] == sis_import["id"] and sidecar["outcome"] == "imported"
        assert sidecar["canvas"]["workflow_state"] == "imported"
        assert sorted(sidecar["set"]["members"]) == sorted(n for n, _ in OUT_OF_ORDER)
        assert sidecar["file"]["size"] == len(data) and sidecar["file"]["role"] == "csv"
        [filed] = [path for path in spool.filed("done") if path.name.endswith(f"_{name}")]
        assert filed.read_bytes() == data  # the original itself, kept for its sidecar
    [zipped] = [path for path in spool.filed("done") if path.name.endswith("_set.zip")]
    with zipfile.ZipFile(io.BytesIO(zipped.read_bytes())) as archive:
        assert sorted(archive.namelist()) == sorted(name for name, _ in OUT_OF_ORDER)
        assert archive.read("users.csv") == USERS
    assert sidecars["set.zip"]["set"]["zip"] == zipped.name
    assert not list(spool.drop.iterdir()) and not list(spool.work.iterdir())
    assert any(event.get("event") == "set_claimed" for event in daemon.events())


def test_a_manifest_feed_takes_nothing_before_the_manifest_then_the_set_whole_as_one_import(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "manifest": "*.done"})
    daemon = daemon_process()
    spool.drop_file("enrollments.csv", ENROLLMENTS)
    spool.drop_file("users.csv", USERS)
    wait_for(
        lambda: any(event.get("event") == "files_await_manifest" for event in daemon.events()),
        what="the journal saying the files wait for their manifest",
    )
    assert creates(sandbox) == [] and len(list(spool.drop.iterdir())) == 2
    [said] = [event for event in daemon.events() if event.get("event") == "files_await_manifest"]
    assert said["files"] == ["enrollments.csv", "users.csv"]
    report = json.loads(sisdaemon("status", "-c", str(spool.config), "--json").stdout)
    [feed] = report["feeds"]
    assert feed["waiting"] == 2 and feed["waits_for"]["reason"] == "awaiting_manifest"
    assert "*.done" in feed["waits_for"]["text"]
    spool.drop_file("courses.csv", COURSES)
    spool.drop_file("sections.csv", SECTIONS)
    spool.drop_file("tonight.done", b"# tonight's export\nenrollments.csv\nusers.csv\n\ncourses.csv\nsections.csv\n")
    wait_for(lambda: len(spool.filed("done")) == 6, what="the four files, the manifest and the zip in done/")
    assert daemon.terminate() == 0

    [post] = creates(sandbox)
    [sis_import] = sandbox.imports()
    assert sis_import["workflow_state"] == "imported" and warnings_of(sandbox) == []
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert set(sidecars) == {"enrollments.csv", "users.csv", "courses.csv", "sections.csv", "tonight.done", "set.zip"}
    assert sidecars["tonight.done"]["file"]["role"] == "manifest"
    for sidecar in sidecars.values():
        assert sidecar["set"]["manifest"] == "tonight.done" and sidecar["canvas"]["import_id"] == sis_import["id"]
        assert sorted(sidecar["set"]["members"]) == ["courses.csv", "enrollments.csv", "sections.csv", "users.csv"]
    assert post.attachment_filename == f"{sidecars['set.zip']['job_id']}_set.zip"
    assert not list(spool.drop.iterdir()) and not list(spool.work.iterdir())


def test_a_manifests_set_missing_a_file_after_the_timeout_goes_to_failed_whole_naming_it(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "manifest": "*.manifest", "manifest_timeout_seconds": 2})
    daemon = daemon_process()
    spool.drop_file("users.csv", USERS)
    spool.drop_file("courses.csv", COURSES)
    spool.drop_file("nightly.manifest", b"users.csv\ncourses.csv\nenrollments.csv\nsections.csv\n")
    wait_for(lambda: len(spool.filed("failed")) == 3, what="the two files and the manifest in failed/")
    assert daemon.terminate() == 0

    assert creates(sandbox) == []  # nothing of an incomplete set is sent
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("failed")}
    assert set(sidecars) == {"users.csv", "courses.csv", "nightly.manifest"}
    for sidecar in sidecars.values():
        assert sidecar["outcome"] == "rejected" and sidecar["reason_code"] == "manifest_incomplete"
        assert sidecar["set"]["missing"] == ["enrollments.csv", "sections.csv"]
        assert "enrollments.csv, sections.csv" in sidecar["reason"]
        assert sidecar["set"]["zip"] is None and "canvas" not in sidecar
    assert not list(spool.drop.iterdir()) and not list(spool.work.iterdir())
    refused = [event for event in daemon.events() if event.get("event") == "set_refused"]
    assert [event["reason_code"] for event in refused] == ["manifest_incomplete"]
    [filed] = [event for event in daemon.events() if event.get("event") == "file_filed"]
    assert filed["path"] == str(spool.failed) and sorted(filed["files"]) == ["courses.csv", "users.csv"]  # no zip
    [member] = [path for path in spool.filed("failed") if path.name.endswith("_users.csv")]
    retried = sisdaemon("retry", "-c", str(spool.config), str(member))
    assert retried.returncode != 0 and member.exists()
    assert f"a member of set {sidecars['users.csv']['set']['id']}" in retried.stdout + retried.stderr
    assert "drop the whole set again" in retried.stdout + retried.stderr


def test_a_manifest_naming_a_path_goes_to_failed_alone_and_its_files_stay(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "manifest": "*.done"})
    daemon = daemon_process()
    spool.drop_file("users.csv", USERS)
    spool.drop_file("bad.done", b"users.csv\n../other/courses.csv\n")
    wait_for(lambda: len(spool.filed("failed")) == 1, what="the manifest in failed/")
    assert daemon.terminate() == 0
    [sidecar] = spool.sidecars("failed")
    assert sidecar["reason_code"] == "manifest_invalid" and "line 2" in sidecar["reason"]
    assert creates(sandbox) == [] and [path.name for path in spool.drop.iterdir()] == ["users.csv"]


def test_retry_of_a_failed_sets_zip_sends_its_files_together_again_and_files_each_beside_the_new_import(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    spool.feed.update({"settle_seconds": 0.3, "collect_seconds": 0.5})
    sandbox.finish_next_as("failed")  # Canvas fails the set's first import
    daemon = daemon_process()
    for name, data in OUT_OF_ORDER:
        spool.drop_file(name, data)
    wait_for(lambda: len(spool.filed("failed")) == 5, what="the four files and the zip in failed/")
    old = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("failed")}
    assert {sidecar["outcome"] for sidecar in old.values()} == {"failed"}
    old_names = {path.name.split("_", 2)[2]: path.name for path in spool.filed("failed")}

    retried = sisdaemon("retry", "-c", str(spool.config), str(spool.failed / old_names["set.zip"]), "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    wait_for(lambda: len(spool.filed("done")) == 5, what="the set's four files and its zip in done/")
    assert daemon.terminate() == 0

    first, second = sorted(sandbox.imports(), key=lambda item: item["id"])
    assert first["workflow_state"] == "failed" and second["workflow_state"] == "imported"
    assert len(creates(sandbox)) == 2 and warnings_of(sandbox) == []  # one import again: users before enrollments
    assert second["data"]["counts"]["users"] == 1 and second["data"]["counts"]["enrollments"] == 1
    sidecars = {sidecar["file"]["name"]: sidecar for sidecar in spool.sidecars("done")}
    assert set(sidecars) == {*old_names} == {name for name, _ in OUT_OF_ORDER} | {"set.zip"}
    new_id = sidecars["set.zip"]["job_id"]
    assert creates(sandbox)[1].attachment_filename == f"{new_id}_set.zip" and new_id != old["set.zip"]["job_id"]
    for name, sidecar in sidecars.items():
        assert sidecar["outcome"] == "imported" and sidecar["canvas"]["import_id"] == second["id"], name
        assert sidecar["set"]["id"] == new_id
        assert sorted(sidecar["set"]["members"]) == sorted(name for name, _ in OUT_OF_ORDER)
        assert sidecar["retry_of"]["file"] == old_names[name], name  # each file names its own earlier attempt
        assert sidecar["retry_of"]["outcome"] == "failed" and sidecar["retry_of"]["job_id"] == old[name]["job_id"]
        retried_sidecar = spool.failed / sidecar["retry_of"]["sidecar"]
        assert json.loads(retried_sidecar.read_text())["canvas"]["import_id"] == first["id"], name
    for name, data in OUT_OF_ORDER:
        [filed] = [path for path in spool.filed("done") if path.name.endswith(f"_{name}")]
        assert filed.read_bytes() == data and sidecars[name]["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert spool.filed("failed") == [] and not list(spool.failed.glob("*.result.json"))
    assert not list(spool.work.iterdir()) and not list(spool.drop.iterdir())
    again = sisdaemon("retry", "-c", str(spool.config), old_names["set.zip"])
    assert again.returncode == 2 and "sent again already" in again.stdout
