"""``python -m benchmarks``: every figure of issue 9 in one run, against one loopback sink; prints the table and
writes JSON.

    python -m benchmarks                                   # modest sizes: a few minutes on 2 cores
    python -m benchmarks --sizes-mib 420,2048 --backlog 100,10000 --bursts 10000 --repeats 3   # the issue's sizes
    python -m benchmarks --only upload --json out.json

docs/performance.md says what each figure measures and holds the table of the last full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import burst, detection, replay, upload
from benchmarks.common import REPO, sink

#: The figures, in the order they run: name -> (run(args, base_url, work, say) -> result, table(result) -> lines).
Figure = tuple[Callable[[argparse.Namespace, str, Path, Callable[[str], None]], Any], Callable[[Any], list[str]]]


def _upload(args: argparse.Namespace, base_url: str, work: Path, say: Callable[[str], None]) -> Any:
    return upload.run(base_url, args.sizes_mib, args.repeats, work, say)


def _polling(args: argparse.Namespace, base_url: str, work: Path, say: Callable[[str], None]) -> Any:
    return replay.run()


def _burst(args: argparse.Namespace, base_url: str, work: Path, say: Callable[[str], None]) -> Any:
    return burst.run(base_url, args.backlog, args.repeats, work, say)


def _running(args: argparse.Namespace, base_url: str, work: Path, say: Callable[[str], None]) -> Any:
    return detection.run(
        base_url,
        latency_files=args.latency_files,
        bursts=args.bursts,
        idle_files=args.idle_files,
        repeats=args.repeats,
        work=work,
        say=say,
    )


FIGURES: dict[str, Figure] = {
    "upload": (_upload, upload.table),
    "polling": (_polling, replay.table),
    "backlog": (_burst, burst.table),
    "running": (_running, detection.table),
}


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "curl": curl,
        "commit": commit,
    }


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    result.add_argument("--only", default=",".join(FIGURES), help=f"figures to run, of: {', '.join(FIGURES)}")
    result.add_argument("--repeats", type=int, default=3, help="runs of each measurement (min and median shown)")
    result.add_argument("--sizes-mib", type=_sizes, default=[64, 256], help="upload sizes in MiB (default 64,256)")
    result.add_argument(
        "--backlog", type=_sizes, default=[100, 1000], help="files waiting at start-up (default 100,1000)"
    )
    result.add_argument(
        "--bursts", type=_sizes, default=[1000], help="files dropped at once into a running daemon (default 1000)"
    )
    result.add_argument("--latency-files", type=int, default=200, help="files for detection latency (default 200)")
    result.add_argument(
        "--idle-files", type=int, default=100_000, help="files in done/ while the daemon idles (default 100000)"
    )
    result.add_argument("--json", type=Path, default=Path("benchmark-results.json"), help="where the JSON goes")
    result.add_argument("--work", type=Path, default=None, help="folder for test files (default: a temp folder)")
    result.add_argument("--quiet", action="store_true", help="print only the table")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    chosen = [name for name in args.only.split(",") if name]
    unknown = [name for name in chosen if name not in FIGURES]
    if unknown:
        parser().error(f"unknown figure(s): {', '.join(unknown)}")

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "settings": {
            "repeats": args.repeats,
            "sizes_mib": args.sizes_mib,
            "backlog": args.backlog,
            "bursts": args.bursts,
            "latency_files": args.latency_files,
            "idle_files": args.idle_files,
        },
        "figures": {},
    }
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sisdaemon-bench-") as temp, sink() as base_url:
        for name in chosen:
            say(f"{name} ...")
            run, _ = FIGURES[name]
            report["figures"][name] = run(args, base_url, Path(temp), say)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    machine = report["machine"]
    print(f"sisdaemon benchmark, commit {machine['commit']}, {machine['cpus']} CPUs ({machine['cpu']}), "
          f"Python {machine['python']}, {machine['curl']}")  # fmt: skip
    for name in chosen:
        print()
        print("\n".join(FIGURES[name][1](report["figures"][name])))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
