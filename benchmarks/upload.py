"""The upload figure: peak RSS and wall time of one upload of the same users.csv to the same sink, for sisdaemon
(the real daemon, ``run --once``) and its peers: sisdaemon's client alone (multipart, as the daemon sends), the same
reads and hash sent as a raw body (``extension=csv``, which the daemon does not send: the file would lose its name in
Canvas), the hash alone, the classic requests example, canvasapi's ``create_sis_import``, ``curl --data-binary`` and
``curl -T``.

sisdaemon's time is from its ``upload_started`` event to ``import_submitted`` (the check of the claimed file, the
POST with the hash taken on the way, Canvas's answer); its peak RSS is the whole daemon's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    TOKEN,
    Measured,
    daemon_command,
    daemon_config,
    events,
    make_csv,
    run_measured,
    stats,
)

PEERS = (
    "sisdaemon",
    "client multipart",
    "client raw body",
    "sha256 alone",
    "requests",
    "canvasapi",
    "curl --data-binary",
    "curl -T",
)
#: The Python peers, by their name in benchmarks.peers.
_PYTHON = {
    "client multipart": "client",
    "client raw body": "raw",
    "sha256 alone": "sha256",
    "requests": "requests",
    "canvasapi": "canvasapi",
}


def _curl(mode: str, base_url: str, path: Path) -> Measured:
    body = ["--data-binary", f"@{path}"] if mode == "data-binary" else ["-T", str(path), "-X", "POST"]
    return run_measured(
        [
            "curl", "-sS", "-o", "/dev/null", "-w", "SECONDS %{time_total}\n", "-H", f"Authorization: Bearer {TOKEN}",
            "-H", "Content-Type: text/csv", *body, f"{base_url}/api/v1/accounts/1/sis_imports?extension=csv",
        ]
    )  # fmt: skip


def _python_peer(name: str, base_url: str, path: Path) -> Measured:
    return run_measured([sys.executable, "-m", "benchmarks.peers", name, base_url, TOKEN, str(path)])


def _seconds(measured: Measured) -> float | None:
    for line in measured.stdout.splitlines():
        if line.startswith("SECONDS "):
            return float(line.split()[1])
    return None


def _daemon(base_url: str, path: Path, work: Path) -> tuple[Measured, float | None]:
    root = Path(tempfile.mkdtemp(dir=work, prefix="daemon-"))
    config = daemon_config(root, base_url)
    drop = root / "drop"
    os.link(path, drop / "users.csv")
    log = root / "log"
    measured = run_measured(daemon_command(config), env={"BENCH_TOKEN": TOKEN}, stdout_path=log)
    found = [event for event in events(log) if event.get("file") == "users.csv"]
    times = {event["event"]: event["at"] for event in found}
    seconds = None
    if "upload_started" in times and "import_submitted" in times:
        seconds = times["import_submitted"] - times["upload_started"]
    for item in (drop / "users.csv", root / "done"):
        if item.is_dir():
            for name in os.listdir(item):
                os.unlink(item / name)
    return measured, seconds


def run(base_url: str, sizes_mib: list[int], repeats: int, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Every peer on every size, ``repeats`` times each, in turn (so that a slow moment of the machine is shared).
    Returns ``{size: {peer: {"peak_rss_mib": stats, "seconds": stats, "mib_per_s": stats, "failed": n}}}``."""
    result: dict[str, Any] = {}
    for size in sizes_mib:
        path = work / f"users-{size}.csv"
        make_csv(path, size << 20)
        actual = path.stat().st_size
        samples: dict[str, dict[str, list[float]]] = {peer: {"rss": [], "seconds": []} for peer in PEERS}
        failures = dict.fromkeys(PEERS, 0)
        for repeat in range(repeats):
            for peer in PEERS:
                seconds: float | None
                if peer == "sisdaemon":
                    measured, seconds = _daemon(base_url, path, work)
                elif peer.startswith("curl"):
                    measured = _curl("data-binary" if "binary" in peer else "T", base_url, path)
                    seconds = _seconds(measured)
                else:
                    measured = _python_peer(_PYTHON[peer], base_url, path)
                    seconds = _seconds(measured)
                if measured.returncode != 0 or seconds is None:
                    failures[peer] += 1
                    say(f"  {size} MiB {peer}: failed (exit {measured.returncode})")
                    continue
                samples[peer]["rss"].append(measured.peak_rss_kib / 1024)
                samples[peer]["seconds"].append(seconds)
                rss = measured.peak_rss_kib / 1024
                say(f"  {size} MiB #{repeat + 1} {peer}: {seconds:.3f} s, peak RSS {rss:.1f} MiB")
        path.unlink()
        result[str(size)] = {
            peer: {
                "file_bytes": actual,
                "failed": failures[peer],
                **(
                    {
                        "peak_rss_mib": stats(values["rss"]),
                        "seconds": stats(values["seconds"]),
                        "mib_per_s": stats([actual / 2**20 / s for s in values["seconds"]]),
                    }
                    if values["seconds"]
                    else {}
                ),
            }
            for peer, values in samples.items()
        }
    return result


def table(result: dict[str, Any]) -> list[str]:
    """The upload rows of the printed table: per size and peer, peak RSS and seconds (min / median), and the
    median time as a multiple of curl -T's."""
    lines = [f"{'upload':<24} {'MiB':>6} {'peak RSS MiB min/med':>21} {'seconds min/med':>17} {'x curl -T':>10}"]
    for size, peers in result.items():
        reference = peers.get("curl -T", {}).get("seconds", {}).get("median")
        for peer, figures in peers.items():
            if "seconds" not in figures:
                lines.append(f"{peer:<24} {size:>6} {'failed':>21}")
                continue
            rss, seconds = figures["peak_rss_mib"], figures["seconds"]
            ratio = f"{seconds['median'] / reference:.2f}" if reference else "-"
            lines.append(
                f"{peer:<24} {size:>6} {rss['min']:>10.1f} / {rss['median']:<8.1f} "
                f"{seconds['min']:>7.3f} / {seconds['median']:<7.3f} {ratio:>10}"
            )
    return lines
