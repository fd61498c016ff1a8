"""The packaging sources, checked without building or installing: the unit's hardening and exit codes, the man page
generated from the parser, and versions that agree. tests/install/test_deb.py checks the installed package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sisdaemon import __version__, cli

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "sisdaemon@.service"
DEBIAN = ROOT / "packaging" / "debian"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_unit_rates_2_0_or_lower_in_systemd_analyze_security() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True
    )
    score = float(re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)[-1])
    assert score <= 2.0, result.stdout


def test_every_setting_of_the_unit_has_a_comment_above_it() -> None:
    lines = UNIT.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment: {line}"


def test_the_unit_keeps_what_the_daemon_needs_and_does_not_restart_on_a_bad_config_or_a_held_lock() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == ["/usr/bin/sisdaemon run"]
    assert settings["AmbientCapabilities"] == ["CAP_LEASE"] == settings["CapabilityBoundingSet"]
    assert settings["StateDirectory"] == ["sisdaemon/%i"]
    assert set(settings["RestartPreventExitStatus"][0].split()) == {
        str(cli.EXIT_CONFIG),
        str(cli.EXIT_LOCKED),
        str(cli.EXIT_NOPERM),
        str(cli.EXIT_DATAERR),
    }
    assert settings["Restart"] == ["on-failure"]
    # The spool's parent as ONE path (rename(2) fails between two bind mounts), the folder tmpfiles.d makes.
    assert settings["ReadWritePaths"] == ["/var/spool/sisdaemon"]
    tmpfiles = (DEBIAN / "sisdaemon.tmpfiles").read_text()
    assert re.search(r"^d\s+/var/spool/sisdaemon\s", tmpfiles, re.MULTILINE)


def test_a_command_run_by_another_user_than_the_state_s_owner_has_its_own_exit_code_documented_in_the_readme() -> None:
    assert cli.EXIT_NOPERM == 77 and cli.EXIT_NOPERM not in {cli.EXIT_FAULT, cli.EXIT_CONFIG, cli.EXIT_LOCKED}
    readme = (ROOT / "README.md").read_text()
    assert "**77**" in readme and "runuser -u sisdaemon -- sisdaemon" in readme


def test_a_held_lock_has_its_own_exit_code_documented_in_the_readme() -> None:
    assert cli.EXIT_LOCKED == 73 and cli.EXIT_LOCKED not in {cli.EXIT_FAULT, cli.EXIT_CONFIG}
    readme = (ROOT / "README.md").read_text()
    assert "**73**" in readme


def test_the_package_version_is_the_project_s() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    changelog = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"sisdaemon ({project['version']}) ")
    assert project["version"] == __version__


def test_the_requirements_pin_every_dependency_of_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for dependency in project["dependencies"]:
        name = re.split(r"[<>=!~ \[]", dependency)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in packaging/requirements.txt"


def test_the_man_page_is_made_from_the_parser_with_every_command_and_option() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "manpage.py")],
        capture_output=True,
        text=True,
        check=True,
        env={"SOURCE_DATE_EPOCH": "1800000000", "PATH": "/usr/bin:/bin"},
    )
    page = result.stdout
    assert page.startswith('.TH SISDAEMON 1 "2027-01-15"')
    parser = cli.build_parser()
    [commands] = [action for action in parser._actions if action.choices and action.dest == "command"]
    assert isinstance(commands.choices, dict)
    for name, sub in commands.choices.items():
        assert f".SS {name.replace('-', chr(92) + '-')}\n" in page
        for action in sub._actions:
            for option in action.option_strings:
                assert f"\\fB{option.replace('-', chr(92) + '-')}\\fR" in page, f"{name} {option}"
    codes = (
        cli.EXIT_OK,
        cli.EXIT_FAILED,
        cli.EXIT_USAGE,
        cli.EXIT_FAULT,
        cli.EXIT_LOCKED,
        cli.EXIT_NOPERM,
        cli.EXIT_CONFIG,
    )
    for code in codes:
        assert f".TP\n{code}\n" in page
    if shutil.which("man"):
        rendered = subprocess.run(["man", "-l", "-"], input=page, capture_output=True, text=True, check=True)
        assert "warning" not in rendered.stderr.lower(), rendered.stderr
