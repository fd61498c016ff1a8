"""The single-instance locks: an exclusive ``flock`` on ``<state_file>.lock`` (never replaced) and one per Canvas
host and account in ``lock_dir``; a second daemon exits at once naming the holder's pid."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path


class LockHeld(Exception):
    """Another process holds a lock. ``pid`` is the holder's pid as it wrote it (None if unknown)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {holder}: another sisdaemon is running with this state or account")


class Lock:
    """An exclusive, non-blocking ``flock`` on a file that is never replaced; the holder's pid is written in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock. Raises LockHeld (with the holder's pid) if another process has it; OSError otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, read_lock_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale pid for the next reader; we still hold the lock here
            os.close(self._fd)  # closing drops the flock; the file stays (never replaced, never removed)
            self._fd = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lock_pid(path: Path) -> int | None:
    """The pid written in a lock file, or None."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(path: Path) -> bool:
    """Whether some process holds ``path``'s flock (tested without keeping it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def state_lock_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".lock")


def account_lock_path(lock_dir: Path, host: str, account_id: int) -> Path:
    """``<lock_dir>/<host>_<account id>.lock`` with the host made safe for a file name."""
    safe_host = re.sub(r"[^A-Za-z0-9.-]", "_", host)
    return lock_dir / f"{safe_host}_{account_id}.lock"


def account_uuid_lock_path(lock_dir: Path, uuid: str) -> Path:
    """``<lock_dir>/account-<uuid>.lock``: the same for every host name that reaches one Canvas account."""
    return lock_dir / f"account-{re.sub(r'[^A-Za-z0-9.-]', '_', uuid)}.lock"


@contextlib.contextmanager
def locks(*paths: Path) -> Iterator[None]:
    """Hold every lock in ``paths`` (in order) for the ``with`` body. Raises LockHeld."""
    held: list[Lock] = []
    try:
        for path in paths:
            lock = Lock(path)
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
