"""The public sample CSVs give the counts, warnings and errors Canvas's own specs expect
(tests/fixtures/sandbox/canvas-lms-specs/expected_messages.json), and a finished import's JSON has every key
the facts sheet lists."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from sisdaemon.sis_csv import COUNT_KEYS
from tests.sandbox.conftest import fixture_path

IMPORTS = "/api/v1/accounts/1/sis_imports"
EXPECTED: dict[str, Any] = json.loads(fixture_path("canvas-lms-specs/expected_messages.json").read_text("utf-8"))
# The spec behind users_login_already_claimed.csv is older than today's wording of that warning in
# lib/sis/user_importer.rb (docs/canvas-api.md §3), which the sandbox gives; the copied fixture stays as it was.
EXPECTED["files"]["users_login_already_claimed.csv"]["warnings"] = [
    "An existing Canvas user with the SIS ID user_1 has already claimed user_2's user_id requested login "
    "information, skipping"
]

# The specs' "prerequisites_described", written out as CSVs imported first.
DESCRIBED: dict[str, list[str]] = {
    "enrollments_bad_content.csv": [
        "course_id,short_name,long_name,account_id,term_id,status\nC001,TC 101,Test Course 101,,,active\n",
        "section_id,course_id,name,status\n1B,C001,Sec1,active\n",
        "user_id,login_id,first_name,last_name,email,status\nU001,user1,User,Uno,user@example.com,active\n",
    ],
    "user_observers_bad_content.csv": [
        "user_id,login_id,status\nU001,user1,active\nU002,user2,active\n",
    ],
}


def run_import(sandbox: Sandbox, api: requests.Session, name: str, body: bytes, **fields: str) -> dict[str, Any]:
    response = api.post(sandbox.url + IMPORTS, files={"attachment": (name, body)}, data=fields, timeout=10)
    assert response.status_code == 200, response.text
    return sandbox.wait_for(response.json()["id"], timeout=30)


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_a_spec_sample_gives_the_messages_canvas_expects(sandbox: Sandbox, api: requests.Session, name: str) -> None:
    expected = EXPECTED["files"][name]
    for index, prerequisite in enumerate(expected.get("prerequisites", []) + DESCRIBED.get(name, [])):
        done = run_import(sandbox, api, f"prerequisite_{index}.csv", prerequisite.encode())
        assert done["workflow_state"] == "imported", done
    done = run_import(sandbox, api, name, fixture_path(f"canvas-lms-specs/{name}").read_bytes())
    warnings = [message for file, message in done.get("processing_warnings", [])]
    errors = done.get("processing_errors", [])
    counts = done["data"]["counts"]
    if "first_error" in expected:
        # A file-level failure skips the whole file: one error, nothing supplied, nothing imported.
        assert done["workflow_state"] == "failed_with_messages"
        assert errors == [[name, expected["first_error"]]]
        assert warnings == []
        assert done["data"]["supplied_batches"] == []
        expected_counts = {**expected.get("created", {}), **expected.get("counts", {})}
        assert {key: counts[key] for key in COUNT_KEYS.values()} == {
            key: expected_counts.get(key, 0) for key in COUNT_KEYS.values()
        }
        assert (counts["error_count"], counts["warning_count"]) == (1, 0)
        return
    assert errors == []
    if "errors_any_order" in expected:
        assert sorted(warnings) == sorted(expected["errors_any_order"])
    else:
        # Canvas reports row problems as warnings (failure: false) in a recent sis_batch.rb.
        assert warnings == expected["errors"] + expected.get("warnings", [])
    assert all(file == name for file, _ in done.get("processing_warnings", []))
    assert done["workflow_state"] == ("imported_with_messages" if warnings else "imported")
    for kind, number in {**expected.get("created", {}), **expected.get("counts", {})}.items():
        if kind == "courses" and name == "xlists_bad_content.csv":
            kind = "xlists"  # the spec counts courses made by cross-listing; none are
        assert counts[kind] == number, (kind, counts)
    assert counts["warning_count"] == len(warnings)


def test_canvas_api_spec_user_file_imports_one_user_and_lists_a_filtered_copy(
    sandbox: Sandbox, api: requests.Session
) -> None:
    done = run_import(sandbox, api, "test_user_1.csv", fixture_path("canvas-lms/test_user_1.csv").read_bytes())
    after = EXPECTED["api"]["after_processing_test_user_1_csv"]
    assert done["workflow_state"] == after["workflow_state"]
    assert done["progress"] == after["progress"]
    assert done["data"]["supplied_batches"] == after["data"]["supplied_batches"]
    for kind, number in after["data"]["counts"].items():
        assert done["data"]["counts"][kind] == number
    # A users CSV with a password column is offered as a copy without it (import_refactored.rb).
    assert [att["filename"] for att in done["csv_attachments"]] == ["test_user_1_filtered.csv"]


@pytest.mark.parametrize(("name", "rows"), [("with_bom.csv", 1), ("utf8.csv", 9), ("users_utf.csv", None)])
def test_utf8_samples_import_without_an_encoding_error(
    sandbox: Sandbox, api: requests.Session, name: str, rows: int | None
) -> None:
    done = run_import(sandbox, api, name, fixture_path(f"canvas-lms/{name}").read_bytes())
    assert "processing_errors" not in done
    assert done["data"]["supplied_batches"] == ["user"]
    if rows is not None:
        assert done["data"]["counts"]["users"] == rows


def test_a_macos_zip_imports_its_csvs_by_header_and_ignores_the_mac_files(
    sandbox: Sandbox, api: requests.Session
) -> None:
    done = run_import(sandbox, api, "create.zip", fixture_path("canvas-contrib/demodata/create.zip").read_bytes())
    assert done["data"]["supplied_batches"] == ["account", "term", "course", "section", "user", "enrollment"]
    assert "processing_errors" not in done
    assert all("Skipping unknown file type" not in message for _, message in done.get("processing_warnings", []))
    names = [att["filename"] for att in done["csv_attachments"]]
    # user.csv has a password column: Canvas offers a copy without it.
    assert sorted(names) == [
        "account.csv",
        "course.csv",
        "enrollment.csv",
        "section.csv",
        "term.csv",
        "user_filtered.csv",
    ]
    assert done["data"]["counts"]["users"] == 10_000
    assert done["data"]["running_immediately"] is False


def test_canvasapis_own_fixture_is_an_enrollments_file_with_nothing_to_enrol_in(
    sandbox: Sandbox, api: requests.Session
) -> None:
    # Its header (section_id, course_id, ..., user_id) meets enrollment_importer.rb's enrollment_csv?.
    name = "test_create_sis_import.csv"
    done = run_import(sandbox, api, name, fixture_path(f"canvasapi/{name}").read_bytes())
    assert done["data"]["supplied_batches"] == ["enrollment"]
    assert done["processing_warnings"] == [
        [name, "Neither course nor section existed for user enrollment (Course ID: 21, Section ID: 20, User ID: 9)"]
    ]


def test_the_docs_samples_imported_together_give_cross_file_warnings(sandbox: Sandbox, api: requests.Session) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in (
            "accounts",
            "terms",
            "courses",
            "sections",
            "users",
            "enrollments",
            "xlists",
            "groups",
            "user_observers",
        ):
            archive.writestr(f"{name}.csv", fixture_path(f"canvas-lms-docs/{name}.csv").read_bytes())
    done = run_import(sandbox, api, "docs.zip", buffer.getvalue())
    warnings = [message for _, message in done["processing_warnings"]]
    assert 'Account not found "A004" for course R001104' in warnings
    assert "An enrollment referenced a non-existent section 1B" in warnings
    assert done["workflow_state"] == "imported_with_messages"
    assert done["data"]["counts"]["accounts"] == 3


KEYS_ALWAYS = [
    "id",
    "created_at",
    "started_at",
    "ended_at",
    "updated_at",
    "progress",
    "workflow_state",
    "data",
    "batch_mode",
    "batch_mode_term_id",
    "multi_term_batch_mode",
    "override_sis_stickiness",
    "add_sis_stickiness",
    "update_sis_id_if_login_claimed",
    "clear_sis_stickiness",
    "diffing_data_set_identifier",
    "diffing_remaster",
    "diffed_against_import_id",
    "diffing_drop_status",
    "diffing_user_remove_status",
    "skip_deletes",
    "change_threshold",
    "diff_row_count_threshold",
]


def test_a_finished_imports_json_has_every_key_on_the_sheet(sandbox: Sandbox, api: requests.Session) -> None:
    body = b"user_id,login_id,status\nu1,l1,active\nu2,,active\n"
    done = run_import(sandbox, api, "users.csv", body, diffing_data_set_identifier="feed-users")
    done = sandbox.wait_for(done["id"], errors_attachment=True)
    assert list(done)[: len(KEYS_ALWAYS)] == KEYS_ALWAYS  # sis_batch.rb as_json's order
    for key in ("processing_warnings", "diffing_threshold_exceeded", "errors_attachment", "user", "csv_attachments"):
        assert key in done
    assert isinstance(done["progress"], int)
    assert set(EXPECTED["api"]["post_response_keys_checked"]) <= set(done)
    data = done["data"]
    for key in (
        "import_type",
        "supplied_batches",
        "counts",
        "running_immediately",
        "completed_importers",
        "statistics",
        "downloadable_attachment_ids",
    ):
        assert key in data
    assert data["statistics"]["Pseudonym"] == {"created": 1, "restored": 0, "deleted": 0}
    assert data["statistics"]["total_state_changes"] == 1
    assert data["counts"]["error_count"] == 0 and data["counts"]["warning_count"] == 1
    for key in ("id", "uuid", "display_name", "filename", "content-type", "url", "size", "created_at"):
        assert key in done["errors_attachment"]
    for key in ("id", "name", "sortable_name", "short_name", "sis_user_id", "integration_id", "login_id"):
        assert key in done["user"]


def test_more_than_24_errors_are_capped_with_an_and_n_more_pair(sandbox: Sandbox, api: requests.Session) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(30):
            archive.writestr(f"export_{index:02d}.csv", "student_number,grade\n1,10\n")
    done = run_import(sandbox, api, "exports.zip", buffer.getvalue())
    assert done["workflow_state"] == "failed_with_messages"
    errors = done["processing_errors"]
    assert len(errors) == 25
    assert errors[:24] == [[f"export_{i:02d}.csv", "Couldn't find Canvas CSV import headers"] for i in range(24)]
    assert errors[-1] == ["and 6 more errors that were not included", "Download the error file to see all errors."]
    assert (done["data"]["counts"]["error_count"], done["data"]["counts"]["warning_count"]) == (30, 0)
    assert "processing_warnings" not in done
    listed = api.get(f"{sandbox.url}{IMPORTS}/{done['id']}/errors", params={"per_page": 100}, timeout=5).json()
    assert len(listed["sis_import_errors"]) == 30  # the errors endpoint has them all


def test_more_than_24_warnings_are_capped_with_an_and_n_more_pair(sandbox: Sandbox, api: requests.Session) -> None:
    body = "user_id,login_id,status\n" + "".join(f"u{i},,active\n" for i in range(30))
    done = run_import(sandbox, api, "users.csv", body.encode())
    warnings = done["processing_warnings"]
    assert len(warnings) == 25
    assert warnings[-1] == [
        "and 6 more warnings that were not included",
        "Download the error file to see all warnings.",
    ]
    assert done["data"]["counts"]["warning_count"] == 30
