"""One owner (issue 8): the commands that write state run only as the state folder's owner; `status` says in one
line when it cannot read the state; a missing -c is a usage error.

The tests that switch users run as root, with a throwaway system user made for the test and removed after it, in a
folder other users may enter (pytest's tmp_path lies under a root-only folder).
"""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sisdaemon.owner import check_owner
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import DEADLINE, TOKEN, TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]
USER = "sisd-test-owner"

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users (useradd, runuser, chown) needs root")


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A system user without a home, removed after the test."""
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    try:
        yield USER
    finally:
        subprocess.run(["userdel", USER], capture_output=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A temporary folder every user may enter, with a feed's folders, a state folder and a config in it."""
    root = Path(tempfile.mkdtemp(prefix="sisdaemon-owner-"))
    root.chmod(0o755)
    for name in ("drop", "work", "done", "failed", "state"):
        (root / name).mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root)


def write_config(root: Path, url: str) -> Path:
    config = {
        "canvas": {"base_url": url, "account_id": "1", "token_env": TOKEN_ENV, "timeout_seconds": 10},
        "state_file": str(root / "state" / "state.json"),
        "lock_dir": str(root / "state" / "locks"),
        "feeds": [
            {
                "name": "nightly",
                "drop_dir": str(root / "drop"),
                "work_dir": str(root / "work"),
                "done_dir": str(root / "done"),
                "failed_dir": str(root / "failed"),
            }
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def python_for(user: str) -> tuple[list[str], dict[str, str]]:
    """A Python that ``user`` can run with sisdaemon importable: this one, or a system Python of the same version
    given this one's packages (this one may live under root's home); skips the test when there is none."""
    paths = os.pathsep.join([str(ROOT), *site.getsitepackages()])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python, env in (
        (sys.executable, {}),
        (shutil.which(version, path="/usr/bin:/usr/local/bin"), {"PYTHONPATH": paths}),
    ):
        if python is None:
            continue
        probe = subprocess.run(
            ["runuser", "-u", user, "--", python, "-c", "import sisdaemon.cli"],
            capture_output=True,
            cwd="/",
            env={**os.environ, **env},
        )
        if probe.returncode == 0:
            return [python], env
    pytest.skip(f"no Python that {user} may run can import sisdaemon")


def sisdaemon(
    *args: str, user: str | None = None, env: dict[str, str] | None = None, cwd: Path | str = "/"
) -> subprocess.CompletedProcess[str]:
    """``python -m sisdaemon ARGS``, as ``user`` (runuser) when given."""
    python, extra = python_for(user) if user else ([sys.executable], {})
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(
        [*prefix, *python, "-m", "sisdaemon", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        cwd=cwd,
        env={**os.environ, TOKEN_ENV: TOKEN, **extra, **(env or {})},
    )


@as_root
def test_run_and_submit_as_root_refuse_a_state_folder_owned_by_another_user_naming_both_and_the_command_to_use(
    throwaway_user: str, shared: Path, sandbox: Sandbox
) -> None:
    config = write_config(shared, sandbox.url)
    uid = pwd.getpwnam(throwaway_user).pw_uid
    for folder in ("drop", "work", "done", "failed", "state"):
        os.chown(shared / folder, uid, -1)
    upload = shared / "users.csv"
    upload.write_text("user_id,login_id,status\nu1,u1,active\n")

    run = sisdaemon("run", "--once", env={"SISDAEMON_CONFIG": str(config)})
    assert run.returncode == 77, run.stderr
    [line] = run.stderr.splitlines()
    assert f"belongs to {throwaway_user}, not to root" in line
    # $SISDAEMON_CONFIG does not survive sudo: the command to use names the config.
    # root's way on Debian (no sudo there) first, then sudo's.
    assert line.endswith(
        f"Run it as {throwaway_user}: runuser -u {throwaway_user} -- sisdaemon run -c {config} --once "
        f"(or: sudo -u {throwaway_user} sisdaemon run -c {config} --once)"
    )

    submit = sisdaemon("submit", "-c", str(config), str(upload))
    assert submit.returncode == 77, submit.stderr
    assert f"sudo -u {throwaway_user} sisdaemon submit -c {config} {upload}" in submit.stderr
    # Refused before anything was written: no lock, no state, nothing handed to the drop folder.
    assert [sorted(os.listdir(shared / name)) for name in ("state", "drop", "work")] == [[], [], []]
    assert creates_nothing(sandbox)

    # check-config writes nothing, so it runs, but says that it judged the folders for the wrong user.
    check = sisdaemon("check-config", "-c", str(config))
    assert check.returncode == 0, check.stderr
    assert f"checked as root, but {shared / 'state'} belongs to {throwaway_user}" in check.stderr


def creates_nothing(sandbox: Sandbox) -> bool:
    return not [request for request in sandbox.requests if request.method == "POST"]


@as_root
def test_run_as_the_owner_of_the_state_folder_is_accepted(throwaway_user: str, shared: Path, sandbox: Sandbox) -> None:
    config = write_config(shared, sandbox.url)
    uid = pwd.getpwnam(throwaway_user).pw_uid
    for folder in ("drop", "work", "done", "failed", "state"):
        os.chown(shared / folder, uid, -1)
    result = sisdaemon("run", "--once", "-c", str(config), user=throwaway_user)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (shared / "state" / "state.json.lock").stat().st_uid == uid  # what it wrote is the owner's


def test_before_the_state_folder_exists_the_owner_of_its_nearest_parent_decides(tmp_path: Path) -> None:
    state_file = tmp_path / "lib" / "nightly" / "state.json"
    (tmp_path / "lib").mkdir()
    me = os.geteuid()
    assert check_owner(state_file, uid=me) is None
    wrong = check_owner(state_file, uid=me + 4242)
    assert wrong is not None and wrong.folder == tmp_path / "lib" and wrong.state_folder == state_file.parent
    message = wrong.message("sisdaemon run", ["run", "-c", "/etc/sisdaemon/nightly.yaml"])
    assert f"the state folder {state_file.parent} does not exist yet, and its parent {tmp_path / 'lib'}" in message
    assert message.endswith(f"sudo -u {wrong.owner} sisdaemon run -c /etc/sisdaemon/nightly.yaml")


@as_root
def test_status_by_a_user_who_cannot_read_the_state_says_so_in_one_line_and_exits_3(
    throwaway_user: str, shared: Path
) -> None:
    config = write_config(shared, "https://canvas.example.edu")
    (shared / "state" / "state.json").write_text('{"version": 1, "jobs": []}')
    (shared / "state").chmod(0o700)  # root's, and no one else's

    result = sisdaemon("status", "-c", str(config), user=throwaway_user)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("sisdaemon status: cannot read the state (")
    assert f"as {throwaway_user}" in line and "belongs to root" in line and "Traceback" not in line
    # JSON readers get the same: nothing on stdout to mistake for a report.
    assert sisdaemon("status", "--json", "-c", str(config), user=throwaway_user).returncode == 3


@pytest.mark.parametrize("command", ["check-config", "run", "submit", "status"])
@pytest.mark.parametrize("config_env", [None, ""], ids=["unset", "empty"])
def test_a_missing_config_is_a_usage_error_with_exit_2(command: str, config_env: str | None, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SISDAEMON_CONFIG"}
    if config_env is not None:
        env["SISDAEMON_CONFIG"] = config_env
    args = ["submit", str(tmp_path / "users.csv")] if command == "submit" else [command]
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"usage: sisdaemon {command} ")
    assert "-c/--config not given and $SISDAEMON_CONFIG not set" in result.stderr
