"""Benchmark: the pre-flight check's speed and memory on a large users.csv (issue 11: a million rows in constant
memory, at a speed reported here).

Writes a users.csv of ROWS rows (default 1,000,000; ~40 MB) in a temp folder, checks it with the same function the
daemon and ``sisdaemon validate`` use, and prints rows per second, MB per second and the process's peak RSS.

    .venv/bin/python benchmarks/preflight_speed.py [ROWS]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from sisdaemon import sis_csv


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.csv"
        with path.open("w", encoding="utf-8") as sink:
            sink.write("user_id,login_id,first_name,last_name,email,status\n")
            for index in range(rows):
                sink.write(f"u{index:08d},login{index:08d},Zoë,Last,u{index:08d}@example.edu,active\n")
        size = path.stat().st_size
        started = time.monotonic()
        report = sis_csv.check_file(path)
        took = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.summary())
    print(
        f"{rows} rows, {size / 1e6:.1f} MB in {took:.2f} s: {rows / took:,.0f} rows/s, {size / 1e6 / took:.1f} MB/s; "
        f"peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
