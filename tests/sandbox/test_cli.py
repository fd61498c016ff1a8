"""`sisdaemon sandbox` as a process: prints its URL, serves, plans faults, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

RUNNER = (
    "import argparse, sys\n"
    "from sisdaemon.sandbox import cli\n"
    "parser = argparse.ArgumentParser()\n"
    "cli.add_arguments(parser)\n"
    "sys.exit(cli.run(parser.parse_args()))\n"
)


@contextmanager
def sandbox_process(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


def test_the_command_prints_its_url_serves_and_exits_0_on_sigterm() -> None:
    with sandbox_process("--port", "0", "--fast", "--term", "2026FA", env={"SISDAEMON_SANDBOX_TOKEN": "secret"}) as (
        process,
        url,
    ):
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": "Bearer secret"}
        created = requests.post(
            url + "/api/v1/accounts/1/sis_imports",
            headers=headers,
            files={"attachment": ("u.csv", b"user_id,login_id,status\nu1,l1,active\n")},
            data={"batch_mode": "true", "batch_mode_term_id": "sis_term_id:2026FA"},
            timeout=5,
        )
        assert created.json()["batch_mode_term_id"] == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_faults_from_the_command_line_apply() -> None:
    with sandbox_process("--token", "T", "--fast", "--fault", "users_self:503:count=2") as (_process, url):
        headers = {"Authorization": "Bearer T"}
        statuses = [requests.get(url + "/api/v1/users/self", headers=headers, timeout=5).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]


def test_without_a_token_it_is_a_usage_error() -> None:
    env = {key: value for key, value in os.environ.items() if key != "SISDAEMON_SANDBOX_TOKEN"}
    result = subprocess.run([sys.executable, "-c", RUNNER], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "SISDAEMON_SANDBOX_TOKEN" in result.stderr


def test_a_json_fault_plan_applies(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"route": "account", "status": 502, "count": 1}, {"route": "account", "html": True}]))
    with sandbox_process("--token", "T", "--fast", "--fault-plan", str(plan)) as (_process, url):
        headers = {"Authorization": "Bearer T"}
        answers = [requests.get(url + "/api/v1/accounts/1", headers=headers, timeout=5) for _ in range(3)]
        assert [a.status_code for a in answers] == [502, 200, 200]
        assert answers[1].headers["Content-Type"].startswith("text/html")
        assert answers[2].json()["id"] == 1


def _wait_for_state(url: str, headers: dict[str, str], import_id: int, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        item = requests.get(f"{url}/api/v1/accounts/1/sis_imports/{import_id}", headers=headers, timeout=5).json()
        if item["workflow_state"] == state or time.monotonic() > deadline:
            assert item["workflow_state"] == state
            return dict(item)
        time.sleep(0.05)


def test_stick_and_finish_as_from_the_command_line_and_the_requests_read_back() -> None:
    with sandbox_process(
        "--token", "T", "--fast", "--fault", "create:stick=initializing", "--fault", "create:finish_as=failed"
    ) as (_process, url):
        headers = {"Authorization": "Bearer T"}
        imports = url + "/api/v1/accounts/1/sis_imports"
        files = {"attachment": ("u.csv", b"user_id,login_id,status\nu1,l1,active\n")}
        with pytest.raises(requests.ReadTimeout):  # stuck initializing: the POST does not answer
            requests.post(imports, headers=headers, files=files, timeout=0.5)
        listed = requests.get(imports, headers=headers, timeout=5).json()["sis_imports"]
        assert [(item["id"], item["workflow_state"]) for item in listed] == [(1, "initializing")]
        assert requests.put(url + "/sandbox/imports/1/unstick", timeout=5).status_code == 200
        assert _wait_for_state(url, headers, 1, "imported")["data"]["counts"]["users"] == 1
        second = requests.post(imports, headers=headers, files=files, timeout=5).json()
        failed = _wait_for_state(url, headers, second["id"], "failed")
        assert "error_message" in failed["data"]
        recorded = requests.get(url + "/sandbox/requests", params={"route": "create"}, timeout=5).json()["requests"]
        assert [(r["import_id"], r["status"]) for r in recorded] == [(1, 200), (2, 200)]
        everything = requests.get(url + "/sandbox/requests", timeout=5).json()["requests"]
        assert all(not r["path"].startswith("/sandbox/") for r in everything)


def test_a_fault_that_cannot_apply_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, "--token", "T", "--fault", "show:stick=created"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "route must be 'create'" in result.stderr
