"""Benchmark: ``sisdaemon diff``'s comparison (sis_csv.compare_files, which the daemon also runs for batch-mode and
diffing feeds) on users.csv files of growing size: time and the peak RSS of a process that does only that, to show
that memory stays flat as the files grow (issue 11: a million rows in constant memory, keyed by the SIS id).

For each size N (default 100,000 and 1,000,000 rows), writes an earlier and a newer users.csv (the newer one with 1%
of the rows removed, 1% added and 1% changed), then compares them in a fresh Python process and prints rows per
second and that process's peak RSS.

    .venv/bin/python benchmarks/diff_speed.py [N ...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = "user_id,login_id,first_name,last_name,email,status\n"


def write(path: Path, rows: int, *, newer: bool) -> None:
    with path.open("w", encoding="utf-8") as sink:
        sink.write(HEADER)
        for index in range(rows):
            if newer and index % 100 == 1:
                continue  # removed
            first = "Changed" if newer and index % 100 == 2 else "Zoë"
            sink.write(f"u{index:08d},login{index:08d},{first},Last,u{index:08d}@example.edu,active\n")
        if newer:
            for index in range(rows, rows + rows // 100):  # added
                sink.write(f"u{index:08d},login{index:08d},New,Last,u{index:08d}@example.edu,active\n")


def one(before: Path, after: Path) -> None:
    """Compare the two files in this process; print a JSON line with the result, the time and the peak RSS."""
    from sisdaemon.sis_csv import compare_files

    started = time.monotonic()
    comparison = compare_files(before, after, temp_dir=before.parent)
    took = time.monotonic() - started
    user = comparison.types["user"]
    print(
        json.dumps(
            {
                "seconds": round(took, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "added": user.added,
                "removed": user.removed,
                "changed": user.changed,
            }
        )
    )


def main(sizes: list[int]) -> None:
    print(f"{'rows':>10} {'MB (both)':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}  added/removed/changed")
    for rows in sizes:
        with tempfile.TemporaryDirectory() as folder:
            before, after = Path(folder) / "before.csv", Path(folder) / "after.csv"
            write(before, rows, newer=False)
            write(after, rows, newer=True)
            size = before.stat().st_size + after.stat().st_size
            child = subprocess.run(
                [sys.executable, __file__, "--one", str(before), str(after)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout)
            both = 2 * rows
            print(
                f"{rows:>10} {size / 1e6:>10.1f} {result['seconds']:>8.2f} {both / result['seconds']:>10,.0f} "
                f"{result['peak_rss_mb']:>12.1f}  {result['added']}/{result['removed']}/{result['changed']}"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main([int(arg) for arg in sys.argv[1:]] or [100_000, 1_000_000])
