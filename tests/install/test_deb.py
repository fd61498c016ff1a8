"""The installed Debian package, as a sysadmin meets it (issue 8).

Run against the real thing: the package installed with ``apt-get install ./sisdaemon_*.deb`` (``.ci/run`` builds
and installs it before the test suite), the real ``systemd-analyze``, ``systemd-tmpfiles``, ``getfacl`` and
``man``, and real users. Skipped, saying why, where the package is not installed or the tests do not run as root.
``SISDAEMON_DEB`` (set by ``.ci/run``) names the .deb: the purge test removes the package and installs it again.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path("/opt/venvs/sisdaemon")
UNIT = Path("/lib/systemd/system/sisdaemon@.service")
SPOOL = Path("/var/spool/sisdaemon")
FEED = SPOOL / "nightly"
EXAMPLE = Path("/etc/sisdaemon/example.yaml")


def _installed() -> str | None:
    if not shutil.which("dpkg-query"):
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", "sisdaemon"], capture_output=True, text=True
    )
    return result.stdout[3:] if result.returncode == 0 and result.stdout.startswith("ii ") else None


VERSION = _installed()
pytestmark = [
    pytest.mark.skipif(
        VERSION is None,
        reason="the sisdaemon Debian package is not installed (packaging/build-deb, then apt-get install ./dist/"
        "sisdaemon_*.deb; .ci/run does both)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="checks the installed package as root, with test users"),
]


def run(
    *command: str, user: str | None = None, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a command (as ``user``, with that user's groups, when given) from /, where any user may be."""
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    result = subprocess.run([*prefix, *command], capture_output=True, text=True, cwd="/", **kwargs)  # type: ignore[call-overload]
    if check:
        assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result  # type: ignore[no-any-return]


def acl(path: Path) -> set[str]:
    """The ACL entries of ``path``, as getfacl prints them (comments and effective-rights notes left out)."""
    out = run("getfacl", "--absolute-names", "--omit-header", str(path)).stdout
    return {line.split("\t")[0] for line in out.splitlines() if line}


def test_the_package_is_the_version_of_the_source_and_brings_the_user_and_its_groups() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == VERSION
    user = pwd.getpwnam("sisdaemon")
    assert user.pw_dir == "/var/lib/sisdaemon" and user.pw_shell == "/usr/sbin/nologin"
    assert user.pw_uid < 1000, "a system user"
    assert grp.getgrgid(user.pw_gid).gr_name == "sisdaemon"
    for group in ("sisdaemon-upload", "sisdaemon-ops"):
        assert grp.getgrnam(group).gr_gid < 1000, f"{group} is a system group"


def test_sisdaemon_on_the_path_is_the_virtualenv_s_and_says_its_version() -> None:
    assert Path("/usr/bin/sisdaemon").resolve() == VENV / "bin" / "sisdaemon"
    assert run("/usr/bin/sisdaemon", "--version").stdout.strip() == f"sisdaemon {VERSION}"
    # The virtualenv holds exactly the pinned packages, consistent with each other.
    run(str(VENV / "bin" / "python"), "-m", "pip", "check")
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    frozen = run(str(VENV / "bin" / "python"), "-m", "pip", "freeze", "--all").stdout.lower().replace("_", "-")
    installed = {re.split(r"==| @ ", line)[0] for line in frozen.splitlines()} - {"pip", "sisdaemon"}
    assert installed == pinned


def test_man_sisdaemon_renders_every_command_and_the_exit_codes() -> None:
    page = run("man", "-P", "cat", "sisdaemon", env={**os.environ, "MANWIDTH": "100"}).stdout
    assert page.startswith("SISDAEMON(1)")
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "FILES"):
        assert re.search(rf"^{heading}$", page, re.MULTILINE), heading
    for command in ("check-config", "run", "submit", "status", "sandbox", "demo"):
        assert re.search(rf"^   {command}$", page, re.MULTILINE), command
    assert re.search(r"^       73\s+EX_CANTCREAT", page, re.MULTILINE)
    assert re.search(r"^       77\s+EX_NOPERM", page, re.MULTILINE)
    assert re.search(r"^       78\s+EX_CONFIG", page, re.MULTILINE)
    assert re.search(r"^       65\s+EX_DATAERR", page, re.MULTILINE)


