"""The operator's commands as the service's user on a package install (trial report item 1): ``pause`` and
``resume`` never read the token, ``retry`` and ``abort`` only when no daemon runs (they then run the job
themselves), so a relative ``token_file`` needs no ``$CREDENTIALS_DIRECTORY`` for them; when the token is needed and
cannot be read the message gives the ``systemd-run`` recipe; the exit-77 message's command line works as printed."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, DaemonProcess, Spool, wait_for
from tests.daemon.test_owner import as_root, python_for, shared, throwaway_user, write_config  # noqa: F401

CREDENTIAL = "canvas-token"


def without_credentials() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "CREDENTIALS_DIRECTORY"}


def sisdaemon(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sisdaemon ARGS`` as a sysadmin runs it by hand: no ``$CREDENTIALS_DIRECTORY``."""
    return subprocess.run(
        [sys.executable, "-m", "sisdaemon", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        env=without_credentials(),
    )


@pytest.fixture
def credentials(spool: Spool, tmp_path: Path) -> Path:
    """The feed's token as a systemd credential: ``token_file: canvas-token``, read from a credentials folder."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / CREDENTIAL).write_text(TOKEN)
    spool.canvas = {"token_env": None, "token_file": CREDENTIAL}
    spool.write_config()
    return folder


def test_with_a_daemon_running_pause_resume_retry_and_abort_need_no_credentials_directory(
    spool: Spool, sandbox: Sandbox, credentials: Path, daemon_process: Callable[..., DaemonProcess]
) -> None:
    daemon = daemon_process(env={"CREDENTIALS_DIRECTORY": str(credentials)})
    wait_for(lambda: any(e.get("event") == "daemon_started" for e in daemon.events()), what="the daemon to start")
    config = str(spool.config)

    paused = sisdaemon("pause", "-c", config, "nightly", "--reason", "term change")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert sisdaemon("resume", "-c", config, "nightly").returncode == 0
    # Refused by the daemon (nothing to retry or abort), not by a missing credential.
    retry = sisdaemon("retry", "-c", config, "--all-failed")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    abort = sisdaemon("abort", "-c", config, "4242")
    assert abort.returncode == 2, abort.stdout + abort.stderr
    assert "CREDENTIALS_DIRECTORY" not in abort.stdout + abort.stderr


def test_without_a_daemon_pause_needs_no_token_and_retry_says_how_to_run_it_with_the_service_credential(
    spool: Spool, credentials: Path
) -> None:
    config = str(spool.config)
    paused = sisdaemon("pause", "-c", config, "nightly")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert json.loads(spool.state_file.read_text())["paused"]["nightly"]["by"]
    assert sisdaemon("resume", "-c", config, "nightly").returncode == 0

    retry = sisdaemon("retry", "-c", config, "--all-failed")
    assert retry.returncode == 78, retry.stdout + retry.stderr
    me = pwd.getpwuid(os.geteuid()).pw_name
    recipe = (
        f"systemd-run --pipe --wait -p User={me} -p LoadCredentialEncrypted={CREDENTIAL} "
        f"sisdaemon retry -c {config} --all-failed"
    )
    [line] = retry.stderr.splitlines()
    assert "$CREDENTIALS_DIRECTORY, which is not set" in line and line.endswith(recipe), line


def suggested(stderr: str) -> list[str]:
    """The runuser command line a refusal (exit 77) gives."""
    [line] = stderr.splitlines()
    command = line.split(": runuser ", 1)[1].split(" (or: ", 1)[0]
    return shlex.split("runuser " + command)


@as_root
def test_the_command_the_refusal_suggests_to_root_works_as_printed_without_sudo(
    throwaway_user: str,  # noqa: F811 (the fixture)
    shared: Path,  # noqa: F811 (the fixture)
    sandbox: Sandbox,
) -> None:
    config = write_config(shared, sandbox.url)
    text = config.read_text().replace("token_env: SISDAEMON_TEST_TOKEN", f"token_file: {CREDENTIAL}")
    config.write_text(text)
    uid = pwd.getpwnam(throwaway_user).pw_uid
    for folder in ("drop", "work", "done", "failed", "state"):
        os.chown(shared / folder, uid, -1)

    refused = sisdaemon("pause", "-c", str(config), "nightly", "--reason", "term change")
    assert refused.returncode == 77, refused.stderr
    command = suggested(refused.stderr)
    assert command == [
        *["runuser", "-u", throwaway_user, "--", "sisdaemon", "pause"],
        *["-c", str(config), "nightly", "--reason", "term change"],
    ]
    assert f"(or: sudo -u {throwaway_user} sisdaemon pause -c {config}" in refused.stderr

    # As printed, with `sisdaemon` being this checkout's (python -m sisdaemon) and no credential in reach, by root
    # logged in (the audit login uid pam_loginuid sets at login, here set by hand).
    python, extra = python_for(throwaway_user)
    at = command.index("sisdaemon")
    login = ["sh", "-c", 'echo 0 > /proc/self/loginuid && exec "$@"', "login"]
    done = subprocess.run(
        [*login, *command[:at], *python, "-m", "sisdaemon", *command[at + 1 :]],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        cwd="/",
        env={**without_credentials(), **extra},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    state = shared / "state" / "state.json"
    assert json.loads(state.read_text())["paused"]["nightly"]["reason"] == "term change"
    assert state.stat().st_uid == uid
    # The journal names the operator behind runuser, which sets no $SUDO_USER.
    [paused] = [json.loads(line) for line in done.stderr.splitlines() if '"feed_paused"' in line]
    assert paused["by"] == throwaway_user and paused["login_user"] == "root" and "sudo_user" not in paused
