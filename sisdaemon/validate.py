"""``sisdaemon validate FILE…``: the pre-flight check (sisdaemon.sis_csv) on files, printed for people or as JSON.

Exit codes: 0 when Canvas would take every file (warnings allowed), 1 when it would fail at least one, or one cannot
be read (the message names the file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sisdaemon import sis_csv


def run_validate(paths: Sequence[Path], *, as_json: bool) -> int:
    """Check each of ``paths`` and print what was found (``as_json``: one JSON document ``{"files": [report…],
    "ok": bool}``, each report as :meth:`sisdaemon.sis_csv.Report.as_dict`, or ``{"file", "error"}`` for a file that
    cannot be read). Returns the exit code: 0 all would pass, 1 otherwise."""
    reports: list[dict[str, Any]] = []
    failed = False
    for path in paths:
        try:
            report = sis_csv.check_file(path, name=str(path))
        except OSError as error:
            failed = True
            reports.append({"file": str(path), "error": error.strerror or str(error)})
            if not as_json:
                print(f"{path}: cannot be read: {error.strerror or error}", file=sys.stderr)
            continue
        failed = failed or report.fatal
        reports.append(report.as_dict())
        if not as_json:
            for problem in report.problems:
                print(problem.render())
            for code, count in sorted(report.left_out.items()):
                print(f"{path}: and {count} more warning(s) of kind {code}")
            print(report.summary())
    if as_json:
        print(json.dumps({"ok": not failed, "files": reports}, indent=2))
    return 1 if failed else 0
