"""Benchmark: the daemon's memory stays flat whatever the size of the file it uploads (docs/design.md promise 6).

Runs the real daemon (``sisdaemon run --once``) as a child process against the sandbox in this process, once per
file size, and prints the child's peak RSS (from /proc/<pid>/status VmHWM), the upload time (hash, streamed
multipart POST, answer) and the whole run (which includes the sandbox importing every row, slow in pure Python).

    .venv/bin/python benchmarks/upload_memory.py [SIZE_MB ...]     # default: 8 64 256
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml

from sisdaemon.sandbox import Sandbox

TOKEN = "benchmark-token"
ROW = b"u%08d,login%08d,First,Last,u%08d@example.edu,active\n"


def make_csv(path: Path, size: int) -> None:
    """A users.csv of about ``size`` bytes, written in 1 MiB blocks (the benchmark's own memory stays small)."""
    with open(path, "wb") as out:
        out.write(b"user_id,login_id,first_name,last_name,email,status\n")
        number = 0
        while out.tell() < size:
            block = b"".join(ROW % (n, n, n) for n in range(number, number + 16384))
            number += 16384
            out.write(block)


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def upload_seconds(log: Path) -> float:
    """Seconds from the daemon's ``upload_started`` event to ``import_submitted`` (hash + upload + answer)."""
    times = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] in ("upload_started", "import_submitted"):
            times[event["event"]] = datetime.fromisoformat(event["timestamp"]).timestamp()
    return times["import_submitted"] - times["upload_started"]


def run(size_mb: int) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as temp, Sandbox(token=TOKEN, account_id=1, fast=True) as sandbox:
        root = Path(temp)
        for name in ("drop", "work", "done", "failed", "state"):
            (root / name).mkdir()
        config = {
            "canvas": {"base_url": sandbox.url, "account_id": "1", "token_env": "BENCH_TOKEN"},
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
                }
            ],
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        make_csv(root / "drop" / ".users.csv.tmp", size_mb << 20)
        os.rename(root / "drop" / ".users.csv.tmp", root / "drop" / "users.csv")
        started = time.monotonic()
        with open(root / "log", "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "sisdaemon", "run", "--once", "-c", str(root / "config.yaml")],
                env={**os.environ, "BENCH_TOKEN": TOKEN},
                stdout=log,
            )
            peak = 0
            pause = threading.Event()
            while child.poll() is None:
                peak = max(peak, peak_rss_kib(child.pid))
                pause.wait(0.05)
        elapsed = time.monotonic() - started
        if child.returncode != 0:
            raise SystemExit(f"daemon exited {child.returncode} for {size_mb} MiB")
        return peak, elapsed, upload_seconds(root / "log")


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [8, 64, 256]
    print(f"{'file MiB':>9} {'daemon peak RSS MiB':>20} {'upload s':>9} {'upload MiB/s':>13} {'whole run s':>12}")
    for size in sizes:
        peak, elapsed, upload = run(size)
        print(f"{size:>9} {peak / 1024:>20.1f} {upload:>9.2f} {size / upload:>13.1f} {elapsed:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