def test_the_documents_the_readme_and_the_example_config_point_to_are_installed() -> None:
    shipped = Path("/usr/share/doc/sisdaemon")
    readme = (ROOT / "README.md").read_text()
    for name in sorted(set(re.findall(r"docs/([\w-]+\.(?:md|yml))", readme))):
        assert (shipped / name).exists() or (shipped / f"{name}.gz").exists(), name
    # What a sysadmin copies and edits is shipped as it is, not compressed.
    assert (shipped / "operations.md.gz").exists() and (shipped / "alerting-rules.yml").is_file()
    pointer = next(line for line in EXAMPLE.read_text().splitlines() if "/usr/share/doc/sisdaemon/" in line)
    named = re.findall(r"/usr/share/doc/sisdaemon/([\w.-]+\w)|\band ([\w.-]+\.gz)\b", pointer)
    files = [first or second for first, second in named]
    assert "config.example.yaml" in files and files, pointer
    for name in files:
        assert (shipped / name).is_file(), f"{EXAMPLE} points to {shipped / name}, which is not installed"


def test_install_enables_and_starts_nothing() -> None:
    assert not list(Path("/etc/systemd/system").glob("*.wants/sisdaemon*")), "no instance is enabled"
    assert not list(Path("/run/systemd/system").glob("*.wants/sisdaemon*")), "no instance is started"


def test_the_example_config_is_a_conffile() -> None:
    conffiles = run("dpkg-query", "-W", "-f", "${Conffiles}", "sisdaemon").stdout
    assert str(EXAMPLE) in conffiles


