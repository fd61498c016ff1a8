"""The row_info of row-level messages: the CSV row for a row's own checks, the model for later lookups."""

from __future__ import annotations

import io
import zipfile

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from sisdaemon.sandbox.row_info import csv_row_info, model_row_info, rails_time_inspect, ruby_inspect

IMPORTS = "/api/v1/accounts/1/sis_imports"

# row_info of the first message in uw-restclients-canvas's 2026 sample of GET .../sis_imports/:id/errors.
UW_ROW_INFO = (
    '[{course_id: "AY2025-2026-101-BLUEPRINT_354-009", section_id: nil, user_id: nil, '
    'user_integration_id: "9876543", role: "student", status: "active", associated_user_id: nil, '
    'temporary_enrollment_source_user_id: nil, root_account_id: "uw.test.instructure.com", role_id: nil, '
    "limit_section_privileges: nil, notify: nil, start_date: nil, end_date: nil}]"
)


def test_an_enrollments_model_row_info_reads_as_canvas_dumps_it() -> None:
    row = {
        "course_id": "AY2025-2026-101-BLUEPRINT_354-009",
        "section_id": "",
        "user_integration_id": "9876543",
        "role": "student",
        "status": "active",
        "root_account": "uw.test.instructure.com",
    }
    assert model_row_info("enrollment", row) == UW_ROW_INFO


def test_a_users_model_row_info_and_other_importers() -> None:
    assert model_row_info("user", {"user_id": "u1", "login_id": "l1", "status": "active", "email": ""}) == (
        '[{user_id: "u1", login_id: "l1", status: "active", first_name: nil, last_name: nil, email: nil, '
        "integration_id: nil, short_name: nil, full_name: nil, sortable_name: nil, authentication_provider_id: nil}]"
    )
    assert model_row_info("course", {"course_id": "C1"}) is None


@pytest.mark.parametrize(
    ("header", "fields", "expected"),
    [
        (["user_id", "login_id", "status"], ["u1", "", "active"], "u1,,active,2\n"),
        (["user_id", "login_id", "status"], [" u1 ", "  "], "u1,,,2\n"),  # stripped, blank and missing are nil
        (["a", "b"], ['x,"y"', "line\nbreak", "extra"], '"x,""y""","line\nbreak",extra,2\n'),
        (["a", "lineno"], ["x", "99"], "x,2\n"),  # csv_rows sets the lineno column in place
    ],
)
def test_a_csv_row_info_is_the_rows_csv_with_its_lineno(header: list[str], fields: list[str], expected: str) -> None:
    assert csv_row_info(header, fields, 2) == expected


def test_ruby_inspect_and_rails_times() -> None:
    assert ruby_inspect(None) == "nil"
    assert ruby_inspect('a "b"\\#{c}\n\x01é') == '"a \\"b\\"\\\\\\#{c}\\n\\u0001é"'
    assert rails_time_inspect("2026-01-05") == "Mon, 05 Jan 2026 00:00:00.000000000 UTC +00:00"
    assert rails_time_inspect("2013-05-03 00:00:00-06:00") == "Fri, 03 May 2013 06:00:00.000000000 UTC +00:00"
    assert rails_time_inspect("2026-02-30") is None
    assert rails_time_inspect("") is None


def test_the_errors_endpoint_carries_row_info_and_counts_rows_as_canvas_does(
    sandbox: Sandbox, api: requests.Session
) -> None:
    users = b'user_id,login_id,status\nu1,l1,active\n\n"u2",,active\n'  # a blank line: not a row
    enrollments = (
        b"course_id,user_id,role,section_id,status\n"
        b'C9,u1,student,,"act\nive"\n'  # two physical lines, one row
        b"C9,u1,student,,active\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", users)
        archive.writestr("enrollments.csv", enrollments)
        archive.writestr("odd.csv", b"a,b\n1,2\n")
    created = api.post(sandbox.url + IMPORTS, files={"attachment": ("feed.zip", buffer.getvalue())}, timeout=10)
    sandbox.wait_for(created.json()["id"])
    listed = api.get(f"{sandbox.url}{IMPORTS}/{created.json()['id']}/errors", timeout=5).json()["sis_import_errors"]
    by_message = {error["message"]: error for error in listed}
    login = by_message["No login_id given for user u2"]
    assert (login["row"], login["row_info"]) == (3, "u2,,active,3\n")
    status = by_message['Improper status "act\nive" for an enrollment']
    assert (status["row"], status["row_info"]) == (2, 'C9,u1,student,,"act\nive",2\n')
    lookup = by_message[
        "Neither course nor section existed for user enrollment (Course ID: C9, Section ID: , User ID: u1)"
    ]
    assert lookup["row"] == 3
    assert lookup["row_info"].startswith('[{course_id: "C9", section_id: nil, user_id: "u1", user_integration_id: nil,')
    headers = by_message["Couldn't find Canvas CSV import headers"]
    assert (headers["row"], headers["row_info"]) == (None, None)
