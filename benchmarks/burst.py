"""The backlog figure: N small files waiting in drop/ when a real daemon starts (``run --once``, the sink finishing
every import at once): the daemon's CPU time per file (user + system, from ``wait4``), its peak RSS, and the bytes
it wrote per file (``wchar`` of /proc/<pid>/io: state, history and sidecar writes, and its log at level warning)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import TOKEN, daemon_command, daemon_config, make_csv, run_measured, stats


def _once(base_url: str, count: int, work: Path) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(dir=work, prefix="burst-"))
    config = daemon_config(root, base_url, max_in_flight=4)
    settings = yaml.safe_load(config.read_text())
    settings["log"]["level"] = "warning"
    settings["polling"] = {"interval_seconds": 0.05, "max_interval_seconds": 0.2}
    config.write_text(yaml.safe_dump(settings))
    for number in range(count):
        make_csv(root / "drop" / f"users-{number:06d}.csv", 200, first=number * 10)
    measured = run_measured(daemon_command(config), env={"BENCH_TOKEN": TOKEN}, stdout_path=root / "log")
    done = sum(1 for path in (root / "done").iterdir() if not path.name.endswith(".json"))
    if measured.returncode != 0 or done != count:
        raise SystemExit(f"burst of {count}: exit {measured.returncode}, {done} files in done/")
    return {
        "cpu_ms_per_file": measured.cpu * 1000 / count,
        "peak_rss_mib": measured.peak_rss_kib / 1024,
        "bytes_written_per_file": measured.io.get("wchar", 0) / count,
        "wall_seconds": measured.wall,
    }


def run(base_url: str, counts: list[int], repeats: int, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """``{count: {figure: stats}}`` over ``repeats`` runs of each backlog size."""
    result: dict[str, Any] = {}
    for count in counts:
        samples = [_once(base_url, count, work) for _ in range(repeats)]
        result[str(count)] = {key: stats([sample[key] for sample in samples]) for key in samples[0]}
        say(f"  backlog {count}: {result[str(count)]['cpu_ms_per_file']['median']:.1f} ms CPU per file")
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = [f"{'backlog at start-up':<22} {'CPU ms/file min/med':>20} {'peak RSS MiB':>13} {'bytes written/file':>19}"]
    for count, figures in result.items():
        cpu, rss, written = figures["cpu_ms_per_file"], figures["peak_rss_mib"], figures["bytes_written_per_file"]
        lines.append(
            f"{count + ' files':<22} {cpu['min']:>9.1f} / {cpu['median']:<8.1f} {rss['median']:>13.1f} "
            f"{written['median']:>19.0f}"
        )
    return lines
