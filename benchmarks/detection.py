"""The figures of a running daemon (``sisdaemon run``, stopped with SIGTERM), against the sink:

- **detection**: files dropped one at a time (written under a dot-name, renamed in, 0.25 s apart); for each,
  the time from its rename into drop/ to its ``file_claimed`` line, less ``settle_seconds``: what detection adds to
  the settle wait the operator chose (p50, p95, max).
- **burst**: N files renamed into drop/ at once while the daemon idles; the daemon's CPU time per file (user +
  system, from /proc/<pid>/stat, from the burst to the last file filed), its peak RSS (``VmHWM``), and the bytes it
  wrote per file (``wchar`` of /proc/<pid>/io).
- **idle**: the daemon's CPU while nothing happens, with N files (and their sidecars) in done/: percent of one core
  over a window after start-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO, TOKEN, daemon_command, daemon_config, events, make_csv, stats

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of proc(5))


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def _config(root: Path, base_url: str, *, level: str, settle: float, max_in_flight: int) -> Path:
    """A running daemon's config: quick polls (the sink ends each import at once) and the default 60 s cap, which is
    also how long a token check lets files be claimed (gate.py): a cap of a second would make every claim wait for
    the flight worker's next token check, a wait of the benchmark's making."""
    config = daemon_config(root, base_url, max_in_flight=max_in_flight)
    settings = yaml.safe_load(config.read_text())
    settings["log"]["level"] = level
    settings["polling"] = {"interval_seconds": 0.05, "max_interval_seconds": 60}
    settings["feeds"][0]["settle_seconds"] = settle
    config.write_text(yaml.safe_dump(settings))
    return config


@contextlib.contextmanager
def _daemon(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running daemon (not ``--once``), ready once it holds its state lock (the state folder has an entry);
    stopped with SIGTERM."""
    with open(log, "wb") as out:
        child = subprocess.Popen(daemon_command(config, once=False), env={**os.environ, "BENCH_TOKEN": TOKEN},
                                 stdout=out, stderr=subprocess.DEVNULL, cwd=REPO)  # fmt: skip
    try:
        state = config.parent / "state"
        _wait(lambda: child.poll() is None and any(state.iterdir()), 60, "the daemon to start")
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"benchmark: timed out waiting for {what}")
        time.sleep(0.02)


def _filed(root: Path) -> int:
    return sum(1 for name in os.listdir(root / "done") if not name.endswith(".json"))


def _drop(root: Path, name: str, first: int) -> float:
    """A careful uploader's drop: written under a dot-name, renamed in. Returns the rename's wall time."""
    temp = root / "drop" / f".{name}.tmp"
    make_csv(temp, 200, first=first)
    os.rename(temp, root / "drop" / name)
    return time.time()


def latency(base_url: str, count: int, work: Path, *, settle: float = 1.0, gap: float = 0.25) -> dict[str, Any]:
    """Seconds beyond ``settle`` from each drop to its claim, over ``count`` files dropped ``gap`` seconds apart.

    Four files a second is well within what the daemon files per second here (about 13 with the sink answering at
    once), so the figure is detection's and not a queue's: files arriving faster than they can be filed wait for
    room, and that wait grows with the excess (20 a second: 2 s p95 here)."""
    root = Path(tempfile.mkdtemp(dir=work, prefix="detect-"))
    config = _config(root, base_url, level="info", settle=settle, max_in_flight=16)
    log = root / "log"
    dropped: dict[str, float] = {}
    with _daemon(config, log):
        time.sleep(1.0)  # the start-up scan is done; the watch runs
        for number in range(count):
            name = f"users-{number:05d}.csv"
            dropped[name] = _drop(root, name, number * 10)
            time.sleep(gap)
        _wait(lambda: _filed(root) >= count, 120 + count, "the dropped files to be filed")
    claimed = {event["file"]: event["at"] for event in events(log) if event["event"] == "file_claimed"}
    beyond = sorted(claimed[name] - at - settle for name, at in dropped.items() if name in claimed)
    if len(beyond) != count:
        raise SystemExit(f"detection: {len(beyond)} of {count} files claimed")
    return {
        "files": count,
        "settle_seconds": settle,
        "p50": statistics.median(beyond),
        "p95": beyond[max(0, int(0.95 * count) - 1)],
        "max": beyond[-1],
    }


