"""``sisdaemon demo``: the whole product on the built-in Canvas emulator, in one command and no network.

Starts the sandbox on a free loopback port, makes a demo folder with drop/, done/ and failed/, drops a realistic
set (a zip of accounts, terms, users, courses, sections and enrollments; a users.csv whose rows give warnings; a
file Canvas fails), runs the real daemon until every file is filed, and prints what happened to each: a table no
wider than the terminal (kept within 80 to 120 columns), in import order, with what Canvas said about each file that
did not import cleanly, and paths relative to where it was run. The daemon's log goes to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import yaml

from sisdaemon.config import load_config
from sisdaemon.daemon import Daemon
from sisdaemon.sandbox import Sandbox

TERM = "2026FA"
FIRST = ["Ada", "Bo", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena"]
LAST = ["Okafor", "Lind", "Wei", "Nakamura", "Silva", "Haddad", "Berg", "Novak", "Reyes", "Kowalski"]
COURSES = [
    ("BIO101", "Biology 101", "Biology: Cells and Systems"),
    ("HIS210", "History 210", "Modern History"),
    ("MAT150", "Math 150", "Calculus I"),
    ("ART105", "Art 105", 'Art 105: "Art as a Medium"'),
]


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def demo_files() -> dict[str, bytes]:
    """The files the demo drops, by name, in the order they are dropped (oldest first)."""
    users = [["user_id", "login_id", "first_name", "last_name", "email", "status"]]
    people = [(f"S{n:04d}", FIRST[n % len(FIRST)], LAST[n % len(LAST)]) for n in range(1, 41)]
    for user_id, first, last in people:
        users.append([user_id, user_id.lower(), first, last, f"{user_id.lower()}@example.edu", "active"])
    courses = [["course_id", "short_name", "long_name", "account_id", "term_id", "status"]]
    courses += [
        [cid, short, long, "SCI" if cid in ("BIO101", "MAT150") else "HUM", TERM, "active"]
        for cid, short, long in COURSES
    ]
    sections = [["section_id", "course_id", "name", "status"]]
    sections += [[f"{cid}-01", cid, f"{short} Section 1", "active"] for cid, short, _ in COURSES]
    enrollments = [["course_id", "user_id", "role", "section_id", "status"]]
    for index, (user_id, _, _) in enumerate(people):
        cid = COURSES[index % len(COURSES)][0]
        enrollments.append([cid, user_id, "student", f"{cid}-01", "active"])
    enrollments.append(["BIO101", "S0001", "teacher", "BIO101-01", "active"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(
            "nightly/accounts.csv",
            _csv(
                [
                    ["account_id", "parent_account_id", "name", "status"],
                    ["SCI", "", "Sciences", "active"],
                    ["HUM", "", "Humanities", "active"],
                ]
            ),
        )
        bundle.writestr(
            "nightly/terms.csv",
            _csv(
                [
                    ["term_id", "name", "status", "start_date", "end_date"],
                    [TERM, "Fall 2026", "active", "2026-08-24", "2026-12-18"],
                ]
            ),
        )
        bundle.writestr("nightly/users.csv", _csv(users))
        bundle.writestr("nightly/courses.csv", _csv(courses))
        bundle.writestr("nightly/sections.csv", _csv(sections))
        bundle.writestr("nightly/enrollments.csv", _csv(enrollments))
    late_users = _csv(
        [
            ["user_id", "login_id", "first_name", "last_name", "email", "status"],
            ["S0101", "s0101", "Mira", "Castell", "s0101@example.edu", "active"],
            ["S0102", "", "Noor", "Abadi", "s0102@example.edu", "active"],  # no login_id: a warning
            ["S0103", "s0103", "Otto", "Brand", "s0103@example.edu", "on_leave"],  # bad status: a warning
            ["S0104", "s0104", "Pia", "Sand", "s0104@example.edu", "active"],
        ]
    )
    not_canvas = _csv([["student_number", "grade", "homeroom"], ["123", "10", "B4"]])
    return {
        "nightly_2026-11-29.zip": archive.getvalue(),
        "users_late_adds.csv": late_users,
        "gradebook_export.csv": not_canvas,
    }


def _write_config(root: Path, url: str, token_env: str) -> Path:
    config = {
        "canvas": {
            "base_url": url,
            "account_id": "1",
            "token_env": token_env,
            "timeout_seconds": 10,
            "upload_timeout_seconds": 60,
        },
        "state_file": str(root / "state" / "state.json"),
        "lock_dir": str(root / "state" / "locks"),
        "polling": {"interval_seconds": 0.2, "max_interval_seconds": 1, "errors_csv_wait_seconds": 10},
        "log": {"format": "console", "level": "info"},
        "feeds": [
            {
                "name": "demo",
                "drop_dir": str(root / "drop"),
                "work_dir": str(root / "work"),
                "done_dir": str(root / "done"),
                "failed_dir": str(root / "failed"),
                "settle_seconds": 0.5,
                "rescan_seconds": 2,
                # The demo shows what Canvas says of each file, the bad one included: pre-flight only notes its
                # findings in the sidecars (a real feed keeps the default, reject).
                "preflight": "warn",
            }
        ],
    }
    path = root / "config.yaml"
    path.write_text(
        "# Written by `sisdaemon demo`; the sandbox it points at is gone once the demo ends.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def summarize(root: Path) -> list[dict[str, Any]]:
    """One row per sidecar in done/ and failed/, in the order Canvas was given the files (import ids; a file refused
    before upload by when it was claimed): ``file``, ``outcome`` (Canvas's ``workflow_state``, or ``rejected``),
    ``import_id``, ``counts`` (rows imported per SIS type, as text), ``warnings`` and ``errors`` (how many),
    ``messages`` (``["warning: …", "error: …"]``: what Canvas said, or why the file was refused), ``folder`` and
    ``sidecar`` (paths)."""
    rows = []
    for folder in ("done", "failed"):
        for path in sorted((root / folder).glob("*.result.json")):
            sidecar = json.loads(path.read_text())
            canvas = sidecar.get("canvas") or {}
            counts = canvas.get("counts") or {}
            timeline = sidecar.get("timeline") or {}
            messages = [f"error: {_message(sidecar, item)}" for item in canvas.get("processing_errors") or []]
            messages += [f"warning: {_message(sidecar, item)}" for item in canvas.get("processing_warnings") or []]
            if not messages and sidecar.get("reason") and sidecar["outcome"] not in ("imported",):
                messages.append(f"{sidecar.get('reason_code') or 'reason'}: {sidecar['reason']}")
            rows.append(
                {
                    "file": sidecar["file"]["name"],
                    "outcome": sidecar["outcome"],
                    "import_id": canvas.get("import_id"),
                    "counts": ", ".join(
                        f"{key} {value}"
                        for key, value in counts.items()
                        if value and key not in ("error_count", "warning_count")
                    )
                    or "-",
                    "warnings": len(canvas.get("processing_warnings") or []),
                    "errors": len(canvas.get("processing_errors") or []),
                    "messages": messages,
                    "folder": root / folder,
                    "sidecar": path,
                    "order": (
                        timeline.get("submitted_at") or timeline.get("claimed_at") or "",
                        canvas.get("import_id") if canvas.get("import_id") is not None else float("inf"),
                    ),
                }
            )
    rows.sort(key=lambda row: row.pop("order"))
    return rows


def _message(sidecar: dict[str, Any], item: Any) -> str:
    """One of Canvas's ``[file, message]`` pairs as text; the file is left out when it is the upload itself (Canvas
    names it ``<job id>_<name>``), kept for a member of a zip."""
    if not isinstance(item, list) or len(item) != 2:
        return str(item)
    where, text = str(item[0]), str(item[1])
    upload = f"{sidecar.get('job_id')}_{sidecar['file']['name']}"
    return text if where in (upload, sidecar["file"]["name"]) else f"{where}: {text}"


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder, so it can be typed from where the demo was run; absolute when it
    lies outside the current folder."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def table_width(columns: int | None = None) -> int:
    """The width the table is made for: the terminal's (``$COLUMNS``, else the terminal, else 100), kept within
    80 to 120 columns."""
    if columns is None:
        columns = shutil.get_terminal_size((100, 24)).columns
    return max(80, min(120, columns))


#: Messages shown under a file; the rest are in its sidecar and .errors.csv.
MESSAGES_SHOWN = 3


def render_table(rows: list[dict[str, Any]], width: int = 100) -> str:
    """The rows of :func:`summarize` as a table no wider than ``width`` columns: ``#``, ``file``, ``outcome``,
    ``import`` and ``rows imported`` (wrapped within its column), and under each file that did not import cleanly
    what Canvas said (``warning: …``, ``error: …``, at most :data:`MESSAGES_SHOWN`)."""
    headers = ["#", "file", "outcome", "import", "rows imported"]
    cells = [
        [str(number), row["file"], row["outcome"], str(row["import_id"] or "-"), row["counts"]]
        for number, row in enumerate(rows, 1)
    ]
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, header in enumerate(headers)]
    widths[1] = min(widths[1], 30)  # a long name wraps within its column
    widths[4] = max(12, width - sum(widths[:4]) - 2 * 4)
    if sum(widths) + 2 * 4 > width:  # a very long outcome or name: give the file column what is left
        widths[1] = max(8, widths[1] - (sum(widths) + 2 * 4 - width))

    def line(parts: list[str]) -> str:
        return "  ".join(part.ljust(w) for part, w in zip(parts, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    indent = " " * (widths[0] + 2)
    for row, values in zip(rows, cells, strict=True):
        wrapped = [
            textwrap.wrap(value, w, break_on_hyphens=False) or [""] for value, w in zip(values, widths, strict=True)
        ]
        for index in range(max(len(parts) for parts in wrapped)):
            out.append(line([parts[index] if index < len(parts) else "" for parts in wrapped]))
        messages = row["messages"]
        for message in messages[:MESSAGES_SHOWN]:
            out += textwrap.wrap(message, width, initial_indent=indent, subsequent_indent=indent + "  ")
        if len(messages) > MESSAGES_SHOWN:
            out.append(f"{indent}... and {len(messages) - MESSAGES_SHOWN} more in its sidecar")
    return "\n".join(out)


def run_demo(root: Path, *, fresh: bool = True) -> int:
    """Run the demo in ``root``; returns 0 when every file ended where the demo expects it."""
    from sisdaemon.logs import configure_logging

    root = root.resolve()
    if fresh and root.exists():
        for name in ("drop", "work", "done", "failed", "state", "config.yaml"):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for name in ("drop", "work", "done", "failed", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    width = table_width()
    token = secrets.token_urlsafe(24)
    token_env = "SISDAEMON_DEMO_TOKEN"
    os.environ[token_env] = token  # never on a command line: `ps` shows those
    # The daemon's log goes to stderr, the table to stdout: `sisdaemon demo > result.txt` keeps the table alone. The
    # demo is read by a person even through a pipe (`| less`): lines for people, coloured on a terminal only.
    configure_logging("console", "info", sys.stderr)
    with Sandbox(token=token, account_id=1, fast=True) as sandbox:
        config = _write_config(root, sandbox.url, token_env)
        for index, (name, data) in enumerate(demo_files().items()):
            temp = root / "drop" / f".{name}.uploading"
            temp.write_bytes(data)
            os.utime(temp, (1_790_000_000 + index, 1_790_000_000 + index))
            os.rename(temp, root / "drop" / name)
        started = (
            f"sisdaemon demo: Canvas emulator at {sandbox.url}; dropped {len(demo_files())} files into "
            f"{shown_path(root / 'drop')}/"
        )
        print(textwrap.fill(started, width, break_long_words=False, break_on_hyphens=False), flush=True)
        code = Daemon(load_config(config), config_path=config, once=True, max_wait=120).run()
    rows = summarize(root)
    print()
    print(render_table(rows, width))
    print()
    footer = (
        f"Each file is filed in {shown_path(root / 'done')}/ or {shown_path(root / 'failed')}/ beside its "
        ".result.json sidecar (what Canvas said, in full), and its .errors.csv when Canvas reported messages. "
        f"The config the daemon ran with: {shown_path(config)}"
    )
    print(textwrap.fill(footer, width, break_long_words=False, break_on_hyphens=False))
    expected = {"nightly_2026-11-29.zip": "done", "users_late_adds.csv": "done", "gradebook_export.csv": "failed"}
    actual = {row["file"]: row["folder"].name for row in rows}
    if code not in (0, 1) or actual != expected:
        print(f"sisdaemon demo: unexpected result (exit {code}): {actual}", file=sys.stderr)
        return 1
    return 0
