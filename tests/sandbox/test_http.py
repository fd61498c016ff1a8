"""The sandbox over raw HTTP: auth, options, the index, the errors CSV and what Canvas echoes."""

from __future__ import annotations

import gc
import io
import itertools
import socket
import threading
import time
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from sisdaemon.sandbox.options import cast_integer_column
from tests.sandbox.conftest import OTHER_TOKEN, TOKEN, UNAUTHORIZED_TOKEN

USERS = b"user_id,login_id,status\nu1,l1,active\n"
IMPORTS = "/api/v1/accounts/1/sis_imports"


def post(
    sandbox: Sandbox, api: requests.Session, body: bytes = USERS, name: str = "users.csv", **fields: Any
) -> requests.Response:
    return api.post(sandbox.url + IMPORTS, files={"attachment": (name, body)}, data=fields, timeout=10)


def test_every_answer_has_a_date_header_even_an_unknown_route(sandbox: Sandbox, api: requests.Session) -> None:
    for path in ("/api/v1/accounts/1", "/api/v1/nowhere", IMPORTS + "/999"):
        response = api.get(sandbox.url + path, timeout=5)
        assert response.headers["Date"].endswith("GMT")
    assert api.get(sandbox.url + "/api/v1/nowhere", timeout=5).json() == {
        "errors": [{"message": "The specified resource does not exist."}]
    }