def test_systemd_analyze_verify_passes_on_the_installed_unit_with_its_real_exec_start() -> None:
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/usr/bin/sisdaemon run$", text, re.MULTILINE)
    assert re.search(r"^StateDirectory=sisdaemon/%i$", text, re.MULTILINE)
    result = run("systemd-analyze", "verify", "sisdaemon@test.service", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sisdaemon" not in result.stderr, result.stderr  # no warning about our unit


def test_the_installed_unit_rates_2_0_or_lower_in_systemd_analyze_security() -> None:
    out = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)).stdout
    score = float(re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", out)[-1])
    assert score <= 2.0, out


# name, mode (with setgid and sticky bits), owner, group, access ACL entries, default ACL entries
FOLDERS = [
    (SPOOL, 0o755, "root", "root", set(), set()),
    (
        FEED,
        0o750,
        "sisdaemon",
        "sisdaemon",
        {"group:sisdaemon-upload:--x", "group:sisdaemon-ops:r-x"},
        {"default:group:sisdaemon-ops:r-x"},
    ),
    (
        FEED / "drop",
        0o3770,
        "sisdaemon",
        "sisdaemon-upload",
        {"group:sisdaemon-ops:r-x"},
        {"default:user:sisdaemon:r--", "default:group:sisdaemon-ops:r--"},
    ),
    (
        FEED / "work-nightly",
        0o750,
        "sisdaemon",
        "sisdaemon",
        {"group:sisdaemon-ops:r-x"},
        {"default:group:sisdaemon-ops:r-x"},
    ),
    (
        FEED / "done",
        0o750,
        "sisdaemon",
        "sisdaemon-ops",
        {"group:sisdaemon-ops:r-x"},
        {"default:group:sisdaemon-ops:r-x"},
    ),
    (
        FEED / "failed",
        0o750,
        "sisdaemon",
        "sisdaemon-ops",
        {"group:sisdaemon-ops:r-x"},
        {"default:group:sisdaemon-ops:r-x"},
    ),
    (
        Path("/var/lib/sisdaemon"),
        0o750,
        "sisdaemon",
        "sisdaemon",
        {"group:sisdaemon-ops:r-x"},
        {"default:group:sisdaemon-ops:r-x"},
    ),
]


@pytest.mark.parametrize(("path", "mode", "owner", "group", "access", "default"), FOLDERS, ids=lambda v: str(v))
def test_systemd_tmpfiles_makes_the_folders_with_the_documented_owners_modes_and_acls(
    path: Path, mode: int, owner: str, group: str, access: set[str], default: set[str]
) -> None:
    run("systemd-tmpfiles", "--create", "sisdaemon.conf")
    status = path.stat()
    assert stat.S_ISDIR(status.st_mode)
    assert stat.S_IMODE(status.st_mode) == mode, oct(stat.S_IMODE(status.st_mode))
    assert (pwd.getpwuid(status.st_uid).pw_name, grp.getgrgid(status.st_gid).gr_name) == (owner, group)
    entries = acl(path)
    assert access <= entries, entries
    assert default <= entries, entries
    if not default:
        assert not [entry for entry in entries if entry.startswith("default:")], entries


def test_the_clean_up_ages_of_done_and_failed_are_set_and_commented() -> None:
    text = Path("/usr/lib/tmpfiles.d/sisdaemon.conf").read_text()
    assert re.search(r"^e\s+/var/spool/sisdaemon/\*/done\s+-\s+-\s+-\s+c:90d\s", text, re.MULTILINE)
    assert re.search(r"^e\s+/var/spool/sisdaemon/\*/failed\s+-\s+-\s+-\s+c:180d\s", text, re.MULTILINE)
    assert "# done/: 90 days" in text and "# failed/: 180 days" in text


@pytest.fixture
def people() -> Iterator[dict[str, str]]:
    """An uploader (in sisdaemon-upload), an operator (in sisdaemon-ops) and a stranger, removed afterwards."""
    names = {"uploader": "sisd-test-up", "operator": "sisd-test-ops", "stranger": "sisd-test-other"}
    groups = {"uploader": "sisdaemon-upload", "operator": "sisdaemon-ops", "stranger": ""}
    for role, name in names.items():
        subprocess.run(["userdel", name], capture_output=True)
        run("useradd", "--system", "--no-create-home", *(["-G", groups[role]] if groups[role] else []), name)
    try:
        yield names
    finally:
        for name in names.values():
            subprocess.run(["userdel", name], capture_output=True)


def test_a_file_an_uploader_leaves_0600_is_readable_by_the_daemon_and_once_filed_by_operators(
    people: dict[str, str],
) -> None:
    run("systemd-tmpfiles", "--create", "sisdaemon.conf")
    dropped, filed = FEED / "drop" / "sisd-test-users.csv", FEED / "done" / "sisd-test-users.csv"
    try:
        # An SFTP or rsync upload with umask 077: the file would be 0600 without the folder's default ACL.
        run("sh", "-c", f"umask 077 && printf 'user_id\\n' > {dropped}", user=people["uploader"])
        assert run("cat", str(dropped), user="sisdaemon").stdout == "user_id\n"
        # sisdaemon files it (a rename, as the daemon does); operators read it there, others do not.
        run("mv", str(dropped), str(filed), user="sisdaemon")
        assert run("cat", str(filed), user=people["operator"]).stdout == "user_id\n"
        assert run("ls", str(FEED / "done"), user=people["uploader"], check=False).returncode != 0
        assert run("cat", str(filed), user=people["stranger"], check=False).returncode != 0
        # Uploaders write drop/ and cannot remove one another's files (sticky); strangers cannot write at all.
        run("sh", "-c", f"echo x > {dropped}", user=people["uploader"])
        assert run("rm", "-f", str(dropped), user=people["operator"], check=False).returncode != 0
        assert (
            run("sh", "-c", f"echo x > {FEED / 'drop' / 'other.csv'}", user=people["stranger"], check=False).returncode
            != 0
        )
    finally:
        dropped.unlink(missing_ok=True)
        filed.unlink(missing_ok=True)


@pytest.fixture
def state_folder() -> Iterator[Path]:
    """/var/lib/sisdaemon/nightly as systemd makes it for sisdaemon@nightly (StateDirectory=, mode 0750)."""
    run("systemd-tmpfiles", "--create", "sisdaemon.conf")
    folder = Path("/var/lib/sisdaemon/nightly")
    made = not folder.exists()
    run("install", "-d", "-o", "sisdaemon", "-g", "sisdaemon", "-m", "0750", str(folder))
    try:
        yield folder
    finally:
        if made:
            shutil.rmtree(folder)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder other users may read (pytest's tmp_path lies under a root-only folder)."""
    folder = Path(tempfile.mkdtemp(prefix="sisdaemon-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_check_config_accepts_the_example_on_the_packaged_folders_as_the_service_user(
    state_folder: Path, shared_tmp: Path
) -> None:
    tmp_path = shared_tmp
    # The token as systemd hands it over (LoadCredentialEncrypted=canvas-token): a file in $CREDENTIALS_DIRECTORY.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "canvas-token").write_text("test-token-0123456789\n")
    tmp_path.chmod(0o755)
    credentials.chmod(0o755)
    (credentials / "canvas-token").chmod(0o644)
    # As the README says: the example copied to the instance's name, so that its state_file's %i is "nightly".
    nightly = tmp_path / "nightly.yaml"
    shutil.copyfile(EXAMPLE, nightly)
    nightly.chmod(0o644)
    result = run(
        "sisdaemon",
        "check-config",
        "-c",
        str(nightly),
        user="sisdaemon",
        env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert result.stdout.strip() == f"{nightly}: OK (1 feed(s): nightly)"
    assert "test-token" not in result.stdout + result.stderr
    # The example as it is names an instance "example" whose state folder systemd has not made: said, not made.
    result = run(
        "sisdaemon",
        "check-config",
        "-c",
        str(EXAMPLE),
        user="sisdaemon",
        check=False,
        env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert result.returncode == 78 and "/var/lib/sisdaemon/example" in result.stdout + result.stderr
    assert not Path("/var/lib/sisdaemon/example").exists()
    # The token from an environment variable instead (canvas.token_env) works the same.
    config = tmp_path / "env" / "nightly.yaml"
    config.parent.mkdir(mode=0o755)
    config.write_text(EXAMPLE.read_text().replace("token_file: canvas-token", "token_env: CANVAS_TOKEN"))
    config.chmod(0o644)
    result = run(
        "sisdaemon",
        "check-config",
        "-c",
        str(config),
        user="sisdaemon",
        env={"PATH": "/usr/bin:/bin", "CANVAS_TOKEN": "test-token-0123456789"},
    )
    assert result.stdout.strip().endswith("OK (1 feed(s): nightly)")
    # The operators' ACL reaches what the service writes in its state folder.
    probe = state_folder / "sisd-test-probe"
    run("sh", "-c", f"umask 077 && echo x > {probe}", user="sisdaemon")
    try:
        assert "group:sisdaemon-ops:r-x" in acl(state_folder)
        assert {entry for entry in acl(probe) if entry.startswith("group:sisdaemon-ops")} == {"group:sisdaemon-ops:r-x"}
    finally:
        probe.unlink()


@pytest.mark.skipif(not os.environ.get("SISDAEMON_DEB"), reason="SISDAEMON_DEB (the .deb to reinstall) is not set")
def test_purge_removes_what_the_package_made_but_keeps_a_spool_folder_holding_files() -> None:
    deb = Path(os.environ["SISDAEMON_DEB"]).resolve()
    waiting = FEED / "drop" / "sisd-test-waiting.csv"
    waiting.write_text("user_id\n")
    try:
        run("apt-get", "purge", "-y", "sisdaemon", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        assert not VENV.exists() and not Path("/usr/bin/sisdaemon").exists() and not UNIT.exists()
        assert not EXAMPLE.exists() and not Path("/var/lib/sisdaemon").exists()
        assert waiting.read_text() == "user_id\n", "an upload not yet taken survives the purge"
        assert not (FEED / "done").exists() and not (FEED / "work-nightly").exists(), "empty folders go"
    finally:
        waiting.unlink(missing_ok=True)
        run("apt-get", "install", "-y", str(deb), env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert _installed() == VERSION
    assert (FEED / "done").is_dir()
