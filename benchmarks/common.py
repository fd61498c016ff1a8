"""What every figure of the benchmark shares: the sink process, child processes measured by ``wait4``, a real
daemon run on a config of its own, test files, and min/median over repeats."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

TOKEN = "benchmark-token"
HEADER = b"user_id,login_id,first_name,last_name,email,status\n"
ROW = b"u%08d,login%08d,First,Last,u%08d@example.edu,active\n"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    """A finished child: its exit status, wall seconds, CPU seconds (user + system), peak RSS (KiB) and output."""

    returncode: int
    wall: float
    cpu: float
    peak_rss_kib: int
    stdout: str
    io: dict[str, int]


def run_measured(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout_path: Path | None = None,
    timeout: float = 3600.0,
    stop_after: float | None = None,
) -> Measured:
    """Run ``command`` and measure it with ``wait4`` (its own rusage, not the benchmark's). ``stop_after``: send
    SIGTERM after this many seconds (an idle daemon). The child's /proc io counters are read just before it ends.

    Peak RSS is the child's ``VmHWM`` (its own high-water mark, read every 10 ms): ``ru_maxrss`` would be at least
    the benchmark's own size, which Linux carries over from the fork into the exec'd child. A child that ends before
    its first reading falls back to ``ru_maxrss``."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE  # noqa: SIM115 (closed below)
    started = time.monotonic()
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    child = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=out, stderr=errors, cwd=REPO)
    io: dict[str, int] = {}
    high_water_kib = [0]
    stop = threading.Event()

    def watch() -> None:
        readings = 0
        while not stop.wait(0.01):
            readings += 1
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        high_water_kib[0] = max(high_water_kib[0], int(line.split()[1]))
            if readings % 5 == 0:
                with contextlib.suppress(OSError, ValueError):
                    text = Path(f"/proc/{child.pid}/io").read_text()
                    io.update({key: int(value) for key, value in (line.split(": ") for line in text.splitlines())})
            if stop_after is not None and time.monotonic() - started >= stop_after:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout_bytes = b""
    if child.stdout is not None:
        stdout_bytes = child.stdout.read()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            child.kill()
        time.sleep(0.01)
    wall = time.monotonic() - started
    stop.set()
    watcher.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if stdout_path:
        out.close()  # type: ignore[union-attr]
    errors.seek(0)
    if child.returncode != 0:
        sys.stderr.write(errors.read().decode(errors="replace")[-4000:])
    errors.close()
    return Measured(
        child.returncode,
        wall,
        usage.ru_utime + usage.ru_stime,
        high_water_kib[0] or usage.ru_maxrss,
        stdout_bytes.decode(errors="replace"),
        io,
    )


@contextlib.contextmanager
def sink(run_seconds: float = 0.0) -> Iterator[str]:
    """A sink process on a free loopback port; yields its base URL."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--run-seconds", str(run_seconds)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise SystemExit("the sink did not start")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        child.terminate()
        child.wait(10)


def make_csv(path: Path, size: int, *, first: int = 0) -> None:
    """A users.csv of about ``size`` bytes, written in blocks (the benchmark's own memory stays small)."""
    with open(path, "wb") as out:
        out.write(HEADER)
        number = first
        while out.tell() < size:
            rows = min(16384, max(1, (size - out.tell()) // len(ROW % (0, 0, 0)) + 1))
            out.write(b"".join(ROW % (n, n, n) for n in range(number, number + rows)))
            number += rows


def stats(values: Sequence[float]) -> dict[str, float]:
    """``{"min", "median", "max", "n"}`` of the repeats."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def daemon_config(root: Path, base_url: str, **feed: Any) -> Path:
    """Folders and a config for one feed under ``root``; returns the config's path."""
    for name in ("drop", "work", "done", "failed", "state"):
        (root / name).mkdir(exist_ok=True)
    config = {
        "canvas": {"base_url": base_url, "account_id": "1", "token_env": "BENCH_TOKEN"},
        "state_file": str(root / "state" / "state.json"),
        "lock_dir": str(root / "state" / "locks"),
        "polling": {"interval_seconds": 0.2, "max_interval_seconds": 1},
        "log": {"format": "json", "level": "info"},
        "feeds": [
            {
                "name": "bench",
                "drop_dir": str(root / "drop"),
                "work_dir": str(root / "work"),
                "done_dir": str(root / "done"),
                "failed_dir": str(root / "failed"),
                "settle_seconds": 0.2,
                **feed,
            }
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def daemon_command(config: Path, *, once: bool = True) -> list[str]:
    return [sys.executable, "-m", "sisdaemon", "run", *(["--once"] if once else []), "-c", str(config)]


def events(log: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines, each with ``at`` (its timestamp, seconds since the epoch)."""
    found = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            event["at"] = datetime.fromisoformat(event["timestamp"]).timestamp()
            found.append(event)
    return found


def usage_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
