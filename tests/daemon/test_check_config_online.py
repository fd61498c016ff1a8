"""``sisdaemon check-config --online`` against the sandbox over loopback: token, account, import_sis, terms."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV, Spool

MANAGER_TOKEN = "sd-manage-sis-only-token-77aa"


@pytest.fixture
def canvas() -> Iterator[Sandbox]:
    with Sandbox(
        token=TOKEN,
        account_id=1,
        terms=["2026FA"],
        unauthorized_token="unauthorized-token-0001",
        manage_sis_only_token=MANAGER_TOKEN,
    ) as server:
        yield server


def online(spool: Spool, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", "check-config", "--online", "-c", str(spool.write_config())],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, TOKEN_ENV: token},
    )


def test_a_config_canvas_accepts_is_ok(spool: Spool, canvas: Sandbox) -> None:
    spool.canvas["base_url"] = canvas.url
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2026FA", "change_threshold": 10}
    result = online(spool)
    assert result.returncode == 0, result.stderr
    assert "Canvas accepts the token, the account, the import_sis permission and every term" in result.stdout
    routes = [request.route for request in canvas.requests]
    assert routes == ["users_self", "account", "permissions", "term"]
    assert canvas.requests[2].query == {"permissions[]": "manage_sis"}  # both asked; the last value is recorded


def test_each_problem_canvas_shows_is_one_line_naming_the_key(spool: Spool, canvas: Sandbox) -> None:
    spool.canvas["base_url"] = canvas.url
    spool.feed["import"] = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:2031SP", "change_threshold": 10}

    refused = online(spool, token="not-a-token-canvas-knows")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"{spool.config}: canvas.token_env: Canvas does not accept the token (GET /api/v1/users")
    assert "401" in line
    assert "not-a-token-canvas-knows" not in refused.stderr

    manager = online(spool, token=MANAGER_TOKEN)
    lines = manager.stderr.strip().splitlines()
    assert manager.returncode == 1 and len(lines) == 2
    assert "may not run SIS imports in account 1" in lines[0] and "manage_sis alone is not enough" in lines[0]
    assert lines[1] == (
        f"{spool.config}: feeds[0].import.batch_mode_term_id: sis_term_id:2031SP: no such term in account 1 "
        "(Sandbox University)"
    )
    teacher = online(spool, token="unauthorized-token-0001")
    assert teacher.returncode == 1 and "cannot read this account" in teacher.stderr


def test_the_sandbox_refuses_the_post_of_a_manage_sis_only_user_as_canvas_does(canvas: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {MANAGER_TOKEN}"}
    listing = requests.get(f"{canvas.url}/api/v1/accounts/1/sis_imports", headers=headers, timeout=10)
    post = requests.post(
        f"{canvas.url}/api/v1/accounts/1/sis_imports",
        headers=headers,
        files={"attachment": ("users.csv", b"user_id,login_id,status\n")},
        timeout=10,
    )
    assert listing.status_code == 200 and post.status_code == 401


def test_a_canvas_that_cannot_be_reached_exits_3(spool: Spool) -> None:
    spool.canvas["base_url"] = "http://127.0.0.1:9"  # discard: nothing listens
    result = online(spool)
    assert result.returncode == 3 and "canvas.base_url: Canvas could not be asked" in result.stderr
