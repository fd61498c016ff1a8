"""Atomic, durable file writes (temp file, fsync, rename, fsync of the folder), every step reported to the
side-effect seam, and the removal of temp files a kill left behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sisdaemon import effects


def fsync_dir(path: Path) -> None:
    """fsync a folder, so a rename or a new name in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    effects.happened("dir.fsynced")


#: The temp names :func:`write_atomic` uses: ``.<target name>.<8 lower-case hex digits>.tmp``.
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp", re.DOTALL)


def write_atomic(
    path: Path, data: bytes, mode: int = 0o640, *, effect: str = "file", temp_dir: Path | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically: temp file in the same folder (named as :data:`TEMP_NAME`
    says), fsync, rename, fsync the folder. A kill before the rename leaves the temp file behind; see
    :func:`remove_stale_temp_files`.

    ``effect`` names the write for the side-effect seam (effects.py): ``<effect>.temp_written`` once the temp file
    is whole on disk, ``<effect>.replaced`` once it has replaced ``path``. ``temp_dir``: where the temp file is made
    (default: ``path``'s folder; another folder must be on the same mount), so that a kill leaves it where it is
    cleaned up (a sidecar's temp file in work/, not in done/).

    Raises OSError (the old file is then untouched).
    """
    if temp_dir is not None and not path.parent.is_dir():  # say which folder is missing, not the temp file's name
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
    temp = (temp_dir or path.parent) / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        effects.happened(f"{effect}.temp_written")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    effects.happened(f"{effect}.replaced")
    fsync_dir(path.parent)


def owned_by_state(state_file: Path) -> Callable[[str], bool]:
    """A test of a file name: whether it is ``state_file``'s own name or one of its history files' names (what
    :func:`remove_stale_temp_files` may clean up for the daemon that holds ``state_file``'s lock)."""
    history = re.compile(re.escape(state_file.stem) + r"\.history\..+\.json", re.DOTALL)

    def owned(name: str) -> bool:
        return name == state_file.name or history.fullmatch(name) is not None

    return owned


def remove_stale_temp_files(
    folder: Path,
    *,
    owned: Callable[[str], bool] | None = None,
    min_age_seconds: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> list[Path]:
    """Remove the temp files that writes by :func:`write_atomic` killed before their rename left in ``folder``.

    Only regular files whose whole name matches :data:`TEMP_NAME` are candidates, and only those whose target name
    passes ``owned`` (default: any; :func:`owned_by_state` for the state folder, which other instances may share).
    ``min_age_seconds``: keep temp files modified less than this many seconds ago (by ``clock``, seconds since
    the epoch, compared with their mtime). Call it with the default 0 only while holding the lock of whatever
    writes them (the state lock, at start-up): a temp file is then never one being written. Scans the folder
    once (keep it for small folders, such as the state folder).

    Returns the paths removed. Raises OSError when the folder cannot be listed or a file cannot be removed
    (a file already gone is not an error); a missing folder has nothing to remove.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    oldest = clock() - min_age_seconds
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if match is None or (owned is not None and not owned(match["target"])):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or (min_age_seconds > 0 and info.st_mtime > oldest):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return removed


def write_json_atomic(
    path: Path, value: Any, *, effect: str = "file", temp_dir: Path | None = None, compact: bool = False
) -> None:
    """:func:`write_atomic` of ``value`` as key-sorted JSON with a final newline: indented for a person to read
    (sidecars, requests), or with ``compact`` on one line without spaces, for a file written often (the state
    file: Python's C encoder runs only without ``indent``, several times faster)."""
    if compact:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    else:
        text = json.dumps(value, indent=2, sort_keys=True)
    data = (text + "\n").encode()
    write_atomic(path, data, effect=effect, temp_dir=temp_dir)
