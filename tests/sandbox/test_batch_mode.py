"""Batch mode, cross-file lookups and import speed: what imports leave behind shapes later imports."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import requests

from sisdaemon.sandbox import Sandbox

IMPORTS = "/api/v1/accounts/1/sis_imports"
COURSES = "course_id,short_name,long_name,account_id,term_id,status\n"
SECTIONS = "section_id,course_id,name,status\n"
USERS = "user_id,login_id,status\n"
ENROLLMENTS = "course_id,user_id,role,section_id,status\n"


def zip_of(**files: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"{name}.csv", text)
    return buffer.getvalue()


def run(sandbox: Sandbox, api: requests.Session, name: str, body: bytes, **fields: str) -> dict[str, Any]:
    response = api.post(sandbox.url + IMPORTS, files={"attachment": (name, body)}, data=fields, timeout=10)
    assert response.status_code == 200, response.text
    return sandbox.wait_for(response.json()["id"], timeout=30)


def seed(sandbox: Sandbox, api: requests.Session) -> None:
    courses = COURSES + "".join(f"C{i},C{i},Course {i},,2026FA,active\n" for i in range(4))
    sections = SECTIONS + "".join(f"S{i},C{i},Section {i},active\n" for i in range(4))
    users = USERS + "".join(f"U{i},login{i},active\n" for i in range(4))
    enrollments = ENROLLMENTS + "".join(f"C{i},U{i},student,S{i},active\n" for i in range(4))
    done = run(
        sandbox, api, "seed.zip", zip_of(courses=courses, sections=sections, users=users, enrollments=enrollments)
    )
    assert done["workflow_state"] == "imported"
    assert done["data"]["counts"]["enrollments"] == 4


def test_batch_mode_deletes_what_the_term_no_longer_has(sandbox: Sandbox, api: requests.Session) -> None:
    seed(sandbox, api)
    body = zip_of(
        courses=COURSES + "C0,C0,Course 0,,2026FA,active\nC1,C1,Course 1,,2026FA,active\n",
        enrollments=ENROLLMENTS + "C0,U0,student,S0,active\n",
    )
    sandbox.stick_next("cleanup_batch")
    response = api.post(
        sandbox.url + IMPORTS,
        files={"attachment": ("batch.zip", body)},
        data={"batch_mode": "1", "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": "80"},
        timeout=10,
    )
    import_id = response.json()["id"]
    seen = sandbox.wait_for(import_id, {"cleanup_batch"})
    assert seen["progress"] == 0  # progress restarts for the clean-up
    sandbox.unstick(import_id)
    done = sandbox.wait_for(import_id)
    assert done["workflow_state"] == "imported"
    counts = done["data"]["counts"]
    assert counts["batch_enrollments_deleted"] == 3
    assert "batch_sections_deleted" not in counts  # no sections.csv was supplied
    assert "batch_courses_deleted" not in counts  # recorded only in multi-term batch mode (sis_batch.rb)
    assert done["data"]["statistics"]["Course"]["deleted"] == 2
    courses = sandbox.world.items["Course"]
    assert {key: item.status for key, item in courses.items()} == {
        "C0": "active",
        "C1": "active",
        "C2": "deleted",
        "C3": "deleted",
    }


def test_a_change_threshold_exceeded_aborts_the_batch(sandbox: Sandbox, api: requests.Session) -> None:
    seed(sandbox, api)
    body = (ENROLLMENTS + "C0,U0,student,S0,active\n").encode()
    done = run(sandbox, api, "enrollments.csv", body, batch_mode="true", batch_mode_term_id="2", change_threshold="10")
    assert done["workflow_state"] == "aborted"
    assert done["processing_warnings"] == [
        [None, "3 enrollments would be deleted and exceeds the set threshold of 10%"]
    ]
    assert done["progress"] == 100
    sandbox.wait_for(done["id"], {"aborted"}, errors_attachment=True)


def test_multi_term_batch_mode_without_a_terms_file_is_aborted(sandbox: Sandbox, api: requests.Session) -> None:
    seed(sandbox, api)
    body = (ENROLLMENTS + "C0,U0,student,S0,active\n").encode()
    done = run(sandbox, api, "enrollments.csv", body, multi_term_batch_mode="true", change_threshold="50")
    assert done["workflow_state"] == "aborted"
    assert done["processing_warnings"] == [[None, "Terms not found. Terms must be included with multi_term_batch_mode"]]


def test_a_later_import_sees_earlier_users(sandbox: Sandbox, api: requests.Session) -> None:
    seed(sandbox, api)
    done = run(sandbox, api, "e.csv", (ENROLLMENTS + "C1,U1,teacher,S1,active\nC1,U9,student,S1,active\n").encode())
    assert done["processing_warnings"] == [
        ["e.csv", "User not found for enrollment (User ID: U9, Course ID: C1, Section ID: S1)"]
    ]
    assert done["data"]["counts"]["enrollments"] == 1


def test_a_slow_sandbox_shows_created_then_rising_progress() -> None:
    users = (USERS + "".join(f"u{i},l{i},active\n" for i in range(400))).encode()
    with Sandbox(token="T", fast=False, rows_per_second=1000) as sb, requests.Session() as session:
        session.headers["Authorization"] = "Bearer T"
        created = session.post(sb.url + IMPORTS, files={"attachment": ("u.csv", users)}, timeout=10).json()
        assert sb.get_import(created["id"])["workflow_state"] == "created"
        progress: set[int] = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            item = sb.get_import(created["id"])
            if item["workflow_state"] == "importing":
                progress.add(item["progress"])
            if item["workflow_state"] == "imported":
                break
            time.sleep(0.01)
        assert item["workflow_state"] == "imported"
        assert any(0 < value < 100 for value in progress), progress
        assert item["data"]["running_immediately"] is False


def test_enrollments_already_in_the_drop_status_are_not_dropped_again(sandbox: Sandbox, api: requests.Session) -> None:
    # sis_batch.rb term_enrollments_scope leaves out enrollments already in batch_mode_enrollment_drop_status:
    # they are neither dropped again nor counted in the change_threshold ratio.
    seed(sandbox, api)
    body = (ENROLLMENTS + "C0,U0,student,S0,active\n").encode()
    options = {
        "batch_mode": "1",
        "batch_mode_term_id": "sis_term_id:2026FA",
        "batch_mode_enrollment_drop_status": "completed",
    }
    first = run(sandbox, api, "enrollments.csv", body, **options)
    assert first["workflow_state"] == "imported"
    assert first["data"]["counts"]["batch_enrollments_deleted"] == 3
    assert first["data"]["statistics"]["Enrollment"]["concluded"] == 3
    statuses = {item.fields["user"]: item.status for item in sandbox.world.items["Enrollment"].values()}
    assert statuses == {"U0": "active", "U1": "completed", "U2": "completed", "U3": "completed"}
    # Again, with a threshold the first run would have exceeded (3 of 4 = 75%): now 0 of 1 would change.
    second = run(sandbox, api, "enrollments.csv", body, change_threshold="50", **options)
    assert second["workflow_state"] == "imported", second.get("processing_warnings")
    assert second["data"]["counts"]["batch_enrollments_deleted"] == 0
    assert second["data"]["statistics"]["Enrollment"]["concluded"] == 0
    assert {item.fields["user"]: item.status for item in sandbox.world.items["Enrollment"].values()} == statuses


def _importing_views(sb: Sandbox, session: requests.Session, rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post a users CSV of `rows` rows; return the API's view while it imports (once its first row is in) and
    at the end."""
    body = (USERS + "".join(f"r{rows}u{i},r{rows}l{i},active\n" for i in range(rows))).encode()
    import_id = session.post(sb.url + IMPORTS, files={"attachment": ("u.csv", body)}, timeout=10).json()["id"]
    deadline = time.monotonic() + 15
    while f"r{rows}u0" not in sb.world.items["Pseudonym"]:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    during = session.get(f"{sb.url}{IMPORTS}/{import_id}", timeout=5).json()
    return during, sb.wait_for(import_id, timeout=30)


def test_a_small_import_shows_nothing_new_until_it_ends_and_a_larger_one_shows_its_files_while_running() -> None:
    # import_refactored.rb process: `@batch.save! unless @run_immediately` (50 rows or fewer run immediately).
    with Sandbox(token="T", fast=False, rows_per_second=30) as sb, requests.Session() as session:
        session.headers["Authorization"] = "Bearer T"
        sb.processor.speed.start_delay = 0.0
        during, done = _importing_views(sb, session, 25)
        assert during["workflow_state"] == "importing"
        assert during["data"] == {"import_type": "instructure_csv"}
        assert "csv_attachments" not in during
        assert done["data"]["running_immediately"] is True
        assert done["data"]["supplied_batches"] == ["user"]
        assert [att["filename"] for att in done["csv_attachments"]] == ["u.csv"]
        during, done = _importing_views(sb, session, 60)
        assert during["workflow_state"] == "importing"
        assert during["data"]["running_immediately"] is False
        assert during["data"]["supplied_batches"] == ["user"]
        assert [att["filename"] for att in during["csv_attachments"]] == ["u.csv"]
        assert done["data"]["counts"]["users"] == 60
