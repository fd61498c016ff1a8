"""What the configuration needs from this machine: the token source, ``ca_bundle``, the state file's and locks'
folders, each feed's folders (``work_dir`` created when missing) and that files can be renamed between them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from sisdaemon.config.schema import FeedSettings, Settings
from sisdaemon.config.token import TokenError, read_token


def check_runtime(
    settings: Settings, *, rename: Callable[[Path, Path], None] = os.rename, token: bool = True
) -> list[str]:
    """Check what the configuration needs from this machine; one ``"<dotted.key>: <message>"`` per problem.

    Checks the token source (never quoting the token), ``ca_bundle``, the state file's folder, ``lock_dir`` (or
    the folder it would be created in) and each feed's folders, creating ``work_dir`` (mode 0750) when only it is
    missing. Proves that files can be renamed between a feed's folders: a probe file
    ``.sisdaemon-probe-<pid>-<random>`` goes from drop_dir into each other folder and back, and is removed.
    ``rename`` is replaceable for tests. ``token=False`` accepts a token file that may yet appear (missing, empty,
    unreadable): ``run`` waits for it as for any credential fault.
    """
    problems: list[str] = []
    try:
        read_token(settings.canvas)
    except TokenError as error:
        if token or not error.may_appear:
            problems.append(str(error))
    ca_bundle = settings.canvas.ca_bundle
    if ca_bundle is not None and not (ca_bundle.is_file() and os.access(ca_bundle, os.R_OK)):
        problems.append(f"canvas.ca_bundle: {ca_bundle} is not a readable file")
    if settings.state_file.is_dir():
        problems.append(f"state_file: {settings.state_file} is a folder")
    elif problem := _folder_problem(settings.state_file.parent, os.W_OK | os.X_OK):
        problems.append(f"state_file: the folder {problem}")
    existing = settings.lock_dir  # created with its parents when the lock is taken: check the nearest that exists
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if problem := _folder_problem(existing, os.W_OK | os.X_OK):
        creatable = "" if existing == settings.lock_dir else f"{settings.lock_dir} cannot be created: "
        problems.append(f"lock_dir: {creatable}{problem}")
    seen: dict[tuple[int, int], str] = {}
    for index, feed in enumerate(settings.feeds):
        problems += _check_feed(f"feeds[{index}]", feed, seen, rename)
    return problems


def _folder_problem(path: Path, access: int = os.R_OK | os.W_OK | os.X_OK) -> str | None:
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return f"{path} is not a folder"
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as error:
        return f"{path}: {error.strerror}"
    if not os.access(path, access):
        return f"{path} is not {'readable and writable' if access & os.R_OK else 'writable'} by this user"
    return None


def _check_feed(
    prefix: str, feed: FeedSettings, seen: dict[tuple[int, int], str], rename: Callable[[Path, Path], None]
) -> list[str]:
    problems: list[str] = []
    for key, path in feed.folders().items():
        if key == "work_dir" and not os.path.lexists(path) and path.parent.is_dir():
            try:
                os.mkdir(path, 0o750)
                os.chmod(path, 0o750)  # mkdir's mode is reduced by the umask
            except OSError as error:
                problems.append(f"{prefix}.{key}: {path} cannot be created: {error.strerror}")
                continue
        if problem := _folder_problem(path):
            problems.append(f"{prefix}.{key}: {problem}")
            continue
        status = os.stat(path)
        if (identity := (status.st_dev, status.st_ino)) in seen:  # one folder, two names (a symlink)
            problems.append(f"{prefix}.{key}: {path} is the same folder as {seen[identity]}")
        seen.setdefault(identity, f"{prefix}.{key}")
    return problems or _probe_renames(prefix, feed, rename)


def _probe_renames(prefix: str, feed: FeedSettings, rename: Callable[[Path, Path], None]) -> list[str]:
    """Move a probe file from drop_dir into each other folder and back; rename(2) fails across mounts (EXDEV).

    Round trips through drop_dir prove every pair: two folders that each share drop_dir's mount share theirs.
    """
    name = f".sisdaemon-probe-{os.getpid()}-{secrets.token_hex(4)}"  # a dot-name: the watcher leaves it
    home = where = feed.drop_dir / name
    try:
        os.close(os.open(home, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as error:
        return [f"{prefix}.drop_dir: cannot create a probe file in {feed.drop_dir}: {error.strerror}"]
    problems: list[str] = []
    try:
        for key, folder in list(feed.folders().items())[1:]:
            try:
                rename(where, folder / name)
                where = folder / name
                rename(where, home)
                where = home
            except OSError as error:
                why = error.strerror
                if error.errno == errno.EXDEV:
                    why = "not on one mount (a bind mount, as systemd's ReadWritePaths= makes, is another)"
                problems.append(f"{prefix}.{key}: files cannot be renamed between drop_dir and {folder}: {why}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(where)
    return problems
