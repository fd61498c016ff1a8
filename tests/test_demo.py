"""`sisdaemon demo` as a user runs it: one command, exit 0, a table of what happened, the folders to look at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXPECTED = {
    "nightly_2026-11-29.zip": ("done", "imported"),
    "users_late_adds.csv": ("done", "imported_with_messages"),
    "gradebook_export.csv": ("failed", "failed_with_messages (canvas_errors)"),
}


def parse_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the demo's table: the header line names the columns, the dashed line under it gives their
    widths (columns are separated by two spaces), the rows run to the first blank line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("file ") and " outcome " in line)
    headers = lines[start].split()
    spans: list[tuple[int, int]] = []
    position = 0
    for dashes in lines[start + 1].split("  "):
        spans.append((position, position + len(dashes)))
        position += len(dashes) + 2
    assert len(spans) == len(headers), lines[start : start + 2]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append({header: line[begin:end].strip() for header, (begin, end) in zip(headers, spans, strict=True)})
    return rows


def test_the_demo_runs_the_daemon_on_the_sandbox_and_files_every_drop(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "demo", "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "SISDAEMON_DEMO_TOKEN"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = parse_table(result.stdout)
    assert {row["file"]: row["outcome"] for row in rows} == {name: outcome for name, (_, outcome) in EXPECTED.items()}
    by_file = {row["file"]: row for row in rows}
    assert by_file["users_late_adds.csv"]["warnings"] == "2"
    assert by_file["gradebook_export.csv"]["errors"] == "1"
    assert "users 40" in by_file["nightly_2026-11-29.zip"]["counts"]

    assert list((root / "drop").iterdir()) == []
    for name, (folder, outcome) in EXPECTED.items():
        kept = [path for path in (root / folder).iterdir() if path.name.endswith(f"_{name}")]
        assert len(kept) == 1, sorted(path.name for path in (root / folder).iterdir())
        original = kept[0]
        sidecar_path = original.with_name(original.name + ".result.json")
        sidecar = json.loads(sidecar_path.read_text())
        assert sidecar["file"]["name"] == name
        assert outcome.startswith(sidecar["outcome"])
        assert str(sidecar["canvas"]["import_id"]) == by_file[name]["import_id"]
        assert (tmp_path / by_file[name]["sidecar"]) == sidecar_path  # the table points at it
    # Canvas reported messages for two of them: their errors CSV sits beside them.
    errors_csvs = [path.name for folder in ("done", "failed") for path in (root / folder).glob("*.errors.csv")]
    assert sorted(name for name in EXPECTED if any(csv.endswith(f"_{name}.errors.csv") for csv in errors_csvs)) == [
        "gradebook_export.csv",
        "users_late_adds.csv",
    ]
    assert len(errors_csvs) == 2
