"""Fixtures for daemon tests: a real sandbox on loopback, real folders, a daemon in a thread or a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from sisdaemon.clock import DaemonClock
from sisdaemon.config import load_config
from sisdaemon.daemon import Daemon
from sisdaemon.sandbox import Sandbox

TOKEN = "sd-test-token-3f9a7c1e5b"
TOKEN_ENV = "SISDAEMON_TEST_TOKEN"
OTHER_TOKEN = "sd-other-user-token-88d1"
#: Deadline for conditions in tests (seconds): generous, so a loaded 2-core machine still passes.
DEADLINE = 60.0


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a true value; fail the test after ``timeout`` seconds."""
    pause = threading.Event()
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.05)


@dataclass
class Spool:
    """A feed's folders and config in a temp folder, pointed at a sandbox."""

    root: Path
    url: str
    feed: dict[str, Any] = field(default_factory=dict)
    polling: dict[str, Any] = field(default_factory=dict)
    canvas: dict[str, Any] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)  # more top-level keys (e.g. metrics)
    state_folder: str = "state"  # under root

    @property
    def drop(self) -> Path:
        return self.root / "drop"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def state_file(self) -> Path:
        return self.root / self.state_folder / "state.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def write_config(self) -> Path:
        feed = {
            "name": "nightly",
            "drop_dir": str(self.drop),
            "work_dir": str(self.work),
            "done_dir": str(self.done),
            "failed_dir": str(self.failed),
            "settle_seconds": 1.0,
            "empty_grace_seconds": 2.0,
            "rescan_seconds": 2.0,
            # These tests judge what Canvas (the sandbox) makes of a file, bad files included, so the pre-flight
            # check, which would keep those from Canvas, is off unless a test turns it on (test_preflight_live.py).
            "preflight": "off",
            **self.feed,
        }
        config = {
            "canvas": {
                "base_url": self.url,
                "account_id": "1",
                "token_env": TOKEN_ENV,
                "timeout_seconds": 10,
                "upload_timeout_seconds": 10,
                **self.canvas,
            },
            "state_file": str(self.state_file),
            "lock_dir": str(self.root / "locks"),
            "polling": {
                "interval_seconds": 0.2,
                "max_interval_seconds": 1.0,
                "errors_csv_wait_seconds": 10,
                "resend_after_seconds": 2.0,
                **self.polling,
            },
            "log": {"format": "json", "level": "debug"},
            "feeds": [feed],
            **self.top,
        }
        self.config.write_text(yaml.safe_dump(config))
        return self.config

    def drop_file(self, name: str, data: bytes) -> Path:
        """Write a file the way a careful uploader does: under a dot-name, then renamed into place."""
        temp = self.drop / f".{name}.tmp"
        temp.write_bytes(data)
        os.rename(temp, self.drop / name)
        return self.drop / name

    def filed(self, folder: str = "done") -> list[Path]:
        return sorted(
            path
            for path in (self.root / folder).iterdir()
            # not sidecars (nor those of files sent again), errors CSVs, nor the dot-temp files of atomic writes
            if not path.name.endswith((".result.json", ".result.retried.json", ".errors.csv"))
            and not path.name.startswith(".")
        )

    def sidecars(self, folder: str = "done") -> list[dict[str, Any]]:
        return [json.loads(path.read_text()) for path in sorted((self.root / folder).glob("*.result.json"))]

    def all_filed(self, count: int) -> bool:
        return len(self.filed("done")) + len(self.filed("failed")) >= count


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(
        token=TOKEN,
        account_id=1,
        fast=True,
        terms=["2026FA"],
        other_token=OTHER_TOKEN,
        unauthorized_token="unauthorized-token",
    ) as server:
        yield server


@pytest.fixture
def spool(tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Spool:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    result = Spool(tmp_path, sandbox.url)
    for folder in (result.drop, result.work, result.done, result.failed, result.state_file.parent):
        folder.mkdir(parents=True)
    result.write_config()
    return result


class DaemonThread:
    """A Daemon running in a thread of the test process (signals are the test's, not the daemon's)."""

    def __init__(
        self, config: Path, *, once: bool = False, max_wait: float = DEADLINE, clock: DaemonClock | None = None
    ) -> None:
        self.daemon = Daemon(load_config(config), config_path=config, once=once, max_wait=max_wait, clock=clock)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon-under-test")

    def _run(self) -> None:
        try:
            self.exit_code = self.daemon.run()
        except BaseException as error:  # surfaced by join()
            self.error = error

    def start(self) -> DaemonThread:
        self.thread.start()
        return self

    def join(self, timeout: float = DEADLINE + 30) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not stop"
        if self.error is not None:
            raise self.error
        return self.exit_code

    def stop(self) -> int | None:
        self.daemon.request_stop()
        return self.join()


@pytest.fixture
def run_daemon(spool: Spool) -> Iterator[Callable[..., DaemonThread]]:
    started: list[DaemonThread] = []

    def start(**kwargs: Any) -> DaemonThread:
        daemon = DaemonThread(spool.write_config(), **kwargs).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.thread.is_alive():
            daemon.stop()


class DaemonProcess:
    """``python -m sisdaemon run`` as a real process; its stdout and stderr go to files."""

    def __init__(self, spool: Spool, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = spool.root / f"daemon-{time.monotonic_ns()}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in wait()
        environment = {**os.environ, TOKEN_ENV: TOKEN, **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sisdaemon", "run", "-c", str(spool.config), *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.wait()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.output().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


@pytest.fixture
def daemon_process(spool: Spool) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(*args: str, **kwargs: Any) -> DaemonProcess:
        spool.write_config()
        process = DaemonProcess(spool, *args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill()


def creates(sandbox: Sandbox) -> list[Any]:
    """The POSTs that reached the sandbox's create route."""
    return [request for request in sandbox.requests if request.route == "create" and request.method == "POST"]
