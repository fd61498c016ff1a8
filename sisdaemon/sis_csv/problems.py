"""What a pre-flight check finds: each problem with its file, line and column, and a report per input file.

A *fatal* problem is one for which Canvas would fail the file, or a whole CSV in it (docs/canvas-api.md §3:
"Invalid UTF-8", "Malformed CSV", "Couldn't find Canvas CSV import headers", a zip it cannot read). Anything
Canvas only warns about (a row it skips) is a warning: the file is still sent.

Memory stays bounded whatever the file: a report keeps every fatal problem (there are few: each ends the check of
its CSV) and at most :data:`KEPT_PER_KIND` warnings of each kind per CSV, counting the rest in ``left_out``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Warnings of one kind (``code``) kept per CSV; the rest are counted, not kept.
KEPT_PER_KIND = 10


@dataclass(frozen=True)
class Problem:
    """One problem. ``file``: the input's name, or ``"<zip>: <member path>"`` for a zip member. ``line``: the
    1-based physical line (the header is line 1), None for the whole file. ``column``: the header's name of the
    column (or ``"column N"``), None when not about one column. ``code``: a machine word (``not_utf8``,
    ``utf16``, ``windows_1252``, ``binary``, ``delimiter``, ``unterminated_quote``, ``malformed``,
    ``no_headers``, ``missing_columns``, ``row_skipped``, ``unknown_status``, ``ragged_row``, ``cut_short``,
    ``empty_file``, ``zip_damaged``, ``zip_too_large``, ``zip_unsafe_name``, ``zip_encrypted``, ``zip_junk``,
    ``zip_unknown_file``, ``zip_no_csv``). ``canvas``: what Canvas itself would say, when known."""

    file: str
    line: int | None
    column: str | None
    code: str
    fatal: bool
    message: str
    canvas: str | None = None

    def where(self) -> str:
        """``users.csv, line 3, column "status"`` (the parts known)."""
        parts = [self.file]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f'column "{self.column}"' if not self.column.startswith("column ") else self.column)
        return ", ".join(parts)

    def render(self) -> str:
        """One line for people: where, what, and whether Canvas would refuse it."""
        kind = "FATAL" if self.fatal else "warning"
        said = f' (Canvas: "{self.canvas}")' if self.canvas else ""
        return f"{self.where()}: {kind}: {self.message}{said}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``validate --json``, sidecars)."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "fatal": self.fatal,
            "message": self.message,
            "canvas": self.canvas,
        }


@dataclass
class Report:
    """What a check of one input file found. ``types``: data rows per SIS type (Canvas's importer names, e.g.
    ``{"user": 40}``) over its recognised CSVs; ``csvs``: recognised CSVs by name -> importer; ``left_out``:
    warnings counted but not kept, by code; ``sha256``: the file's hex sha256 (taken from the check's own reads), once
    checked."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    types: Counter[str] = field(default_factory=Counter)
    csvs: dict[str, str] = field(default_factory=dict)
    left_out: Counter[str] = field(default_factory=Counter)
    sha256: str | None = None
    _kept: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def fatal(self) -> bool:
        """Whether Canvas would fail the file or a whole CSV in it."""
        return any(problem.fatal for problem in self.problems)

    def add(self, problem: Problem) -> None:
        """Keep ``problem`` (a warning only while fewer than KEPT_PER_KIND of its kind were kept for its file)."""
        if not problem.fatal:
            key = (problem.file, problem.code)
            if self._kept[key] >= KEPT_PER_KIND:
                self.left_out[problem.code] += 1
                return
            self._kept[key] += 1
        self.problems.append(problem)

    def summary(self) -> str:
        """One line: the verdict and the numbers."""
        fatal = sum(1 for problem in self.problems if problem.fatal)
        warnings = len(self.problems) - fatal + sum(self.left_out.values())
        verdict = "Canvas would fail it" if fatal else "OK to send"
        rows = ", ".join(f"{count} {kind}" for kind, count in self.types.items()) or "no rows"
        return f"{self.file}: {verdict}: {fatal} fatal, {warnings} warning(s); {rows}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"file", "fatal", "problems": [...], "left_out": {code: n}, "rows": {type: n},
        "csvs": {name: type}, "sha256"}``."""
        return {
            "file": self.file,
            "fatal": self.fatal,
            "problems": [problem.as_dict() for problem in self.problems],
            "left_out": dict(self.left_out),
            "rows": dict(self.types),
            "csvs": dict(self.csvs),
            "sha256": self.sha256,
        }


class Cancelled(Exception):
    """The check was asked to stop (the daemon is stopping); nothing was decided."""