def test_a_missing_or_wrong_token_answers_401_with_www_authenticate(sandbox: Sandbox) -> None:
    missing = requests.get(sandbox.url + IMPORTS, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'
    assert missing.json() == {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
    wrong = requests.get(sandbox.url + IMPORTS, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.json() == {"errors": [{"message": "Invalid access token."}]}
    assert "WWW-Authenticate" in wrong.headers


def test_a_token_lacking_permission_is_refused_but_may_read_users_self(sandbox: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {UNAUTHORIZED_TOKEN}"}
    refused = requests.post(sandbox.url + IMPORTS, headers=headers, files={"attachment": ("u.csv", USERS)}, timeout=5)
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["message"] == "user not authorized to perform that action"
    assert requests.get(sandbox.url + "/api/v1/users/self", headers=headers, timeout=5).json()["id"] == 3
    assert sandbox.imports() == []


def test_forbidden_status_403_is_the_newer_canvas_answer() -> None:
    with Sandbox(token="T", unauthorized_token="U", forbidden_status=403) as sb:
        response = requests.get(sb.url + IMPORTS, headers={"Authorization": "Bearer U"}, timeout=5)
        assert response.status_code == 403
        assert response.json()["status"] == "unauthorized"


def test_users_self_names_the_tokens_user(sandbox: Sandbox) -> None:
    me = requests.get(sandbox.url + "/api/v1/users/self", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}, timeout=5)
    assert me.json()["id"] == 2


def test_account_can_be_named_self_or_by_number_and_unknown_is_404(sandbox: Sandbox, api: requests.Session) -> None:
    assert api.get(sandbox.url + "/api/v1/accounts/self", timeout=5).json()["id"] == 1
    assert api.get(sandbox.url + "/api/v1/accounts/1/sis_imports", timeout=5).status_code == 200
    assert api.get(sandbox.url + "/api/v1/accounts/self/sis_imports", timeout=5).status_code == 200
    assert api.get(sandbox.url + "/api/v1/accounts/77/sis_imports", timeout=5).status_code == 404
    assert api.get(sandbox.url + "/api/v1/accounts/sis_account_id:NOPE", timeout=5).status_code == 404


def test_the_raw_body_style_takes_options_from_the_query(sandbox: Sandbox) -> None:
    response = requests.post(
        sandbox.url + IMPORTS + "?import_type=instructure_csv&extension=csv&diff_row_count_threshold=1000000009",
        data=USERS,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"},
        timeout=5,
    )
    assert response.status_code == 200
    created = response.json()
    assert created["diff_row_count_threshold"] == 1000000009
    done = sandbox.wait_for(created["id"])
    assert done["workflow_state"] == "imported"
    assert done["csv_attachments"][0]["filename"] == "sis_import.csv"
    record = sandbox.requests[-1]
    assert (record.attachment_filename, record.attachment_size) == ("sis_import.csv", len(USERS))


def test_an_empty_extension_on_a_raw_body_names_the_file_sis_import_dot_and_imports_nothing(
    sandbox: Sandbox,
) -> None:
    response = requests.post(
        sandbox.url + IMPORTS + "?extension=",
        data=USERS,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv; charset=iso-8859-1"},
        timeout=5,
    )
    assert response.status_code == 200  # an extension was given: no charset check
    assert sandbox.requests[-1].attachment_filename == "sis_import."
    done = sandbox.wait_for(response.json()["id"])
    assert done["workflow_state"] == "imported"
    assert done["data"]["supplied_batches"] == []
    assert done["data"]["counts"]["users"] == 0
    assert "csv_attachments" not in done


def test_a_raw_body_without_extension_and_a_latin1_charset_is_refused(sandbox: Sandbox) -> None:
    response = requests.post(
        sandbox.url + IMPORTS,
        data=USERS,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv; charset=iso-8859-1"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid content type, UTF-8 required"}


def test_a_multipart_post_without_attachment_is_400(sandbox: Sandbox, api: requests.Session) -> None:
    response = api.post(sandbox.url + IMPORTS, files={"other": ("x.csv", USERS)}, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": True, "error_message": "Missing attachment"}


def test_a_file_not_named_csv_or_zip_imports_nothing(sandbox: Sandbox, api: requests.Session) -> None:
    created = post(sandbox, api, name="users.txt").json()
    done = sandbox.wait_for(created["id"])
    assert done["workflow_state"] == "imported"
    assert done["data"]["counts"]["users"] == 0
    assert done["data"]["supplied_batches"] == []


def test_options_are_echoed_as_canvas_echoes_them(sandbox: Sandbox, api: requests.Session) -> None:
    created = post(
        sandbox,
        api,
        batch_mode="true",
        batch_mode_term_id="sis_term_id:2026FA",
        change_threshold="10",
        batch_mode_enrollment_drop_status="inactive",
        override_sis_stickiness="false",
        add_sis_stickiness="true",
        diffing_data_set_identifier="ignored-in-batch-mode",
        skip_deletes="1",
    ).json()
    assert created["batch_mode"] is True
    assert created["batch_mode_term_id"] == 2  # the Canvas id of term 2026FA
    assert created["change_threshold"] == 10
    assert created["override_sis_stickiness"] is None
    assert created["add_sis_stickiness"] is None  # only honoured with override
    assert created["diffing_data_set_identifier"] is None
    assert created["skip_deletes"] is True
    assert "batch_mode_enrollment_drop_status" not in created
    diffing = post(sandbox, api, diffing_data_set_identifier="users", diffing_remaster_data_set="true").json()
    assert (diffing["diffing_data_set_identifier"], diffing["diffing_remaster"]) == ("users", True)
    assert diffing["diffing_threshold_exceeded"] is False
    assert diffing["diff_row_count_threshold"] is None
    multi = post(sandbox, api, multi_term_batch_mode="false", change_threshold="5").json()
    assert (multi["batch_mode"], multi["multi_term_batch_mode"]) == (True, False)


def test_invalid_option_combinations_answer_canvas_400s(sandbox: Sandbox, api: requests.Session) -> None:
    no_term = post(sandbox, api, batch_mode="true")
    assert no_term.status_code == 400
    assert no_term.json() == {"message": "Batch mode specified, but the given batch_mode_term_id cannot be found."}
    unknown_term = post(sandbox, api, batch_mode="true", batch_mode_term_id="sis_term_id:NOPE")
    assert unknown_term.status_code == 404
    assert sandbox.imports() == []  # refused before the import row exists
    no_threshold = post(sandbox, api, multi_term_batch_mode="true")
    assert no_threshold.status_code == 400
    assert no_threshold.json() == {"message": "change_threshold is required to use multi term_batch mode."}
    bad_drop = post(sandbox, api, diffing_drop_status="gone")
    assert bad_drop.json() == {"message": "Invalid diffing_drop_status"}
    # These two were refused inside Canvas's create block: an orphan `initializing` import stays behind.
    assert [item["workflow_state"] for item in sandbox.imports()] == ["initializing", "initializing"]


@pytest.mark.parametrize(
    ("raw", "cast"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("10", 10),
        (" 7", 7),
        ("12abc", 12),
        ("abc", 0),
        ("-3", -3),
        ("1_0", 10),
    ],
)
def test_change_threshold_is_cast_as_activemodel_casts_an_integer(raw: str | None, cast: int | None) -> None:
    # value.presence, then to_i: blank is nil, and any other text is its leading integer or 0.
    assert cast_integer_column(raw) == cast


def test_a_non_numeric_change_threshold_is_0_and_satisfies_multi_term_batch_mode(
    sandbox: Sandbox, api: requests.Session
) -> None:
    assert post(sandbox, api, change_threshold="abc").json()["change_threshold"] == 0
    multi = post(sandbox, api, multi_term_batch_mode="true", change_threshold="abc")
    assert multi.status_code == 200  # `unless batch.change_threshold`: 0 is truthy in Ruby
    assert (multi.json()["change_threshold"], multi.json()["multi_term_batch_mode"]) == (0, True)
    blank = post(sandbox, api, multi_term_batch_mode="true", change_threshold=" ")
    assert blank.status_code == 400
    assert blank.json() == {"message": "change_threshold is required to use multi term_batch mode."}


def test_store_delay_shows_the_upload_initializing_while_the_post_waits() -> None:
    with Sandbox(token="T", store_delay=0.6) as sb, requests.Session() as session:
        session.headers["Authorization"] = "Bearer T"
        start = time.monotonic()
        seen: list[str] = []

        def poll() -> None:
            while time.monotonic() - start < 0.5 and not seen:
                seen.extend(item["workflow_state"] for item in sb.imports())
                time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        response = session.post(sb.url + IMPORTS, files={"attachment": ("u.csv", USERS)}, timeout=10)
        poller.join()
        assert time.monotonic() - start >= 0.6
        assert response.json()["workflow_state"] == "created"
        assert "initializing" in seen
        listed = session.get(sb.url + IMPORTS, timeout=5).json()["sis_imports"]
        assert listed[0]["id"] == response.json()["id"]


def test_index_filters_and_link_header(sandbox: Sandbox, api: requests.Session) -> None:
    first = post(sandbox, api).json()
    sandbox.wait_for(first["id"])
    between = datetime.now(UTC)
    time.sleep(0.01)
    sandbox.stick_next("created")
    second = post(sandbox, api).json()
    listed = api.get(sandbox.url + IMPORTS, params={"created_since": between.isoformat()}, timeout=5).json()
    assert [item["id"] for item in listed["sis_imports"]] == [second["id"]]
    before = api.get(sandbox.url + IMPORTS, params={"created_before": between.isoformat()}, timeout=5).json()
    assert [item["id"] for item in before["sis_imports"]] == [first["id"]]
    created = api.get(sandbox.url + IMPORTS, params={"workflow_state[]": ["created", "bogus"]}, timeout=5)
    assert [item["id"] for item in created.json()["sis_imports"]] == [second["id"]]
    ignored = api.get(sandbox.url + IMPORTS, params={"created_since": "yesterday-ish"}, timeout=5).json()
    assert len(ignored["sis_imports"]) == 2  # unparsable times are ignored
    page = api.get(
        sandbox.url + IMPORTS, params={"per_page": 1, "workflow_state[]": ["created", "imported"]}, timeout=5
    )
    links = page.headers["Link"].split(",")
    assert [link.split("; ")[1] for link in links] == ['rel="current"', 'rel="next"', 'rel="first"']
    assert links[1].startswith(f"<{sandbox.url}{IMPORTS}?workflow_state%5B%5D=created&workflow_state%5B%5D=imported")
    assert links[1].endswith('page=2&per_page=1>; rel="next"')
    assert "last" not in page.headers["Link"]
    sandbox.unstick(second["id"])
    sandbox.wait_for(second["id"])


def test_csv_attachments_list_a_zips_members_once_processing_starts(sandbox: Sandbox, api: requests.Session) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("feed/users.csv", USERS)
        archive.writestr("feed/notes.txt", b"hello")
        archive.writestr("__MACOSX/feed/._users.csv", b"junk")
        archive.writestr("feed/.DS_Store", b"junk")
    sandbox.stick_next("created")
    created = post(sandbox, api, buffer.getvalue(), name="feed.zip").json()
    assert "csv_attachments" not in sandbox.get_import(created["id"])
    sandbox.unstick(created["id"])
    done = sandbox.wait_for(created["id"])
    assert [(att["filename"], att["display_name"]) for att in done["csv_attachments"]] == [("users.csv", "users.csv")]
    assert done["processing_warnings"] == [["feed/notes.txt", "Skipping unknown file type"]]
    assert done["workflow_state"] == "imported_with_messages"


def test_the_errors_attachment_comes_after_the_terminal_state_and_redirects_to_the_csv(
    sandbox: Sandbox, api: requests.Session
) -> None:
    sandbox.processor.speed.errors_delay = 0.5  # wide enough to see the terminal state without it
    created = post(sandbox, api, b"user_id,login_id,status\nu1,,active\n").json()
    ended = sandbox.wait_for(created["id"])  # read at the moment the import reached its terminal state
    assert ended["workflow_state"] == "imported_with_messages"
    assert "errors_attachment" not in ended
    done = sandbox.wait_for(created["id"], errors_attachment=True)
    assert done["ended_at"] == ended["ended_at"]
    attachment = done["errors_attachment"]
    assert attachment["created_at"] >= done["ended_at"]
    assert attachment["display_name"] == f"sis_errors_attachment_{created['id']}.csv"
    assert "verifier=" in attachment["url"]
    redirect = requests.get(attachment["url"], allow_redirects=False, timeout=5)
    assert redirect.status_code == 302
    assert redirect.headers["Location"] != attachment["url"]
    csv_text = requests.get(attachment["url"], timeout=5).text
    assert csv_text == f"sis_import_id,file,message,row\n{created['id']},users.csv,No login_id given for user u1,2\n"


def test_an_aborted_import_is_404_to_abort_again(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.stick_next("created")
    created = post(sandbox, api).json()
    url = f"{sandbox.url}{IMPORTS}/{created['id']}/abort"
    assert api.put(url, timeout=5).json()["workflow_state"] == "aborted"
    assert api.put(url, timeout=5).status_code == 404


def test_finish_as_forces_a_terminal_state(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.finish_next_as("failed_with_messages")
    created = post(sandbox, api).json()
    done = sandbox.wait_for(created["id"])
    assert done["workflow_state"] == "failed_with_messages"
    assert done["processing_errors"][0][1].startswith("Error while importing CSV. Please contact support.")
    sandbox.stick_next("created")
    second = post(sandbox, api).json()
    sandbox.finish_as(second["id"], "failed")
    sandbox.unstick(second["id"])
    assert sandbox.wait_for(second["id"])["workflow_state"] == "failed"


def test_imports_by_another_user_name_that_user(sandbox: Sandbox) -> None:
    response = requests.post(
        sandbox.url + IMPORTS,
        headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
        files={"attachment": ("u.csv", USERS)},
        timeout=5,
    )
    assert response.json()["user"]["id"] == 2
    sandbox.wait_for(response.json()["id"])


def test_imports_run_one_at_a_time_oldest_first(sandbox: Sandbox, api: requests.Session) -> None:
    # Watch every state change: no two imports may ever be importing at once.
    seen: list[tuple[str, ...]] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        with sandbox.store.lock:
            while watching.is_set():
                seen.append(tuple(item.workflow_state for item in sandbox.store.ordered_imports()))
                sandbox.store.changed.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sandbox.stick_next("importing")
        ids = [post(sandbox, api).json()["id"] for _ in range(4)]
        sandbox.wait_for(ids[0], {"importing"})
        time.sleep(0.3)  # time enough for a fast sandbox to run the other three, were it to
        assert [sandbox.get_import(i)["workflow_state"] for i in ids] == ["importing", "created", "created", "created"]
        sandbox.unstick(ids[0])
        finished = [sandbox.wait_for(i) for i in ids]
    finally:
        watching.clear()
        watcher.join()
    assert all(item["workflow_state"] == "imported" for item in finished)
    assert all(states.count("importing") <= 1 for states in seen)
    assert ("importing", "created", "created", "created") in seen
    # The store keeps sub-second times: each import started after the one before it ended, oldest first.
    runs = [(sandbox.store.imports[i].started_at, sandbox.store.imports[i].ended_at) for i in ids]
    for (_, ended), (started, _) in itertools.pairwise(runs):
        assert ended is not None and started is not None
        assert ended <= started


def test_an_upload_stuck_initializing_holds_its_post_and_shows_in_the_index(
    sandbox: Sandbox, api: requests.Session
) -> None:
    sandbox.stick_next("initializing")
    try:
        post_timeout = 0.5
        with pytest.raises(requests.ReadTimeout):
            api.post(sandbox.url + IMPORTS, files={"attachment": ("u.csv", USERS)}, timeout=post_timeout)
        listed = api.get(sandbox.url + IMPORTS, timeout=5).json()["sis_imports"]
        assert [(item["workflow_state"], item["user"]["id"]) for item in listed] == [("initializing", 1)]
        assert listed[0]["diff_row_count_threshold"] is None  # options are written only when it is created
    finally:
        sandbox.unstick(1)
    assert sandbox.wait_for(1)["workflow_state"] == "imported"


def test_aborting_a_running_import_stops_it_without_an_end(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.stick_next("importing")
    created = post(sandbox, api).json()
    sandbox.wait_for(created["id"], {"importing"})
    aborted = api.put(f"{sandbox.url}{IMPORTS}/{created['id']}/abort", timeout=5).json()
    assert aborted["workflow_state"] == "aborted"
    assert aborted["ended_at"] is None
    follower = post(sandbox, api).json()
    assert sandbox.wait_for(follower["id"])["workflow_state"] == "imported"
    assert sandbox.get_import(created["id"])["workflow_state"] == "aborted"


def test_the_errors_endpoints_list_every_message_newest_first(sandbox: Sandbox, api: requests.Session) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", b"user_id,login_id,status\nu1,,active\nu2,l2,active\n")
        archive.writestr("odd.csv", b"a,b\n1,2\n")
    created = post(sandbox, api, buffer.getvalue(), name="feed.zip").json()
    sandbox.wait_for(created["id"])
    listed = api.get(f"{sandbox.url}{IMPORTS}/{created['id']}/errors", timeout=5).json()["sis_import_errors"]
    assert [(e["file"], e["message"], e["row"]) for e in listed] == [
        ("users.csv", "No login_id given for user u1", 2),
        ("odd.csv", "Couldn't find Canvas CSV import headers", None),
    ]
    failures = api.get(f"{sandbox.url}{IMPORTS}/{created['id']}/errors", params={"failure": "true"}, timeout=5).json()
    assert [e["file"] for e in failures["sis_import_errors"]] == ["odd.csv"]
    everything = api.get(f"{sandbox.url}/api/v1/accounts/1/sis_import_errors", timeout=5).json()
    assert len(everything["sis_import_errors"]) == 2
    assert all(e["sis_import_id"] == created["id"] for e in everything["sis_import_errors"])


def test_a_restore_progress_can_be_read_back(sandbox: Sandbox, api: requests.Session) -> None:
    created = post(sandbox, api).json()
    sandbox.wait_for(created["id"])
    url = f"{sandbox.url}{IMPORTS}/{created['id']}/restore_states"
    both = api.put(url, data={"undelete_only": "true", "unconclude_only": "true"}, timeout=5)
    assert (both.status_code, both.json()) == (400, "cannot set both undelete_only and unconclude_only")
    progress = api.put(url, data={"undelete_only": "true"}, timeout=5).json()
    assert progress["url"] == f"{sandbox.url}/api/v1/progress/{progress['id']}"
    assert progress["workflow_state"] == "queued"
    assert sandbox.wait_for(created["id"], {"partially_restored"})["workflow_state"] == "partially_restored"
    assert api.get(progress["url"], timeout=5).json()["workflow_state"] == "completed"


def test_an_upload_cut_off_mid_way_leaves_no_file_open_or_behind(sandbox: Sandbox) -> None:
    boundary = "sandboxcutoff"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; filename="users.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    body = head + USERS + b"x" * 200_000  # the rest of the part and the closing boundary never come
    with socket.create_connection(("127.0.0.1", sandbox.port)) as sock:
        sock.sendall(
            (
                f"POST {IMPORTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body) + 1_000_000}\r\n"
                "\r\n"
            ).encode()
            + body
        )
        deadline = time.monotonic() + 10
        while not any(path.name.startswith("upload_") for path in sandbox.app.upload_dir.iterdir()):
            assert time.monotonic() < deadline, "the sandbox never started writing the upload"
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while any(path.name.startswith("upload_") for path in sandbox.app.upload_dir.iterdir()):
        assert time.monotonic() < deadline, "the half upload was left behind"
        time.sleep(0.02)
    assert sandbox.imports() == []
    gc.collect()  # an upload file left open would be reported here (ResourceWarning is an error in this suite)
