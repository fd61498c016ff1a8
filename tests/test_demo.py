"""`sisdaemon demo` as a user runs it: one command, exit 0, a table of what happened that fits the terminal, in
import order, with what Canvas said, and paths that can be typed from where it was run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

EXPECTED = {
    "nightly_2026-11-29.zip": ("done", "imported"),
    "users_late_adds.csv": ("done", "imported_with_messages"),
    "gradebook_export.csv": ("failed", "failed_with_messages"),
}


def run_demo(cwd: Path, *args: str, columns: int) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sisdaemon", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={
            **{key: value for key, value in os.environ.items() if key != "SISDAEMON_DEMO_TOKEN"},
            "COLUMNS": str(columns),
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def parse_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the demo's table: the header line names the columns, the dashed line under it gives their
    widths (columns are separated by two spaces); a row starts with its number, a line with an empty number column
    continues it (a wrapped cell) or, indented past that column, gives a message of Canvas (``warning: …``)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"#\s+file\s+outcome\s", line))
    headers = ["#", "file", "outcome", "import", "rows"]
    spans: list[tuple[int, int]] = []
    position = 0
    for dashes in lines[start + 1].split("  "):
        spans.append((position, position + len(dashes)))
        position += len(dashes) + 2
    assert len(spans) == len(headers), lines[start : start + 2]
    rows: list[dict[str, str]] = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        if line[:1].isdigit():
            rows.append({header: line[begin:end].strip() for header, (begin, end) in zip(headers, spans, strict=True)})
            rows[-1]["messages"] = ""
        elif line.strip().startswith(("warning:", "error:")):
            rows[-1]["messages"] += line.strip() + "\n"
        else:  # a wrapped cell
            for header, (begin, end) in zip(headers, spans, strict=True):
                if line[begin:end].strip():
                    rows[-1][header] += " " + line[begin:end].strip()
    return rows


def paths_in(stdout: str) -> list[str]:
    """Every word of the output that is a path (has a /), URLs aside, without trailing punctuation."""
    return [
        word.rstrip(".,:;)") for word in stdout.split() if "/" in word and not word.startswith(("http://", "https://"))
    ]


def test_the_demo_runs_the_daemon_on_the_sandbox_and_files_every_drop(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = run_demo(tmp_path, "--dir", "demo", columns=100)
    rows = parse_table(result.stdout)
    assert {row["file"]: row["outcome"] for row in rows} == {name: outcome for name, (_, outcome) in EXPECTED.items()}
    by_file = {row["file"]: row for row in rows}
    assert by_file["users_late_adds.csv"]["messages"].count("warning: ") == 2
    assert "No login_id given for user S0102" in by_file["users_late_adds.csv"]["messages"]
    assert by_file["gradebook_export.csv"]["messages"] == "error: Couldn't find Canvas CSV import headers\n"
    assert by_file["nightly_2026-11-29.zip"]["messages"] == ""  # imported cleanly: nothing to say
    assert "users 40" in by_file["nightly_2026-11-29.zip"]["rows"]

    assert list((root / "drop").iterdir()) == []
    for name, (folder, outcome) in EXPECTED.items():
        kept = [path for path in (root / folder).iterdir() if path.name.endswith(f"_{name}")]
        assert len(kept) == 1, sorted(path.name for path in (root / folder).iterdir())
        original = kept[0]
        sidecar = json.loads(original.with_name(original.name + ".result.json").read_text())
        assert sidecar["file"]["name"] == name and sidecar["outcome"] == outcome
        assert str(sidecar["canvas"]["import_id"]) == by_file[name]["import"]
    # Canvas reported messages for two of them: their errors CSV sits beside them.
    errors_csvs = [path.name for folder in ("done", "failed") for path in (root / folder).glob("*.errors.csv")]
    assert sorted(name for name in EXPECTED if any(csv.endswith(f"_{name}.errors.csv") for csv in errors_csvs)) == [
        "gradebook_export.csv",
        "users_late_adds.csv",
    ]
    assert len(errors_csvs) == 2
    # Its log, on stderr, is written for the person watching even through a pipe: no JSON, no colour codes.
    log_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("file_filed" in line for line in log_lines)
    assert not any(line.lstrip().startswith("{") for line in log_lines), log_lines[:3]
    assert "\x1b[" not in result.stderr


def test_the_demo_s_table_fits_80_and_120_columns_lists_files_in_import_order_and_prints_paths_that_exist(
    tmp_path: Path,
) -> None:
    for columns in (80, 120):
        result = run_demo(tmp_path, columns=columns)  # the default folder, ./sisdaemon-demo
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
        rows = parse_table(result.stdout)
        assert [row["#"] for row in rows] == ["1", "2", "3"]
        imports = [int(row["import"]) for row in rows]
        assert imports == sorted(imports), "in the order Canvas was given them"
        assert [row["file"] for row in rows] == list(EXPECTED)  # which is the order they were dropped in
        paths = paths_in(result.stdout)
        assert "sisdaemon-demo/done/" in paths and "sisdaemon-demo/failed/" in paths, paths
        for path in paths:
            assert not path.startswith("/"), f"{path} is not relative to where the demo ran"
            assert (tmp_path / path).exists(), f"{path} does not exist relative to where the demo ran"
