"""Diffing mode in the sandbox, as Canvas does it (sis_batch.rb generate_diff, diff_generator.rb): the previous
import of the same data set is the base; rows missing from the new file are dropped."""

from __future__ import annotations

from typing import Any

import requests

from sisdaemon.sandbox import Sandbox
from tests.sandbox.test_batch_mode import ENROLLMENTS, USERS, run, zip_of

SET = {"diffing_data_set_identifier": "nightly"}


def users(*ids: int, status: str = "active") -> bytes:
    return (USERS + "".join(f"U{i},login{i},{status}\n" for i in ids)).encode()


def statuses(sandbox: Sandbox, kind: str) -> dict[str, str]:
    return {key: item.status for key, item in sandbox.world.items[kind].items()}


def test_rows_missing_from_the_next_file_of_a_data_set_are_deleted(sandbox: Sandbox, api: requests.Session) -> None:
    first = run(sandbox, api, "users.csv", users(1, 2, 3, 4), **SET)
    assert first["workflow_state"] == "imported" and first["diffed_against_import_id"] is None
    assert first["diffing_threshold_exceeded"] is False
    second = run(sandbox, api, "users.csv", users(1, 2), **SET)
    assert second["workflow_state"] == "imported"
    assert second["diffed_against_import_id"] == first["id"]
    assert second["data"]["diffed_against_sis_batch_id"] == first["id"]
    assert statuses(sandbox, "Pseudonym") == {"U1": "active", "U2": "active", "U3": "deleted", "U4": "deleted"}
    # Only the difference was applied: U1 and U2 were unchanged, U3 and U4 dropped.
    assert second["data"]["counts"]["users"] == 2
    [diffed] = second["diffed_csv_attachments"]
    assert diffed["id"] in second["data"]["diffed_attachment_ids"]
    text = api.get(diffed["url"], timeout=5).text
    assert text.splitlines() == ["user_id,login_id,status", "U3,login3,deleted", "U4,login4,deleted"]


def test_a_changed_row_is_applied_and_other_data_sets_are_not_a_base(sandbox: Sandbox, api: requests.Session) -> None:
    run(sandbox, api, "users.csv", users(1, 2), **SET)
    run(sandbox, api, "users.csv", users(7), diffing_data_set_identifier="other")
    second = run(sandbox, api, "users.csv", users(1) + b"U2,login2-new,active\n", **SET)
    assert second["data"]["counts"]["users"] == 1  # U2 changed; U1 the same; U7 is another data set's
    assert statuses(sandbox, "Pseudonym")["U7"] == "active"
    assert sandbox.world.items["Pseudonym"]["U2"].fields["login_id"] == "login2-new"


def test_drop_statuses_replace_deleted(sandbox: Sandbox, api: requests.Session) -> None:
    seed: dict[str, str] = {
        "courses": "course_id,short_name,long_name,status\nC1,C1,Course 1,active\n",
        "users": USERS + "U1,login1,active\nU2,login2,active\n",
        "enrollments": ENROLLMENTS + "C1,U1,student,,active\nC1,U2,student,,active\n",
    }
    run(sandbox, api, "all.zip", zip_of(**seed), **SET)
    seed["users"] = USERS + "U1,login1,active\n"
    seed["enrollments"] = ENROLLMENTS + "C1,U1,student,,active\n"
    done = run(
        sandbox,
        api,
        "all.zip",
        zip_of(**seed),
        **SET,
        diffing_drop_status="completed",
        diffing_user_remove_status="suspended",
    )
    assert done["workflow_state"] == "imported", done
    assert statuses(sandbox, "Pseudonym")["U2"] == "suspended"
    assert sorted(statuses(sandbox, "Enrollment").values()) == ["active", "completed"]


def test_a_remaster_skips_the_diff(sandbox: Sandbox, api: requests.Session) -> None:
    run(sandbox, api, "users.csv", users(1, 2), **SET)
    done = run(sandbox, api, "users.csv", users(1), **SET, diffing_remaster_data_set="true")
    assert done["diffed_against_import_id"] is None and done["diffing_remaster"] is True
    assert statuses(sandbox, "Pseudonym")["U2"] == "active"


def test_a_diff_that_would_change_more_rows_than_the_threshold_is_not_made(
    sandbox: Sandbox, api: requests.Session
) -> None:
    run(sandbox, api, "users.csv", users(1, 2, 3, 4), **SET)
    done: dict[str, Any] = run(sandbox, api, "users.csv", users(1), **SET, diff_row_count_threshold="2")
    assert done["diffing_threshold_exceeded"] is True and done["diffed_against_import_id"] is None
    assert done["processing_warnings"] == [
        [None, "Diffing not performed because difference row count exceeded threshold"]
    ]
    assert statuses(sandbox, "Pseudonym")["U4"] == "active"  # the whole file was applied, no drops


def test_mismatched_headers_skip_the_diff_for_that_type(sandbox: Sandbox, api: requests.Session) -> None:
    run(sandbox, api, "users.csv", users(1, 2), **SET)
    done = run(sandbox, api, "users.csv", b"user_id,login_id,first_name,status\nU1,login1,Ann,active\n", **SET)
    assert done["processing_warnings"] == [
        [None, "Unable to perform diffing against mismatched previous and current user imports"]
    ]
    assert statuses(sandbox, "Pseudonym")["U2"] == "active"
