"""Planned faults: error statuses, HTML pages, redirects, delays and reset connections, before or after the
real work; every request is recorded either way."""

from __future__ import annotations

import time

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from sisdaemon.sandbox.faults import Fault, parse_fault_spec
from tests.sandbox.conftest import TOKEN

USERS = b"user_id,login_id,status\nu1,l1,active\n"
IMPORTS = "/api/v1/accounts/1/sis_imports"


def post(sandbox: Sandbox, api: requests.Session, timeout: float = 10) -> requests.Response:
    return api.post(sandbox.url + IMPORTS, files={"attachment": ("users.csv", USERS)}, timeout=timeout)


def test_a_502_before_creates_nothing_and_after_creates_the_import(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.faults.add(route="create", status=502, count=1, when="before")
    refused = post(sandbox, api)
    assert refused.status_code == 502
    assert refused.headers["Content-Type"].startswith("application/json")
    assert sandbox.imports() == []
    sandbox.faults.add(route="create", status=502, when="after")
    lost = post(sandbox, api)
    assert lost.status_code == 502
    assert len(sandbox.imports()) == 1  # the answer was lost, the import exists
    assert post(sandbox, api).status_code == 200  # faults are used up
    creates = [r for r in sandbox.requests if r.route == "create"]
    assert [r.status for r in creates] == [502, 502, 200]
    assert [r.import_id for r in creates] == [None, 1, 2]


@pytest.mark.parametrize(("moment", "imports"), [("before", 0), ("after", 1)])
def test_a_reset_connection_loses_the_answer(
    sandbox: Sandbox, api: requests.Session, moment: str, imports: int
) -> None:
    sandbox.faults.add(route="create", reset=moment)
    with pytest.raises(requests.ConnectionError):
        post(sandbox, api)
    assert len(sandbox.imports()) == imports
    record = next(r for r in sandbox.requests if r.route == "create")
    assert record.reset and record.status is None
    assert post(sandbox, api).status_code == 200  # the server carries on


def test_a_delay_after_creating_makes_the_client_time_out(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.faults.add(route="create", delay=3.0, when="after")
    with pytest.raises(requests.ReadTimeout):
        post(sandbox, api, timeout=0.5)
    assert len(sandbox.imports()) == 1


def test_html_instead_of_json_and_a_redirect(sandbox: Sandbox, api: requests.Session) -> None:
    created = post(sandbox, api).json()
    sandbox.faults.add(route="show", html=True, status=200)
    page = api.get(f"{sandbox.url}{IMPORTS}/{created['id']}", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    sandbox.faults.add(route="show", status=302, headers={"Location": "https://login.example/"})
    moved = api.get(f"{sandbox.url}{IMPORTS}/{created['id']}", allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (302, "https://login.example/")
    assert api.get(f"{sandbox.url}{IMPORTS}/{created['id']}", timeout=5).json()["id"] == created["id"]
    sandbox.wait_for(created["id"])


def test_a_plain_text_rate_limit_on_any_route_counts_requests(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.faults.add(
        route="any",
        status=403,
        count=2,
        body="403 Forbidden (Rate Limit Exceeded)\n",
        content_type="text/plain; charset=utf-8",
    )
    first = api.get(sandbox.url + "/api/v1/users/self", timeout=5)
    second = api.get(sandbox.url + IMPORTS, timeout=5)
    assert [first.status_code, second.status_code] == [403, 403]
    assert second.text == "403 Forbidden (Rate Limit Exceeded)\n"
    assert api.get(sandbox.url + IMPORTS, timeout=5).status_code == 200


def test_a_401_fault_carries_www_authenticate(sandbox: Sandbox, api: requests.Session) -> None:
    sandbox.faults.add(route="index", status=401)
    response = api.get(sandbox.url + IMPORTS, timeout=5)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_cli_fault_specs_parse() -> None:
    assert parse_fault_spec("create:502:after") == {"route": "create", "status": 502, "when": "after"}
    assert parse_fault_spec("create:reset:before") == {"route": "create", "reset": "before"}
    assert parse_fault_spec("show:html") == {"route": "show", "html": True}
    assert parse_fault_spec("any:403:count=all") == {"route": "any", "status": 403, "count": None}
    assert parse_fault_spec("create:delay=5:after") == {"route": "create", "delay": 5.0, "when": "after"}
    assert parse_fault_spec("show:302:location=https://login.example/x") == {
        "route": "show",
        "status": 302,
        "headers": {"Location": "https://login.example/x"},
    }
    with pytest.raises(ValueError):
        parse_fault_spec("create:sometimes")


def test_stick_and_finish_as_specs_parse_and_are_checked() -> None:
    assert parse_fault_spec("create:stick=initializing") == {"route": "create", "stick": "initializing"}
    assert parse_fault_spec("create:finish_as=failed:count=2") == {"route": "create", "finish_as": "failed", "count": 2}
    with pytest.raises(ValueError, match="route must be 'create'"):
        Fault(**parse_fault_spec("any:stick=created"))
    with pytest.raises(ValueError, match="stick must be one of"):
        Fault(route="create", stick="imported")
    with pytest.raises(ValueError, match="finish_as must be one of"):
        Fault(route="create", finish_as="importing")


def test_a_create_fault_can_end_the_imports_it_creates_in_a_chosen_state(
    sandbox: Sandbox, api: requests.Session
) -> None:
    sandbox.faults.add(route="create", finish_as="failed", count=2)
    ids = [post(sandbox, api).json()["id"] for _ in range(3)]
    assert [sandbox.wait_for(i)["workflow_state"] for i in ids] == ["failed", "failed", "imported"]


def test_a_create_fault_can_stick_the_import_until_it_is_unstuck_over_http(
    sandbox: Sandbox, api: requests.Session
) -> None:
    sandbox.faults.add(route="create", stick="importing", status=502, when="after")
    assert post(sandbox, api).status_code == 502  # the answer is lost, the import exists and is held
    sandbox.wait_for(1, {"importing"})
    follower = post(sandbox, api).json()
    assert sandbox.get_import(follower["id"])["workflow_state"] == "created"  # queued behind the stuck one
    released = requests.put(f"{sandbox.url}/sandbox/imports/1/unstick", timeout=5)
    assert released.json() == {"id": 1, "stuck_in": None}
    assert sandbox.wait_for(1)["workflow_state"] == "imported"
    assert sandbox.wait_for(follower["id"])["workflow_state"] == "imported"
    assert requests.put(f"{sandbox.url}/sandbox/imports/99/unstick", timeout=5).status_code == 404


def test_recorded_requests_can_be_read_back_over_http_without_being_recorded(
    sandbox: Sandbox, api: requests.Session
) -> None:
    created = post(sandbox, api).json()
    api.get(f"{sandbox.url}{IMPORTS}/{created['id']}", timeout=5)
    answer = requests.get(sandbox.url + "/sandbox/requests", timeout=5)
    assert answer.status_code == 200
    assert "X-Request-Cost" not in answer.headers
    listed = answer.json()["requests"]
    assert [(r["method"], r["route"], r["status"]) for r in listed] == [("POST", "create", 200), ("GET", "show", 200)]
    assert listed[0]["import_id"] == created["id"]
    assert listed[0]["attachment_filename"] == "users.csv"
    assert listed[0]["at"].endswith("Z")
    creates = requests.get(sandbox.url + "/sandbox/requests", params={"route": "create"}, timeout=5).json()
    assert [r["import_id"] for r in creates["requests"]] == [created["id"]]
    assert len(sandbox.requests) == 2  # the sandbox-only reads were not recorded
    assert requests.get(sandbox.url + "/sandbox/nothing", timeout=5).status_code == 404


def test_a_trickled_answer_comes_one_byte_at_a_time_so_each_read_is_quick_but_the_whole_is_slow(
    sandbox: Sandbox, api: requests.Session
) -> None:
    sandbox.faults.add(route="users_self", status=503, body='{"errors": []}', trickle=0.25)
    started = time.monotonic()
    with api.get(sandbox.url + "/api/v1/users/self", timeout=1.0, stream=True) as answer:
        assert answer.status_code == 503
        assert answer.headers["Content-Length"] == "14"  # announced whole
        pieces = list(answer.raw.stream(1))
    assert b"".join(pieces) == b'{"errors": []}' and len(pieces) == 14  # each read got a byte within 1 s
    assert time.monotonic() - started >= 13 * 0.25 * 0.9


def test_the_real_answer_can_be_trickled_and_a_spec_parses() -> None:
    assert parse_fault_spec("show:trickle=0.5:after") == {"route": "show", "trickle": 0.5, "when": "after"}
    with Sandbox(token=TOKEN, fast=True) as sandbox:
        sandbox.faults.add(route="users_self", trickle=0.002)
        answer = requests.get(
            sandbox.url + "/api/v1/users/self", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
    assert answer.status_code == 200 and answer.json()["id"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 401},
        {"html": True},
        {"html": True, "status": 502},
        {"status": 302, "headers": {"Location": "https://login.example/"}},
        {"status": 400, "body": "bad request", "content_type": "text/plain"},
    ],
    ids=["json-500", "json-401", "html-200", "html-502", "redirect", "text-400"],
)
def test_an_answer_can_echo_the_authorization_header_as_sent_and_as_a_bare_credential(
    sandbox: Sandbox, api: requests.Session, fault: dict[str, object]
) -> None:
    sandbox.faults.add(route="users_self", echo_authorization=True, **fault)
    answer = api.get(sandbox.url + "/api/v1/users/self", timeout=5, allow_redirects=False)
    assert f"Authorization: Bearer {TOKEN}" in answer.text
    assert f"token={TOKEN}" in answer.text
    if "json" in answer.headers["Content-Type"]:
        assert answer.json()["echo"] == {"authorization": f"Bearer {TOKEN}", "token": TOKEN}
    assert api.get(sandbox.url + "/api/v1/users/self", timeout=5).json()["id"] == 1  # used up


def test_echo_authorization_needs_an_answer_of_the_fault_s_own() -> None:
    assert parse_fault_spec("any:500:echo_authorization") == {"route": "any", "status": 500, "echo_authorization": True}
    with pytest.raises(ValueError, match="echo_authorization"):
        Fault(route="show", echo_authorization=True)
    with pytest.raises(ValueError, match="echo_authorization"):
        Fault(route="show", reset="after", echo_authorization=True)
    with pytest.raises(ValueError, match="trickle"):
        Fault(route="show", trickle=-1)
