"""Hooks (on_finished, on_failed) run by a real daemon process with real hook scripts."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from sisdaemon.hooks import DEFAULT_PATH, QUEUE_LIMIT, HookRun, Hooks
from sisdaemon.sandbox import Sandbox
from tests.daemon.conftest import TOKEN, TOKEN_ENV, DaemonProcess, Spool, wait_for

USERS = b"user_id,login_id,first_name,last_name,email,status\nu1,user1,Ada,One,a@example.edu,active\n"
BAD_HEADERS = b"course_id,randomness,smelly\ntest_1,TC 101,Test Course 101\n"


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def events(process: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [event for event in process.events() if event.get("event") == name]


def test_on_finished_gets_the_sidecar_s_path_and_an_environment_without_the_token(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    record = spool.root / "record"
    hook = script(
        spool.root / "record.sh",
        f'{{ echo "$@"; env; }} > {record}.tmp && mv {record}.tmp {record}\necho "told the registrar"\n',
    )
    spool.feed["hooks"] = {"on_finished": [hook, "--ok"], "on_failed": [script(spool.root / "no.sh", "exit 0\n")]}
    process = daemon_process()
    spool.drop_file("users.csv", USERS)

    wait_for(record.exists, what="the hook to run")
    [finished] = wait_for(lambda: events(process, "hook_finished"), what="hook_finished")
    arguments, *environment = record.read_text().splitlines()
    option, sidecar = arguments.split(" ")
    assert option == "--ok" and json.loads(Path(sidecar).read_text())["outcome"] == "imported"
    assert Path(sidecar).parent == spool.done
    variables = dict(line.split("=", 1) for line in environment if "=" in line)
    assert variables["SISDAEMON_FEED"] == "nightly" and variables["SISDAEMON_OUTCOME"] == "imported"
    assert variables["SISDAEMON_FOLDER"] == "done" and variables["SISDAEMON_SIDECAR"] == sidecar
    assert TOKEN_ENV not in variables and not any(TOKEN in value for value in variables.values())
    assert "CREDENTIALS_DIRECTORY" not in variables
    assert finished["hook"] == "on_finished" and finished["output"] == "told the registrar"
    assert not events(process, "hook_failed")
    assert process.terminate() == 0


def test_on_failed_runs_for_a_file_in_failed_and_a_failing_hook_changes_nothing_for_the_file(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    noisy = script(spool.root / "noisy.sh", f"head -c 100000 /dev/zero | tr '\\\\0' x\necho {TOKEN}\nexit 3\n")
    spool.feed["hooks"] = {"on_failed": [noisy]}
    process = daemon_process()
    spool.drop_file("bad.csv", BAD_HEADERS)

    [failed] = wait_for(lambda: events(process, "hook_failed"), what="hook_failed")
    assert failed["level"] == "error" and failed["exit_code"] == 3 and failed["hook"] == "on_failed"
    assert len(failed["output"]) < 5000 and "more bytes not shown" in failed["output"]
    assert TOKEN not in process.output()
    assert len(spool.filed("failed")) == 1 and spool.sidecars("failed")[0]["outcome"] == "failed_with_messages"
    assert process.terminate() == 0


def test_a_hook_that_hangs_is_killed_with_what_it_started_and_holds_up_no_file(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    pids = spool.root / "pids"
    hang = script(spool.root / "hang.sh", f"sleep 300 &\necho $! > {pids}\nwait\n")
    spool.feed["hooks"] = {"on_finished": [hang], "timeout_seconds": 2}
    process = daemon_process()
    spool.drop_file("users.csv", USERS)
    wait_for(pids.exists, what="the hook to start its child")
    spool.drop_file("more.csv", USERS.replace(b"u1", b"u2"))
    wait_for(lambda: len(spool.filed("done")) == 2, what="the second file filed while the hook hangs")

    [timed_out] = wait_for(lambda: events(process, "hook_timed_out"), what="hook_timed_out")
    assert timed_out["timeout_seconds"] == 2
    child = int(pids.read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in _state(child), what="the hook's child killed")
    assert process.terminate() == 0


def test_a_hook_that_cannot_be_started_is_said_and_sigterm_does_not_wait_for_a_hanging_hook(
    spool: Spool, sandbox: Sandbox, daemon_process: Callable[..., DaemonProcess]
) -> None:
    began = spool.root / "began"
    spool.feed["hooks"] = {
        "on_finished": [script(spool.root / "slow.sh", f"touch {began}\nsleep 300\n")],
        "on_failed": [str(spool.root / "missing-hook")],
        "timeout_seconds": 600,
    }
    process = daemon_process()
    spool.drop_file("bad.csv", BAD_HEADERS)
    [missing] = wait_for(lambda: events(process, "hook_not_started"), what="hook_not_started")
    assert missing["command"].endswith("missing-hook")
    spool.drop_file("users.csv", USERS)
    wait_for(began.exists, what="the slow hook to start")
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    assert time.monotonic() - started < 5
    assert events(process, "hook_stopped")[0]["hook"] == "on_finished"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return "Z"


def test_the_hook_environment_keeps_only_the_allowed_variables() -> None:
    from sisdaemon.hooks import hook_environment

    environment = hook_environment(
        {"PATH": "/bin", TOKEN_ENV: TOKEN, "CREDENTIALS_DIRECTORY": "/run/credentials/x", "HOME": "/var/lib/x"},
        feed="nightly",
        job_id="ab",
        outcome="imported",
        folder="done",
        sidecar=Path("/spool/done/x.result.json"),
    )
    assert set(environment) == {
        "PATH",
        "HOME",
        "SISDAEMON_FEED",
        "SISDAEMON_JOB_ID",
        "SISDAEMON_OUTCOME",
        "SISDAEMON_FOLDER",
        "SISDAEMON_SIDECAR",
    }
    assert environment["PATH"] == "/bin" and environment["SISDAEMON_SIDECAR"] == "/spool/done/x.result.json"


def test_the_hook_worker_runs_hooks_never_wakes_while_idle_and_stops_at_once(tmp_path: Path) -> None:
    results: list[str] = []
    hooks = Hooks(on_ran=lambda feed, hook, result: results.append(result))
    hooks.start()
    record = tmp_path / "record"
    hook = script(tmp_path / "record.sh", f'echo "$1" > {record}\n')
    hooks.submit(HookRun("nightly", "on_finished", (hook, "x.result.json"), 10.0, {"PATH": DEFAULT_PATH}, "ab"))
    wait_for(lambda: results == ["ok"], what="the hook to run")
    assert record.read_text() == "x.result.json\n"
    [worker] = [thread for thread in threading.enumerate() if thread.name == "sisdaemon-hooks"]
    wait_for(hooks.idle, what="the worker to go idle")
    before = _switches(worker)
    threading.Event().wait(1.0)  # a window to measure in, not a wait for something: an idle worker sleeps through it
    assert _switches(worker) - before <= 1  # a worker that looked at its queue 5 times a second switched 5 times
    started = time.monotonic()
    assert hooks.stop() is True
    assert time.monotonic() - started < 1.0 and not worker.is_alive()


def test_a_stop_ends_the_hook_worker_with_its_queue_full_and_a_hook_hanging(tmp_path: Path) -> None:
    results: list[str] = []
    hooks = Hooks(on_ran=lambda feed, hook, result: results.append(result))
    hooks.start()
    began = tmp_path / "began"
    hang = HookRun(
        "nightly", "on_finished", (script(tmp_path / "hang.sh", f"touch {began}\nsleep 300\n"),), 600.0, {}, "a"
    )
    hooks.submit(hang)
    wait_for(began.exists, what="the hanging hook to start")
    for number in range(QUEUE_LIMIT + 3):  # the queue fills; the last ones are dropped
        hooks.submit(HookRun("nightly", "on_finished", ("/bin/true",), 10.0, {}, f"b{number}"))
    assert results == ["dropped"] * 3
    [worker] = [thread for thread in threading.enumerate() if thread.name == "sisdaemon-hooks"]
    started = time.monotonic()
    with structlog.testing.capture_logs() as said:
        assert hooks.stop() is True
    assert time.monotonic() - started < 3.0 and not worker.is_alive()
    assert results == ["dropped"] * 3 + ["failed"]  # the hanging hook, killed
    assert len([line for line in said if line["event"] == "hook_not_run"]) == QUEUE_LIMIT  # each queued one said


def _switches(thread: threading.Thread) -> int:
    """How many times ``thread`` gave up the CPU (voluntary and forced context switches), from /proc."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
