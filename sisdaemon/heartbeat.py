"""The heartbeat file: how a reader of the state (``sisdaemon check``, ``status``) knows the loop is turning.

``<state stem>.heartbeat.json`` beside the state file holds the daemon's pid, when it started and the config it runs
(drift.py's :class:`~sisdaemon.drift.RunningConfig`: the file's sha256, when it was loaded, keys waiting for a
restart; rewritten at each reload that applies); its mtime is the last turn of the loop, renewed every few seconds
with ``utime`` (cheap: no write, no fsync). It is a sign of life, not state: nothing recovers from it, so it is
neither fsynced nor reported to the side-effect seam (effects.py), whose numbering of the crash protocol's effects
must not depend on timing. Readable by the state's group (0640).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sisdaemon.drift import RunningConfig
from sisdaemon.locks import is_locked, read_lock_pid, state_lock_path


def heartbeat_path(state_file: Path) -> Path:
    """``<state folder>/<state stem>.heartbeat.json``."""
    return state_file.with_name(f"{state_file.stem}.heartbeat.json")


@dataclass(frozen=True)
class Beat:
    """What the heartbeat says: the daemon's ``pid``, when it ``started_at`` and when its loop last ``turned_at``
    (seconds since the epoch), and the ``config`` it runs (None: an older sisdaemon recorded none)."""

    pid: int
    started_at: float
    turned_at: float
    config: RunningConfig | None = None


def write_heartbeat(path: Path, *, pid: int, started_at: float, config: RunningConfig | None = None) -> None:
    """Write a new heartbeat (at start, and at a reload that applied: ``config`` is what the daemon runs): a temp
    file renamed into place. Raises OSError."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            record: dict[str, object] = {"pid": pid, "started_at": started_at}
            if config is not None:
                record["config"] = config.to_dict()
            json.dump(record, handle)
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
    return Beat(pid, float(started_at), turned_at, RunningConfig.from_dict(data.get("config")))


def running_config(state_file: Path) -> RunningConfig | None:
    """What the daemon running on ``state_file`` runs (drift.py), from its heartbeat file; None when no daemon
    holds the state lock, or the heartbeat is another process's (a daemon that died before the running one wrote
    its own) or records none. Raises OSError when the heartbeat or the lock cannot be read (a user outside the
    state's group)."""
    lock = state_lock_path(state_file)
    if not is_locked(lock):
        return None
    beat = read_heartbeat(heartbeat_path(state_file))
    if beat is None or beat.pid != read_lock_pid(lock):
        return None
    return beat.config
