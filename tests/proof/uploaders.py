"""Real uploaders for the proof: an OpenSSH sshd of the test's own on a loopback port, the OpenSSH ``sftp`` client in
batch mode and ``rsync``.

The sshd is a real process with a throwaway host key and its own config in a temp folder: it listens on 127.0.0.1 on
a free port, accepts only a throwaway client key (for root: ``PermitRootLogin prohibit-password``; otherwise the
user running the tests) and forces ``internal-sftp`` on every session, so the key can do nothing but SFTP.

Where the binaries are missing the tests skip, saying which, unless ``SISDAEMON_PROOF_UPLOADERS=required`` (set by
``.ci/run``, which installs them): there a missing binary fails the test.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Seconds sshd may take to accept connections.
START_DEADLINE = 15.0


def _binary(name: str, *extra: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in extra:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def need(*names: str) -> dict[str, str]:
    """The paths of the named binaries; skip the test (or fail it where they are required) if any is missing."""
    found = {name: _binary(name, "/usr/sbin", "/usr/local/sbin") for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        reason = f"{', '.join(missing)} not installed (Debian: apt-get install openssh-server openssh-client rsync)"
        if os.environ.get("SISDAEMON_PROOF_UPLOADERS") == "required":
            pytest.fail(f"required by SISDAEMON_PROOF_UPLOADERS: {reason}")
        pytest.skip(reason)
    return {name: path for name, path in found.items() if path is not None}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.settimeout(2.0)
            return connection.recv(4).startswith(b"SSH-")  # sshd's banner, not some other listener
    except OSError:
        return False


@dataclass
class Sshd:
    """A running sshd: its port, the user and client key that may log in, its log file."""

    port: int
    user: str
    key: Path
    log: Path
    process: subprocess.Popen[bytes]
    sftp_binary: str
    ssh_binary: str

    def ssh_options(self) -> list[str]:
        return [
            "-oBatchMode=yes",
            "-oStrictHostKeyChecking=no",
            "-oUserKnownHostsFile=/dev/null",
            "-oLogLevel=ERROR",
            "-oIdentitiesOnly=yes",
            "-i",
            str(self.key),
        ]

    def sftp(self, commands: Sequence[str], *, limit_kbit: int | None = None, batch: Path) -> subprocess.Popen[bytes]:
        """Start the OpenSSH ``sftp`` client in batch mode (``-b``) running ``commands`` (it stops at the first that
        fails); ``limit_kbit``: its bandwidth limit (``-l``). Returns the running client process."""
        batch.write_text("".join(f"{command}\n" for command in commands))
        argv = [self.sftp_binary, "-q", "-b", str(batch), *self.ssh_options(), "-P", str(self.port)]
        if limit_kbit is not None:
            argv += ["-l", str(limit_kbit)]
        argv.append(f"{self.user}@127.0.0.1")
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def quote(path: Path) -> str:
    """A path quoted for an sftp batch line."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """sshd on a free loopback port, its own config, host key and authorized key in a temp folder; stopped at the
    end of the test."""
    found = need("sshd", "sftp", "ssh", "ssh-keygen")
    folder = tmp_path / "sshd"
    folder.mkdir()
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            [found["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "sisdaemon-proof", "-f", str(key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    authorized = folder / "authorized_keys"
    authorized.write_bytes(client_key.with_suffix(".pub").read_bytes())
    user = getpass.getuser()
    if os.geteuid() == 0:
        # sshd run as root separates privileges into /run/sshd (Debian's unit makes it with RuntimeDirectory=).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    for _ in range(3):  # the free port may be taken by someone else before sshd binds it
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {host_key}",
                    f"PidFile {folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "Match all",
                    "    ForceCommand internal-sftp",
                    "    AllowTcpForwarding no",
                    "    X11Forwarding no",
                    "    PermitTTY no",
                    "",
                ]
            )
        )
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [found["sshd"], "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + START_DEADLINE
        while process.poll() is None and time.monotonic() < end and not accepts(port):
            time.sleep(0.05)  # polling a port with a deadline: nothing to wait on instead
        if process.poll() is None and accepts(port):
            break
        process.kill()
        process.wait()
    else:
        pytest.fail(f"sshd did not start: {log.read_text(errors='replace')[-2000:]}")
    server = Sshd(port, user, client_key, log, process, found["sftp"], found["ssh"])
    try:
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
