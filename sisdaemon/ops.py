"""``sisdaemon pause | resume | retry | abort``: the operator's commands, with or without a running daemon.

With a daemon running (it holds the state lock), a command writes a request into the control folder (control.py) and
prints the daemon's answer; the daemon applies it and journals it. With none, the command takes the state lock
itself and applies the same operation (operations.py) to the state, journaling it on its stderr; ``retry`` and
``abort`` then run the daemon once, as ``submit`` does, until the files they touched are filed (and every other job
in flight with them). Either way the invoking user (``os.getuid()``'s login name, and ``$SUDO_USER`` when run
through sudo) is recorded with the change.

Exit codes: 0 done; 1 (``retry``) a file sent again ended in failed/ again; 2 the request was refused (no such feed,
file or job: the message says which); 3 a running daemon did not answer in time (the request stays queued and is
applied at its next turn) or the files were not filed within ``--max-wait``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from sisdaemon import control
from sisdaemon.clock import DaemonClock
from sisdaemon.config import Settings
from sisdaemon.daemon import EXIT_GAVE_UP, Daemon
from sisdaemon.jobs import Job, iso
from sisdaemon.ledger import Ledger
from sisdaemon.operations import Operations
from sisdaemon.owner import user_name
from sisdaemon.state import History, LockHeld, StateError, history_path, is_locked, locks, state_lock_path
from sisdaemon.submit import where_it_stands

log = structlog.get_logger("sisdaemon")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
#: Seconds a command waits for a running daemon's answer (it answers at its next turn, within about a second).
ANSWER_WAIT_SECONDS = 30.0


def invoker() -> dict[str, str]:
    """Who runs this command: ``{"by": login name of os.getuid(), "at": ISO 8601 UTC now, "sudo_user"?}``."""
    who = {"by": user_name(os.getuid()), "at": str(iso(time.time()))}
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != who["by"]:
        who["sudo_user"] = sudo_user
    return who


def _print_answer(answer: Mapping[str, Any]) -> None:
    print(answer.get("message", ""), flush=True)
    for item in answer.get("claimed") or []:
        print(f"  {item['file']}: job {item['job_id']} ({item['work_name']} in work/)", flush=True)
    for item in answer.get("refused") or []:
        print(f"  {item['file']}: refused: {item['why']}", flush=True)


def _apply_here(settings: Settings, request: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``request`` under the state lock (no daemon runs). Raises LockHeld when a daemon took the lock."""
    with locks(state_lock_path(settings.state_file)):
        ledger = Ledger(settings.state_file)
        ledger.load(feed.name for feed in settings.feeds)
        operations = Operations({feed.name: feed for feed in settings.feeds}, ledger)
        return operations.apply(request, DaemonClock()())


