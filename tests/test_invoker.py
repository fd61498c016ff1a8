"""Who ran an operator command (trial report item 11): the user, $SUDO_USER, and the kernel's audit login uid, which
names the operator behind ``runuser -u sisdaemon`` or ``su`` (no $SUDO_USER there)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from sisdaemon.ops import LOGINUID_UNSET, invoker, read_loginuid
from sisdaemon.owner import user_name

ME = os.getuid()


def service_user() -> int:
    """A uid other than this process's, standing for the service's user that runuser switched to."""
    return next(entry.pw_uid for entry in pwd.getpwall() if entry.pw_uid != ME)


def test_the_operator_behind_runuser_is_recorded_as_login_user() -> None:
    who = invoker(uid=service_user(), environ={}, loginuid=lambda: ME)
    assert who["by"] == user_name(service_user())
    assert who["login_user"] == user_name(ME) and "sudo_user" not in who


def test_through_sudo_both_sudo_user_and_login_user_are_kept() -> None:
    who = invoker(uid=service_user(), environ={"SUDO_USER": "alice"}, loginuid=lambda: ME)
    assert who["sudo_user"] == "alice" and who["login_user"] == user_name(ME)


@pytest.mark.parametrize("logged_in", [None, "self"], ids=["unset", "the same user"])
def test_no_login_user_when_unset_or_the_same_as_by(logged_in: str | None) -> None:
    uid = service_user()
    who = invoker(uid=uid, environ={}, loginuid=lambda: None if logged_in is None else uid)
    assert set(who) == {"by", "at"}


@pytest.mark.parametrize(
    ("text", "expected"), [("1000\n", 1000), (f"{LOGINUID_UNSET}", None), ("", None), ("x", None), (None, None)]
)
def test_read_loginuid_reads_the_kernel_s_file_and_treats_unset_as_none(
    tmp_path: Path, text: str | None, expected: int | None
) -> None:
    path = tmp_path / "loginuid"
    if text is not None:
        path.write_text(text)
    assert read_loginuid(path) == expected
