"""One owner: the user who owns the state folder is the one user that runs the commands which write state.

Run by anyone else (root included), ``run`` or ``submit`` would leave files the service's user cannot replace
(the state, its history, a lock, a file in work/), and the service would stop at its next write. The package's
state folder is ``/var/lib/sisdaemon/<instance>/``, which systemd makes for the unit's ``User=sisdaemon``
(``StateDirectory=``); a developer's own state folder is their own, so nothing changes for them.

Before the state folder exists (the unit makes it at its first start), the owner of its nearest existing parent
decides: ``/var/lib/sisdaemon`` belongs to ``sisdaemon`` too.
"""

from __future__ import annotations

import os
import pwd
import shlex
from dataclasses import dataclass
from pathlib import Path


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``#<uid>`` (the form sudo's ``-u`` accepts) when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def deciding_folder(state_file: Path) -> tuple[Path, os.stat_result]:
    """The folder whose owner decides, with its ``stat``: the state file's folder, or its nearest parent that
    exists (and this user may look into) when it is missing or hidden. Symlinks are followed, as the daemon's own
    opens do. Raises OSError when not even ``/`` can be examined."""
    folder = Path(os.path.abspath(state_file)).parent
    while True:
        try:
            return folder, os.stat(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            if folder == folder.parent:
                raise
            folder = folder.parent


@dataclass(frozen=True)
class WrongUser:
    """A command that writes state, run by a user who does not own the state folder.

    ``folder``: the folder whose owner decides (see :func:`deciding_folder`); ``state_folder``: the state file's
    folder (the same, unless it does not exist yet). ``owner``/``user``: login names (``#<uid>`` without one).
    """

    folder: Path
    state_folder: Path
    owner: str
    user: str

    def message(self, command: str, argv: list[str], *, credential: str | None = None) -> str:
        """One line for stderr: both users, and the command line to use instead.

        ``command`` names the refused command (``"sisdaemon run"``); ``argv`` is the command's arguments after
        ``sisdaemon``, with the config given by ``-c`` (sudo drops ``$SISDAEMON_CONFIG``). ``credential``: the
        name of the systemd credential the command must read the token from (a relative ``token_file``), so the
        command line given runs it as the service runs (``systemd-run -p LoadCredentialEncrypted=``); otherwise
        ``runuser`` (root's way, always there on Debian, where sudo may not be) and ``sudo``."""
        where = f"the state folder {self.state_folder}"
        if self.folder != self.state_folder:
            where += f" does not exist yet, and its parent {self.folder}"
        return (
            f"{command}: {where} belongs to {self.owner}, not to {self.user} (who runs this); only the owner of the "
            f"state writes it, so that the service can always replace what it finds. Run it as {self.owner}"
            f"{instead_lines(self.owner, argv, credential=credential, as_root=self.user == 'root')}"
        )


def instead_lines(owner: str, argv: list[str], *, credential: str | None, as_root: bool) -> str:
    """``": <command line>"`` that runs ``sisdaemon ARGV`` as ``owner``: with the service's credential
    ``credential`` (``systemd-run --pipe --wait -p User= -p LoadCredentialEncrypted=``, as the unit loads it) when
    the command reads the token from one; else ``runuser -u OWNER --`` for root (``or: sudo -u OWNER ...``), and
    ``sudo -u OWNER`` for anyone else."""
    command = ["sisdaemon", *argv]
    if credential is not None:
        recipe = ["systemd-run", "--pipe", "--wait", "-p", f"User={owner}"]
        recipe += ["-p", f"LoadCredentialEncrypted={credential}"]
        return f" with the service's credential {credential}: {shlex.join([*recipe, *command])}"
    sudo = shlex.join(["sudo", "-u", owner, *command])
    if as_root:
        return f": {shlex.join(['runuser', '-u', owner, '--', *command])} (or: {sudo})"
    return f": {sudo}"


def check_owner(state_file: Path, *, uid: int | None = None) -> WrongUser | None:
    """None when ``uid`` (default: this process's effective user) owns the state folder, else the mismatch.

    Raises OSError when no folder on the way to the state folder can be examined."""
    uid = os.geteuid() if uid is None else uid
    folder, status = deciding_folder(state_file)
    owner = status.st_uid
    if owner == uid:
        return None
    return WrongUser(
        folder=folder,
        state_folder=Path(os.path.abspath(state_file)).parent,
        owner=user_name(owner),
        user=user_name(uid),
    )