def burst(base_url: str, count: int, work: Path) -> dict[str, float]:
    """``count`` files renamed into drop/ at once while the daemon idles: its cost from the burst to the last filed."""
    root = Path(tempfile.mkdtemp(dir=work, prefix="burst-run-"))
    config = _config(root, base_url, level="warning", settle=1.0, max_in_flight=4)
    staging = root / "staging"
    staging.mkdir()
    for number in range(count):
        make_csv(staging / f"users-{number:06d}.csv", 200, first=number * 10)
    with _daemon(config, root / "log") as child:
        time.sleep(1.0)
        cpu, written, started = _cpu_seconds(child.pid), _written(child.pid), time.monotonic()
        for name in sorted(os.listdir(staging)):
            os.rename(staging / name, root / "drop" / name)
        peak = 0
        end = time.monotonic() + 60 + count
        while _filed(root) < count:
            peak = max(peak, _status_kib(child.pid, "VmHWM"))
            if time.monotonic() > end:
                raise SystemExit(f"burst of {count}: {_filed(root)} filed")
            time.sleep(0.05)
        wall = time.monotonic() - started
        cpu, written = _cpu_seconds(child.pid) - cpu, _written(child.pid) - written
        peak = max(peak, _status_kib(child.pid, "VmHWM"))
    return {
        "cpu_ms_per_file": cpu * 1000 / count,
        "peak_rss_mib": peak / 1024,
        "bytes_written_per_file": written / count,
        "wall_seconds": wall,
    }


def idle(base_url: str, count: int, work: Path, *, window: float = 30.0) -> dict[str, float]:
    """Percent of one core the daemon spends over ``window`` seconds with nothing to do and ``count`` files (each
    with its sidecar) in done/."""
    root = Path(tempfile.mkdtemp(dir=work, prefix="idle-"))
    config = _config(root, base_url, level="warning", settle=1.0, max_in_flight=4)
    done = root / "done"
    for number in range(count):
        name = f"20260101T000000Z_{number:010x}_users.csv"
        (done / name).write_bytes(b"user_id,login_id,status\n")
        (done / f"{name}.result.json").write_bytes(b"{}\n")
    with _daemon(config, root / "log") as child:
        time.sleep(3.0)  # start-up done
        before = _cpu_seconds(child.pid)
        time.sleep(window)
        used = _cpu_seconds(child.pid) - before
    return {"cpu_percent": 100 * used / window, "files_in_done": count, "window_seconds": window}


def run(
    base_url: str,
    *,
    latency_files: int,
    bursts: list[int],
    idle_files: int,
    repeats: int,
    work: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Every running-daemon figure; the burst ``repeats`` times per size, the others once."""
    result: dict[str, Any] = {}
    if latency_files:
        result["detection"] = latency(base_url, latency_files, work)
        say(f"  detection over {latency_files} files: p95 {result['detection']['p95']:.3f} s beyond settle")
    result["burst"] = {}
    for count in bursts:
        samples = [burst(base_url, count, work) for _ in range(repeats)]
        result["burst"][str(count)] = {key: stats([sample[key] for sample in samples]) for key in samples[0]}
        say(f"  burst of {count}: {result['burst'][str(count)]['cpu_ms_per_file']['median']:.1f} ms CPU per file")
    if idle_files:
        result["idle"] = idle(base_url, idle_files, work)
        say(f"  idle with {idle_files} files in done/: {result['idle']['cpu_percent']:.3f} % of a core")
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = []
    if "detection" in result:
        found = result["detection"]
        lines.append(
            f"detection over {found['files']} files (settle {found['settle_seconds']} s), seconds beyond settle: "
            f"p50 {found['p50']:.3f}, p95 {found['p95']:.3f}, max {found['max']:.3f}"
        )
    if result.get("burst"):
        lines.append(
            f"{'burst while running':<22} {'CPU ms/file min/med':>20} {'peak RSS MiB':>13} {'bytes written/file':>19}"
        )
        for count, figures in result["burst"].items():
            cpu, rss, written = figures["cpu_ms_per_file"], figures["peak_rss_mib"], figures["bytes_written_per_file"]
            lines.append(
                f"{count + ' files':<22} {cpu['min']:>9.1f} / {cpu['median']:<8.1f} {rss['median']:>13.1f} "
                f"{written['median']:>19.0f}"
            )
    if "idle" in result:
        found = result["idle"]
        lines.append(
            f"idle with {found['files_in_done']} files in done/: {found['cpu_percent']:.3f} % of a core "
            f"over {found['window_seconds']:.0f} s"
        )
    return lines
