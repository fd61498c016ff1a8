"""The benchmark (``python -m benchmarks``, not part of the test command) runs end to end at a tiny size and writes
the JSON docs/performance.md's table is made from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_benchmark_runs_every_uploader_on_one_sink_and_writes_its_figures(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (one of the benchmark's peers)")
    out = tmp_path / "result.json"
    flags = ["--only=upload", "--sizes-mib=1", "--repeats=1", "--quiet", f"--json={out}", f"--work={tmp_path}"]
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1 and report["machine"]["commit"]
    peers = report["figures"]["upload"]["1"]
    assert set(peers) == {
        "sisdaemon",
        "client multipart",
        "client raw body",
        "sha256 alone",
        "requests",
        "canvasapi",
        "curl --data-binary",
        "curl -T",
    }
    for name, figures in peers.items():
        assert figures["failed"] == 0, name
        assert figures["file_bytes"] >= 1 << 20
        assert 0 < figures["seconds"]["min"] <= figures["seconds"]["median"], name
        assert figures["peak_rss_mib"]["min"] > 1, name
    assert "curl -T" in finished.stdout and "client raw body" in finished.stdout
    assert not list(tmp_path.glob("sisdaemon-bench-*")), "the benchmark's temp folder is removed"


def test_the_diff_benchmark_compares_files_in_a_fresh_process_and_finds_the_changes_it_made() -> None:
    finished = subprocess.run(
        [sys.executable, "benchmarks/diff_speed.py", "2000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    [_, line] = finished.stdout.strip().splitlines()
    assert line.split()[0] == "2000" and line.endswith("20/20/20")  # 1% added, removed and changed
