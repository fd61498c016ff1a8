"""Planned faults: error statuses, HTML pages, redirects, delays and reset connections, before or after the
real work; every request is recorded either way."""

from __future__ import annotations

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from sisdaemon.sandbox.faults import parse_fault_spec

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
