"""The heartbeat file: how a reader of the state (``sisdaemon check``, ``status``) knows the loop is turning.

``<state stem>.heartbeat.json`` beside the state file holds the daemon's pid and when it started; its mtime is the
last turn of the loop, renewed every few seconds with ``utime`` (cheap: no write, no fsync). It is a sign of life,
not state: nothing recovers from it, so it is neither fsynced nor reported to the side-effect seam (effects.py),
whose numbering of the crash protocol's effects must not depend on timing. Readable by the state's group (0640).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


def heartbeat_path(state_file: Path) -> Path:
    """``<state folder>/<state stem>.heartbeat.json``."""
    return state_file.with_name(f"{state_file.stem}.heartbeat.json")


@dataclass(frozen=True)
class Beat:
    """What the heartbeat says: the daemon's ``pid``, when it ``started_at`` and when its loop last ``turned_at``
    (seconds since the epoch)."""

    pid: int
    started_at: float
    turned_at: float


def write_heartbeat(path: Path, *, pid: int, started_at: float) -> None:
    """Write a new heartbeat (at start): a temp file renamed into place. Raises OSError."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"pid": pid, "started_at": started_at}, handle)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def touch_heartbeat(path: Path) -> None:
    """Renew the heartbeat's mtime (a turn of the loop). Raises OSError (e.g. the file was removed)."""
    os.utime(path)


def read_heartbeat(path: Path) -> Beat | None:
    """The heartbeat, or None when there is none (or it is not one). Raises OSError when it cannot be read (a
    user outside the state's group)."""
    try:
        with open(path, encoding="utf-8") as handle:
            turned_at = os.fstat(handle.fileno()).st_mtime
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, started_at = data.get("pid"), data.get("started_at")
    if not isinstance(pid, int) or not isinstance(started_at, int | float) or isinstance(started_at, bool):
        return None
    return Beat(pid, float(started_at), turned_at)
