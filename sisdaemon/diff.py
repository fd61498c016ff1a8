"""``sisdaemon diff FILE [--feed F] [--against EARLIER] [--json]``: what a file changes since the last file its feed
imported, before Canvas sees it.

The earlier file is the feed's last imported file, which stays in done/ until retention removes it; the feed's
history (history.py) says which. Rows are compared per SIS type, keyed as Canvas keys them when it diffs
(:func:`sisdaemon.sis_csv.compare_files`: both files streamed, memory bounded), and for a batch-mode or diffing feed
the rows Canvas would delete or set to the drop status are named (guard.canvas_would). CSVs and zips alike.

Exit codes: 0 compared; 1 a file cannot be read; 2 no such feed (or several feeds and none named); 3 nothing to
compare with (the feed imported no file yet, or its last one is no longer in done/); 78 a bad config.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sisdaemon import guard, sis_csv
from sisdaemon.config import FeedSettings, ImportOptions, Settings
from sisdaemon.sis_csv.compare import KINDS
from sisdaemon.state import History, StateError, history_path

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_REFUSED = 2
EXIT_NOTHING = 3


def feed_for(settings: Settings, path: Path, name: str | None) -> FeedSettings | str:
    """The feed named ``name``; else the one whose folders hold ``path``; else the only feed. A str says why
    none."""
    feeds = {feed.name: feed for feed in settings.feeds}
    if name is not None:
        return feeds.get(name) or f"no feed named {name!r} (feeds: {', '.join(feeds)})"
    folder = os.path.abspath(path.parent)
    for feed in settings.feeds:
        if folder in {os.path.abspath(where) for where in feed.folders().values()}:
            return feed
    if len(feeds) == 1:
        return settings.feeds[0]
    return f"several feeds ({', '.join(feeds)}): name one with --feed"


def earlier_file(settings: Settings, feed: FeedSettings) -> tuple[Path, Mapping[str, Any]] | str:
    """The feed's last imported file in done/ and its history record, or why there is none. Raises StateError for a
    damaged history."""
    record = guard.last_imported(History(history_path(settings.state_file, feed.name)).records)
    if record is None or not record.get("work_name"):
        return f"feed {feed.name} has imported no file yet: nothing to compare with"
    path = feed.done_dir / str(record["work_name"])
    if not os.path.lexists(path):
        return f"the last file feed {feed.name} imported, {record['work_name']}, is no longer in {feed.done_dir}"
    return path, record


def render(comparison: sis_csv.Comparison, summary: Mapping[str, Any]) -> str:
    """The comparison for people: one block per SIS type, then what Canvas would delete."""
    lines = [f"comparing {comparison.after} with {comparison.before}"]
    for name, diff in comparison.types.items():
        head = f"{name}: {diff.before} -> {diff.after} rows"
        if not diff.key:
            lines.append(f"{head} (Canvas does not key {name} rows: counts only)")
            continue
        lines.append(
            f"{head} (key {', '.join(diff.key)}): {diff.added} added, {diff.removed} removed, {diff.changed} changed"
        )
        for kind in KINDS:
            shown = diff.examples.get(kind) or []
            if shown:
                more = getattr(diff, kind) - len(shown)
                lines.append(f"  {kind}: {'; '.join(shown)}" + (f" (and {more} more)" if more > 0 else ""))
        if diff.headers_differ:
            lines.append("  the two files' columns differ: Canvas does not diff this type (the file applies whole)")
        if diff.unkeyed or diff.duplicates:
            lines.append(f"  not compared: {diff.unkeyed} row(s) without an id, {diff.duplicates} repeated id(s)")
    for problem in comparison.problems:
        lines.append(f"problem: {problem}")
    would = summary.get("canvas_would")
    if would:
        for name, item in would.items():
            lines.append(f"Canvas would set {item['rows']} {name} row(s) to {item['status']}")
    elif would is not None:
        lines.append("Canvas would delete nothing that the earlier file held")
    return "\n".join(lines)


def run_diff(
    settings: Settings | None, path: Path, *, feed_name: str | None, against: Path | None, as_json: bool
) -> int:
    """Compare ``path`` with ``against`` or (with ``settings``) its feed's last imported file; print the result
    (``as_json``: ``{"comparison": Comparison.as_dict(), "summary": guard.diff_summary(...)}``). Returns the exit
    code (see the module's doc)."""
    options = ImportOptions()
    record: Mapping[str, Any] | None = None
    feed: FeedSettings | str | None = None
    if settings is not None and (against is None or feed_name is not None):
        feed = feed_for(settings, path, feed_name)
        if isinstance(feed, str):
            print(f"sisdaemon diff: {feed}", file=sys.stderr)
            return EXIT_REFUSED
        options = feed.import_
    if against is None:
        assert isinstance(feed, FeedSettings) and settings is not None
        try:
            found = earlier_file(settings, feed)
        except (StateError, OSError) as error:
            print(f"sisdaemon diff: {error}", file=sys.stderr)
            return EXIT_NOTHING
        if isinstance(found, str):
            print(f"sisdaemon diff: {found}", file=sys.stderr)
            return EXIT_NOTHING
        against, record = found
    try:
        comparison = sis_csv.compare_files(against, path, before_name=str(against), after_name=str(path))
    except (OSError, zipfile.BadZipFile) as error:
        print(f"sisdaemon diff: cannot read {getattr(error, 'filename', None) or path}: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    summary = guard.diff_summary(comparison, record, options)
    if not guard.watched(options):
        summary.pop("canvas_would", None)  # neither batch mode nor diffing: Canvas deletes nothing a file leaves out
    if as_json:
        print(json.dumps({"comparison": comparison.as_dict(), "summary": summary}, indent=2))
    else:
        print(render(comparison, summary))
    return EXIT_OK
