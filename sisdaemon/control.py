"""The control folder: how an operator's command (``pause``, ``resume``, ``retry``, ``abort``) reaches a running daemon.

The daemon is the only writer of its state while it runs, so a command never writes the state file under it: it
writes a request, and the daemon applies it at its next turn and answers.

    <state folder>/<state stem>.control/<id>.request.json   written by the command (atomically: temp file, rename)
    <state folder>/<state stem>.control/<id>.answer.json    written by the daemon once the request is applied

``<id>`` is ``<UTC stamp>-<nanoseconds>-<random>``, so requests are applied in the order they were made. The daemon
watches the folder (a wake-up, as for a drop folder) and also looks at every turn of its loop (at most every 5 s), so
a request is applied within about a second. It applies a request, writes the answer, then removes the request; the
command reads the answer and removes it. A request written while no daemon runs, or left behind by a command that
gave up waiting, is applied when a daemon next turns: requests are never lost, and each operation is written to be
applied once (a second application of the same request finds it done and says so).

Files here are JSON objects: a request ``{"version": 1, "id", "action", "by", "at", ...action's own keys}``, an
answer ``{"version": 1, "id", "ok": bool, "message": str, ...}``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sisdaemon.atomic import write_json_atomic

CONTROL_VERSION = 1
REQUEST_SUFFIX = ".request.json"
ANSWER_SUFFIX = ".answer.json"
#: Answers nobody collected (the command gave up or was killed) are removed after this many seconds.
ANSWER_KEPT_SECONDS = 24 * 3600.0


def control_dir(state_file: Path) -> Path:
    """``<state folder>/<state stem>.control``: the folder of requests to the daemon that holds ``state_file``."""
    return state_file.with_name(f"{state_file.stem}.control")


def new_id() -> str:
    """A request id that sorts by creation time: ``<UTC stamp>-<ns>-<random hex>``."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now / 1e9))
    return f"{stamp}-{now % 1_000_000_000:09d}-{secrets.token_hex(3)}"


def write_request(state_file: Path, request: Mapping[str, Any]) -> str:
    """Write a request for the daemon (``request`` holds ``action`` and its keys); returns its id. Makes the control
    folder (mode 0700) when missing. Raises OSError."""
    folder = control_dir(state_file)
    folder.mkdir(mode=0o700, exist_ok=True)
    request_id = new_id()
    write_json_atomic(
        folder / f"{request_id}{REQUEST_SUFFIX}",
        {**request, "version": CONTROL_VERSION, "id": request_id},
        effect="control_request",
    )
    return request_id


def pending(state_file: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """The requests waiting, oldest first, each as (path, its JSON object, or None when it is not a readable JSON
    object of this version: the daemon answers it with an error). Nothing when the folder does not exist."""
    folder = control_dir(state_file)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(REQUEST_SUFFIX) and name[0] != ".")
    except FileNotFoundError:
        return
    for name in names:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            yield path, None
            continue
        ok = isinstance(data, dict) and data.get("version") == CONTROL_VERSION and isinstance(data.get("action"), str)
        yield path, data if ok else None


def request_id_of(path: Path) -> str:
    """The id of the request at ``path``."""
    return path.name[: -len(REQUEST_SUFFIX)]


def answer(request_path: Path, result: Mapping[str, Any]) -> None:
    """Write the answer to the request at ``request_path``, then remove the request (in that order: a crash between
    the two applies it again, which each operation tolerates). Raises OSError."""
    request_id = request_id_of(request_path)
    write_json_atomic(
        request_path.with_name(f"{request_id}{ANSWER_SUFFIX}"),
        {**result, "version": CONTROL_VERSION, "id": request_id},
        effect="control_answer",
    )
    request_path.unlink(missing_ok=True)


def wait_answer(state_file: Path, request_id: str, timeout: float) -> dict[str, Any] | None:
    """Wait up to ``timeout`` seconds for the answer to request ``request_id``; returns it (and removes its file), or
    None when none came in time (the request stays queued)."""
    path = control_dir(state_file) / f"{request_id}{ANSWER_SUFFIX}"
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            pause.wait(0.1)
            continue
        path.unlink(missing_ok=True)
        return data


def remove_old_answers(state_file: Path, *, now: float | None = None) -> list[Path]:
    """Remove answers older than :data:`ANSWER_KEPT_SECONDS` (nobody will read them); returns what was removed."""
    folder = control_dir(state_file)
    oldest = (time.time() if now is None else now) - ANSWER_KEPT_SECONDS
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.endswith(ANSWER_SUFFIX):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < oldest:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue
    return removed