def send(settings: Settings, request: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """Apply an operator's request: through the running daemon, or here. Returns (the answer, or None when a running
    daemon did not answer in time; whether a daemon applied it). Raises StateError (a damaged state) or OSError."""
    state_file = settings.state_file
    if not is_locked(state_lock_path(state_file)):
        try:
            return _apply_here(settings, request), False
        except LockHeld:
            pass  # a daemon started meanwhile: ask it
    request_id = control.write_request(state_file, request)
    answer = control.wait_answer(state_file, request_id, ANSWER_WAIT_SECONDS)
    if answer is None and not is_locked(state_lock_path(state_file)):
        # The daemon stopped before it took the request: take it back and apply it here.
        path = control.control_dir(state_file) / f"{request_id}{control.REQUEST_SUFFIX}"
        try:
            path.unlink()
        except FileNotFoundError:
            return control.wait_answer(state_file, request_id, 1.0), True
        return _apply_here(settings, request), False
    return answer, True


def _no_answer(settings: Settings) -> int:
    folder = control.control_dir(settings.state_file)
    print(
        f"the running daemon did not answer within {ANSWER_WAIT_SECONDS:.0f} s; the request stays queued in {folder} "
        "and is applied at its next turn (see `journalctl` for why it is slow)",
        flush=True,
    )
    return EXIT_GAVE_UP


def pause_or_resume(settings: Settings, action: str, feed: str, reason: str | None) -> int:
    """``sisdaemon pause FEED [--reason TEXT]`` / ``sisdaemon resume FEED``. Returns the exit code."""
    request: dict[str, Any] = {"action": action, "feed": feed}
    if action == "pause":
        request["reason"] = reason
    sent = _send_and_print(settings, request)
    if isinstance(sent, int):
        return sent
    return EXIT_OK if sent[0].get("ok") else EXIT_REFUSED


def _send_and_print(settings: Settings, request: Mapping[str, Any]) -> tuple[dict[str, Any], bool] | int:
    """Send ``request`` (with who runs the command) and print the answer: (the answer, whether a running daemon
    applied it), or the exit code when it could not be sent (a damaged state, an OS error) or was not answered."""
    try:
        answer, by_daemon = send(settings, {**request, **invoker()})
    except (StateError, OSError) as error:
        print(f"sisdaemon {request['action']}: {error}", flush=True)
        return EXIT_GAVE_UP
    if answer is None:
        return _no_answer(settings)
    _print_answer(answer)
    return answer, by_daemon


def retry_or_abort(
    settings: Settings, config_path: Path, request: dict[str, Any], *, wait: bool, max_wait: float
) -> int:
    """``sisdaemon retry`` / ``sisdaemon abort``: the request applied, then (with no daemon running) the daemon run
    once until the jobs it touched are filed, or (``wait``) their results waited for. Returns the exit code."""
    action = request["action"]
    sent = _send_and_print(settings, request)
    if isinstance(sent, int):
        return sent
    answer, by_daemon = sent
    job_ids = [item["job_id"] for item in answer.get("claimed") or []]
    if answer.get("job_id"):
        job_ids.append(str(answer["job_id"]))
    code = EXIT_OK if answer.get("ok") else EXIT_REFUSED
    if not job_ids:
        return code
    if not by_daemon:
        daemon = Daemon(settings, config_path=config_path, once=True, max_wait=max_wait, only={}, on_event=_print)
        with contextlib.suppress(LockHeld):  # a daemon started meanwhile: it carries the jobs on
            daemon.run()
        wait = True
    if not wait:
        return code
    results = _wait_filed(settings, job_ids, max_wait)
    if results is None:
        print(f"not all filed after {max_wait:.0f} s; they stay in the daemon's hands", flush=True)
        return EXIT_GAVE_UP
    if code != EXIT_OK:
        return code
    return EXIT_FAILED if action == "retry" and any(record.get("folder") != "done" for record in results) else EXIT_OK


def _print(event: str, job: Job) -> None:
    """The daemon run here: one line per change of a job, as ``submit --wait`` prints them."""
    if event in ("submitted", "progress"):
        print(f"job {job.job_id} ({job.name}): {where_it_stands(job.to_dict())}", flush=True)


def _wait_filed(settings: Settings, job_ids: list[str], max_wait: float) -> list[dict[str, Any]] | None:
    """Wait for the history records of ``job_ids`` (printing each once); None when not all came in ``max_wait``."""
    deadline = time.monotonic() + max_wait
    found: dict[str, dict[str, Any]] = {}
    pause = threading.Event()
    while True:
        for feed in settings.feeds:
            try:
                history = History(history_path(settings.state_file, feed.name))
            except StateError:
                continue
            for record in history.records:
                job_id = str(record.get("job_id"))
                if job_id in job_ids and job_id not in found:
                    found[job_id] = record
                    print(
                        f"job {job_id}: {record.get('outcome')}"
                        + (f" ({record.get('reason_code')})" if record.get("reason_code") else "")
                        + f" -> {record.get('folder')}/{record.get('work_name')}",
                        flush=True,
                    )
        if len(found) == len(set(job_ids)):
            return list(found.values())
        if time.monotonic() >= deadline:
            return None
        pause.wait(0.3)
